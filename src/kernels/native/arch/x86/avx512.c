/*
 * The AVX-512 level (F, BW, VL, VNNI; built with those flags alone, chosen only when the CPU has
 * them): the tiles of avx512_tiles.h over every packed layout, the activation quantiser and the decode
 * latent-attention chunk.
 */
#include "avx512_tiles.h"
#include "../../threadpool.h"

#include <math.h>
#include <stdlib.h>

GROUP(group_q6_k6x8, q6_k6_tile, act_q8kx, 4)
#ifndef PAIR_MIN_TOKENS
#define PAIR_MIN_TOKENS 4 /* 2–3 tokens still stream the weights: one stream per thread reads them faster */
#endif
PAIRED_GEMM(gemm_q4_0x8, q4_0_tile_whole, 8, q4_0_pair_tile, act_q8x, PAIR_MIN_TOKENS)
PAIRED_GEMM(gemm_q8_0x8, q8_0_tile_whole, 8, q8_0_pair_tile, act_q8x, PAIR_MIN_TOKENS)
PAIRED_GEMM(gemm_q5_0x8, q5_0_tile_whole, 8, q5_0_pair_tile, act_q8x, PAIR_MIN_TOKENS)
PAIRED_GEMM(gemm_q4_kx8, q4_k_tile, 4, q4_k_pair_tile, act_q8kx, PAIR_MIN_TOKENS)
PACKED_GEMM(gemm_q6_k6x8, group_q6_k6x8, act_q8kx)

/* The same rounding as quantise_block_scalar, 16 values at a time: round-half-even from the
   conversion, then ties moved away from zero as roundf does. */
void quantise_block_avx512(const float *x, int n, float *d_out, int8_t *q) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 vmax = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_and_ps(_mm512_loadu_ps(x + i), abs_mask));
  float amax = _mm512_reduce_max_ps(vmax);
  float d = amax / 127.0f;
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  const __m512 vid = _mm512_set1_ps(id), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  for (int i = 0; i < n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vid);
    __m512 even = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 tie = _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_sub_ps(v, t), abs_mask), half, _CMP_EQ_OQ);
    __m512 away = _mm512_add_ps(t, _mm512_or_ps(one, _mm512_andnot_ps(abs_mask, v)));
    __m512i r = _mm512_cvtps_epi32(_mm512_mask_blend_ps(tie, even, away));
    _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtsepi32_epi8(r));
  }
}

/* exp(x) for 16 lanes: exp_avx2's clamp, Cody–Waite reduction and polynomial (avx2.c), so both
   levels round alike. */
static inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* exp_shifted (ops.h) 16 lanes at a time; sixteen partial sums added in a fixed order. */
float exp_shifted_avx512(float *s, int64_t n, float max) {
  const __m512 vmax = _mm512_set1_ps(max);
  __m512 acc = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + j), vmax));
    _mm512_storeu_ps(s + j, e);
    acc = _mm512_add_ps(acc, e);
  }
  __m256 half = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  float lanes[8];
  _mm256_storeu_ps(lanes, half);
  float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  return sum + exp_shifted_avx2(s + j, n - j, max);
}

/* The chunk's softmax (ops.h): 16 heads a zmm, lane-wise over the rows. */
void latent_softmax_avx512(float *rec, int64_t R, float *s, int64_t m, int64_t H, float scale) {
  const int64_t panels = (H + 15) / 16, HS = 16 * panels;
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t p = 0; p < panels; p++) {
    __m512 vmax = _mm512_set1_ps(-INFINITY), vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < m; j++) {
      __m512 x = _mm512_mul_ps(_mm512_loadu_ps(s + j * HS + 16 * p), vscale);
      _mm512_storeu_ps(s + j * HS + 16 * p, x);
      vmax = _mm512_max_ps(x, vmax);
    }
    for (int64_t j = 0; j < m; j++) {
      __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + j * HS + 16 * p), vmax));
      _mm512_storeu_ps(s + j * HS + 16 * p, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    float mx[16], sm[16];
    _mm512_storeu_ps(mx, vmax);
    _mm512_storeu_ps(sm, vsum);
    for (int64_t i = 0; i < 16 && 16 * p + i < H; i++) {
      rec[(16 * p + i) * R] = mx[i];
      rec[(16 * p + i) * R + 1] = sm[i];
    }
  }
}

