/*
 * The ARM64 level: NEON with the dot-product extension (built with +dotprod, chosen only when the
 * CPU reports it). `sdot` sums 4 signed byte products into each of 4 int32 lanes: over a packed
 * row group (ops.h) one 128-bit register holds 2 rows × 8 bytes, so lane 2r'+k is row r's
 * elements 4k..4k+3 of a chunk, as on x86. Tiles are 8 rows × up to 2 tokens. NEON shifts bytes,
 * so nibbles and Q6_K's high bit pairs unpack without x86's 16-bit-shift masking.
 */
#include <arm_neon.h>
#include <string.h>

#include "../../ops.h"

#define INLINE static inline __attribute__((always_inline))

INLINE int8x16_t bcast8(const void *p) {
  int64_t v;
  memcpy(&v, p, 8);
  return vreinterpretq_s8_s64(vdupq_n_s64(v));
}

/* Scales of rows 2i, 2i+1 to lanes (0,1), (2,3). */
INLINE float32x4_t scales_pair(const uint8_t *p, int i) {
  uint16_t h[2];
  memcpy(h, p + 4 * i, 4);
  float a = f16_bits_to_f32(h[0]), b = f16_bits_to_f32(h[1]);
  float v[4] = {a, a, b, b};
  return vld1q_f32(v);
}

INLINE void store_pairs(float *y, float32x4_t a, float32x4_t b) {
  /* a: rows 2i, 2i+1 as lane pairs; b: the next two rows */
  vst1q_f32(y, vpaddq_f32(a, b));
}

INLINE void q8_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt) {
  const uint8x16_t bias = vdupq_n_u8(0x80);
  float32x4_t acc[2][4];
  for (int t = 0; t < nt; t++)
    for (int i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 272;
    for (int i = 0; i < 4; i++) {
      int8x16_t w[4];
      for (int c = 0; c < 4; c++) w[c] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(blk + 16 + 64 * c + 16 * i), bias));
      float32x4_t dw = scales_pair(blk, i);
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        int32x4_t s = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) s = vdotq_s32(s, w[c], bcast8(a->q + 8 * c));
        acc[t][i] = vfmaq_f32(acc[t][i], vmulq_n_f32(dw, a->d), vcvtq_f32_s32(s));
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    store_pairs(y + t * ys, acc[t][0], acc[t][1]);
    store_pairs(y + t * ys + 4, acc[t][2], acc[t][3]);
  }
}

/* Bytes of 16 where the fifth bit is set, rows 2i, 2i+1 × elements 8p..8p+7: byte 8r'+j = bit j of
   hb[p][2i + r'] (LAYOUT_Q5_0X8). */
INLINE uint8x16_t fifth_bits(const uint8_t *blk, int p, int i) {
  const uint8_t *hb = blk + 16 + 8 * p + 2 * i;
  const uint8x16_t bits = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ULL));
  uint8x16_t v = vcombine_u8(vdup_n_u8(hb[0]), vdup_n_u8(hb[1]));
  return vandq_u8(vtstq_u8(v, bits), vdupq_n_u8(16));
}

/* Q4_0 and Q5_0 (five: LAYOUT_Q5_0X8, the fifth bits at bit 4 and a bias of 16 instead of 8). */
INLINE void nibble_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt,
                        const int five) {
  const uint8x16_t m4 = vdupq_n_u8(15);
  const int64_t block_bytes = five ? 176 : 144, qs = five ? 48 : 16;
  float32x4_t acc[2][4];
  for (int t = 0; t < nt; t++)
    for (int i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * block_bytes;
    for (int i = 0; i < 4; i++) { /* rows 2i, 2i+1 */
      uint8x16_t A = vld1q_u8(blk + qs + 16 * i), B = vld1q_u8(blk + qs + 64 + 16 * i);
      uint8x16_t a0 = vandq_u8(A, m4), b0 = vandq_u8(B, m4), a1 = vshrq_n_u8(A, 4), b1 = vshrq_n_u8(B, 4);
      if (five) {
        a0 = vorrq_u8(a0, fifth_bits(blk, 0, i));
        b0 = vorrq_u8(b0, fifth_bits(blk, 1, i));
        a1 = vorrq_u8(a1, fifth_bits(blk, 2, i));
        b1 = vorrq_u8(b1, fifth_bits(blk, 3, i));
      }
      float32x4_t dw = scales_pair(blk, i);
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        int32x4_t s = vdotq_s32(vdupq_n_s32(0), vreinterpretq_s8_u8(a0), bcast8(a->q));
        s = vdotq_s32(s, vreinterpretq_s8_u8(b0), bcast8(a->q + 8));
        s = vdotq_s32(s, vreinterpretq_s8_u8(a1), bcast8(a->q + 16));
        s = vdotq_s32(s, vreinterpretq_s8_u8(b1), bcast8(a->q + 24));
        s = vaddq_s32(s, vcombine_s32(vld1_s32(a->bias), vld1_s32(a->bias))); /* (q − 16)·x or (q − 8)·x */
        acc[t][i] = vfmaq_f32(acc[t][i], vmulq_n_f32(dw, a->d), vcvtq_f32_s32(s));
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    store_pairs(y + t * ys, acc[t][0], acc[t][1]);
    store_pairs(y + t * ys + 4, acc[t][2], acc[t][3]);
  }
}

INLINE void q4_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt) {
  nibble_tile(y, ys, wg, x, xs, blocks, nt, 0);
}

