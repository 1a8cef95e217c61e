#ifndef DSEEK_AVX512_TILES_H
#define DSEEK_AVX512_TILES_H
/*
 * The AVX-512 level's tiles over the packed layouts (ops.h), shared by the AVX-512 level
 * (avx512.c) and the AMX level (amx.c), which runs them for the rows and tokens its matrix tiles
 * leave over. Include only from a file built with the AVX-512 flags.
 *
 * One `vpdpbusd` multiplies 64 unsigned weight bytes by 64 signed activation bytes and sums each 4
 * into an int32 lane: over a packed row group lane 2r+k is row r's elements 4k..4k+3 of an
 * 8-element chunk, so one broadcast activation chunk meets 8 rows and the lane sums belong to rows
 * without any horizontal reduction until a tile ends.
 *
 * Tiles are 8 rows × up to 8 tokens (4 for the K formats): each weight block is unpacked once
 * per tile and used for every token of it; a token's sums are accumulated in the same order
 * whatever the tile, the batch or the thread count.
 *
 * The 32-element formats add a row's two lane halves (elements 4k..4k+3 of each chunk, k = 0, 1)
 * as integers per block, so that a row's float sum is Σ_b (d_w·d_x)·Σq_w·q_x block by block,
 * exactly the order of an AMX tile (amx.c) and of the 16-row pair tiles. The K formats sum a
 * super-block in integers.
 */
#include <immintrin.h>
#include <string.h>

#include "../../ops.h"
#include "prefetch.h"

#ifndef INLINE
#define INLINE static inline __attribute__((always_inline))
#endif

INLINE __m512i bcast8(const void *p) {
  long long v;
  memcpy(&v, p, 8);
  return _mm512_set1_epi64(v);
}

INLINE __m512i bcast_pair16(int16_t lo, int16_t hi) {
  return _mm512_set1_epi32((int32_t)(uint16_t)lo | ((int32_t)(uint16_t)hi << 16));
}

/* 8 f16 scales, each to two lanes (2r, 2r+1). */
INLINE __m512 scales_x2(const uint8_t *p) {
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  return _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p))));
}

/* Lanes 2r (a whole-block tile keeps each row's sum in both lanes of its pair). */
INLINE __m256 even_lanes(__m512 acc) {
  const __m512i even = _mm512_set_epi32(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0);
  return _mm512_castps512_ps256(_mm512_permutexvar_ps(even, acc));
}

/* A row's two lane halves (2r, 2r+1) added as integers into both lanes. */
INLINE __m512i pair_whole(__m512i s) { return _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_CDAB)); }

INLINE __m256i pair_sums_i32(__m512i acc) {
  const __m512i even = _mm512_set_epi32(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0);
  __m512i p = _mm512_add_epi32(acc, _mm512_shuffle_epi32(acc, _MM_PERM_CDAB));
  return _mm512_castsi512_si256(_mm512_permutexvar_epi32(even, p));
}

/* ---------- the 32-element formats: Q4_0, Q5_0, Q8_0 ---------- */

/* A group-block's weights as four registers of the lane layout above: R[c] holds elements
   8c … 8c+7 of the 8 rows (lane 2r+k: row r's elements 8c+4k … 8c+4k+3), stored values (the
   offset is the activations' bias). */
typedef void (*regs32_fn)(const uint8_t *blk, __m512i R[4]);

/* Q4_0 (144 bytes): low nibbles of qs[0], qs[1] are elements 0–7, 8–15; high nibbles 16–31. */
INLINE void q4_0_regs(const uint8_t *blk, __m512i R[4]) {
  const __m512i m4 = _mm512_set1_epi8(15);
  const __m512i A = _mm512_loadu_si512(blk + 16), B = _mm512_loadu_si512(blk + 80);
  R[0] = _mm512_and_si512(A, m4);
  R[1] = _mm512_and_si512(B, m4);
  R[2] = _mm512_and_si512(_mm512_srli_epi16(A, 4), m4);
  R[3] = _mm512_and_si512(_mm512_srli_epi16(B, 4), m4);
}

