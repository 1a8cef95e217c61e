/*
 * The AVX2 level (AVX2 + FMA + F16C; built with those flags alone). Over a packed row group
 * (ops.h) one 256-bit register holds 4 rows × 8 bytes: `maddubs` + `madd` give int32 lane 2r+k =
 * row r's elements 4k..4k+3 of a chunk, as the AVX-512 level's `vpdpbusd` does for 8 rows. A tile
 * covers the 4 rows of one half of a group × up to 4 tokens, or for a decode step (one token) both
 * halves, all 8 rows: weights, scales and accumulators stay in the 16 registers either way, and a
 * decode step reads each block once, broadcasting its activation chunks once for 8 rows. In the K
 * formats a `madd` with the sub-block scale in both int16 halves of a lane widens the `maddubs`
 * pair sums and applies the scale in one instruction.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../ops.h"
#include "prefetch.h"

#define INLINE static inline __attribute__((always_inline))

/* Only the first tile over a group prefetches (prefetch.h): the later ones (the other half, more
   tokens) find its bytes in L1/L2. */

INLINE __m256i bcast8(const void *p) {
  long long v;
  memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

/* Scales of rows 4h..4h+3, each to lanes (2r, 2r+1). */
INLINE __m256 scales_half(const uint8_t *p, int h) {
  __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
  const __m256i lo = _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0), hi = _mm256_set_epi32(7, 7, 6, 6, 5, 5, 4, 4);
  return _mm256_permutevar8x32_ps(d, h ? hi : lo);
}

/* Lanes (2r, 2r+1) of a half summed into y[0..3]. */
INLINE void store_half(float *y, __m256 acc) {
  __m256 p = _mm256_add_ps(acc, _mm256_permute_ps(acc, 0xB1));
  __m128 lo = _mm256_castps256_ps128(p), hi = _mm256_extractf128_ps(p, 1);
  _mm_storeu_ps(y, _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
}

/* Rows 4·h0 … 4·(h0 + nh) − 1 of a group (nh halves) × nt tokens. */
INLINE void q4_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int h0, const int nh,
                      const int nt, const int pf) {
  const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  __m256 acc[2][4];
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) acc[hh][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 144;
    if (pf) PREFETCH_AHEAD(blk, 144);
    for (int hh = 0; hh < nh; hh++) {
      const int h = h0 + hh;
      const __m256 dw = scales_half(blk, h);
      const __m256i A = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * h));
      const __m256i B = _mm256_loadu_si256((const __m256i *)(blk + 80 + 32 * h));
      const __m256i a0 = _mm256_and_si256(A, m4), a1 = _mm256_and_si256(_mm256_srli_epi16(A, 4), m4);
      const __m256i b0 = _mm256_and_si256(B, m4), b1 = _mm256_and_si256(_mm256_srli_epi16(B, 4), m4);
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        /* four int16 pair sums of nibble·q stay within ±15,360: add them before widening */
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(a0, bcast8(a->q)), _mm256_maddubs_epi16(b0, bcast8(a->q + 8)));
        p = _mm256_add_epi16(p, _mm256_add_epi16(_mm256_maddubs_epi16(a1, bcast8(a->q + 16)), _mm256_maddubs_epi16(b1, bcast8(a->q + 24))));
        __m256i s = _mm256_add_epi32(_mm256_madd_epi16(p, ones), bcast8(a->bias)); /* −8·Σq per lane */
        acc[hh][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(s), acc[hh][t]);
      }
    }
  }
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) store_half(y + t * ys + 4 * (h0 + hh), acc[hh][t]);
}

/* 32 fifth bits (one byte per row, 4 rows) to bytes of 16 where set: byte 8r+i = bit i of p[r]. */
INLINE __m256i bits_mask(const uint8_t *p) {
  uint32_t m;
  memcpy(&m, p, 4);
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), spread);
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(16));
}

