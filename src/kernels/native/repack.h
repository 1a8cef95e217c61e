#ifndef DSEEK_REPACK_H
#define DSEEK_REPACK_H
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

/* Instruction levels, best first: names, whether the CPU has them, and the choice (NULL: the best
   the CPU has). ops_select returns -1 when the named level is unknown or unsupported here. */
int ops_level_count(void);
const char *ops_level_name(int i);
int ops_level_supported(int i);
int ops_select(const char *name);
const char *ops_active_name(void);

/* The layout the active level would repack a [rows, cols] weight of GGML type `wtype` into
   (0: it keeps the rows), and the bytes of the repacked copy. */
int repack_layout(int wtype, int64_t rows, int64_t cols);
size_t repack_bytes(int wtype, int64_t rows, int64_t cols);
/* Writes the repacked copy (repack_bytes) into dst; returns its layout (0: nothing written). */
int repack_weight(const uint8_t *src, int wtype, int64_t rows, int64_t cols, uint8_t *dst);
/* Whether `layout` is one a weight of GGML type `wtype` can be packed in (at some level). */
int packed_layout_fits(int layout, int wtype);
/* Bytes of a [rows, cols] weight packed in `layout`, and of one of its row groups. */
size_t packed_bytes(int layout, int wtype, int64_t rows, int64_t cols);
size_t packed_group_bytes(int layout, int wtype, int64_t cols);
/* Bytes of one row of `cols` activations quantised for `wtype`'s packed products. */
size_t packed_act_bytes(int wtype, int64_t cols);
/* The active level's product over `layout`, or the scalar level's when the active one has none
   (a weight packed under another level still computes right). */
packed_gemm_fn packed_gemm_for(int layout);
/* One row of activations quantised as the packed products of `wtype` read them. */
void packed_quantise_row(int wtype, const float *x, int64_t cols, void *out);
/* One repacked matrix (ops.h layouts): rows a multiple of 8, no plain tail. */
typedef struct {
  const uint8_t *data;
  int wtype, layout;
  size_t group_bytes; /* bytes of one row group across all columns */
} packed_matrix;

/* For h < H, t < T: y[(t·H + h)·rows + r] = Σ_c W_h[r, c] · x[(t·H + h)·xstride + c] — one product
   per head over the same tokens (absorbed attention's W^UK and W^UV), all heads in one pool job;
   with `shared`, every head reads x[t·xstride + c] (prefill's decompression of one latent row into
   every head's values), quantised once. Every W_h has one type and shape [rows, cols]. 0 on
   success, -1 out of memory. */
int packed_matmul_heads(float *y, const float *x, int64_t T, int64_t xstride, int shared, int64_t H, const packed_matrix *w,
                        int64_t rows, int64_t cols);
/* y[t·rows + r] = Σ_c W[r, c] · x[t·cols + c] over a weight packed in `layout`. 0 on success, −1
   when the layout does not belong to the type. */
int packed_matmul(float *y, const float *x, const uint8_t *w, int layout, int wtype, int64_t rows, int64_t cols, int64_t tokens);

#endif