/* Q5_0 (176 bytes): Q4_0's nibbles with a fifth bit from a byte mask. */
INLINE __m512i bits_mask(const uint8_t *p) {
  unsigned long long m;
  memcpy(&m, p, 8);
  return _mm512_maskz_mov_epi8((__mmask64)m, _mm512_set1_epi8(16));
}
INLINE void q5_0_regs(const uint8_t *blk, __m512i R[4]) {
  const __m512i m4 = _mm512_set1_epi8(15);
  const __m512i A = _mm512_loadu_si512(blk + 48), B = _mm512_loadu_si512(blk + 112);
  R[0] = _mm512_or_si512(_mm512_and_si512(A, m4), bits_mask(blk + 16));
  R[1] = _mm512_or_si512(_mm512_and_si512(B, m4), bits_mask(blk + 24));
  R[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(A, 4), m4), bits_mask(blk + 32));
  R[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(B, 4), m4), bits_mask(blk + 40));
}

/* Q8_0 (272 bytes): the weights biased by +128, four 8-element chunks as they lie. */
INLINE void q8_0_regs(const uint8_t *blk, __m512i R[4]) {
  for (int c = 0; c < 4; c++) R[c] = _mm512_loadu_si512(blk + 16 + 64 * c);
}

/* One group (8 rows) × nt tokens. Each lane's sum starts at the activations' bias (act_q8x). */
INLINE void x32_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt,
                     const regs32_fn regs, const int bytes) {
  __m512 acc[8];
  for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * bytes;
    PREFETCH_AHEAD(blk, bytes);
    const __m512 dw = scales_x2(blk);
    __m512i R[4];
    regs(blk, R);
    for (int t = 0; t < nt; t++) {
      const act_q8x *a = x + t * xs + b;
      __m512i s = _mm512_dpbusd_epi32(bcast8(a->bias), R[0], bcast8(a->q));
      s = _mm512_dpbusd_epi32(s, R[1], bcast8(a->q + 8));
      s = _mm512_dpbusd_epi32(s, R[2], bcast8(a->q + 16));
      s = _mm512_dpbusd_epi32(s, R[3], bcast8(a->q + 24));
      s = pair_whole(s);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[t]);
    }
  }
  for (int t = 0; t < nt; t++) _mm256_storeu_ps(y + t * ys, even_lanes(acc[t]));
}

/* The 8 f16 scales at bg and the 8 at bh as 16 floats (rows of two groups, one per lane). */
INLINE __m512 scales_two_groups(const uint8_t *bg, const uint8_t *bh) {
  return _mm512_cvtph_ps(
      _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)bg)), _mm_loadu_si128((const __m128i *)bh), 1));
}

/* s + the lane sums of w's unsigned bytes times the 4 signed bytes at p, which the instruction
   broadcasts itself (an embedded {1to16} operand). For _mm512_set1_epi32 of them GCC emits a
   separate vpbroadcastd, and a Zen 4 core then ran the pair tile's operation mix ≈ 15 % slower
   (8 products, conversion, scale and add per token: 7.4 against 8.4–9.2 TSC cycles, measured
   alone). */
INLINE __m512i dpbusd_bcast4(__m512i s, __m512i w, const int8_t *p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
  return s;
}

/*
 * Two groups (16 rows: wg's then wh's) × nt tokens, one row per lane. Each block's registers of
 * the two groups are permuted once so that lane n holds row n's 4 elements 4m … 4m+3 (Z[m]); every
 * token then takes 8 `vpdpbusd` whose 4-byte broadcasts the instruction makes itself, and one
 * conversion, scale and add for all 16 rows, where two 8-row tiles take 8 separate 8-byte
 * broadcasts and those three operations twice (a Zen 4 core issues about two 512-bit operations
 * a cycle, and a separate broadcast costs like one). A row's sums are those of x32_tile with
 * its pair sums added per block, in the same order, so a group gives the same bits alone or paired.
 */
