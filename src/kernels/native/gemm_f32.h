#ifndef DSEEK_GEMM_F32_H
#define DSEEK_GEMM_F32_H
#include <stdint.h>

/*
 * f32 matrix products for the float parts of a prompt step (attention scores and values, the
 * transposed W^UK product): C[M][N] = A[M][K] · B[K][N] with B packed in column panels of
 * GEMM_F32_NR values (panel p holds columns [p·NR, p·NR + NR) as K rows of NR floats, zero past N),
 * so the micro-kernel reads B contiguously and keeps a GEMM_F32_MR × NR tile of C in registers
 * (the BLIS/GotoBLAS register-tile scheme: Goto & van de Geijn, "Anatomy of high-performance
 * matrix multiplication", 2008, §6).
 *
 * Every element of C is one sum over k = 0 … K−1 in order, whatever M, N or the caller's split
 * of rows across threads: results never depend on the thread count.
 */
#define GEMM_F32_MR 6
#define GEMM_F32_NR 16

/* Floats a packed B of K rows and N columns takes. */
int64_t gemm_f32_panel_floats(int64_t K, int64_t N);

/* Packs B[k][j] = b[k·ldb + j] (row-major, k < K, j < N). */
void gemm_f32_pack(float *packed, const float *b, int64_t ldb, int64_t K, int64_t N);

/* Packs B[k][j] = bt[j·ldbt + k]: B given as its transpose (for A · Xᵀ, X's rows are B's columns). */
void gemm_f32_pack_transposed(float *packed, const float *bt, int64_t ldbt, int64_t K, int64_t N);

/* C[i·ldc + j] = Σ_k A[i·lda + k] · B[k][j] for i < M, j < N, B packed as above. Single-threaded. */
void gemm_f32(float *c, int64_t ldc, const float *a, int64_t lda, const float *packed, int64_t M, int64_t N, int64_t K);

/* The same over the first K of the packed_k rows B was packed with (K ≤ packed_k): one packing of
   the longest context serves queries that see a prefix of it. */
void gemm_f32_prefix(float *c, int64_t ldc, const float *a, int64_t lda, const float *packed, int64_t packed_k, int64_t M,
                     int64_t N, int64_t K);

/* C[i·ldc + j] = Σ_k A[i·lda + k] · B_k[col0 + j] for i < M, j < N, where row k of B lies at
   b_rows[k]: f32 values (b_f16 0) or f16 bits (b_f16 1). For rows that lie scattered in pages
   (the latent cache), read in place: no copy, and f16 converted in the register tile's loads.
   `edge` holds K·NR floats for the columns past the last whole panel. */
void gemm_f32_gathered(float *c, int64_t ldc, const float *a, int64_t lda, const void *const *b_rows, int b_f16, int64_t col0,
                       int64_t M, int64_t N, int64_t K, float *edge);

/* One MR × NR tile of C = A · B over a panel of B: rows[r] are A's rows (a short tile repeats row
   0 and drops the result), the panel K rows of `ld` floats. */
typedef void (*gemm_f32_tile_fn)(float out[GEMM_F32_MR][GEMM_F32_NR], const float *const rows[GEMM_F32_MR], const float *panel,
                                 int64_t ld, int64_t K);

/* The same over two adjacent panels at once (panel1 = panel0 + one panel's floats), into an
   MR × 2·NR tile: where a level's registers hold both, each A value broadcast serves 2·NR columns. */
typedef void (*gemm_f32_tile2_fn)(float out[GEMM_F32_MR][2 * GEMM_F32_NR], const float *const rows[GEMM_F32_MR],
                                  const float *panel0, const float *panel1, int64_t ld, int64_t K);

/* 1: the AVX2+FMA micro-kernels, 0: portable C; `tile` and `tile2`, when not NULL, are a level's
   own (AVX-512), the second used for each pair of whole panels. */
void gemm_f32_select(int avx2, gemm_f32_tile_fn tile, gemm_f32_tile2_fn tile2);

#endif
