/* f32 panel products (gemm_f32.h). */
#include "gemm_f32.h"
#include "ops.h"

#include <string.h>

#define MR GEMM_F32_MR
#define NR GEMM_F32_NR

int64_t gemm_f32_panel_floats(int64_t K, int64_t N) { return ((N + NR - 1) / NR) * K * NR; }

void gemm_f32_pack(float *packed, const float *b, int64_t ldb, int64_t K, int64_t N) {
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    int64_t nr = N - j0 < NR ? N - j0 : NR;
    float *p = packed + (j0 / NR) * K * NR;
    if (nr == NR) { /* a constant-size copy is inlined: a call per 64 bytes was 6 % of a prompt's attention */
      for (int64_t k = 0; k < K; k++) memcpy(p + k * NR, b + k * ldb + j0, NR * sizeof(float));
      continue;
    }
    for (int64_t k = 0; k < K; k++) {
      const float *row = b + k * ldb + j0;
      float *dst = p + k * NR;
      memcpy(dst, row, (size_t)nr * sizeof(float));
      for (int64_t j = nr; j < NR; j++) dst[j] = 0;
    }
  }
}

static void pack_transposed_scalar(float *packed, const float *bt, int64_t ldbt, int64_t K, int64_t N) {
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    int64_t nr = N - j0 < NR ? N - j0 : NR;
    float *p = packed + (j0 / NR) * K * NR;
    for (int64_t j = 0; j < NR; j++) {
      if (j < nr) {
        const float *col = bt + (j0 + j) * ldbt;
        for (int64_t k = 0; k < K; k++) p[k * NR + j] = col[k];
      } else {
        for (int64_t k = 0; k < K; k++) p[k * NR + j] = 0;
      }
    }
  }
}

typedef gemm_f32_tile_fn tile_fn;

static void tile_scalar(float out[MR][NR], const float *const rows[MR], const float *panel, int64_t ld, int64_t K) {
  float acc[MR][NR] = {{0}};
  for (int64_t k = 0; k < K; k++) {
    const float *b = panel + k * ld;
    for (int r = 0; r < MR; r++) {
      float a = rows[r][k];
      for (int j = 0; j < NR; j++) acc[r][j] += a * b[j];
    }
  }
  memcpy(out, acc, sizeof(acc));
}

/* One tile of the gathered product: B's row k at b[k] (f32, or f16 bits when b_f16), columns from col. */
typedef void (*gathered_fn)(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K);

static void gathered_scalar(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K, int b_f16) {
  float acc[MR][NR] = {{0}};
  for (int64_t k = 0; k < K; k++) {
    float bk[NR];
    for (int j = 0; j < NR; j++)
      bk[j] = b_f16 ? f16_bits_to_f32(((const uint16_t *)b[k])[col + j]) : ((const float *)b[k])[col + j];
    for (int r = 0; r < MR; r++) {
      float a = rows[r][k];
      for (int j = 0; j < NR; j++) acc[r][j] += a * bk[j];
    }
  }
  memcpy(out, acc, sizeof(acc));
}

static void gathered_scalar_f32(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  gathered_scalar(out, rows, b, col, K, 0);
}

static void gathered_scalar_f16(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  gathered_scalar(out, rows, b, col, K, 1);
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

/* 12 accumulators, 2 panel loads and 6 broadcasts per k: FMA-bound on Zen 4 and Skylake-X cores. */
TARGET_AVX2 static void tile_avx2(float out[MR][NR], const float *const rows[MR], const float *panel, int64_t ld, int64_t K) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3], *a4 = rows[4], *a5 = rows[5];
  for (int64_t k = 0; k < K; k++) {
    __m256 b0 = _mm256_loadu_ps(panel + k * ld), b1 = _mm256_loadu_ps(panel + k * ld + 8), a;
    a = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(a4 + k); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(a5 + k); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
  }
  _mm256_storeu_ps(out[0], c00); _mm256_storeu_ps(out[0] + 8, c01);
  _mm256_storeu_ps(out[1], c10); _mm256_storeu_ps(out[1] + 8, c11);
  _mm256_storeu_ps(out[2], c20); _mm256_storeu_ps(out[2] + 8, c21);
  _mm256_storeu_ps(out[3], c30); _mm256_storeu_ps(out[3] + 8, c31);
  _mm256_storeu_ps(out[4], c40); _mm256_storeu_ps(out[4] + 8, c41);
  _mm256_storeu_ps(out[5], c50); _mm256_storeu_ps(out[5] + 8, c51);
}

/* The gathered tile at 6 rows, or 4 for the last rows of a product (16 heads are 6 + 6 + 4, not
   three 6-row tiles with two dropped); B loaded as f32 or converted from f16 in the load. The
   accumulators are named one by one: gcc keeps an array of them in memory. */