INLINE void x32_pair_tile(float *y, int64_t ys, const uint8_t *wg, const uint8_t *wh, const act_q8x *x, int64_t xs,
                          int64_t blocks, const int nt, const regs32_fn regs, const int bytes) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 acc[8];
  for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *bg = wg + b * bytes, *bh = wh + b * bytes;
    PREFETCH_AHEAD(bg, bytes);
    PREFETCH_AHEAD(bh, bytes);
    const __m512 dw = scales_two_groups(bg, bh);
    __m512i G[4], H[4], Z[8];
    regs(bg, G);
    regs(bh, H);
    for (int c = 0; c < 4; c++) {
      Z[2 * c] = _mm512_permutex2var_epi32(G[c], even, H[c]);
      Z[2 * c + 1] = _mm512_permutex2var_epi32(G[c], odd, H[c]);
    }
    for (int t = 0; t < nt; t++) {
      const act_q8x *a = x + t * xs + b;
      __m512i s = _mm512_set1_epi32(a->bias_sum);
      for (int m = 0; m < 8; m++) s = dpbusd_bcast4(s, Z[m], a->q + 4 * m);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[t]);
    }
  }
  for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

#define X32_TILES(FMT, BYTES)                                                                                           \
  INLINE void FMT##_tile_whole(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks,   \
                               const int nt) {                                                                          \
    x32_tile(y, ys, wg, x, xs, blocks, nt, FMT##_regs, BYTES);                                                       \
  }                                                                                                                     \
  INLINE void FMT##_pair_tile(float *y, int64_t ys, const uint8_t *wg, const uint8_t *wh, const act_q8x *x, int64_t xs, \
                              int64_t blocks, const int nt) {                                                           \
    x32_pair_tile(y, ys, wg, wh, x, xs, blocks, nt, FMT##_regs, BYTES);                                                 \
  }
X32_TILES(q4_0, 144)
X32_TILES(q5_0, 176)
X32_TILES(q8_0, 272)

/* ---------- Q4_K ---------- */

/* How far ahead the one-group Q4_K tile (decode) asks for its blocks. Zen 4, 2 threads, 2,816 ×
   2,048 one token from DRAM, eight alternating rounds: 4,096 bytes (the other formats' distance)
   read Q4_K at 16.6–24.0 GB/s, median 21.8; 1,024 at 22.0–28.3, median 24.8 (1,536 and 512: 24.3,
   23.5). Q4_0 runs the other way (4,096: 28.6–32.8; 1,024: 22.1–26.8), Q8_0 and Q6_K within noise. */
#ifndef Q4_K_PREFETCH_DISTANCE
#define Q4_K_PREFETCH_DISTANCE 1024
#endif

/* The 8 rows' sums of a packed quad-lane vector (lanes 4L … 4L+3: rows 2L, 2L+1, 2L, 2L+1). */
INLINE __m256i quad_sums_i32(__m512i acc) {
  const __m512i rows = _mm512_set_epi32(13, 12, 9, 8, 5, 4, 1, 0, 13, 12, 9, 8, 5, 4, 1, 0);
  __m512i p = _mm512_add_epi32(acc, _mm512_shuffle_epi32(acc, _MM_PERM_BADC));
  return _mm512_castsi512_si256(_mm512_permutexvar_epi32(rows, p));
}

/*
 * Per 64-element step p, each token's two sub-block sums s0 (sub-block 2p) and s1 (2p+1) are
 * packed to int16 (16 products of a nibble and a q8 value: |s| ≤ 16·15·128 < 2^15, exact) and
 * scaled by one `vpdpwssd`, instead of two 32-bit multiplies and two adds per token: `packs`
 * puts, in each 128-bit lane L, (row 2L, 2p), (2L+1, 2p), (2L, 2p+1), (2L+1, 2p+1) as the word
 * pairs of dwords 0 … 3 (both words of a pair are one row's two lane halves), and the step's
 * scale words are permuted to match once per block for all tokens.
 */
INLINE void q4_k_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int nt) {
  const __m512i m4 = _mm512_set1_epi8(15);
  /* word 8L + w ← scale byte 2r + s (the [r][s] bytes of a step): w 0,1 → (2L, 0); 2,3 → (2L+1, 0);
     4,5 → (2L, 1); 6,7 → (2L+1, 1) */
  const __m512i scale_words = _mm512_set_epi16(15, 15, 13, 13, 14, 14, 12, 12, 11, 11, 9, 9, 10, 10, 8, 8,
                                               7, 7, 5, 5, 6, 6, 4, 4, 3, 3, 1, 1, 2, 2, 0, 0);
  __m256 acc[4];
  for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 1184;
    PREFETCH_AHEAD_BY(blk, 1184, Q4_K_PREFETCH_DISTANCE);
    __m512i isum[4];
    __m256i msum[4];
    for (int t = 0; t < nt; t++) {
      isum[t] = _mm512_setzero_si512();
      msum[t] = _mm256_setzero_si256();
    }
    for (int p = 0; p < 4; p++) {
      const __m512i sc = _mm512_permutexvar_epi16(
          scale_words, _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * p)))));
      const __m256i mn = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(blk + 96 + 16 * p)));
      __m512i lo[4], hi[4];
      for (int k = 0; k < 4; k++) {
        __m512i q = _mm512_loadu_si512(blk + 160 + (p * 4 + k) * 64);
        lo[k] = _mm512_and_si512(q, m4);
        hi[k] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      }
      for (int t = 0; t < nt; t++) {
        const act_q8kx *a = x + t * xs + b;
        const int8_t *q0 = a->q + 64 * p, *q1 = q0 + 32;
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[0], bcast8(q0));
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[0], bcast8(q1));
        for (int k = 1; k < 4; k++) {
          s0 = _mm512_dpbusd_epi32(s0, lo[k], bcast8(q0 + 8 * k));
          s1 = _mm512_dpbusd_epi32(s1, hi[k], bcast8(q1 + 8 * k));
        }
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_packs_epi32(s0, s1), sc);
        msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mn, _mm256_set1_epi32((int32_t)(uint16_t)a->bs32[2 * p] |
                                                                                  ((int32_t)(uint16_t)a->bs32[2 * p + 1] << 16))));
      }
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)));
    for (int t = 0; t < nt; t++) {
      const __m256 dx = _mm256_set1_ps(x[t * xs + b].d);
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(quad_sums_i32(isum[t])), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(msum[t]), acc[t]);
    }
  }
  for (int t = 0; t < nt; t++) _mm256_storeu_ps(y + t * ys, acc[t]);
}

