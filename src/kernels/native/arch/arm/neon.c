/*
 * The ARM64 level: NEON with the dot-product extension (built with +dotprod, chosen only when the
 * CPU reports it). `sdot` sums 4 signed byte products into each of 4 int32 lanes: over a packed
 * row group (ops.h) one 128-bit register holds 2 rows × 8 bytes, so lane 2r'+k is row r's
 * elements 4k..4k+3 of a chunk, as on x86. Tiles are 8 rows × up to 2 tokens.
 * The K formats stay in rows at this level.
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

INLINE void q4_0_tile(float *y, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, const int nt) {
  const uint8x16_t m4 = vdupq_n_u8(15);
  float32x4_t acc[2][4];
  for (int t = 0; t < nt; t++)
    for (int i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *blk = wg + b * 144;
    for (int i = 0; i < 4; i++) { /* rows 2i, 2i+1 */
      uint8x16_t A = vld1q_u8(blk + 16 + 16 * i), B = vld1q_u8(blk + 80 + 16 * i);
      int8x16_t a0 = vreinterpretq_s8_u8(vandq_u8(A, m4)), a1 = vreinterpretq_s8_u8(vshrq_n_u8(A, 4));
      int8x16_t b0 = vreinterpretq_s8_u8(vandq_u8(B, m4)), b1 = vreinterpretq_s8_u8(vshrq_n_u8(B, 4));
      float32x4_t dw = scales_pair(blk, i);
      for (int t = 0; t < nt; t++) {
        const act_q8x *a = x + t * xs + b;
        int32x4_t s = vdotq_s32(vdupq_n_s32(0), a0, bcast8(a->q));
        s = vdotq_s32(s, b0, bcast8(a->q + 8));
        s = vdotq_s32(s, a1, bcast8(a->q + 16));
        s = vdotq_s32(s, b1, bcast8(a->q + 24));
        int32x4_t corr = vcombine_s32(vld1_s32(a->s), vld1_s32(a->s));
        s = vsubq_s32(s, vshlq_n_s32(corr, 3));
        acc[t][i] = vfmaq_f32(acc[t][i], vmulq_n_f32(dw, a->d), vcvtq_f32_s32(s));
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    store_pairs(y + t * ys, acc[t][0], acc[t][1]);
    store_pairs(y + t * ys + 4, acc[t][2], acc[t][3]);
  }
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

/* One row group: token tiles of 2, the last token alone. */
#define GROUP(NAME, TILE)                                                                                                   \
  INLINE void NAME(float *yg, int64_t ys, const uint8_t *wg, const act_q8x *x, int64_t xs, int64_t blocks, int64_t tokens) { \
    int64_t t = 0;                                                                                                          \
    for (; t + 2 <= tokens; t += 2) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 2);                                   \
    if (t < tokens) TILE(yg + t * ys, ys, wg, x + t * xs, xs, blocks, 1);                                                   \
  }

GROUP(group_q4_0x8, q4_0_tile)
GROUP(group_q8_0x8, q8_0_tile)
PACKED_GEMM(gemm_q4_0x8, group_q4_0x8, act_q8x)
PACKED_GEMM(gemm_q8_0x8, group_q8_0x8, act_q8x)

const kernel_ops ops_neon = {
    .name = "neon",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8},
    .quantise_block = quantise_block_scalar,
    .silu_mul = silu_mul_scalar,
    .exp_shifted = exp_shifted_scalar,
};
