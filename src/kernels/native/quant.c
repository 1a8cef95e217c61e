/*
 * Block-quantised weights (GGML formats; layouts from ggml-common.h, decoding as in
 * ggml-quants.c `dequantize_row_*`) multiplied by activations quantised to 8 bits per block of 32
 * (ggml's Q8_0: d = amax/127, q = round(x/d)). The TypeScript reference defines the same product:
 * dequantised weights · (d·q) activations, so results agree up to float summation order.
 *
 * Every format has a scalar block decoder (the generic path: decode a block, then an f32 dot per
 * 32 elements scaled by the activation block's d). Q4_0 and Q8_0 also have AVX2 integer paths:
 * 32 int8×int8 products per instruction pair, one float multiply-add per block.
 */
#include "quant.h"
#include "ops.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DSEEK_X86 1
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

/* The little-endian f16 at p (ops.h's f16_bits_to_f32, shared with the packed kernels). */
static inline float half(const uint8_t *p) { return f16_bits_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

int quant_block_elements(int t) {
  switch (t) {
    case QT_Q4_0: case QT_Q4_1: case QT_Q5_0: case QT_Q5_1: case QT_Q8_0: return 32;
    case QT_Q2_K: case QT_Q3_K: case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: return 256;
    default: return 0;
  }
}

int quant_block_bytes(int t) {
  switch (t) {
    case QT_Q4_0: return 18;
    case QT_Q4_1: return 20;
    case QT_Q5_0: return 22;
    case QT_Q5_1: return 24;
    case QT_Q8_0: return 34;
    case QT_Q2_K: return 84;
    case QT_Q3_K: return 110;
    case QT_Q4_K: return 144;
    case QT_Q5_K: return 176;
    case QT_Q6_K: return 210;
    default: return 0;
  }
}

/* ---------- scalar block decoders ---------- */

static void decode_q8_0(const uint8_t *s, float *o) {
  float d = half(s);
  for (int j = 0; j < 32; j++) o[j] = (float)(int8_t)s[2 + j] * d;
}

static void decode_q4_0(const uint8_t *s, float *o) {
  float d = half(s);
  for (int j = 0; j < 16; j++) {
    o[j] = (float)((s[2 + j] & 15) - 8) * d;
    o[j + 16] = (float)((s[2 + j] >> 4) - 8) * d;
  }
}

static void decode_q5_0(const uint8_t *s, float *o) {
  float d = half(s);
  uint32_t qh = (uint32_t)s[2] | ((uint32_t)s[3] << 8) | ((uint32_t)s[4] << 16) | ((uint32_t)s[5] << 24);
  for (int j = 0; j < 16; j++) {
    int lo = (s[6 + j] & 15) | (((qh >> j) & 1) << 4);
    int hi = (s[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    o[j] = (float)(lo - 16) * d;
    o[j + 16] = (float)(hi - 16) * d;
  }
}

static void decode_q4_1(const uint8_t *s, float *o) {
  float d = half(s), m = half(s + 2);
  for (int j = 0; j < 16; j++) {
    o[j] = (float)(s[4 + j] & 15) * d + m;
    o[j + 16] = (float)(s[4 + j] >> 4) * d + m;
  }
}

static void decode_q5_1(const uint8_t *s, float *o) {
  float d = half(s), m = half(s + 2);
  uint32_t qh = (uint32_t)s[4] | ((uint32_t)s[5] << 8) | ((uint32_t)s[6] << 16) | ((uint32_t)s[7] << 24);
  for (int j = 0; j < 16; j++) {
    int lo = (s[8 + j] & 15) | (((qh >> j) & 1) << 4);
    int hi = (s[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    o[j] = (float)lo * d + m;
    o[j + 16] = (float)hi * d + m;
  }
}

static void decode_q2_k(const uint8_t *s, float *o) {
  float d = half(s + 80), dmin = half(s + 82);
  for (int e = 0; e < 256; e++) {
    int sc = s[e >> 4];
    int q = (s[16 + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
    o[e] = d * (float)(sc & 15) * (float)q - dmin * (float)(sc >> 4);
  }
}

static int scale_q3k(const uint8_t *s, int j) {
  int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
  int high = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
  return low | (high << 4);
}

static void decode_q3_k(const uint8_t *s, float *o) {
  float d = half(s + 108);
  for (int e = 0; e < 256; e++) {
    int shift = (e >> 5) & 3, l = e & 31;
    int low = (s[32 + 32 * (e >> 7) + l] >> (2 * shift)) & 3;
    int high = (s[l] >> (4 * (e >> 7) + shift)) & 1;
    o[e] = d * (float)(scale_q3k(s + 96, e >> 4) - 32) * (float)(low - (high ? 0 : 4));
  }
}

static void scale_min_k4(const uint8_t *s, int j, int *sc, int *m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

static void decode_qk_affine(const uint8_t *s, float *o, int bits) {
  float d = half(s), dmin = half(s + 2);
  int qs_at = bits == 4 ? 16 : 48;
  for (int j = 0; j < 8; j++) {
    int sc, m;
    scale_min_k4(s + 4, j, &sc, &m);
    float dj = d * (float)sc, mj = dmin * (float)m;
    int c = j >> 1, hi = j & 1;
    for (int l = 0; l < 32; l++) {
      int b = s[qs_at + 32 * c + l];
      int q = hi ? b >> 4 : b & 15;
      if (bits == 5) q += ((s[16 + l] >> (2 * c + hi)) & 1) << 4;
      o[32 * j + l] = dj * (float)q - mj;
    }
  }
}

static void decode_q4_k(const uint8_t *s, float *o) { decode_qk_affine(s, o, 4); }
static void decode_q5_k(const uint8_t *s, float *o) { decode_qk_affine(s, o, 5); }

static void decode_q6_k(const uint8_t *s, float *o) {
  float d = half(s + 208);
  for (int e = 0; e < 256; e++) {
    int h = e >> 7, t = (e >> 5) & 3, l = e & 31;
    int b = s[64 * h + 32 * (t & 1) + l];
    int low = t < 2 ? b & 15 : b >> 4;
    int high = (s[128 + 32 * h + l] >> (2 * t)) & 3;
    int sc = (int8_t)s[192 + (e >> 4)];
    o[e] = d * (float)sc * (float)((low | (high << 4)) - 32);
  }
}

typedef void (*decode_fn)(const uint8_t *, float *);

static decode_fn decoder(int t) {
  switch (t) {
    case QT_Q4_0: return decode_q4_0;
    case QT_Q4_1: return decode_q4_1;
    case QT_Q5_0: return decode_q5_0;
    case QT_Q5_1: return decode_q5_1;
    case QT_Q8_0: return decode_q8_0;
    case QT_Q2_K: return decode_q2_k;
    case QT_Q3_K: return decode_q3_k;
    case QT_Q4_K: return decode_q4_k;
    case QT_Q5_K: return decode_q5_k;
    case QT_Q6_K: return decode_q6_k;
    default: return NULL;
  }
}

void quant_decode_row(int t, const uint8_t *row, int64_t n, float *out) {
  decode_fn dec = decoder(t);
  int be = quant_block_elements(t), bb = quant_block_bytes(t);
  for (int64_t b = 0; b < n / be; b++) dec(row + b * bb, out + b * be);
}

/* ---------- activations ---------- */

static int is_k(int t) { return quant_block_elements(t) == 256; }

size_t quant_act_bytes(int t, int64_t n) {
  return is_k(t) ? (size_t)(n / 256) * sizeof(block_q8k) : (size_t)(n / 32) * sizeof(block_q8);
}

/* d = amax/127, q = round-half-away(x/d): the active level's quantiser (every level's rounds the same,
   bit for bit, as roundf and ggml's reference quantisers do). */
static void quantise_block(const float *x, int n, float *d_out, int8_t *q) { active_ops->quantise_block(x, n, d_out, q); }

void quant_act(int t, const float *x, int64_t n, void *out) {
  if (is_k(t)) {
    block_q8k *y = out;
    for (int64_t b = 0; b < n / 256; b++) {
      quantise_block(x + b * 256, 256, &y[b].d, y[b].q);
      for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += y[b].q[16 * g + i];
        y[b].bsums[g] = (int16_t)s;
      }
    }
    return;
  }
  block_q8 *y = out;
  for (int64_t b = 0; b < n / 32; b++) {
    quantise_block(x + b * 32, 32, &y[b].d, y[b].q);
    int32_t sum = 0;
    for (int i = 0; i < 32; i++) sum += y[b].q[i];
    y[b].sum = sum;
    /* maddubs pairs neighbours, madd pairs those: int32 lane l of a 32-byte dot product holds
       elements 4l..4l+3 of the low half (l < 4) or 16+4(l−4).. of the high half, in AVX2 order */
    for (int l = 0; l < 8; l++) {
      int base = l < 4 ? 4 * l : 16 + 4 * (l - 4);
      y[b].sum8[l] = 8 * (y[b].q[base] + y[b].q[base + 1] + y[b].q[base + 2] + y[b].q[base + 3]);
    }
  }
}

/* ---------- dot products of one weight row with quantised activations ---------- */

/* Generic: decode each weight block, then Σ w·q per activation block, scaled by its d. */
static float row_dot_generic(int t, const uint8_t *row, const void *xv, int64_t n) {
  decode_fn dec = decoder(t);
  int be = quant_block_elements(t), bb = quant_block_bytes(t);
  float w[256];
  float sum = 0;
  for (int64_t b = 0; b < n / be; b++) {
    dec(row + b * bb, w);
    if (be == 256) {
      const block_q8k *xb = (const block_q8k *)xv + b;
      float s = 0;
      for (int i = 0; i < 256; i++) s += w[i] * (float)xb->q[i];
      sum += s * xb->d;
    } else {
      const block_q8 *xb = (const block_q8 *)xv + b;
      float s = 0;
      for (int i = 0; i < 32; i++) s += w[i] * (float)xb->q[i];
      sum += s * xb->d;
    }
  }
  return sum;
}

#ifdef DSEEK_X86
/* The f16 at p via F16C (the scalar `half` costs a loop per subnormal and a branch chain). */
TARGET_AVX2 static inline float half_fast(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

TARGET_AVX2 static inline float hsum_ps(__m256 acc) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Σ of signed int8 products of 32 pairs, as 8 int32 lanes (maddubs needs one unsigned operand). */
TARGET_AVX2 static inline __m256i dot_i8x32(__m256i a, __m256i b) {
  __m256i ua = _mm256_sign_epi8(a, a);
  __m256i sb = _mm256_sign_epi8(b, a);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(ua, sb), _mm256_set1_epi16(1));
}

TARGET_AVX2 static float row_dot_q8_0_avx2(const uint8_t *row, const block_q8 *x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++) {
    const uint8_t *w = row + b * 34;
    __m256i qw = _mm256_loadu_si256((const __m256i *)(w + 2));
    __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].q);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_fast(w) * x[b].d), _mm256_cvtepi32_ps(dot_i8x32(qw, qx)), acc);
  }
  return hsum_ps(acc);
}

/* Q4_0: w = d·(q − 8) with q unsigned nibbles, so Σ w·x = dw·dx·(Σ q·qx − 8·Σ qx): maddubs takes
   the nibbles as they are and the −8 term comes from the activation block's precomputed sum. */
TARGET_AVX2 static inline __m256i q4_0_nibbles(const uint8_t *w) {
  /* Elements 0..15 are the low nibbles, 16..31 the high nibbles (ggml block_q4_0): broadcast the
     16 bytes to both halves (a load, no shuffle port), shift the upper half, keep 4 bits. */
  __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w + 2)));
  __m256i mixed = _mm256_blend_epi32(both, _mm256_srli_epi16(both, 4), 0xF0);
  return _mm256_and_si256(mixed, _mm256_set1_epi8(15));
}