/* s + the lane sums of w's int16 pairs times the 2 int16 at p, broadcast by the instruction. */
INLINE __m512i dpwssd_bcast4(__m512i s, __m512i w, const int16_t *p) {
  __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
  return s;
}

/*
 * Two groups (16 rows) × up to 8 tokens, one row per lane, as x32_pair_tile: per 32-element
 * sub-block j the two groups' nibbles are permuted once into Z[m] (row n's elements 4m … 4m+3 of
 * the sub-block), and each token takes 8 `vpdpbusd` with embedded broadcasts and one `vpdpwssd`
 * that scales the sub-block sum (an int32 within ±2^15: its low word times the scale, its sign
 * word times the scale's zero high word). The mins take one `vpdpwssd` per 64 elements against
 * the activations' two Σq. A row's integer sums and float steps are q4_k_tile's: the same bits.
 */
INLINE void q4_k_pair_tile(float *y, int64_t ys, const uint8_t *wg, const uint8_t *wh, const act_q8kx *x, int64_t xs,
                           int64_t blocks, const int nt) {
  const __m512i m4 = _mm512_set1_epi8(15);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 acc[8];
  for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *bg = wg + b * 1184, *bh = wh + b * 1184;
    PREFETCH_AHEAD(bg, 1184);
    PREFETCH_AHEAD(bh, 1184);
    __m512i isum[8];
    for (int t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; j++) {
      const int p = j >> 1, hi = j & 1;
      /* scales [r][s] of sub-blocks 2p, 2p+1 as int32 lanes 2r+s; lane n ← row n's scale of j */
      const __m512i sc = _mm512_permutex2var_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(bg + 32 + 16 * p))),
                                                   hi ? odd : even,
                                                   _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(bh + 32 + 16 * p))));
      __m512i Z[8];
      for (int k = 0; k < 4; k++) {
        __m512i G = _mm512_loadu_si512(bg + 160 + (4 * p + k) * 64), H = _mm512_loadu_si512(bh + 160 + (4 * p + k) * 64);
        if (hi) {
          G = _mm512_srli_epi16(G, 4);
          H = _mm512_srli_epi16(H, 4);
        }
        G = _mm512_and_si512(G, m4);
        H = _mm512_and_si512(H, m4);
        Z[2 * k] = _mm512_permutex2var_epi32(G, even, H);
        Z[2 * k + 1] = _mm512_permutex2var_epi32(G, odd, H);
      }
      for (int t = 0; t < nt; t++) {
        const int8_t *q = x[t * xs + b].q + 32 * j;
        __m512i s = _mm512_setzero_si512();
        for (int m = 0; m < 8; m++) s = dpbusd_bcast4(s, Z[m], q + 4 * m);
        isum[t] = _mm512_dpwssd_epi32(isum[t], s, sc);
      }
    }
    /* mins [r][s] as int16 pairs (min of 2p, min of 2p+1) per row lane */
    __m512i mw[4];
    for (int p = 0; p < 4; p++)
      mw[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(bg + 96 + 16 * p)))),
                                 _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(bh + 96 + 16 * p))), 1);
    const __m512 d = scales_two_groups(bg, bh), dmin = scales_two_groups(bg + 16, bh + 16);
    for (int t = 0; t < nt; t++) {
      const act_q8kx *a = x + t * xs + b;
      __m512i msum = _mm512_setzero_si512();
      for (int p = 0; p < 4; p++) msum = dpwssd_bcast4(msum, mw[p], a->bs32 + 2 * p);
      const __m512 dx = _mm512_set1_ps(a->d);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[t]), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(msum), acc[t]);
    }
  }
  for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