INLINE void q5_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int h0, const int nh,
                      const int nt, const int pf) {
  const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  __m256 acc[2][4];
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) acc[hh][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 176;
    if (pf) PREFETCH_AHEAD(blk, 176);
    for (int hh = 0; hh < nh; hh++) {
      const int h = h0 + hh;
      const __m256 dw = scales_half(blk, h);
      const __m256i A = _mm256_loadu_si256((const __m256i *)(blk + 48 + 32 * h));
      const __m256i B = _mm256_loadu_si256((const __m256i *)(blk + 112 + 32 * h));
      const __m256i a0 = _mm256_or_si256(_mm256_and_si256(A, m4), bits_mask(blk + 16 + 4 * h));
      const __m256i b0 = _mm256_or_si256(_mm256_and_si256(B, m4), bits_mask(blk + 24 + 4 * h));
      const __m256i a1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4), bits_mask(blk + 32 + 4 * h));
      const __m256i b1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4), bits_mask(blk + 40 + 4 * h));
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        /* 5-bit q·q8 pair sums (±7,936 each even at |q8| = 128): all four in int16 (±31,744), one widening */
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(a0, bcast8(a->q)), _mm256_maddubs_epi16(b0, bcast8(a->q + 8)));
        p = _mm256_add_epi16(p, _mm256_add_epi16(_mm256_maddubs_epi16(a1, bcast8(a->q + 16)), _mm256_maddubs_epi16(b1, bcast8(a->q + 24))));
        __m256i s = _mm256_add_epi32(_mm256_madd_epi16(p, ones), bcast8(a->bias)); /* −16·Σq per lane */
        acc[hh][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(s), acc[hh][t]);
      }
    }
  }
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) store_half(y + t * ys + 4 * (h0 + hh), acc[hh][t]);
}

INLINE void q8_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int h0, const int nh,
                      const int nt, const int pf) {
  const __m256i bias = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
  __m256 acc[2][4];
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) acc[hh][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 272;
    if (pf) PREFETCH_AHEAD(blk, 272);
    for (int hh = 0; hh < nh; hh++) {
      const int h = h0 + hh;
      const __m256 dw = scales_half(blk, h);
      __m256i wq[4], wa[4];
      for (int c = 0; c < 4; c++) {
        wq[c] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 16 + 64 * c + 32 * h)), bias); /* signed again */
        wa[c] = _mm256_sign_epi8(wq[c], wq[c]);                                                            /* |w| */
      }
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        __m256i s = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
          /* |w|·(x·sign w): maddubs needs one unsigned operand; |w| ≤ 128 keeps the int16 pairs in range */
          __m256i p = _mm256_maddubs_epi16(wa[c], _mm256_sign_epi8(bcast8(a->q + 8 * c), wq[c]));
          s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
        }
        acc[hh][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(s), acc[hh][t]);
      }
    }
  }
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) store_half(y + t * ys + 4 * (h0 + hh), acc[hh][t]);
}


/* Lanes (2r, 2r+1) both hold the int16 pair (v, v) of lane 2r+s's int32 v: a scale that a `madd`
   multiplies into `maddubs` pair sums, folding the widening and the scale into one instruction. */
INLINE __m256i scale16(__m256i v32, int s) {
  __m256i v = s ? _mm256_shuffle_epi32(v32, 0xF5) : _mm256_shuffle_epi32(v32, 0xA0);
  return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v, 16));
}

/* The int16 pair (lo, hi) in every int32 lane: a `madd` multiplier of two activation sums. */
INLINE __m128i pair16(int16_t lo, int16_t hi) { return _mm_set1_epi32((int32_t)(uint16_t)lo | ((int32_t)(uint16_t)hi << 16)); }

/* int32 m_r (4 lanes) to lanes 2r of 8 (odd lanes 0). */
INLINE __m256i to_even_lanes(__m128i m) { return _mm256_cvtepu32_epi64(m); }

/* Sub-block s (0, 1) of chunk pair p's scales for rows 4h..4h+3 (bytes 8h.. of the 16 at blk + 32 +
   16p: row r's pair at 2r, 2r+1), each in the 4 int16 of its row: the `madd` multiplier of the row's
   `maddubs` pair sums. One broadcast and one byte shuffle instead of a widening and four
   shuffle/mask/shift/or operations. */
INLINE __m256i k4_scales16(const uint8_t *p8, int s) {
  const __m256i spread = s ? _mm256_setr_epi8(1, -1, 1, -1, 1, -1, 1, -1, 3, -1, 3, -1, 3, -1, 3, -1, 5, -1, 5, -1, 5, -1, 5, -1, 7, -1, 7,
                                              -1, 7, -1, 7, -1)
                           : _mm256_setr_epi8(0, -1, 0, -1, 0, -1, 0, -1, 2, -1, 2, -1, 2, -1, 2, -1, 4, -1, 4, -1, 4, -1, 4, -1, 6, -1, 6,
                                              -1, 6, -1, 6, -1);
  return _mm256_shuffle_epi8(bcast8(p8), spread);
}