TARGET_AVX2 static float row_dot_q4_0_avx2(const uint8_t *row, const block_q8 *x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  int64_t blocks = n / 32, b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const uint8_t *w0 = row + b * 18, *w1 = w0 + 18;
    __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q4_0_nibbles(w0), _mm256_loadu_si256((const __m256i *)x[b].q)), ones);
    __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q4_0_nibbles(w1), _mm256_loadu_si256((const __m256i *)x[b + 1].q)), ones);
    p0 = _mm256_sub_epi32(p0, _mm256_loadu_si256((const __m256i *)x[b].sum8));
    p1 = _mm256_sub_epi32(p1, _mm256_loadu_si256((const __m256i *)x[b + 1].sum8));
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half_fast(w0) * x[b].d), _mm256_cvtepi32_ps(p0), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(half_fast(w1) * x[b + 1].d), _mm256_cvtepi32_ps(p1), acc1);
  }
  for (; b < blocks; b++) {
    const uint8_t *w0 = row + b * 18;
    __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q4_0_nibbles(w0), _mm256_loadu_si256((const __m256i *)x[b].q)), ones);
    p0 = _mm256_sub_epi32(p0, _mm256_loadu_si256((const __m256i *)x[b].sum8));
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half_fast(w0) * x[b].d), _mm256_cvtepi32_ps(p0), acc0);
  }
  return hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* Four tokens at once: each weight block is decoded once and used for all four activation rows
   (prompt processing is compute-bound; this saves the unpacking work). */