/* ---------- Q6_K ---------- */

/* The four 8-element chunks 4p … 4p+3 of 8 rows as bytes 0..63 (8 bytes per row) from a
   LAYOUT_Q6_K6X8 block: low nibbles of ql[p][k] are chunk 4p+k, high nibbles 4p+2+k, and qh[p]'s
   bits 2j, 2j+1 chunk 4p+j's high bits (moved to bits 4, 5: 16-bit shifts by at most 4 bring no bit
   of the neighbouring byte under the 0x30 mask). */
INLINE void q6_k6_chunks(const uint8_t *blk, int p, __m512i q[4]) {
  const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
  const __m512i L0 = _mm512_loadu_si512(blk + 144 + 128 * p), L1 = _mm512_loadu_si512(blk + 144 + 128 * p + 64);
  const __m512i H = _mm512_loadu_si512(blk + 1168 + 64 * p);
  q[0] = _mm512_or_si512(_mm512_and_si512(L0, m4), _mm512_and_si512(_mm512_slli_epi16(H, 4), m30));
  q[1] = _mm512_or_si512(_mm512_and_si512(L1, m4), _mm512_and_si512(_mm512_slli_epi16(H, 2), m30));
  q[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L0, 4), m4), _mm512_and_si512(H, m30));
  q[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L1, 4), m4), _mm512_and_si512(_mm512_srli_epi16(H, 2), m30));
}

/* LAYOUT_Q6_K6X8 (1,680 bytes per group and super-block, the file's 6.56 bits: fewer bytes for a
   decode step that streams them from DRAM), joined to 8-bit chunks in registers. */