/* Rows 4h..4h+3 (each half in turn) × nt tokens, one 32-element sub-block at a time: its four
   unpacked weight vectors, its scales and the tokens' int32 sums are all the loop keeps, so a
   4-token tile fits the 16 registers (the earlier form held a chunk pair's eight weight vectors and
   the mins' sums at once, and spilled ~340 vectors to the stack). The mins' share is summed after
   the quants, per token, from memory. */
INLINE void q4_k_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int h0, const int nh,
                      const int nt, const int pf) {
  const __m256i m4 = _mm256_set1_epi8(15);
  __m256 acc[2][4];
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) acc[hh][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 1184;
    if (pf) PREFETCH_AHEAD(blk, 1184);
    for (int hh = 0; hh < nh; hh++) {
      const int h = h0 + hh;
      __m256i isum[4];
      for (int t = 0; t < nt; t++) isum[t] = _mm256_setzero_si256();
      /* unrolled: s a constant in each copy (its shift and shuffle mask chosen at compile time) */
#pragma GCC unroll 4
      for (int p = 0; p < 4; p++) {
        const uint8_t *qs = blk + 160 + p * 256 + 32 * h;
#pragma GCC unroll 2
        for (int s = 0; s < 2; s++) { /* sub-block 2p + s: the low (s = 0) or high nibbles of chunk pair p */
          const __m256i sc = k4_scales16(blk + 32 + 16 * p + 8 * h, s);
          __m256i w0 = _mm256_loadu_si256((const __m256i *)qs), w1 = _mm256_loadu_si256((const __m256i *)(qs + 64));
          __m256i w2 = _mm256_loadu_si256((const __m256i *)(qs + 128)), w3 = _mm256_loadu_si256((const __m256i *)(qs + 192));
          if (s) {
            w0 = _mm256_srli_epi16(w0, 4);
            w1 = _mm256_srli_epi16(w1, 4);
            w2 = _mm256_srli_epi16(w2, 4);
            w3 = _mm256_srli_epi16(w3, 4);
          }
          w0 = _mm256_and_si256(w0, m4);
          w1 = _mm256_and_si256(w1, m4);
          w2 = _mm256_and_si256(w2, m4);
          w3 = _mm256_and_si256(w3, m4);
          for (int t = 0; t < nt; t++) {
            const int8_t *q = x[t * xs + b].q + 64 * p + 32 * s;
            /* four maddubs pair sums of nibble·q stay within ±15,240 in int16 */
            __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast8(q)), _mm256_maddubs_epi16(w1, bcast8(q + 8)));
            p16 = _mm256_add_epi16(p16, _mm256_add_epi16(_mm256_maddubs_epi16(w2, bcast8(q + 16)), _mm256_maddubs_epi16(w3, bcast8(q + 24))));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p16, sc));
          }
        }
      }
      const __m256 d = scales_half(blk, h), dmin = scales_half(blk + 16, h);
      for (int t = 0; t < nt; t++) {
        const act_q8kx *a = x + t * xs + b;
        /* Σ_j min_rj · Σq over sub-block j: the mins of chunk pair p (row r's two at 2r, 2r+1) against that pair's sums */
        __m128i msum = _mm_setzero_si128();
        for (int p = 0; p < 4; p++)
          msum = _mm_add_epi32(msum, _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(blk + 96 + 16 * p + 8 * h))),
                                                    pair16(a->bs32[2 * p], a->bs32[2 * p + 1])));
        const __m256 dx = _mm256_set1_ps(a->d);
        acc[hh][t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum[t]), acc[hh][t]);
        acc[hh][t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(to_even_lanes(msum)), acc[hh][t]);
      }
    }
  }
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) store_half(y + t * ys + 4 * (h0 + hh), acc[hh][t]);
}

/* LAYOUT_Q6_K6X8: each 16-element group's two chunks joined from their 4 low bits (ql) and 2
   high bits (qh) into bytes 0..63, then as the retired 8-bit layout (ops.h) was. The loads are repeated per group
   rather than kept, to leave registers to a 4-token tile. The block is prefetched a share per p
   rather than all at its start: 1.04–1.19× on a 16,384 × 2,048 product (AMD EPYC Zen 3, one
   token, both orders); the same spread measured within noise on Q4_K's 1,184-byte blocks. One
   token against that 8-bit layout: 1.25–1.32× at 2 threads, 1.25× at one. */