TARGET_AVX2 static void row_dot4_q4_0_avx2(const uint8_t *row, const block_q8 *const x[4], int64_t n, float out[4]) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < n / 32; b++) {
    const uint8_t *w = row + b * 18;
    float dw = half_fast(w);
    __m256i q = q4_0_nibbles(w);
    for (int k = 0; k < 4; k++) {
      const block_q8 *xb = x[k] + b;
      __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xb->q)), ones);
      p = _mm256_sub_epi32(p, _mm256_loadu_si256((const __m256i *)xb->sum8));
      acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), _mm256_cvtepi32_ps(p), acc[k]);
    }
  }
  for (int k = 0; k < 4; k++) out[k] = hsum_ps(acc[k]);
}

TARGET_AVX2 static void row_dot4_q8_0_avx2(const uint8_t *row, const block_q8 *const x[4], int64_t n, float out[4]) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < n / 32; b++) {
    const uint8_t *w = row + b * 34;
    float dw = half_fast(w);
    __m256i qw = _mm256_loadu_si256((const __m256i *)(w + 2));
    __m256i uw = _mm256_sign_epi8(qw, qw); /* |w|, with the sign moved onto x */
    for (int k = 0; k < 4; k++) {
      const block_q8 *xb = x[k] + b;
      __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->q), qw);
      __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(uw, sx), ones);
      acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), _mm256_cvtepi32_ps(p), acc[k]);
    }
  }
  for (int k = 0; k < 4; k++) out[k] = hsum_ps(acc[k]);
}