/*
 * Decode latent attention over one chunk (ops.h, latent_chunk_fn). A zmm holds one value for each
 * of 16 heads, so the whole chunk stays in that shape:
 * - scores as 8 rows × 16 heads tiles: per k one load of the packed queries and 8 FMAs with the
 *   rows' values broadcast from memory (8 independent sums cover the FMA latency);
 * - the softmax over the chunk's rows lane-wise, 16 heads at once (max, exp, sum), the scores
 *   left in place as weights s[j][h];
 * - values as 8 heads × 32 columns tiles: per row two loads and 8 broadcast weights meet 16
 *   accumulators, so the FMAs, not the loads, bound the loop.
 * 16 heads × 4,096 f16 keys: 1.3 ms a layer against 1.7–2.4 for the AVX2 composition (6 × 16
 * tiles of 8-lane FMAs, a scalar softmax per head); Intel Xeon with AMX, 2 threads, rows of 27
 * layers read in turn.
 */
#define LC_ROWS 8
#define LC_HEADS 8

#define LC_SCORE(i) c##i = _mm512_fmadd_ps(_mm512_set1_ps(r##i[k]), q, c##i);
#define LC_SCORE_STORE(i) \
  if (j0 + i < m) _mm512_storeu_ps(s + (j0 + i) * HS + 16 * p, c##i);
#define LC_VALUE(i)                                   \
  {                                                   \
    __m512 w = _mm512_set1_ps(wj[w##i]);              \
    a##i##0 = _mm512_fmadd_ps(w, v0, a##i##0);        \
    a##i##1 = _mm512_fmadd_ps(w, v1, a##i##1);        \
  }
#define LC_VALUE_STORE(i)                                                     \
  if (h0 + i < H) {                                                           \
    _mm512_mask_storeu_ps(rec + (h0 + i) * R + 8 + c, m0, a##i##0);           \
    _mm512_mask_storeu_ps(rec + (h0 + i) * R + 8 + c + 16, m1, a##i##1);      \
  }

static void latent_values(float *rec, int64_t R, const float *rows, int64_t rs, int64_t m, int64_t va, int64_t H, const float *s,
                          void (*step)(void *), void *arg);

static void latent_block(float *rec, int64_t R, const float *rows, int64_t m, int64_t W, int64_t va, const float *queries,
                         int64_t H, float scale, float *s, void (*step)(void *), void *arg) {
  const int64_t panels = (H + 15) / 16, HS = 16 * panels;
  for (int64_t p = 0; p < panels; p++) {
    const float *qp = queries + p * W * 16;
    for (int64_t j0 = 0; j0 < m; j0 += LC_ROWS) {
      /* a short tile repeats the last row and drops its sums */
#define LC_ROW(i) const float *r##i = rows + (j0 + i < m ? j0 + i : m - 1) * W;
      LC_ROW(0) LC_ROW(1) LC_ROW(2) LC_ROW(3) LC_ROW(4) LC_ROW(5) LC_ROW(6) LC_ROW(7)
#undef LC_ROW
      __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
      for (int64_t k = 0; k < W; k++) {
        __m512 q = _mm512_loadu_ps(qp + k * 16);
        LC_SCORE(0) LC_SCORE(1) LC_SCORE(2) LC_SCORE(3) LC_SCORE(4) LC_SCORE(5) LC_SCORE(6) LC_SCORE(7)
      }
      LC_SCORE_STORE(0) LC_SCORE_STORE(1) LC_SCORE_STORE(2) LC_SCORE_STORE(3)
      LC_SCORE_STORE(4) LC_SCORE_STORE(5) LC_SCORE_STORE(6) LC_SCORE_STORE(7)
      if (step && (j0 % 16 == 8 || j0 + LC_ROWS >= m) && j0 % 16 + LC_ROWS <= 16) /* per 16 rows, for each 32 columns */
        for (int64_t k = 0; k < W; k += 32) step(arg);
    }
  }
  latent_softmax_avx512(rec, R, s, m, H, scale);
  latent_values(rec, R, rows, W, m, va, H, s, step, arg);
}

/* The values of a chunk, rows[j·rs + c] for c < va, weighted by s[j·16⌈H/16⌉ + h] into the records:
   8 heads × 32 columns tiles (see latent_block). */
static void latent_values(float *rec, int64_t R, const float *rows, int64_t rs, int64_t m, int64_t va, int64_t H, const float *s,
                          void (*step)(void *), void *arg) {
  const int64_t HS = 16 * ((H + 15) / 16);
  for (int64_t c = 0; c < va; c += 32) {
    int64_t n = va - c < 32 ? va - c : 32;
    __mmask16 m0 = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1), m1 = (__mmask16)(n >= 32 ? 0xFFFF : n > 16 ? (1u << (n - 16)) - 1 : 0);
    for (int64_t h0 = 0; h0 < H; h0 += LC_HEADS) {
      /* a short tile repeats the last head and drops its sums */
#define LC_HEAD(i) const int64_t w##i = h0 + i < H ? h0 + i : H - 1;
      LC_HEAD(0) LC_HEAD(1) LC_HEAD(2) LC_HEAD(3) LC_HEAD(4) LC_HEAD(5) LC_HEAD(6) LC_HEAD(7)
#undef LC_HEAD
      __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      __m512 a40 = a00, a41 = a00, a50 = a00, a51 = a00, a60 = a00, a61 = a00, a70 = a00, a71 = a00;
      for (int64_t j = 0; j < m; j++) {
        const float *row = rows + j * rs + c, *wj = s + j * HS;
        __m512 v0 = _mm512_maskz_loadu_ps(m0, row), v1 = _mm512_maskz_loadu_ps(m1, row + 16);
        LC_VALUE(0) LC_VALUE(1) LC_VALUE(2) LC_VALUE(3) LC_VALUE(4) LC_VALUE(5) LC_VALUE(6) LC_VALUE(7)
      }
      LC_VALUE_STORE(0) LC_VALUE_STORE(1) LC_VALUE_STORE(2) LC_VALUE_STORE(3)
      LC_VALUE_STORE(4) LC_VALUE_STORE(5) LC_VALUE_STORE(6) LC_VALUE_STORE(7)
    }
    if (step) /* per 32 columns, for each 32 rows × 16 columns */
      for (int64_t i = 0; i < (n + 15) / 16 * ((m + 31) / 32); i++) step(arg);
  }
}

/* gemm_f32's 6 × 16 tile in one zmm a row: per k one panel load and six FMAs with A's values
   broadcast from memory (AVX2 takes two loads and twelve 8-lane FMAs for the same tile). Each
   element is one sum over k in order, as every level's tile. */
void f32_tile_avx512(float out[GEMM_F32_MR][GEMM_F32_NR], const float *const rows[GEMM_F32_MR], const float *panel, int64_t ld,
                     int64_t K) {
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
  const float *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3], *a4 = rows[4], *a5 = rows[5];
  for (int64_t k = 0; k < K; k++) {
    __m512 b = _mm512_loadu_ps(panel + k * ld);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[k]), b, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[k]), b, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[k]), b, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[k]), b, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[k]), b, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[k]), b, c5);
  }
  _mm512_storeu_ps(out[0], c0);
  _mm512_storeu_ps(out[1], c1);
  _mm512_storeu_ps(out[2], c2);
  _mm512_storeu_ps(out[3], c3);
  _mm512_storeu_ps(out[4], c4);
  _mm512_storeu_ps(out[5], c5);
}