INLINE void q6_k_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int h0, const int nh,
                      const int nt, const int pf) {
  const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
  __m256 acc[2][4];
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) acc[hh][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 1680;
    for (int hh = 0; hh < nh; hh++) {
      const int h = h0 + hh;
      __m256i isum[4];
      __m128i corr[4];
      for (int t = 0; t < nt; t++) {
        isum[t] = _mm256_setzero_si256();
        corr[t] = _mm_setzero_si128();
      }
      for (int p = 0; p < 8; p++) {
        if (pf && hh == 0) PREFETCH_AHEAD(blk + 192 * p, p < 7 ? 192 : 336);
        const uint8_t *ql = blk + 144 + 128 * p + 32 * h, *qh = blk + 1168 + 64 * p + 32 * h;
        for (int m = 0; m < 2; m++) { /* 16-element group 2p+m: chunks 4p+2m, 4p+2m+1 */
          const __m256i sc = scale16(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 16 + 16 * p + 8 * h))), m);
          const __m256i L0 = _mm256_loadu_si256((const __m256i *)ql), L1 = _mm256_loadu_si256((const __m256i *)(ql + 64));
          const __m256i H = _mm256_loadu_si256((const __m256i *)qh);
          /* chunk 4p+j's high bits are qh's bits 2j, 2j+1: moved to bits 4, 5 of each byte (16-bit
             shifts by at most 4 bring no bit of the neighbouring byte under the 0x30 mask) */
          __m256i q0, q1;
          if (m == 0) {
            q0 = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
            q1 = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
          } else {
            q0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), _mm256_and_si256(H, m30));
            q1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
          }
          for (int t = 0; t < nt; t++) {
            const int8_t *xq = x[t * xs + b].q + 32 * p + 16 * m;
            /* two pair sums of 6-bit q·q8 stay within ±32,004 in int16 */
            __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, bcast8(xq)), _mm256_maddubs_epi16(q1, bcast8(xq + 8)));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p16, sc));
          }
        }
      }
      for (int p = 0; p < 8; p++) {
        const __m128i sc16 = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(blk + 16 + 16 * p + 8 * h)));
        for (int t = 0; t < nt; t++) {
          const act_q8kx *a = x + t * xs + b;
          corr[t] = _mm_add_epi32(corr[t], _mm_madd_epi16(sc16, pair16(a->bs16[2 * p], a->bs16[2 * p + 1])));
        }
      }
      const __m256 d = scales_half(blk, h);
      for (int t = 0; t < nt; t++) {
        /* − 32·Σ sc·Σq: per row, so into lane 2r of the pair */
        __m256i total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(to_even_lanes(corr[t]), 5));
        acc[hh][t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[t * xs + b].d)), _mm256_cvtepi32_ps(total), acc[hh][t]);
      }
    }
  }
  for (int hh = 0; hh < nh; hh++)
    for (int t = 0; t < nt; t++) store_half(y + t * ys + 4 * (h0 + hh), acc[hh][t]);
}

/* One row group: a decode step (one token) in one pass over all 8 rows, more tokens by half and by
   tiles of up to 4 (nt a constant in each tile: its registers). */
#define GROUP(NAME, TILE, ACT)                                                                                           \
  INLINE void NAME(float *yg, int64_t ys, const uint8_t *wg, const ACT *x, int64_t xs, int64_t blocks, int64_t tokens) { \
    if (tokens == 1) {                                                                                                   \
      TILE(yg, ys, wg, x, xs, blocks, 0, 2, 1, 1);                                                                       \
      return;                                                                                                            \
    }                                                                                                                    \
    for (int h = 0; h < 2; h++)                                                                                          \
      for (int64_t t = 0; t < tokens; t += 4) {                                                                          \
        const int pf = h == 0 && t == 0;                                                                                 \
        float *yt = yg + t * ys;                                                                                         \
        const ACT *xt = x + t * xs;                                                                                      \
        switch (tokens - t < 4 ? tokens - t : 4) {                                                                       \
          case 4: TILE(yt, ys, wg, xt, xs, blocks, h, 1, 4, pf); break;                                                  \
          case 3: TILE(yt, ys, wg, xt, xs, blocks, h, 1, 3, pf); break;                                                  \
          case 2: TILE(yt, ys, wg, xt, xs, blocks, h, 1, 2, pf); break;                                                  \
          default: TILE(yt, ys, wg, xt, xs, blocks, h, 1, 1, pf); break;                                                 \
        }                                                                                                                \
      }                                                                                                                  \
  }