/* Q4_K / Q5_K against Q8_K: w = d·sc_j·q − dmin·m_j per 32-element sub-block j, so a super-block
   contributes dx·(d·Σ_j sc_j·Σ q·qx − dmin·Σ_j m_j·Σ qx): integers within the block, one float
   multiply-add per 256 weights (the sums go into a vector accumulator, reduced once per row). */
TARGET_AVX2 static float row_dot_qk_affine_avx2(const uint8_t *row, const block_q8k *x, int64_t n, int bits) {
  const __m256i low = _mm256_set1_epi8(15);
  const __m256i one = _mm256_set1_epi8(1);
  const int bb = bits == 4 ? 144 : 176, qs_at = bits == 4 ? 16 : 48;
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
  for (int64_t b = 0; b < n / 256; b++) {
    const uint8_t *w = row + b * bb;
    const block_q8k *xb = x + b;
    __m256i isum = _mm256_setzero_si256();
    int msum = 0;
    __m256i qh = bits == 5 ? _mm256_loadu_si256((const __m256i *)(w + 16)) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
      __m256i qs = _mm256_loadu_si256((const __m256i *)(w + qs_at + 32 * c));
      __m256i q0 = _mm256_and_si256(qs, low);
      __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low);
      if (bits == 5) {
        /* the 5th bit of sub-block 2c+h is bit 2c+h of qh[l] */
        q0 = _mm256_or_si256(q0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        q1 = _mm256_or_si256(q1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      for (int h = 0; h < 2; h++) {
        int j = 2 * c + h, sc, m;
        scale_min_k4(w + 4, j, &sc, &m);
        __m256i p16 = _mm256_maddubs_epi16(h ? q1 : q0, _mm256_loadu_si256((const __m256i *)(xb->q + 32 * j)));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, _mm256_set1_epi16((int16_t)sc)));
        msum += m * (xb->bsums[2 * j] + xb->bsums[2 * j + 1]);
      }
    }
    float dx = xb->d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * half_fast(w)), _mm256_cvtepi32_ps(isum), acc);
    mins += dx * half_fast(w + 2) * (float)msum;
  }
  return hsum_ps(acc) - mins;
}

