/*
 * The AVX-512 level (F, BW, VL, VNNI; built with those flags alone, chosen only when the CPU has
 * them): the tiles of avx512_tiles.h over every packed layout, and the activation quantiser.
 */
#include "avx512_tiles.h"

GROUP(group_q4_0x8, q4_0_tile, act_q8x, 8)
GROUP(group_q8_0x8, q8_0_tile, act_q8x, 8)
GROUP(group_q5_0x8, q5_0_tile, act_q8x, 8)
GROUP(group_q4_kx8, q4_k_tile, act_q8kx, 4)
GROUP(group_q6_k6x8, q6_k6_tile, act_q8kx, 4)
PACKED_GEMM(gemm_q4_0x8, group_q4_0x8, act_q8x)
PACKED_GEMM(gemm_q8_0x8, group_q8_0x8, act_q8x)
PACKED_GEMM(gemm_q5_0x8, group_q5_0x8, act_q8x)
PACKED_GEMM(gemm_q4_kx8, group_q4_kx8, act_q8kx)
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

const kernel_ops ops_avx512 = {
    .name = "avx512",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q5_0X8] = gemm_q5_0x8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .quantise_block = quantise_block_avx512,
    .silu_mul = silu_mul_avx2,
    .exp_shifted = exp_shifted_avx2,
};