#define LOAD_F32(row, j) _mm256_loadu_ps((const float *)(row) + (j))
#define LOAD_F16(row, j) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(row) + (j))))
#define GATHERED_ROW(i)                                                                            \
  {                                                                                                \
    __m256 x = _mm256_broadcast_ss(rows[i] + k);                                                   \
    c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                                                     \
    c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);                                                     \
  }
#define GATHERED_STORE(i)                                                                          \
  _mm256_storeu_ps(out[i], c##i##0);                                                               \
  _mm256_storeu_ps(out[i] + 8, c##i##1);
#define GATHERED_TILE4(LOAD_B)                                                                     \
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;         \
  __m256 c30 = c00, c31 = c00;                                                                     \
  for (int64_t k = 0; k < K; k++) {                                                                \
    __m256 b0 = LOAD_B(b[k], col), b1 = LOAD_B(b[k], col + 8);                                     \
    GATHERED_ROW(0) GATHERED_ROW(1) GATHERED_ROW(2) GATHERED_ROW(3)                                \
  }                                                                                                \
  GATHERED_STORE(0) GATHERED_STORE(1) GATHERED_STORE(2) GATHERED_STORE(3)
#define GATHERED_TILE6(LOAD_B)                                                                     \
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;         \
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                         \
  for (int64_t k = 0; k < K; k++) {                                                                \
    __m256 b0 = LOAD_B(b[k], col), b1 = LOAD_B(b[k], col + 8);                                     \
    GATHERED_ROW(0) GATHERED_ROW(1) GATHERED_ROW(2) GATHERED_ROW(3) GATHERED_ROW(4) GATHERED_ROW(5) \
  }                                                                                                \
  GATHERED_STORE(0) GATHERED_STORE(1) GATHERED_STORE(2) GATHERED_STORE(3) GATHERED_STORE(4) GATHERED_STORE(5)

TARGET_AVX2 static void gathered6_f32_avx2(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  GATHERED_TILE6(LOAD_F32)
}
TARGET_AVX2 static void gathered4_f32_avx2(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  GATHERED_TILE4(LOAD_F32)
}
TARGET_AVX2 static void gathered6_f16_avx2(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  GATHERED_TILE6(LOAD_F16)
}
TARGET_AVX2 static void gathered4_f16_avx2(float out[MR][NR], const float *const rows[MR], const void *const *b, int64_t col, int64_t K) {
  GATHERED_TILE4(LOAD_F16)
}

/* The transposed packing in 8 × 8 blocks transposed in registers (unpack, shuffle, lane permute):
   a prompt's keys (every head's dk × context) had been packed one strided float at a time, 3 % of
   a 512-token chunk after 4,096 tokens. */
TARGET_AVX2 static void pack_transposed_avx2(float *packed, const float *bt, int64_t ldbt, int64_t K, int64_t N) {
  const int64_t k8 = K / 8 * 8;
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    float *p = packed + (j0 / NR) * K * NR;
    if (N - j0 < NR) {
      pack_transposed_scalar(p, bt + j0 * ldbt, ldbt, K, N - j0);
      continue;
    }
    for (int64_t k = 0; k < k8; k += 8) {
      for (int half = 0; half < 2; half++) {
        const float *src = bt + (j0 + 8 * half) * ldbt + k;
        __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ldbt), r2 = _mm256_loadu_ps(src + 2 * ldbt),
               r3 = _mm256_loadu_ps(src + 3 * ldbt), r4 = _mm256_loadu_ps(src + 4 * ldbt), r5 = _mm256_loadu_ps(src + 5 * ldbt),
               r6 = _mm256_loadu_ps(src + 6 * ldbt), r7 = _mm256_loadu_ps(src + 7 * ldbt);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
               u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float *dst = p + k * NR + 8 * half; /* row k + i of the panel: element i of the 8 source rows */
        _mm256_storeu_ps(dst + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(dst + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(dst + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(dst + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(dst + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(dst + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(dst + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(dst + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
      }
    }
    for (int64_t k = k8; k < K; k++)
      for (int64_t j = 0; j < NR; j++) p[k * NR + j] = bt[(j0 + j) * ldbt + k];
  }
}
#endif

static tile_fn tile = tile_scalar;
static void (*pack_transposed)(float *packed, const float *bt, int64_t ldbt, int64_t K, int64_t N) = pack_transposed_scalar;

void gemm_f32_pack_transposed(float *packed, const float *bt, int64_t ldbt, int64_t K, int64_t N) {
  pack_transposed(packed, bt, ldbt, K, N);
}
static gemm_f32_tile2_fn tile2 = NULL;
/* [b_f16][the 4-row tile]: the scalar tile computes 6 rows either way */
static gathered_fn gathered[2][2] = {{gathered_scalar_f32, gathered_scalar_f32}, {gathered_scalar_f16, gathered_scalar_f16}};

void gemm_f32_select(int avx2, gemm_f32_tile_fn level_tile, gemm_f32_tile2_fn level_tile2) {
  tile = tile_scalar;
  tile2 = level_tile2;
  pack_transposed = pack_transposed_scalar;
  gathered[0][0] = gathered[0][1] = gathered_scalar_f32;
  gathered[1][0] = gathered[1][1] = gathered_scalar_f16;
#if defined(__x86_64__) || defined(_M_X64)
  if (avx2) {
    tile = tile_avx2;
    pack_transposed = pack_transposed_avx2;
    gathered[0][0] = gathered6_f32_avx2;
    gathered[0][1] = gathered4_f32_avx2;
    gathered[1][0] = gathered6_f16_avx2;
    gathered[1][1] = gathered4_f16_avx2;
  }
#else
  (void)avx2;
#endif
  if (level_tile) tile = level_tile;
}

/* Rows [0, M) of C for one panel of NR columns starting at j0, of which nr are kept. */
static void panel_rows(float *c, int64_t ldc, const float *a, int64_t lda, const float *panel, int64_t ld, int64_t M, int64_t j0,
                       int64_t nr, int64_t K) {
  float out[MR][NR];
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    int64_t mr = M - i0 < MR ? M - i0 : MR;
    const float *rows[MR];
    for (int r = 0; r < MR; r++) rows[r] = a + (i0 + (r < mr ? r : 0)) * lda;
    tile(out, rows, panel, ld, K);
    for (int64_t r = 0; r < mr; r++) memcpy(c + (i0 + r) * ldc + j0, out[r], (size_t)nr * sizeof(float));
  }
}

void gemm_f32(float *c, int64_t ldc, const float *a, int64_t lda, const float *packed, int64_t M, int64_t N, int64_t K) {
  gemm_f32_prefix(c, ldc, a, lda, packed, K, M, N, K);
}

/* Rows [0, M) of C for the two whole panels at j0 and j0 + NR. */
static void panel_rows2(float *c, int64_t ldc, const float *a, int64_t lda, const float *panel, int64_t panel_floats,
                        int64_t M, int64_t j0, int64_t K) {
  float out[MR][2 * NR];
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    int64_t mr = M - i0 < MR ? M - i0 : MR;
    const float *rows[MR];
    for (int r = 0; r < MR; r++) rows[r] = a + (i0 + (r < mr ? r : 0)) * lda;
    tile2(out, rows, panel, panel + panel_floats, NR, K);
    for (int64_t r = 0; r < mr; r++) memcpy(c + (i0 + r) * ldc + j0, out[r], 2 * NR * sizeof(float));
  }
}

void gemm_f32_prefix(float *c, int64_t ldc, const float *a, int64_t lda, const float *packed, int64_t packed_k, int64_t M,
                     int64_t N, int64_t K) {
  int64_t j0 = 0;
  if (tile2)
    for (; j0 + 2 * NR <= N; j0 += 2 * NR) panel_rows2(c, ldc, a, lda, packed + (j0 / NR) * packed_k * NR, packed_k * NR, M, j0, K);
  for (; j0 < N; j0 += NR)
    panel_rows(c, ldc, a, lda, packed + (j0 / NR) * packed_k * NR, NR, M, j0, N - j0 < NR ? N - j0 : NR, K);
}

void gemm_f32_gathered(float *c, int64_t ldc, const float *a, int64_t lda, const void *const *b_rows, int b_f16, int64_t col0,
                       int64_t M, int64_t N, int64_t K, float *edge) {
  int64_t whole = N / NR * NR;
  float out[MR][NR];
  for (int64_t j0 = 0; j0 < whole; j0 += NR) { /* every row tile of a panel: its K × NR values stay in L1 */
    for (int64_t i0 = 0; i0 < M;) {
      int64_t mr = M - i0 < MR ? M - i0 : MR;
      const float *rows[MR];
      for (int r = 0; r < MR; r++) rows[r] = a + (i0 + (r < mr ? r : 0)) * lda;
      gathered[b_f16 ? 1 : 0][mr <= 4](out, rows, b_rows, col0 + j0, K);
      for (int64_t r = 0; r < mr; r++) memcpy(c + (i0 + r) * ldc + j0, out[r], NR * sizeof(float));
      i0 += mr;
    }
  }
  if (whole < N) { /* the last columns, as f32 zero-padded to a panel */
    for (int64_t k = 0; k < K; k++) {
      for (int64_t j = 0; j < N - whole; j++)
        edge[k * NR + j] = b_f16 ? f16_bits_to_f32(((const uint16_t *)b_rows[k])[col0 + whole + j])
                                 : ((const float *)b_rows[k])[col0 + whole + j];
      for (int64_t j = N - whole; j < NR; j++) edge[k * NR + j] = 0;
    }
    panel_rows(c, ldc, a, lda, edge, NR, M, whole, N - whole, K);
  }
}