/* Q6_K against Q8_K: Σ_g sc_g · Σ_{16 in g} (q − 32)·qx = Σ_g sc_g·(Σ q·qx − 32·Σ qx), all in integers
   over the super-block, one float multiply per 256 weights. */
TARGET_AVX2 static float row_dot_q6_k_avx2(const uint8_t *row, const block_q8k *x, int64_t n) {
  const __m256i low = _mm256_set1_epi8(15);
  const __m256i three = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float corr_sum = 0;
  for (int64_t b = 0; b < n / 256; b++) {
    const uint8_t *w = row + b * 210;
    const block_q8k *xb = x + b;
    const int8_t *sc = (const int8_t *)(w + 192);
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
      __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
      __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
      __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4));
      for (int t = 0; t < 4; t++) {
        int j = 4 * h + t; /* 32-element sub-block: scales 2j and 2j+1 */
        __m256i qx = _mm256_loadu_si256((const __m256i *)(xb->q + 32 * j));
        __m256i p16 = _mm256_maddubs_epi16(q[t], qx); /* lanes 0-7: elements 0-15; 8-15: 16-31 */
        __m256i scales = _mm256_set_m128i(_mm_set1_epi16(sc[2 * j + 1]), _mm_set1_epi16(sc[2 * j]));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, scales));
      }
    }
    int corr = 0;
    for (int g = 0; g < 16; g++) corr += sc[g] * xb->bsums[g];
    float s = half_fast(w + 208) * xb->d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(isum), acc);
    corr_sum += s * (float)corr;
  }
  return hsum_ps(acc) - 32.0f * corr_sum;
}
#endif

static int use_avx2 = 0;

void quant_init(int avx2) { use_avx2 = avx2; }

int quant_row_dot4(int t, const uint8_t *row, const void *const x[4], int64_t n, float out[4]) {
#ifdef DSEEK_X86
  if (use_avx2) {
    if (t == QT_Q4_0) {
      row_dot4_q4_0_avx2(row, (const block_q8 *const *)x, n, out);
      return 1;
    }
    if (t == QT_Q8_0) {
      row_dot4_q8_0_avx2(row, (const block_q8 *const *)x, n, out);
      return 1;
    }
  }
#endif
  (void)t;
  (void)row;
  (void)x;
  (void)n;
  (void)out;
  return 0;
}

float quant_row_dot(int t, const uint8_t *row, const void *x, int64_t n) {
#ifdef DSEEK_X86
  if (use_avx2) {
    switch (t) {
      case QT_Q4_0: return row_dot_q4_0_avx2(row, x, n);
      case QT_Q8_0: return row_dot_q8_0_avx2(row, x, n);
      case QT_Q4_K: return row_dot_qk_affine_avx2(row, x, n, 4);
      case QT_Q5_K: return row_dot_qk_affine_avx2(row, x, n, 5);
      case QT_Q6_K: return row_dot_q6_k_avx2(row, x, n);
      default: break;
    }
  }
#endif
  return row_dot_generic(t, row, x, n);
}
