#ifndef DSEEK_KERNELS_H
#define DSEEK_KERNELS_H
#include <stdint.h>

/* Weight types, numbered as GGML numbers them (ggml.h `enum ggml_type`). */
enum weight_type {
  WT_F32 = 0,
  WT_F16 = 1,
  WT_BF16 = 30,
};

/* Which SIMD path the kernels take: chosen once from the CPU's features. */
const char *kernels_simd_name(void);
void kernels_init(void);
/* Switch to the named instruction level (NULL: the best the CPU has); -1 if unknown or unsupported. */
int kernels_set_level(const char *name);

/* Bytes of n elements of a weight type. */
#include <stddef.h>
size_t kernels_span_bytes(int wtype, int64_t n);
/* 1 if the weight type is supported by the native kernels. */
int kernels_supports(int wtype);

/* y[t*rows + r] = sum_c W[r, c] * x[t*cols + c]. */
void kernel_matmul(float *y, const float *x, const uint8_t *w, int wtype, int64_t rows, int64_t cols, int64_t tokens);
/* y[t*cols + c] = sum_r W[r, c] * x[t*rows + r]. */
void kernel_matmul_t(float *y, const float *x, const uint8_t *w, int wtype, int64_t rows, int64_t cols, int64_t tokens);
/* For h < H: y[(t*H + h)*ys + c] = sum_r W_h[r, c] * x[t*rows + r], W_h rows [h*rows, (h+1)*rows) of w. */
void kernel_matmul_t_heads(float *y, int64_t ys, const float *x, const uint8_t *w, int wtype, int64_t H, int64_t rows, int64_t cols,
                           int64_t tokens);
void kernel_rmsnorm(float *y, const float *x, const uint8_t *w, int wtype, int64_t dim, int64_t tokens, float eps);
void kernel_silu_mul(float *y, const float *gate, const float *up, int64_t n);
/* y[i] += x[i] */
void kernel_add(float *y, const float *x, int64_t n);
/* q [T][H][dk], k [N][H][dk], v [N][H][dv] -> out [T][H][dv]; query t sees rows [0, ctx[t]). */
void kernel_attention(float *out, const float *q, const float *k, const float *v, int64_t dk, int64_t dv, int64_t queries,
                      int64_t heads, const int32_t *ctx, float scale);
/* One shared key/value head: rows [a (va) | b (width - va)], f32 (kvtype 0) or f16 bits (kvtype 1)
   of width values, or q8 (kvtype 2: ggml block_q8_0 rows of 2 * ceil(width / 32) + width bytes, the
   last block short). Rows live in pages of page_rows rows, segment_pages pages to a segment: query
   t's row j is in page p = block_table[query_pages[t] + j / page_rows], row
   (p % segment_pages) * page_rows + j % page_rows of segments[p / segment_pages]. The caller has
   checked that every page a query reads is in the table and the segments. */
void kernel_shared_kv_attention(float *out, const float *qa, const float *qb, const void *const *segments,
                                int64_t segment_pages, int64_t page_rows, const int32_t *block_table,
                                const int32_t *query_pages, int kvtype, int64_t width, int64_t va, int64_t queries,
                                int64_t heads, const int32_t *ctx, float scale);

/* Bytes per second all pool threads read from a `bytes`-sized buffer (best of `passes`). */
double kernel_read_bandwidth(int64_t bytes, int passes);

#endif