/* Two panels: twelve accumulators, two panel loads and six broadcasts per k, so the FMAs rather
   than the loads bound it; the same sums as two calls of the tile above. */
void f32_tile2_avx512(float out[GEMM_F32_MR][2 * GEMM_F32_NR], const float *const rows[GEMM_F32_MR], const float *panel0,
                      const float *panel1, int64_t ld, int64_t K) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3], *a4 = rows[4], *a5 = rows[5];
  for (int64_t k = 0; k < K; k++) {
    __m512 b0 = _mm512_loadu_ps(panel0 + k * ld), b1 = _mm512_loadu_ps(panel1 + k * ld), x;
    x = _mm512_set1_ps(a0[k]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
    x = _mm512_set1_ps(a1[k]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
    x = _mm512_set1_ps(a2[k]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
    x = _mm512_set1_ps(a3[k]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
    x = _mm512_set1_ps(a4[k]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
    x = _mm512_set1_ps(a5[k]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
  }
  _mm512_storeu_ps(out[0], c00); _mm512_storeu_ps(out[0] + 16, c01);
  _mm512_storeu_ps(out[1], c10); _mm512_storeu_ps(out[1] + 16, c11);
  _mm512_storeu_ps(out[2], c20); _mm512_storeu_ps(out[2] + 16, c21);
  _mm512_storeu_ps(out[3], c30); _mm512_storeu_ps(out[3] + 16, c31);
  _mm512_storeu_ps(out[4], c40); _mm512_storeu_ps(out[4] + 16, c41);
  _mm512_storeu_ps(out[5], c50); _mm512_storeu_ps(out[5] + 16, c51);
}

/* Pool scratch slots of the chunk's rows as f32 (rows_f16, or rows not one block) and its scores;
   the AMX kernel (amx.c) uses these two for its own rows and scores. */
#define LC_SLOT_BLOCK (POOL_SCRATCH_LEVEL + 0)
#define LC_SLOT_SCORES (POOL_SCRATCH_LEVEL + 1)

void latent_chunk_avx512(float *rec, int64_t R, const void *const *rows, int rows_f16, int64_t m, int64_t W, int64_t va,
                         const float *queries, int queries_new, int64_t H, float scale, void (*step)(void *), void *arg) {
  (void)queries_new;
  if (m <= 0) return;
  float *s = pool_scratch(LC_SLOT_SCORES, sizeof(float) * (size_t)(m * 16 * ((H + 15) / 16)));
  if (!s) abort();
  const float *block = rows[0];
  int contiguous = !rows_f16;
  for (int64_t j = 1; j < m && contiguous; j++) contiguous = (const float *)rows[j] == block + j * W;
  if (!contiguous) {
    float *b = pool_scratch(LC_SLOT_BLOCK, sizeof(float) * (size_t)(m * W));
    if (!b) abort();
    for (int64_t j = 0; j < m; j++) {
      if (!rows_f16) {
        memcpy(b + j * W, rows[j], sizeof(float) * (size_t)W);
        continue;
      }
      const uint16_t *h = rows[j];
      int64_t k = 0;
      for (; k + 16 <= W; k += 16) _mm512_storeu_ps(b + j * W + k, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + k))));
      for (; k < W; k++) b[j * W + k] = f16_bits_to_f32(h[k]);
    }
    block = b;
  }
  latent_block(rec, R, block, m, W, va, queries, H, scale, s, step, arg);
}

/*
 * Decode latent attention over one chunk of q8 rows (ops.h, latent_chunk_q8_fn): the scores as
 * 8-bit dot products, the rows once converted for every head.
 * - Per chunk, each row's bytes offset to unsigned (q + 128, vpdpbusd's first operand), its block
 *   scales as f32, and its first va values dequantised to f32 for the values product.
 * - Scores as 8 rows × 16 heads tiles, per block of 32 values: the panel's 8 query vectors (16
 *   heads × 4 values) in registers, per row 8 vpdpbusd with the row's 4 bytes broadcast, started
 *   from −128·Σq (the offset's share), then converted and scaled by the row's and the queries'
 *   block scales. Every block sum is exact in int32, so the scores differ from the reference's
 *   only in the f32 products and sums over the blocks.
 * - The softmax and the values as latent_block's, over the dequantised rows.
 * A 32-value block of 16 heads takes 8 vpdpbusd a row against 32 FMAs in f32.
 */
#define LQ_SLOT_BYTES (POOL_SCRATCH_LEVEL + 2)
#define LQ_SLOT_SCALES (POOL_SCRATCH_LEVEL + 5)

#define LQ_ROW_SCORE(i)                                                                                   \
  {                                                                                                       \
    const uint8_t *rb = r##i + 32 * b;                                                                    \
    __m512i a = bias;                                                                                     \
    int32_t w0, w1, w2, w3, w4, w5, w6, w7;                                                               \
    memcpy(&w0, rb, 4); memcpy(&w1, rb + 4, 4); memcpy(&w2, rb + 8, 4); memcpy(&w3, rb + 12, 4);         \
    memcpy(&w4, rb + 16, 4); memcpy(&w5, rb + 20, 4); memcpy(&w6, rb + 24, 4); memcpy(&w7, rb + 28, 4);   \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w0), q0);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w1), q1);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w2), q2);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w3), q3);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w4), q4);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w5), q5);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w6), q6);                                                \
    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(w7), q7);                                                \
    c##i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(dq, _mm512_set1_ps(d##i[b])), c##i);      \
  }