INLINE void q6_k6_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int nt) {
  const int bytes = 1680;
  __m256 acc[4];
  for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * bytes;
    __m512i isum[4];
    __m256i corr[4];
    for (int t = 0; t < nt; t++) {
      isum[t] = _mm512_setzero_si512();
      corr[t] = _mm256_setzero_si256();
    }
    for (int p = 0; p < 8; p++) {
      /* groups 2p (chunks 4p, 4p+1) and 2p+1 (chunks 4p+2, 4p+3); their scales to lanes (2r, 2r+1) */
      /* a share of the block 4 KB ahead per step, not 27 lines at once: bursts stall the prefetcher */
      PREFETCH_AHEAD(blk + 210 * p, 256);
      const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 16 + 16 * p)));
      const __m512i sc0 = _mm512_shuffle_epi32(sc, _MM_PERM_CCAA), sc1 = _mm512_shuffle_epi32(sc, _MM_PERM_DDBB);
      __m512i c[4];
      q6_k6_chunks(blk, p, c);
      const __m512i q0 = c[0], q1 = c[1], q2 = c[2], q3 = c[3];
      for (int t = 0; t < nt; t++) {
        const int8_t *xq = x[t * xs + b].q + 32 * p;
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, bcast8(xq)), q1, bcast8(xq + 8));
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q2, bcast8(xq + 16)), q3, bcast8(xq + 24));
        isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0), _mm512_mullo_epi32(s1, sc1)));
      }
    }
    for (int p = 0; p < 8; p++) {
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 16 + 16 * p)));
      for (int t = 0; t < nt; t++) {
        const act_q8kx *a = x + t * xs + b;
        corr[t] = _mm256_add_epi32(corr[t], _mm256_madd_epi16(sc16, _mm256_set1_epi32((int32_t)(uint16_t)a->bs16[2 * p] |
                                                                                      ((int32_t)(uint16_t)a->bs16[2 * p + 1] << 16))));
      }
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
    for (int t = 0; t < nt; t++) {
      __m256i total = _mm256_sub_epi32(pair_sums_i32(isum[t]), _mm256_slli_epi32(corr[t], 5)); /* − 32·Σ sc·Σq */
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[t * xs + b].d)), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < nt; t++) _mm256_storeu_ps(y + t * ys, acc[t]);
}

/* One row group: token tiles of MAX (a constant per layout), the tail with its own constant size. */
#define GROUP(NAME, TILE, ACT, MAX)                                                                                      \
  INLINE void NAME(float *yg, int64_t ys, const uint8_t *wg, const ACT *x, int64_t xs, int64_t blocks, int64_t tokens) { \
    int64_t t = 0;                                                                                                       \
    for (; t + MAX <= tokens; t += MAX) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, MAX);                          \
    switch (tokens - t) {                                                                                                \
      case 7: if (MAX > 7) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 7); break;                                  \
      case 6: if (MAX > 6) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 6); break;                                  \
      case 5: if (MAX > 5) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 5); break;                                  \
      case 4: if (MAX > 4) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 4); break;                                  \
      case 3: TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 3); break;                                               \
      case 2: TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 2); break;                                               \
      case 1: TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 1); break;                                               \
      default: break;                                                                                                    \
    }                                                                                                                    \
  }

/* Row groups [g0, g1): pairs on PAIR (16 rows × up to 8 tokens) while at least PAIR_MIN_TOKENS
   tokens share the weights, the rest one group at a time on SINGLE (the same bits). */
#define PAIRED_GEMM(NAME, SINGLE, SINGLE_MAX, PAIR, ACT, PAIR_MIN_TOKENS)                                               \
  GROUP(NAME##_single, SINGLE, ACT, SINGLE_MAX)                                                                         \
  INLINE void NAME##_pair(float *yg, int64_t ys, const uint8_t *wg, size_t gbytes, const ACT *x, int64_t xs,             \
                          int64_t blocks, int64_t tokens) {                                                             \
    int64_t t = 0;                                                                                                      \
    for (; t + 8 <= tokens; t += 8) PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 8);                   \
    switch (tokens - t) {                                                                                               \
      case 7: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 7); break;                                 \
      case 6: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 6); break;                                 \
      case 5: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 5); break;                                 \
      case 4: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 4); break;                                 \
      case 3: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 3); break;                                 \
      case 2: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 2); break;                                 \
      case 1: PAIR(yg + t * ys, ys, wg, wg + gbytes, x + t * xs, xs, blocks, 1); break;                                 \
      default: break;                                                                                                   \
    }                                                                                                                   \
  }                                                                                                                     \
  static void NAME(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *x, int64_t xs, int64_t blocks,   \
                   int64_t tokens, int64_t g0, int64_t g1) {                                                            \
    int64_t g = g0;                                                                                                     \
    if (tokens >= PAIR_MIN_TOKENS)                                                                                      \
      for (; g + 2 <= g1; g += 2) NAME##_pair(y + 8 * g, ys, w + (size_t)g * gbytes, gbytes, x, xs, blocks, tokens);      \
    for (; g < g1; g++) NAME##_single(y + 8 * g, ys, w + (size_t)g * gbytes, (const ACT *)x, xs, blocks, tokens);       \
  }

#endif
