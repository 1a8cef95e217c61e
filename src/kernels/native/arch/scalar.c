/*
 * The portable level: plain C over the packed layouts of ops.h. It defines, in integers, what
 * every SIMD level computes (same integer sums per block; float summation order may differ), and
 * runs where no SIMD level applies. Tested against the TypeScript reference.
 */
#include "../ops.h"

#define F16(p, i) f16_bits_to_f32((uint16_t)((p)[2 * (i)] | ((p)[2 * (i) + 1] << 8)))

/* Σ over the 8 rows of a group-block: isum[r] of 4-bit/8-bit weights against activation q. */
static void gemm_q4_0x8(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,
                        int64_t tokens, int64_t g0, int64_t g1) {
  const act_q8x *x = xv;
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * gbytes;
    for (int64_t t = 0; t < tokens; t++) {
      float acc[8] = {0};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = wg + b * 144;
        const act_q8x *a = x + t * xs + b;
        for (int r = 0; r < 8; r++) {
          int32_t s = 0;
          for (int h = 0; h < 2; h++)
            for (int i = 0; i < 8; i++) {
              uint8_t byte = blk[16 + h * 64 + r * 8 + i];
              s += (int32_t)(byte & 15) * a->q[8 * h + i] + (int32_t)(byte >> 4) * a->q[16 + 8 * h + i];
            }
          s += a->bias[0] + a->bias[1]; /* −8·Σq */
          acc[r] += F16(blk, r) * a->d * (float)s;
        }
      }
      for (int r = 0; r < 8; r++) y[t * ys + 8 * g + r] = acc[r];
    }
  }
}

/* Q5_0: w = d·(q − 16), q = nibble | fifth bit << 4 (ggml-quants.c dequantize_row_q5_0). */
static void gemm_q5_0x8(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,
                        int64_t tokens, int64_t g0, int64_t g1) {
  const act_q8x *x = xv;
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * gbytes;
    for (int64_t t = 0; t < tokens; t++) {
      float acc[8] = {0};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = wg + b * 176;
        const act_q8x *a = x + t * xs + b;
        for (int r = 0; r < 8; r++) {
          int32_t s = 0;
          for (int h = 0; h < 2; h++)
            for (int i = 0; i < 8; i++) {
              uint8_t byte = blk[48 + h * 64 + r * 8 + i];
              int lo = (byte & 15) | (((blk[16 + h * 8 + r] >> i) & 1) << 4);
              int hi = (byte >> 4) | (((blk[16 + (2 + h) * 8 + r] >> i) & 1) << 4);
              s += lo * a->q[8 * h + i] + hi * a->q[16 + 8 * h + i];
            }
          s += a->bias[0] + a->bias[1]; /* −16·Σq */
          acc[r] += F16(blk, r) * a->d * (float)s;
        }
      }
      for (int r = 0; r < 8; r++) y[t * ys + 8 * g + r] = acc[r];
    }
  }
}

static void gemm_q8_0x8(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,
                        int64_t tokens, int64_t g0, int64_t g1) {
  const act_q8x *x = xv;
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * gbytes;
    for (int64_t t = 0; t < tokens; t++) {
      float acc[8] = {0};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = wg + b * 272;
        const act_q8x *a = x + t * xs + b;
        for (int r = 0; r < 8; r++) {
          int32_t s = 0;
          for (int c = 0; c < 4; c++)
            for (int i = 0; i < 8; i++) s += (int32_t)(int8_t)(blk[16 + c * 64 + r * 8 + i] ^ 0x80) * a->q[8 * c + i];
          acc[r] += F16(blk, r) * a->d * (float)s;
        }
      }
      for (int r = 0; r < 8; r++) y[t * ys + 8 * g + r] = acc[r];
    }
  }
}

/* Q4_K: w = d·sc_j·q − dmin·m_j per 32-element sub-block j (ggml-quants.c dequantize_row_q4_K),
   so a super-block gives dx·(d·Σ_j sc_j·Σ q·qx − dmin·Σ_j m_j·Σ qx). */
static void gemm_q4_kx8(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,
                        int64_t tokens, int64_t g0, int64_t g1) {
  const act_q8kx *x = xv;
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * gbytes;
    for (int64_t t = 0; t < tokens; t++) {
      float acc[8] = {0};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = wg + b * 1184;
        const act_q8kx *a = x + t * xs + b;
        for (int r = 0; r < 8; r++) {
          int32_t isum = 0, msum = 0;
          for (int j = 0; j < 8; j++) {
            int c = j >> 1, hi = j & 1;
            int32_t s = 0;
            for (int k = 0; k < 4; k++)
              for (int i = 0; i < 8; i++) {
                uint8_t byte = blk[160 + (c * 4 + k) * 64 + r * 8 + i];
                s += (int32_t)(hi ? byte >> 4 : byte & 15) * a->q[32 * j + 8 * k + i];
              }
            isum += s * blk[32 + (j >> 1) * 16 + r * 2 + (j & 1)];
            msum += (int32_t)blk[96 + (j >> 1) * 16 + r * 2 + (j & 1)] * a->bs32[j];
          }
          acc[r] += a->d * (F16(blk, r) * (float)isum - F16(blk + 16, r) * (float)msum);
        }
      }
      for (int r = 0; r < 8; r++) y[t * ys + 8 * g + r] = acc[r];
    }
  }
}

/* Row r's 6-bit quant of element e in a group-block of LAYOUT_Q6_K6X8 (4 + 2 bits, ops.h). */
static int q6_k_quant_of(const uint8_t *blk, int r, int e) {
  int p = e >> 5, j = (e >> 3) & 3, i = e & 7;
  uint8_t lo = blk[144 + p * 128 + (j & 1) * 64 + r * 8 + i], hi = blk[1168 + p * 64 + r * 8 + i];
  return (j < 2 ? lo & 15 : lo >> 4) | (((hi >> (2 * j)) & 3) << 4);
}

/* Q6_K: w = d·sc_g·(q − 32) per 16-element group g (dequantize_row_q6_K), so a super-block gives
   dx·d·(Σ_g sc_g·Σ q·qx − 32·Σ_g sc_g·Σ qx). */
static void gemm_q6_k6x8(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,
                         int64_t tokens, int64_t g0, int64_t g1) {
  const act_q8kx *x = xv;
  const size_t block_bytes = 1680;
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * gbytes;
    for (int64_t t = 0; t < tokens; t++) {
      float acc[8] = {0};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = wg + b * block_bytes;
        const act_q8kx *a = x + t * xs + b;
        for (int r = 0; r < 8; r++) {
          int32_t isum = 0, corr = 0;
          for (int gi = 0; gi < 16; gi++) {
            int sc = (int8_t)blk[16 + (gi >> 1) * 16 + r * 2 + (gi & 1)];
            corr += sc * a->bs16[gi];
            int32_t s = 0;
            for (int e = 16 * gi; e < 16 * gi + 16; e++) s += q6_k_quant_of(blk, r, e) * a->q[e];
            isum += sc * s;
          }
          acc[r] += a->d * F16(blk, r) * (float)(isum - 32 * corr);
        }
      }
      for (int r = 0; r < 8; r++) y[t * ys + 8 * g + r] = acc[r];
    }
  }
}

const kernel_ops ops_scalar = {
    .name = "scalar",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q5_0X8] = gemm_q5_0x8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .quantise_block = quantise_block_scalar,
    .silu_mul = silu_mul_scalar,
    .exp_shifted = exp_shifted_scalar,
    .scale_max = scale_max_scalar,
};