void latent_chunk_q8_avx512(float *rec, int64_t R, const uint8_t *const *rows, int64_t m, int64_t W, int64_t va,
                            const latent_queries_q8 *queries, int64_t H, float scale, void (*step)(void *), void *arg) {
  if (m <= 0) return;
  const int64_t nb = (W + 31) / 32, Wp = 32 * nb, panels = (H + 15) / 16, HS = 16 * panels;
  uint8_t *ru = pool_scratch(LQ_SLOT_BYTES, (size_t)(m * Wp));
  float *dr = pool_scratch(LQ_SLOT_SCALES, sizeof(float) * (size_t)(m * nb));
  float *vr = pool_scratch(LC_SLOT_BLOCK, sizeof(float) * (size_t)(m * va + 16));
  float *s = pool_scratch(LC_SLOT_SCORES, sizeof(float) * (size_t)(m * HS));
  if (!ru || !dr || !vr || !s) abort();
  const __m256i offset = _mm256_set1_epi8((char)0x80);
  for (int64_t j = 0; j < m; j++) {
    const uint8_t *row = rows[j];
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *block = row + 34 * b + 2;
      int64_t n = W - 32 * b < 32 ? W - 32 * b : 32;
      uint16_t bits;
      memcpy(&bits, block - 2, 2);
      const float d = _cvtsh_ss(bits);
      dr[j * nb + b] = d;
      /* a short last block's other bytes are the next row's: not read, and 0x80 (zero) here */
      __m256i q = n == 32 ? _mm256_loadu_si256((const __m256i *)block) : _mm256_maskz_loadu_epi8((__mmask32)((1u << n) - 1), block);
      _mm256_storeu_si256((__m256i *)(ru + j * Wp + 32 * b), _mm256_xor_si256(q, offset));
      int64_t nv = va - 32 * b < n ? va - 32 * b : n; /* the values' share of the block */
      if (nv <= 0) continue;
      __m512 vd = _mm512_set1_ps(d);
      __m512 lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))), vd);
      __m512 hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))), vd);
      float *v = vr + j * va + 32 * b;
      if (nv == 32) {
        _mm512_storeu_ps(v, lo);
        _mm512_storeu_ps(v + 16, hi);
      } else {
        _mm512_mask_storeu_ps(v, (__mmask16)(nv >= 16 ? 0xFFFF : (1u << nv) - 1), lo);
        if (nv > 16) _mm512_mask_storeu_ps(v + 16, (__mmask16)((1u << (nv - 16)) - 1), hi);
      }
    }
  }

  for (int64_t p = 0; p < panels; p++) {
    const int8_t *qp = queries->qs + p * nb * 512;
    const float *qd = queries->d + p * nb * 16;
    const int32_t *qsum = queries->sum + p * nb * 16;
    for (int64_t j0 = 0; j0 < m; j0 += LC_ROWS) {
      /* a short tile repeats the last row and drops its sums */
#define LQ_ROW(i)                                                    \
  const int64_t row##i = j0 + i < m ? j0 + i : m - 1;                \
  const uint8_t *r##i = ru + row##i * Wp;                            \
  const float *d##i = dr + row##i * nb;
      LQ_ROW(0) LQ_ROW(1) LQ_ROW(2) LQ_ROW(3) LQ_ROW(4) LQ_ROW(5) LQ_ROW(6) LQ_ROW(7)
#undef LQ_ROW
      __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
      for (int64_t b = 0; b < nb; b++) {
        const int8_t *qb = qp + b * 512;
        const __m512i q0 = _mm512_loadu_si512(qb), q1 = _mm512_loadu_si512(qb + 64), q2 = _mm512_loadu_si512(qb + 128),
                      q3 = _mm512_loadu_si512(qb + 192), q4 = _mm512_loadu_si512(qb + 256), q5 = _mm512_loadu_si512(qb + 320),
                      q6 = _mm512_loadu_si512(qb + 384), q7 = _mm512_loadu_si512(qb + 448);
        const __m512i bias = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_loadu_si512(qsum + b * 16), 7));
        const __m512 dq = _mm512_loadu_ps(qd + b * 16);
        LQ_ROW_SCORE(0) LQ_ROW_SCORE(1) LQ_ROW_SCORE(2) LQ_ROW_SCORE(3)
        LQ_ROW_SCORE(4) LQ_ROW_SCORE(5) LQ_ROW_SCORE(6) LQ_ROW_SCORE(7)
      }
      LC_SCORE_STORE(0) LC_SCORE_STORE(1) LC_SCORE_STORE(2) LC_SCORE_STORE(3)
      LC_SCORE_STORE(4) LC_SCORE_STORE(5) LC_SCORE_STORE(6) LC_SCORE_STORE(7)
      if (step && (j0 % 16 == 8 || j0 + LC_ROWS >= m) && j0 % 16 + LC_ROWS <= 16) /* per 16 rows, for each block */
        for (int64_t b = 0; b < nb; b++) step(arg);
    }
  }
  latent_softmax_avx512(rec, R, s, m, H, scale);
  latent_values(rec, R, vr, va, m, va, H, s, step, arg);
}

const kernel_ops ops_avx512 = {
    .name = "avx512",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q5_0X8] = gemm_q5_0x8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .latent_chunk = latent_chunk_avx512,
    .latent_chunk_q8 = latent_chunk_q8_avx512,
    .f32_tile = f32_tile_avx512,
    .f32_tile2 = f32_tile2_avx512,
    .quantise_block = quantise_block_avx512,
    .silu_mul = silu_mul_avx2,
    .exp_shifted = exp_shifted_avx512,
    .scale_max = scale_max_avx2,
};