GROUP(group_q4_0x8, q4_0_tile, act_q8x)
GROUP(group_q8_0x8, q8_0_tile, act_q8x)
GROUP(group_q5_0x8, q5_0_tile, act_q8x)
GROUP(group_q4_kx8, q4_k_tile, act_q8kx)
GROUP(group_q6_k6x8, q6_k_tile, act_q8kx)
PACKED_GEMM(gemm_q4_0x8, group_q4_0x8, act_q8x)
PACKED_GEMM(gemm_q8_0x8, group_q8_0x8, act_q8x)
PACKED_GEMM(gemm_q5_0x8, group_q5_0x8, act_q8x)
PACKED_GEMM(gemm_q4_kx8, group_q4_kx8, act_q8kx)
PACKED_GEMM(gemm_q6_k6x8, group_q6_k6x8, act_q8kx)

/* As quantise_block_scalar, 8 values at a time (round-half-even, then ties away from zero). */
static void quantise_block_avx2(const float *x, int n, float *d_out, int8_t *q) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  float amax = _mm_cvtss_f32(m);
  float d = amax / 127.0f;
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  for (int i = 0; i < n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vid);
    __m256 even = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 tie = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(v, t), abs_mask), half, _CMP_EQ_OQ);
    __m256 away = _mm256_add_ps(t, _mm256_or_ps(one, _mm256_andnot_ps(abs_mask, v)));
    __m256i r = _mm256_cvtps_epi32(_mm256_blendv_ps(even, away, tie));
    __m128i r16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64((__m128i *)(q + i), _mm_packs_epi16(r16, r16));
  }
}

/* exp(x) for x in [−87.3, 88.7] (inputs are clamped there; beyond, silu is 0 or x to f32
   precision): x = n·ln2 + r with |r| ≤ ln2/2, 2^n built in the exponent bits, e^r by the degree-6
   minimax polynomial of Cephes' expf (S. L. Moshier, Cephes Math Library, expf.c), ~1 ulp. */
INLINE __m256 exp_avx2(__m256 x) {
  /* max/min return their second operand when either is NaN: x second, so a NaN stays NaN */
  x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  /* ln2 in two parts so that n·ln2 is exact enough (Cody–Waite reduction) */
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void silu_mul_avx2(float *y, const float *gate, const float *up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_loadu_ps(gate + i);
    __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, g))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  silu_mul_scalar(y + i, gate + i, up + i, n - i);
}

/* Eight partial sums, added in a fixed order: the same bits whatever the caller's threads. */
float exp_shifted_avx2(float *s, int64_t n, float max) {
  const __m256 vmax = _mm256_set1_ps(max);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmax));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  return sum + exp_shifted_scalar(s + j, n - j, max);
}

/* _mm256_max_ps(a, m) is a > m ? a : m lane by lane (m when either is NaN): the scalar loop's rule. */
float scale_max_avx2(float *s, int64_t n, float scale) {
  const __m256 k = _mm256_set1_ps(scale);
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(s + j), k), b = _mm256_mul_ps(_mm256_loadu_ps(s + j + 8), k);
    _mm256_storeu_ps(s + j, a);
    _mm256_storeu_ps(s + j + 8, b);
    m0 = _mm256_max_ps(a, m0);
    m1 = _mm256_max_ps(b, m1);
  }
  for (; j + 8 <= n; j += 8) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(s + j), k);
    _mm256_storeu_ps(s + j, a);
    m0 = _mm256_max_ps(a, m0);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_max_ps(m1, m0));
  float max = scale_max_scalar(s + j, n - j, scale);
  for (int i = 0; i < 8; i++)
    if (lanes[i] > max) max = lanes[i];
  return max;
}

const kernel_ops ops_avx2 = {
    .name = "avx2",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q6_K6X8] = gemm_q6_k6x8,
             [LAYOUT_Q5_0X8] = gemm_q5_0x8},
    .quantise_block = quantise_block_avx2,
    .silu_mul = silu_mul_avx2,
    .exp_shifted = exp_shifted_avx2,
    .scale_max = scale_max_avx2,
};