INLINE void q5_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt) {
  nibble_tile(y, ys, wg, x, xs, blocks, nt, 1);
}

/* Values of rows 2i, 2i+1 to lanes (0, 1), (2, 3). */
INLINE int32x4_t row_pair_s32(int32_t r0, int32_t r1) {
  int32_t v[4] = {r0, r0, r1, r1};
  return vld1q_s32(v);
}

/* Per-row sums of rows 2i, 2i+1 into lanes 0 and 2 (lanes 1, 3 zero: the pairs are added at the store). */
INLINE int32x4_t row_sums_even(int32_t r0, int32_t r1) {
  int32_t v[4] = {r0, 0, r1, 0};
  return vld1q_s32(v);
}

/* Q4_K (LAYOUT_Q4_KX8): dx·(d·Σ_j sc_j·Σ q·qx − dmin·Σ_j m_j·Σ qx) over the 8 sub-blocks j. */
INLINE void q4_k_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int nt) {
  const uint8x16_t m4 = vdupq_n_u8(15);
  float32x4_t acc[2][4];
  for (int t = 0; t < nt; t++)
    for (int i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 1184;
    for (int i = 0; i < 4; i++) {
      int32x4_t isum[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
      int32_t msum[2][2] = {{0, 0}, {0, 0}};
      for (int c = 0; c < 4; c++) {
        const uint8_t *sc = blk + 32 + 16 * c + 4 * i, *mn = blk + 96 + 16 * c + 4 * i; /* [r][s] of rows 2i, 2i+1 */
        const int32x4_t sc0 = row_pair_s32(sc[0], sc[2]), sc1 = row_pair_s32(sc[1], sc[3]);
        int8x16_t lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
          uint8x16_t q = vld1q_u8(blk + 160 + (c * 4 + k) * 64 + 16 * i);
          lo[k] = vreinterpretq_s8_u8(vandq_u8(q, m4));
          hi[k] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        }
        for (int t = 0; t < nt; t++) {
          const act_q8kx *a = x + t * xs + b;
          const int8_t *q0 = a->q + 64 * c, *q1 = q0 + 32;
          int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
          for (int k = 0; k < 4; k++) {
            s0 = vdotq_s32(s0, lo[k], bcast8(q0 + 8 * k));
            s1 = vdotq_s32(s1, hi[k], bcast8(q1 + 8 * k));
          }
          isum[t] = vmlaq_s32(vmlaq_s32(isum[t], s0, sc0), s1, sc1);
          for (int r = 0; r < 2; r++) msum[t][r] += mn[2 * r] * a->bs32[2 * c] + mn[2 * r + 1] * a->bs32[2 * c + 1];
        }
      }
      const float32x4_t d = scales_pair(blk, i), dmin = scales_pair(blk + 16, i);
      for (int t = 0; t < nt; t++) {
        const float dx = x[t * xs + b].d;
        acc[t][i] = vfmaq_f32(acc[t][i], vmulq_n_f32(d, dx), vcvtq_f32_s32(isum[t]));
        acc[t][i] = vfmsq_f32(acc[t][i], vmulq_n_f32(dmin, dx), vcvtq_f32_s32(row_sums_even(msum[t][0], msum[t][1])));
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    store_pairs(y + t * ys, acc[t][0], acc[t][1]);
    store_pairs(y + t * ys + 4, acc[t][2], acc[t][3]);
  }
}

/* Q6_K (LAYOUT_Q6_K6X8): each 8-element chunk joined from its 4 low bits (ql) and 2 high bits (qh),
   then dx·d·(Σ_g sc_g·Σ q·qx − 32·Σ_g sc_g·Σ qx) over the 16-element groups g. */
INLINE void q6_k_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8kx *x, int64_t xs, int64_t blocks, const int nt) {
  const uint8x16_t m4 = vdupq_n_u8(15), m30 = vdupq_n_u8(0x30);
  float32x4_t acc[2][4];
  for (int t = 0; t < nt; t++)
    for (int i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 1680;
    for (int i = 0; i < 4; i++) {
      int32x4_t isum[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
      int32_t corr[2][2] = {{0, 0}, {0, 0}};
      for (int p = 0; p < 8; p++) {
        const int8_t *sc = (const int8_t *)(blk + 16 + 16 * p + 4 * i); /* [r][s] of rows 2i, 2i+1 */
        const int32x4_t sc0 = row_pair_s32(sc[0], sc[2]), sc1 = row_pair_s32(sc[1], sc[3]);
        uint8x16_t L0 = vld1q_u8(blk + 144 + 128 * p + 16 * i), L1 = vld1q_u8(blk + 144 + 128 * p + 64 + 16 * i);
        uint8x16_t H = vld1q_u8(blk + 1168 + 64 * p + 16 * i);
        int8x16_t q[4] = {
            vreinterpretq_s8_u8(vorrq_u8(vandq_u8(L0, m4), vandq_u8(vshlq_n_u8(H, 4), m30))),
            vreinterpretq_s8_u8(vorrq_u8(vandq_u8(L1, m4), vandq_u8(vshlq_n_u8(H, 2), m30))),
            vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(L0, 4), vandq_u8(H, m30))),
            vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(L1, 4), vandq_u8(vshrq_n_u8(H, 2), m30))),
        };
        for (int t = 0; t < nt; t++) {
          const act_q8kx *a = x + t * xs + b;
          const int8_t *xq = a->q + 32 * p;
          int32x4_t s0 = vdotq_s32(vdotq_s32(vdupq_n_s32(0), q[0], bcast8(xq)), q[1], bcast8(xq + 8));
          int32x4_t s1 = vdotq_s32(vdotq_s32(vdupq_n_s32(0), q[2], bcast8(xq + 16)), q[3], bcast8(xq + 24));
          isum[t] = vmlaq_s32(vmlaq_s32(isum[t], s0, sc0), s1, sc1);
          for (int r = 0; r < 2; r++) corr[t][r] += sc[2 * r] * a->bs16[2 * p] + sc[2 * r + 1] * a->bs16[2 * p + 1];
        }
      }
      const float32x4_t d = scales_pair(blk, i);
      for (int t = 0; t < nt; t++) {
        int32x4_t total = vsubq_s32(isum[t], vshlq_n_s32(row_sums_even(corr[t][0], corr[t][1]), 5)); /* − 32·Σ sc·Σq */
        acc[t][i] = vfmaq_f32(acc[t][i], vmulq_n_f32(d, x[t * xs + b].d), vcvtq_f32_s32(total));
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    store_pairs(y + t * ys, acc[t][0], acc[t][1]);
    store_pairs(y + t * ys + 4, acc[t][2], acc[t][3]);
  }
}

/* One row group: token tiles of 2, the last token alone. */
#define GROUP(NAME, TILE, ACT)                                                                                          \
  INLINE void NAME(float *yg, int64_t ys, const uint8_t *wg, const ACT *x, int64_t xs, int64_t blocks, int64_t tokens) { \
    int64_t t = 0;                                                                                                          \
    for (; t + 2 <= tokens; t += 2) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 2);                                   \
    if (t < tokens) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 1);                                                   \
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

const kernel_ops ops_neon = {
    .name = "neon",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q5_0X8] = gemm_q5_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .quantise_block = quantise_block_scalar,
    .silu_mul = silu_mul_scalar,
    .exp_shifted = exp_shifted_scalar,
    .scale_max = scale_max_scalar,
};
