/*
 * Native kernels: the same operations as src/kernels/reference (the oracle they are tested
 * against), with SIMD inner loops chosen at run time — AVX2+FMA+F16C on x86-64, NEON on ARM64,
 * portable scalar otherwise — and the outer loops split over the thread pool.
 *
 * Accumulation is f32 (in 8-lane partial sums combined in a fixed order), so a result depends
 * only on its inputs, never on the thread count.
 */
#include "kernels.h"
#include "threadpool.h"
#include "quant.h"
#include "repack.h"
#include "gemm_f32.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DSEEK_X86 1
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#elif defined(__aarch64__)
#include <arm_neon.h>
#define DSEEK_NEON 1
#endif

/* ---------- scalar conversions (IEEE binary16, bfloat16) ---------- */

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        exp--;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* ---------- dot products: sum_i a[i] * x[i], a in the weight type ---------- */

static float dot_f32_scalar(const float *a, const float *x, int64_t n) {
  float s[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) s[l] += a[i + l] * x[i + l];
  float sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; i++) sum += a[i] * x[i];
  return sum;
}

static float dot_f16_scalar(const uint16_t *a, const float *x, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; i++) sum += f16_to_f32(a[i]) * x[i];
  return sum;
}

static float dot_bf16_scalar(const uint16_t *a, const float *x, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; i++) sum += bf16_to_f32(a[i]) * x[i];
  return sum;
}

#ifdef DSEEK_X86
TARGET_AVX2 static inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

TARGET_AVX2 static inline __m256 load_f16x8(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

TARGET_AVX2 static inline __m256 load_bf16x8(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

#define DOT_AVX2(NAME, T, LOAD)                                                   \
  TARGET_AVX2 static float NAME(const T *a, const float *x, int64_t n) {          \
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();                    \
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();                    \
    int64_t i = 0;                                                                \
    for (; i + 32 <= n; i += 32) {                                                \
      s0 = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(x + i), s0);              \
      s1 = _mm256_fmadd_ps(LOAD(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);      \
      s2 = _mm256_fmadd_ps(LOAD(a + i + 16), _mm256_loadu_ps(x + i + 16), s2);    \
      s3 = _mm256_fmadd_ps(LOAD(a + i + 24), _mm256_loadu_ps(x + i + 24), s3);    \
    }                                                                             \
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(x + i), s0); \
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3))); \
    for (; i < n; i++) sum += SCALAR_##NAME(a[i]) * x[i];                        \
    return sum;                                                                   \
  }

#define SCALAR_dot_f32_avx2(v) (v)
#define SCALAR_dot_f16_avx2(v) f16_to_f32(v)
#define SCALAR_dot_bf16_avx2(v) bf16_to_f32(v)
#define LOAD_F32(p) _mm256_loadu_ps(p)
DOT_AVX2(dot_f32_avx2, float, LOAD_F32)
DOT_AVX2(dot_f16_avx2, uint16_t, load_f16x8)
DOT_AVX2(dot_bf16_avx2, uint16_t, load_bf16x8)

/* y[i] += p * a[i] */
TARGET_AVX2 static void axpy_f32_avx2(float *y, float p, const float *a, int64_t n) {
  __m256 vp = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vp, _mm256_loadu_ps(a + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += p * a[i];
}

TARGET_AVX2 static void f16_row_avx2(float *out, const uint16_t *a, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_f16x8(a + i));
  for (; i < n; i++) out[i] = f16_to_f32(a[i]);
}

TARGET_AVX2 static void axpy_f16_avx2(float *y, float p, const uint16_t *a, int64_t n) {
  __m256 vp = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vp, load_f16x8(a + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += p * f16_to_f32(a[i]);
}
#endif

#ifdef DSEEK_NEON
static float dot_f32_neon(const float *a, const float *x, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(x + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(x + i + 4));
  }
  float sum = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; i++) sum += a[i] * x[i];
  return sum;
}
#endif

static void f16_row_scalar(float *out, const uint16_t *a, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(a[i]);
}

static void axpy_f32_scalar(float *y, float p, const float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += p * a[i];
}
static void axpy_f16_scalar(float *y, float p, const uint16_t *a, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += p * f16_to_f32(a[i]);
}

/* ---------- dispatch ---------- */

typedef float (*dot_fn)(const void *a, const float *x, int64_t n);
static dot_fn dot_f32, dot_f16, dot_bf16;
static void (*axpy_f32)(float *, float, const float *, int64_t);
static void (*axpy_f16)(float *, float, const uint16_t *, int64_t);
static void (*f16_row)(float *, const uint16_t *, int64_t);
static const char *simd_name = "scalar";

/* The row kernels of a level: AVX2 serves the AVX2, AVX-512 and AMX levels (the packed products of
   ops.h carry the AVX-512 and AMX work), NEON the ARM64 one. */
static int x86_level(const char *level) {
  return strcmp(level, "avx2") == 0 || strcmp(level, "avx512") == 0 || strcmp(level, "amx") == 0;
}

int kernels_set_level(const char *name) {
  if (ops_select(name) != 0) return -1;
  const char *level = ops_active_name();
  dot_f32 = (dot_fn)dot_f32_scalar;
  dot_f16 = (dot_fn)dot_f16_scalar;
  dot_bf16 = (dot_fn)dot_bf16_scalar;
  axpy_f32 = axpy_f32_scalar;
  axpy_f16 = axpy_f16_scalar;
  f16_row = f16_row_scalar;
  quant_init(0);
  gemm_f32_select(0, NULL, NULL);
  simd_name = level;
#ifdef DSEEK_X86
  if (x86_level(level)) {
    dot_f32 = (dot_fn)dot_f32_avx2;
    dot_f16 = (dot_fn)dot_f16_avx2;
    dot_bf16 = (dot_fn)dot_bf16_avx2;
    axpy_f32 = axpy_f32_avx2;
    axpy_f16 = axpy_f16_avx2;
    f16_row = f16_row_avx2;
    quant_init(1);
    gemm_f32_select(1, active_ops->f32_tile, active_ops->f32_tile2);
  }
#endif
#ifdef DSEEK_NEON
  if (strcmp(level, "neon") == 0) dot_f32 = (dot_fn)dot_f32_neon;
#endif
  return 0;
}

void kernels_init(void) { kernels_set_level(NULL); }

const char *kernels_simd_name(void) { return simd_name; }

int kernels_supports(int wtype) {
  return wtype == WT_F32 || wtype == WT_F16 || wtype == WT_BF16 || quant_block_elements(wtype) > 0;
}

/* Bytes of n elements of a type (n a whole number of blocks for block types). */
size_t kernels_span_bytes(int wtype, int64_t n) {
  int be = quant_block_elements(wtype);
  if (be > 0) return (size_t)(n / be) * (size_t)quant_block_bytes(wtype);
  return (size_t)n * (wtype == WT_F32 ? 4 : 2);
}

static dot_fn dot_for(int wtype) { return wtype == WT_F32 ? dot_f32 : wtype == WT_F16 ? dot_f16 : dot_bf16; }

/* Decode `n` weights of any type into f32. */
static void decode_row(const uint8_t *row, int wtype, int64_t n, float *out) {
  if (quant_block_elements(wtype) > 0) {
    quant_decode_row(wtype, row, n, out);
  } else if (wtype == WT_F32) {
    memcpy(out, row, (size_t)n * 4);
  } else {
    const uint16_t *h = (const uint16_t *)row;
    for (int64_t i = 0; i < n; i++) out[i] = wtype == WT_F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
  }
}

/* ---------- matmul: rows split over threads; each weight row read once for all tokens ---------- */

typedef struct {
  float *y;
  const float *x;
  const uint8_t *w;
  int wtype;
  int64_t rows, cols, tokens;
  const uint8_t *xq;  /* quantised activations, for block types */
  size_t xq_stride;   /* bytes of one token's quantised activations */
} matmul_ctx;

static void matmul_task(void *p, int64_t start, int64_t end) {
  matmul_ctx *c = p;
  size_t row_bytes = kernels_span_bytes(c->wtype, c->cols);
  if (c->xq) {
    size_t st = c->xq_stride;
    for (int64_t r = start; r < end; r++) {
      const uint8_t *row = c->w + (size_t)r * row_bytes;
      int64_t t = 0;
      for (; t + 4 <= c->tokens; t += 4) {
        const void *x4[4] = {c->xq + t * st, c->xq + (t + 1) * st, c->xq + (t + 2) * st, c->xq + (t + 3) * st};
        float out[4];
        if (!quant_row_dot4(c->wtype, row, x4, c->cols, out)) break;
        for (int k = 0; k < 4; k++) c->y[(t + k) * c->rows + r] = out[k];
      }
      for (; t < c->tokens; t++) c->y[t * c->rows + r] = quant_row_dot(c->wtype, row, c->xq + t * st, c->cols);
    }
    return;
  }
  dot_fn dot = dot_for(c->wtype);
  /* For several tokens, decode a 16-bit row once and reuse it from cache. */
  float *scratch = NULL;
  if (c->tokens > 2 && c->wtype != WT_F32) {
    scratch = malloc((size_t)c->cols * sizeof(float));
    if (scratch) dot = dot_f32;
  }
  for (int64_t r = start; r < end; r++) {
    const void *row = c->w + (size_t)r * row_bytes;
    if (scratch) {
      decode_row(row, c->wtype, c->cols, scratch);
      row = scratch;
    }
    for (int64_t t = 0; t < c->tokens; t++) c->y[t * c->rows + r] = dot(row, c->x + t * c->cols, c->cols);
  }
  free(scratch);
}

void kernel_matmul(float *y, const float *x, const uint8_t *w, int wtype, int64_t rows, int64_t cols, int64_t tokens) {
  matmul_ctx c = {y, x, w, wtype, rows, cols, tokens, NULL, 0};
  uint8_t *xq = NULL;
  if (quant_block_elements(wtype) > 0) {
    /* Quantise every token's activations once; all rows reuse them. */
    c.xq_stride = quant_act_bytes(wtype, cols);
    xq = malloc(c.xq_stride * (size_t)tokens + 1);
    if (!xq) abort();
    for (int64_t t = 0; t < tokens; t++) quant_act(wtype, x + t * cols, cols, xq + t * c.xq_stride);
    c.xq = xq;
  }
  /* ~64 KB of weights per chunk keeps the dispatch cost negligible. */
  int64_t grain = 1 + (int64_t)(65536 / (kernels_span_bytes(wtype, cols) + 1));
  pool_run(matmul_task, &c, rows, grain);
  free(xq);
}

/* Wᵀx: each thread owns a range of output columns and walks all rows (deterministic order). */
typedef struct {
  float *y;
  const float *x;
  const uint8_t *w;
  int wtype;
  int64_t rows, cols, tokens;
} matmul_t_ctx;

static void matmul_t_task(void *p, int64_t start, int64_t end) {
  matmul_t_ctx *c = p;
  int64_t width = end - start;
  size_t row_bytes = kernels_span_bytes(c->wtype, c->cols);
  /* Block types decode whole rows (a column range may split a block); floats only their range. */
  int whole = quant_block_elements(c->wtype) > 0;
  float *row = malloc((size_t)(whole ? c->cols : width) * sizeof(float));
  if (!row) abort();
  for (int64_t t = 0; t < c->tokens; t++)
    for (int64_t j = start; j < end; j++) c->y[t * c->cols + j] = 0;
  for (int64_t r = 0; r < c->rows; r++) {
    const float *src;
    if (whole) {
      decode_row(c->w + (size_t)r * row_bytes, c->wtype, c->cols, row);
      src = row + start;
    } else {
      decode_row(c->w + (size_t)r * row_bytes + kernels_span_bytes(c->wtype, start), c->wtype, width, row);
      src = row;
    }
    for (int64_t t = 0; t < c->tokens; t++) axpy_f32(c->y + t * c->cols + start, c->x[t * c->rows + r], src, width);
  }
  free(row);
}

/* Wᵀx for block-quantised W over several tokens: each thread owns a range of tokens and decodes
   every row once for them (a column range would split blocks). Same order per token as one thread. */
static void matmul_t_tokens_task(void *p, int64_t start, int64_t end) {
  matmul_t_ctx *c = p;
  size_t row_bytes = kernels_span_bytes(c->wtype, c->cols);
  float *row = malloc((size_t)c->cols * sizeof(float));
  if (!row) abort();
  for (int64_t t = start; t < end; t++) memset(c->y + t * c->cols, 0, (size_t)c->cols * sizeof(float));
  for (int64_t r = 0; r < c->rows; r++) {
    decode_row(c->w + (size_t)r * row_bytes, c->wtype, c->cols, row);
    for (int64_t t = start; t < end; t++) axpy_f32(c->y + t * c->cols, c->x[t * c->rows + r], row, c->cols);
  }
  free(row);
}

/* Wᵀx over many tokens as f32 products for H matrices of `rows` rows each (H = 1: one matrix),
   y[(t·H + h)·ys + c]: each matrix's rows decoded and packed once per call into panels (W is B,
   [rows][cols]) on the pool, a matrix an item, then items of (block of `block_tokens` tokens,
   matrix) with the matrices inner, so a block's x rows stay in cache across heads, each result
   landing at its stride. Each y element is the same in-order fused sum over rows as the axpy
   path, so every path and split gives the same bits. */
typedef struct {
  float *y;
  int64_t ys;
  const float *x;
  const uint8_t *w;
  int wtype;
  int64_t H, rows, cols, tokens, panel_floats, block_tokens;
  float *panels;
} matmul_t_gemm_ctx;

static void matmul_t_pack_task(void *p, int64_t start, int64_t end) {
  matmul_t_gemm_ctx *c = p;
  size_t row_bytes = kernels_span_bytes(c->wtype, c->cols);
  float *decoded = malloc((size_t)(c->rows * c->cols) * sizeof(float));
  if (!decoded) abort();
  for (int64_t h = start; h < end; h++) {
    const uint8_t *w = c->w + (size_t)(h * c->rows) * row_bytes;
    for (int64_t r = 0; r < c->rows; r++) decode_row(w + (size_t)r * row_bytes, c->wtype, c->cols, decoded + r * c->cols);
    gemm_f32_pack(c->panels + h * c->panel_floats, decoded, c->cols, c->rows, c->cols);
  }
  free(decoded);
}

static void matmul_t_gemm_task(void *p, int64_t start, int64_t end) {
  matmul_t_gemm_ctx *c = p;
  for (int64_t i = start; i < end; i++) {
    int64_t b = i / c->H, h = i % c->H;
    int64_t t0 = b * c->block_tokens, t1 = t0 + c->block_tokens < c->tokens ? t0 + c->block_tokens : c->tokens;
    gemm_f32(c->y + (t0 * c->H + h) * c->ys, c->H * c->ys, c->x + t0 * c->rows, c->rows, c->panels + h * c->panel_floats, t1 - t0,
             c->cols, c->rows);
  }
}

static void matmul_t_gemm(float *y, int64_t ys, const float *x, const uint8_t *w, int wtype, int64_t H, int64_t rows, int64_t cols,
                          int64_t tokens, int64_t block_tokens) {
  matmul_t_gemm_ctx c = {y, ys, x, w, wtype, H, rows, cols, tokens, gemm_f32_panel_floats(rows, cols), block_tokens, NULL};
  c.panels = pool_scratch(7, (size_t)(H * c.panel_floats) * sizeof(float));
  if (!c.panels) abort();
  pool_run(matmul_t_pack_task, &c, H, 1);
  int64_t blocks = (tokens + block_tokens - 1) / block_tokens;
  pool_run(matmul_t_gemm_task, &c, blocks * H, 1);
}

void kernel_matmul_t(float *y, const float *x, const uint8_t *w, int wtype, int64_t rows, int64_t cols, int64_t tokens) {
  if (tokens >= GEMM_F32_MR) {
    matmul_t_gemm(y, cols, x, w, wtype, 1, rows, cols, tokens, GEMM_F32_MR); /* one register tile of tokens an item */
    return;
  }
  matmul_t_ctx c = {y, x, w, wtype, rows, cols, tokens};
  if (quant_block_elements(wtype) > 0) {
    int64_t threads = pool_threads();
    pool_run(matmul_t_tokens_task, &c, tokens, (tokens + threads - 1) / threads);
  } else {
    pool_run(matmul_t_task, &c, cols, 64);
  }
}

/* The same for every head of prefill's transposed W^UK (H matrices over the same tokens), blocks of
   48 tokens an item: a head's values are the bits kernel_matmul_t gives it alone. */
void kernel_matmul_t_heads(float *y, int64_t ys, const float *x, const uint8_t *w, int wtype, int64_t H, int64_t rows, int64_t cols,
                           int64_t tokens) {
  if (tokens < GEMM_F32_MR) { /* a few tokens: kernel_matmul_t's own paths per head, copied out at the stride */
    size_t head_bytes = (size_t)rows * kernels_span_bytes(wtype, cols);
    float *one = malloc((size_t)(tokens * cols) * sizeof(float));
    if (!one) abort();
    for (int64_t h = 0; h < H; h++) {
      kernel_matmul_t(one, x, w + h * head_bytes, wtype, rows, cols, tokens);
      for (int64_t t = 0; t < tokens; t++) memcpy(y + (t * H + h) * ys, one + t * cols, (size_t)cols * sizeof(float));
    }
    free(one);
    return;
  }
  matmul_t_gemm(y, ys, x, w, wtype, H, rows, cols, tokens, 8 * GEMM_F32_MR);
}

/* ---------- elementwise ---------- */

void kernel_rmsnorm(float *y, const float *x, const uint8_t *w, int wtype, int64_t dim, int64_t tokens, float eps) {
  float *weight = malloc((size_t)dim * sizeof(float));
  if (!weight) abort();
  decode_row(w, wtype, dim, weight);  /* norms are plain floats in practice; any type decodes */
  for (int64_t t = 0; t < tokens; t++) {
    const float *xt = x + t * dim;
    float *yt = y + t * dim;
    /* the sum of squares in f64 (exactness is cheap here), in four chains: one chain's add
       latency made a 2,048-wide norm ≈ 3 µs */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= dim; i += 4) {
      s0 += (double)xt[i] * xt[i];
      s1 += (double)xt[i + 1] * xt[i + 1];
      s2 += (double)xt[i + 2] * xt[i + 2];
      s3 += (double)xt[i + 3] * xt[i + 3];
    }
    for (; i < dim; i++) s0 += (double)xt[i] * xt[i];
    double sum = (s0 + s1) + (s2 + s3);
    float inv = (float)(1.0 / sqrt(sum / (double)dim + eps));
    for (int64_t i = 0; i < dim; i++) yt[i] = xt[i] * inv * weight[i];
  }
  free(weight);
}

void kernel_silu_mul(float *y, const float *gate, const float *up, int64_t n) { active_ops->silu_mul(y, gate, up, n); }

/* f32 sums as the reference's (a double sum of two floats rounds to the float sum) */
void kernel_add(float *restrict y, const float *restrict x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* ---------- attention ---------- */

/* s[j] = exp(s[j] − max) (the stable softmax numerators); returns their sum (the level's kernel). */
static float exp_shifted(float *s, int64_t n, float max) { return active_ops->exp_shifted(s, n, max); }

/* Expanded attention of a prompt chunk as two f32 matrix products per (head, block of queries):
   S = scale · Q_h Kᵀ_h over the block's longest context, a row softmax with each query's own causal
   length, then O_h = P V_h (gemm_f32.h). A dot product per (query, head, key) re-read every key row
   once per query; the register tiles read each packed key and value panel once per 6 queries.
   An item is one head: its keys and values are packed once, over the longest context of the call,
   and every block of queries reads the prefix its own longest context needs. (Packed once per
   (head, block), the packing took 24 % of a 4,096-token prefill: 11 blocks of a 512-token chunk
   each repacked the whole context.) */
#define ATTENTION_QUERY_BLOCK 48

typedef struct {
  float *out;
  const float *q, *k, *v;
  int64_t dk, dv, heads, queries;
  const int32_t *ctx;
  float scale;
} attention_ctx;

static void attention_task(void *p, int64_t start, int64_t end) {
  attention_ctx *c = p;
  const int64_t H = c->heads, dk = c->dk, dv = c->dv;
  int64_t longest = 0;
  for (int64_t t = 0; t < c->queries; t++)
    if (c->ctx[t] > longest) longest = c->ctx[t];
  for (int64_t h = start; h < end; h++) {
    float *keys = NULL, *values = NULL;
    if (longest > 0) {
      keys = pool_scratch(0, (size_t)gemm_f32_panel_floats(dk, longest) * sizeof(float));
      values = pool_scratch(1, (size_t)gemm_f32_panel_floats(longest, dv) * sizeof(float));
      if (!keys || !values) abort();
      gemm_f32_pack_transposed(keys, c->k + h * dk, H * dk, dk, longest);
      gemm_f32_pack(values, c->v + h * dv, H * dv, longest, dv);
    }
    for (int64_t t0 = 0; t0 < c->queries; t0 += ATTENTION_QUERY_BLOCK) {
      int64_t m = c->queries - t0 < ATTENTION_QUERY_BLOCK ? c->queries - t0 : ATTENTION_QUERY_BLOCK;
      int64_t n = 0;
      for (int64_t t = t0; t < t0 + m; t++)
        if (c->ctx[t] > n) n = c->ctx[t];
      if (n == 0) {
        for (int64_t t = t0; t < t0 + m; t++) memset(c->out + (t * H + h) * dv, 0, (size_t)dv * sizeof(float));
        continue;
      }
      float *s = pool_scratch(2, (size_t)(m * n) * sizeof(float));
      float *inv = pool_scratch(3, (size_t)m * sizeof(float));
      if (!s || !inv) abort();
      gemm_f32_prefix(s, n, c->q + (t0 * H + h) * dk, H * dk, keys, dk, m, n, dk);
      for (int64_t r = 0; r < m; r++) {
        float *row = s + r * n;
        int64_t len = c->ctx[t0 + r];
        float max = active_ops->scale_max(row, len, c->scale);
        float sum = exp_shifted(row, len, max);
        for (int64_t j = len; j < n; j++) row[j] = 0;
        inv[r] = len > 0 ? 1.0f / sum : 0.0f;
      }
      float *o = c->out + (t0 * H + h) * dv;
      gemm_f32_prefix(o, H * dv, s, n, values, longest, m, dv, n);
      for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < dv; i++) o[r * H * dv + i] *= inv[r];
    }
  }
}

void kernel_attention(float *out, const float *q, const float *k, const float *v, int64_t dk, int64_t dv, int64_t queries,
                      int64_t heads, const int32_t *ctx, float scale) {
  attention_ctx c = {out, q, k, v, dk, dv, heads, queries, ctx, scale};
  /* Items are heads; small ones run together so short contexts skip the wake-ups. */
  int64_t longest = 1;
  for (int64_t t = 0; t < queries; t++)
    if (ctx[t] > longest) longest = ctx[t];
  int64_t per_item = queries * longest * (dk + dv);
  pool_run(attention_task, &c, heads, 262144 / per_item + 1);
}

typedef struct {
  float *out;
  const float *qa, *qb;
  const void *const *segments;
  int64_t segment_pages, page_rows;
  const int32_t *block_table, *query_pages;
  const int32_t *list; /* the queries a job covers, by index in the batch */
  int kvtype;
  int64_t width, va, heads;
  const int32_t *ctx;
  float scale;
} shared_kv_ctx;

/*
 * kvtype 2: each latent row is ggml's Q8_0, byte for byte (ggml-common.h:
 *   #define QK8_0 32
 *   typedef struct { ggml_half d; int8_t qs[QK8_0]; } block_q8_0;   -- 34 bytes
 * ), ceil(width / 32) blocks, the last one short (its scale and width mod 32 values) when width is
 * not a multiple of 32; src/kernels/q8Row.ts writes them. d · q is exact in f32 (an 11-bit
 * significand times 8 bits), so a dequantised row has the same bits as the reference's.
 */
#define SKV_Q8_BLOCK 32
#define SKV_Q8_BLOCK_BYTES 34

static int64_t skv_q8_row_bytes(int64_t width) { return 2 * ((width + SKV_Q8_BLOCK - 1) / SKV_Q8_BLOCK) + width; }

/* The first n values of a q8 row (n ≤ its width), as f32. */
static void skv_q8_row(float *out, const uint8_t *row, int64_t n) {
  for (int64_t first = 0; first < n; first += SKV_Q8_BLOCK) {
    const uint8_t *block = row + (first / SKV_Q8_BLOCK) * SKV_Q8_BLOCK_BYTES;
    uint16_t bits;
    memcpy(&bits, block, 2); /* little-endian, as every supported target */
    float d = f16_to_f32(bits);
    const int8_t *q = (const int8_t *)(block + 2);
    int64_t m = n - first < SKV_Q8_BLOCK ? n - first : SKV_Q8_BLOCK;
    for (int64_t i = 0; i < m; i++) out[first + i] = d * (float)q[i];
  }
}

/* A query row against q8 rows, rounded as the rows' blocks are: per block of 32 (the last one
   short), d = amax/127 and q = round-half-away(x/d) (quantise_block_scalar), q zero past W; as ggml
   quantises a query to the K cache's vec_dot type. The reference rounds alike (reference/index.ts,
   quantizeQ8Query), so over q8 rows every level computes the scores of the same 8-bit queries. */
static void skv_query_q8(const float *x, int64_t W, int8_t *q, float *d) {
  for (int64_t b = 0; b * SKV_Q8_BLOCK < W; b++) {
    int64_t first = b * SKV_Q8_BLOCK, n = W - first < SKV_Q8_BLOCK ? W - first : SKV_Q8_BLOCK;
    quantise_block_scalar(x + first, (int)n, d + b, q + first);
    for (int64_t i = n; i < SKV_Q8_BLOCK; i++) q[first + i] = 0;
  }
}

/* x (W values) replaced by its 8-bit rounding d·q, for the levels that score in f32. */
static void skv_query_q8_values(float *x, int64_t W) {
  int8_t q[SKV_Q8_BLOCK];
  float d;
  for (int64_t first = 0; first < W; first += SKV_Q8_BLOCK) {
    int64_t n = W - first < SKV_Q8_BLOCK ? W - first : SKV_Q8_BLOCK;
    skv_query_q8(x + first, n, q, &d);
    for (int64_t i = 0; i < n; i++) x[first + i] = d * (float)q[i];
  }
}

/* Row r of the latent pages, as stored (f32, f16 bits or q8 blocks). */
static int64_t skv_row_bytes(const shared_kv_ctx *c) {
  return c->kvtype == 0 ? 4 * c->width : c->kvtype == 1 ? 2 * c->width : skv_q8_row_bytes(c->width);
}

/* Query t's row r, through the block table (kernels.h). */
static const uint8_t *skv_row(const shared_kv_ctx *c, int64_t t, int64_t r) {
  int64_t p = c->block_table[c->query_pages[t] + r / c->page_rows];
  return (const uint8_t *)c->segments[p / c->segment_pages] +
         ((p % c->segment_pages) * c->page_rows + r % c->page_rows) * skv_row_bytes(c);
}

/* at[i] = query t's row from + i for i < n: one table lookup per page, not per row. */
static void skv_rows(const shared_kv_ctx *c, int64_t t, int64_t from, int64_t n, const void **at) {
  int64_t row_bytes = skv_row_bytes(c);
  for (int64_t i = 0; i < n;) {
    int64_t r = from + i, in_page = c->page_rows - r % c->page_rows;
    const uint8_t *row = skv_row(c, t, r);
    for (int64_t k = 0; k < in_page && i < n; k++, i++) at[i] = row + k * row_bytes;
  }
}

/* Items are (query of c->list, head): each head's scores and values in turn, rows reread per head.
   For contexts of one chunk, where the flash path would leave all but one thread idle. */
static void shared_kv_task(void *p, int64_t start, int64_t end) {
  shared_kv_ctx *c = p;
  int64_t vb = c->width - c->va, H = c->heads, longest = 1;
  for (int64_t item = start; item < end; item++)
    if (c->ctx[c->list[item / H]] > longest) longest = c->ctx[c->list[item / H]];
  float *s = malloc(sizeof(float) * (size_t)longest);
  const void **rows = malloc(sizeof(void *) * (size_t)longest);
  /* q8: one row dequantised at a time (a reread costs less than a buffer of the whole context). */
  float *q8 = c->kvtype == 2 ? malloc(sizeof(float) * (size_t)c->width) : NULL;
  float *query = c->kvtype == 2 ? malloc(sizeof(float) * (size_t)c->width) : NULL; /* [qa | qb], rounded to 8 bits */
  if (!s || !rows || (c->kvtype == 2 && (!q8 || !query))) abort();
  for (int64_t item = start; item < end; item++) {
    int64_t t = c->list[item / H], th = t * H + item % H, n = c->ctx[t];
    if (item == start || item % H == 0) skv_rows(c, t, 0, n, rows);
    const float *qa = c->qa + th * c->va;
    const float *qb = c->qb + th * vb;
    if (query) {
      memcpy(query, qa, sizeof(float) * (size_t)c->va);
      memcpy(query + c->va, qb, sizeof(float) * (size_t)vb);
      skv_query_q8_values(query, c->width);
    }
    float max = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
      float dot;
      const uint8_t *row = (const uint8_t *)rows[j];
      if (c->kvtype == 0) {
        dot = dot_f32((const float *)row, qa, c->va) + dot_f32((const float *)row + c->va, qb, vb);
      } else if (c->kvtype == 1) {
        dot = dot_f16((const uint16_t *)row, qa, c->va) + dot_f16((const uint16_t *)row + c->va, qb, vb);
      } else {
        skv_q8_row(q8, row, c->width);
        dot = dot_f32(q8, query, c->width);
      }
      s[j] = dot * c->scale;
      if (s[j] > max) max = s[j];
    }
    float sum = exp_shifted(s, n, max);
    float *o = c->out + th * c->va;
    memset(o, 0, (size_t)c->va * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
      const uint8_t *row = (const uint8_t *)rows[j];
      if (c->kvtype == 0) axpy_f32(o, s[j], (const float *)row, c->va);
      else if (c->kvtype == 1) axpy_f16(o, s[j], (const uint16_t *)row, c->va);
      else {
        skv_q8_row(q8, row, c->va);
        axpy_f32(o, s[j], q8, c->va);
      }
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < c->va; i++) o[i] *= inv;
  }
  free(query);
  free(q8);
  free(rows);
  free(s);
}

/*
 * Decode-time latent attention, flash-decoding style: the keys of each query are cut into chunks
 * of SKV_CHUNK rows (a fixed size, so results never depend on the thread count), and each chunk
 * covers every head, so each latent row is read once for all heads instead of once per head. A
 * chunk keeps per head its max score, the sum of its exponentials and the weighted sum of its
 * value rows; a second job merges the chunks in order (the online softmax of Milakov & Gimelshein
 * 2018, as FlashAttention merges blocks). One long sequence then uses every thread.
 *
 * Inside a chunk the AVX-512 and AMX levels run their own whole-chunk kernel (ops.h, latent_chunk;
 * a decode step after 4,096 tokens, Q4_0 V2-Lite: tg32 4.75 → 6.70–8.01 tok/s, Intel Xeon with AMX,
 * 2 threads, the VM's speed varying; README, Performance). The composition below serves the others (measured on AMD EPYC Zen 3, 2
 * threads, 16 heads × 4,096 f16 keys of 27 layers read in turn, so the rows come from DRAM as in a
 * model):
 * - the scores are register tiles over 6 rows at a time, converted to f32 into an L1 block, and
 *   the values read the rows in place from their pages (f16 converted in the tile's loads): the
 *   only chunk-sized data is the stored rows (147 KB of f16), not a 295 KB f32 copy of them;
 * - the rows of the thread's next chunk are prefetched into L2 a slice per tile: a core reading
 *   alone streams ≈ 8 GB/s, and the conversion waited on DRAM for a quarter of the chunk's time;
 * - the chunk's records are built in a hot buffer and streamed out: stored in place, every cold
 *   line of them was first read from DRAM, +35 % on the values product.
 * Together 2.51 → 2.00 ms per layer at 4,096 keys (median of 30, A/B in one process), 0.83× at
 * 1,024 and 0.90× at 300; 128 heads within noise (±7 %).
 *
 * 128 rows: per-chunk costs (the merge, the tiles' edges and stores) halve against 64; 16 heads ×
 * 4,096 f16 keys ran 1.63 ms against 1.73 with the earlier kernel; 32 rows took 3.4.
 */
#define SKV_CHUNK 128

typedef struct {
  shared_kv_ctx base; /* base.list: this job's queries */
  const int64_t *first; /* per query of the list: its first chunk's record in partial */
  int64_t spans;        /* per query: its chunks split into this many runs, one thread each */
  float *partial;       /* per query and chunk, H records of SKV_RECORD(va) floats: [0] max, [1] sum, [8, 8 + va) acc */
} skv_flash_ctx;

/* A record starts on 32 bytes (a streaming store's alignment) and its values on the next 32. */
#define SKV_RECORD(va) (8 + ((va) + 7) / 8 * 8)

/* dst = src (n floats, both 16-byte aligned, n a multiple of 4) past the caches: a chunk's results
   are read once, by the merge, and a plain store would first read each cold line from DRAM. */
static void copy_streaming(float *dst, const float *src, int64_t n) {
#ifdef DSEEK_X86
  for (int64_t i = 0; i < n; i += 4) _mm_stream_ps(dst + i, _mm_load_ps(src + i));
#else
  memcpy(dst, src, sizeof(float) * (size_t)n);
#endif
}

/* The cache lines of rows [from, to), handed to the prefetcher `per_step` at a time: rows are
   contiguous within a page, so they are at most one byte range per page. */
typedef struct {
  const uint8_t *at[SKV_CHUNK + 1], *end[SKV_CHUNK + 1];
  int64_t range, ranges, per_step;
} skv_prefetch;

static void skv_prefetch_start(skv_prefetch *p, const shared_kv_ctx *c, int64_t t, int64_t from, int64_t to,
                               int64_t steps) {
  int64_t row_bytes = skv_row_bytes(c), lines = 0;
  p->range = p->ranges = 0;
  for (int64_t r = from; r < to;) {
    int64_t in_page = c->page_rows - r % c->page_rows, n = to - r < in_page ? to - r : in_page;
    p->at[p->ranges] = skv_row(c, t, r);
    p->end[p->ranges] = p->at[p->ranges] + n * row_bytes;
    lines += (n * row_bytes + 63) / 64;
    p->ranges++;
    r += n;
  }
  p->per_step = (lines + steps - 1) / (steps > 0 ? steps : 1);
}

static void skv_prefetch_step(skv_prefetch *p) {
  for (int64_t i = 0; i < p->per_step && p->range < p->ranges; i++) {
#if defined(__GNUC__)
    __builtin_prefetch(p->at[p->range], 0, 2); /* to L2 (locality 2), not L1: the lines wait a whole chunk */
#endif
    p->at[p->range] += 64;
    if (p->at[p->range] >= p->end[p->range]) p->range++;
  }
}

static void skv_prefetch_tick(void *p) { skv_prefetch_step(p); }

/* A level kernel's records (ops.h: it sets [0], [1] and [8, 8 + va)) with their other floats
   zeroed, streamed out to `part`. */
static void skv_records_out(float *part, float *acc, int64_t H, int64_t R, int64_t va) {
  for (int64_t h = 0; h < H; h++) {
    for (int64_t i = 2; i < 8; i++) acc[h * R + i] = 0;
    for (int64_t i = 8 + va; i < R; i++) acc[h * R + i] = 0;
  }
  copy_streaming(part, acc, H * R);
}

/* One chunk, rows [j0, j0 + m) of query t, into `part`; prefetches rows [next0, next1) meanwhile. */
static void skv_chunk(skv_flash_ctx *f, int64_t t, int64_t j0, int64_t m, float *part, const float *queries,
                      const latent_queries_q8 *q8, int queries_new, int64_t next0, int64_t next1) {
  shared_kv_ctx *c = &f->base;
  int64_t H = c->heads, va = c->va, W = c->width;
  /* q8 rows are dequantised once, into a chunk of f32 rows that the values read too */
  float *block = pool_scratch(0, sizeof(float) * (size_t)((c->kvtype == 2 ? SKV_CHUNK : GEMM_F32_MR) * W));
  float *st = pool_scratch(2, sizeof(float) * (size_t)(SKV_CHUNK * H));
  float *s = pool_scratch(4, sizeof(float) * (size_t)(SKV_CHUNK * H));
  float *edge = pool_scratch(5, sizeof(float) * (size_t)(SKV_CHUNK * GEMM_F32_NR));
  const void **value_rows = pool_scratch(6, sizeof(void *) * SKV_CHUNK);
  int64_t R = SKV_RECORD(va);
  float *acc = pool_scratch(8, sizeof(float) * (size_t)(H * R)); /* this chunk's records, while hot */
  if (!block || !st || !s || !edge || !value_rows || !acc) abort();
  int64_t groups = (m + GEMM_F32_MR - 1) / GEMM_F32_MR, panels = (va + GEMM_F32_NR - 1) / GEMM_F32_NR;
  skv_prefetch pf;
  /* the stored rows, found through the block table once per page */
  skv_rows(c, t, j0, m, value_rows);
  if (q8) {
    /* the level's whole-chunk kernel on the q8 rows as stored, with 8-bit queries */
    skv_prefetch_start(&pf, c, t, next0, next1, LATENT_CHUNK_STEPS(m, H, W, va));
    active_ops->latent_chunk_q8(acc, R, (const uint8_t *const *)value_rows, m, W, va, q8, H, c->scale, skv_prefetch_tick, &pf);
    skv_records_out(part, acc, H, R, va);
    return;
  }
  if (active_ops->latent_chunk) {
    /* the level's whole-chunk kernel, over the stored rows (q8 ones dequantised first) */
    skv_prefetch_start(&pf, c, t, next0, next1, LATENT_CHUNK_STEPS(m, H, W, va));
    if (c->kvtype == 2) {
      for (int64_t j = 0; j < m; j++) {
        skv_q8_row(block + j * W, (const uint8_t *)value_rows[j], W);
        value_rows[j] = block + j * W;
      }
    }
    active_ops->latent_chunk(acc, R, value_rows, c->kvtype == 1, m, W, va, queries, queries_new, H, c->scale,
                             skv_prefetch_tick, &pf);
    skv_records_out(part, acc, H, R, va);
    return;
  }
  skv_prefetch_start(&pf, c, t, next0, next1, groups + panels);
  /* Sᵀ = rows · qᵀ, 6 rows at a time, each group converted to f32 as the A operand */
  for (int64_t g = 0; g < m; g += GEMM_F32_MR) {
    int64_t mg = m - g < GEMM_F32_MR ? m - g : GEMM_F32_MR;
    float *rows = c->kvtype == 2 ? block + g * W : block;
    for (int64_t j = 0; j < mg; j++) {
      const uint8_t *row = (const uint8_t *)value_rows[g + j];
      if (c->kvtype == 0) memcpy(rows + j * W, row, sizeof(float) * (size_t)W);
      else if (c->kvtype == 1) f16_row(rows + j * W, (const uint16_t *)row, W);
      else skv_q8_row(rows + j * W, row, W);
    }
    gemm_f32(st + g * H, H, rows, W, queries, mg, H, W);
    skv_prefetch_step(&pf);
  }
  for (int64_t h = 0; h < H; h++) {
    float *sh = s + h * SKV_CHUNK, max = -INFINITY;
    for (int64_t j = 0; j < m; j++) {
      sh[j] = st[j * H + h] * c->scale;
      if (sh[j] > max) max = sh[j];
    }
    acc[h * R] = max;
    acc[h * R + 1] = exp_shifted(sh, m, max);
    for (int64_t i = 2; i < 8; i++) acc[h * R + i] = 0;
    for (int64_t i = 8 + va; i < R; i++) acc[h * R + i] = 0;
  }
  /* O = P · rows[:, :va], a panel of NR values at a time, the rows read where they lie */
  if (c->kvtype == 2) /* the values read the dequantised rows */
    for (int64_t j = 0; j < m; j++) value_rows[j] = block + j * W;
  for (int64_t col = 0; col < va; col += GEMM_F32_NR) {
    int64_t n = va - col < GEMM_F32_NR ? va - col : GEMM_F32_NR;
    gemm_f32_gathered(acc + 8 + col, R, s, SKV_CHUNK, value_rows, c->kvtype == 1, col, H, n, m, edge);
    skv_prefetch_step(&pf);
  }
  copy_streaming(part, acc, H * R);
}

/* Items are (query, span): a span is a run of the query's chunks, so a thread's next chunk is
   known and its rows can be fetched ahead. */
static void skv_chunk_task(void *p, int64_t start, int64_t end) {
  skv_flash_ctx *f = p;
  shared_kv_ctx *c = &f->base;
  int64_t H = c->heads, va = c->va, vb = c->width - c->va, W = c->width;
  float *q = pool_scratch(1, sizeof(float) * (size_t)(H * W));
  float *queries = pool_scratch(3, sizeof(float) * (size_t)gemm_f32_panel_floats(W, H));
  if (!q || !queries) abort();
  /* q8 rows on a level with 8-bit chunks: the queries in its panels (ops.h, latent_queries_q8) */
  const int64_t nb = (W + SKV_Q8_BLOCK - 1) / SKV_Q8_BLOCK, panels = (H + 15) / 16;
  latent_queries_q8 q8 = {0};
  int8_t *q8_row = NULL;
  if (c->kvtype == 2 && active_ops->latent_chunk_q8) {
    size_t qs_bytes = (size_t)(panels * nb * 512), scale_bytes = sizeof(float) * (size_t)(panels * nb * 16);
    uint8_t *buf = pool_scratch(9, qs_bytes + 2 * scale_bytes + (size_t)(nb * SKV_Q8_BLOCK) + sizeof(float) * (size_t)nb);
    if (!buf) abort();
    q8.qs = (const int8_t *)buf;
    q8.d = (const float *)(buf + qs_bytes);
    q8.sum = (const int32_t *)(buf + qs_bytes + scale_bytes);
    q8_row = (int8_t *)(buf + qs_bytes + 2 * scale_bytes);
  }
  for (int64_t item = start; item < end; item++) {
    int64_t i = item / f->spans, t = c->list[i], span = item % f->spans, n = c->ctx[t];
    int64_t own = (n + SKV_CHUNK - 1) / SKV_CHUNK; /* this query's chunks */
    int64_t ch0 = own * span / f->spans, ch1 = own * (span + 1) / f->spans;
    if (ch0 >= ch1) continue;
    /* the query of every head as one [qa | qb] row, packed as the B operand of the scores */
    for (int64_t h = 0; h < H; h++) {
      memcpy(q + h * W, c->qa + (t * H + h) * va, sizeof(float) * (size_t)va);
      memcpy(q + h * W + va, c->qb + (t * H + h) * vb, sizeof(float) * (size_t)vb);
    }
    if (q8_row) {
      int8_t *qs = (int8_t *)q8.qs;
      float *qd = (float *)q8.d, *row_d = (float *)(q8_row + nb * SKV_Q8_BLOCK);
      int32_t *qsum = (int32_t *)q8.sum;
      memset(qs, 0, (size_t)(panels * nb * 512));
      memset(qd, 0, sizeof(float) * (size_t)(panels * nb * 16));
      memset(qsum, 0, sizeof(int32_t) * (size_t)(panels * nb * 16));
      for (int64_t h = 0; h < H; h++) {
        skv_query_q8(q + h * W, W, q8_row, row_d);
        int64_t p = h / 16, l = h % 16;
        for (int64_t b = 0; b < nb; b++) {
          int32_t sum = 0;
          for (int64_t k = 0; k < SKV_Q8_BLOCK; k++) {
            qs[(p * nb + b) * 512 + 64 * (k / 4) + 4 * l + k % 4] = q8_row[b * SKV_Q8_BLOCK + k];
            sum += q8_row[b * SKV_Q8_BLOCK + k];
          }
          qd[(p * nb + b) * 16 + l] = row_d[b];
          qsum[(p * nb + b) * 16 + l] = sum;
        }
      }
    } else {
      if (c->kvtype == 2)
        for (int64_t h = 0; h < H; h++) skv_query_q8_values(q + h * W, W);
      gemm_f32_pack_transposed(queries, q, W, W, H);
    }
    for (int64_t ch = ch0; ch < ch1; ch++) {
      int64_t j0 = ch * SKV_CHUNK, m = n - j0 < SKV_CHUNK ? n - j0 : SKV_CHUNK;
      int64_t next0 = ch + 1 < ch1 ? j0 + SKV_CHUNK : 0, next1 = ch + 1 < ch1 ? (n < j0 + 2 * SKV_CHUNK ? n : j0 + 2 * SKV_CHUNK) : 0;
      float *part = f->partial + (size_t)((f->first[i] + ch) * H) * (size_t)SKV_RECORD(va);
      skv_chunk(f, t, j0, m, part, queries, q8_row ? &q8 : NULL, ch == ch0, next0, next1);
    }
  }
#ifdef DSEEK_X86
  _mm_sfence(); /* the streaming stores, visible before the merge job starts */
#endif
}

/* Merge each (query, head)'s chunks in order: out = Σ_c e^(m_c − M)·acc_c / Σ_c e^(m_c − M)·l_c. */
static void skv_merge_task(void *p, int64_t start, int64_t end) {
  skv_flash_ctx *f = p;
  shared_kv_ctx *c = &f->base;
  int64_t H = c->heads, va = c->va, R = SKV_RECORD(va);
  for (int64_t item = start; item < end; item++) {
    int64_t i = item / H, t = c->list[i], h = item % H, own = (c->ctx[t] + SKV_CHUNK - 1) / SKV_CHUNK;
    float *o = c->out + (t * H + h) * va;
    memset(o, 0, sizeof(float) * (size_t)va);
    if (own == 0) continue; /* no keys: nothing attended */
    float M = -INFINITY;
    for (int64_t ch = 0; ch < own; ch++) {
      float mc = f->partial[(size_t)((f->first[i] + ch) * H + h) * (size_t)R];
      if (mc > M) M = mc;
    }
    float L = 0;
    for (int64_t ch = 0; ch < own; ch++) {
      const float *part = f->partial + (size_t)((f->first[i] + ch) * H + h) * (size_t)R;
      if (part[0] == -INFINITY) continue;
      float w = expf(part[0] - M);
      L += w * part[1];
      axpy_f32(o, w, part + 8, va);
    }
    float inv = 1.0f / L;
    for (int64_t i = 0; i < va; i++) o[i] *= inv;
  }
}

void kernel_shared_kv_attention(float *out, const float *qa, const float *qb, const void *const *segments,
                                int64_t segment_pages, int64_t page_rows, const int32_t *block_table,
                                const int32_t *query_pages, int kvtype, int64_t width, int64_t va, int64_t queries,
                                int64_t heads, const int32_t *ctx, float scale) {
  shared_kv_ctx c = {out, qa, qb, segments, segment_pages, page_rows, block_table, query_pages, NULL, kvtype, width, va,
                     heads, ctx, scale};
  /* Each query takes the path its own context calls for, so its result never depends on the
     other sequences of the batch (nor on the thread count): contexts of one chunk the per-head
     loop, longer ones the chunks, in groups whose records fit in 64 MB. A level with its own
     chunk kernel takes the chunks at every length: V2-Lite's 16 heads over 32–90 f16 rows ran
     91 µs a call in the per-head loop (a dot product per head and row), ≈ 25 µs as one chunk. */
  const int64_t short_context = active_ops->latent_chunk ? 0 : SKV_CHUNK;
  int32_t *order = malloc(sizeof(int32_t) * (size_t)(queries > 0 ? queries : 1));
  int64_t *first = malloc(sizeof(int64_t) * (size_t)(queries > 0 ? queries : 1));
  if (!order || !first) abort();
  int64_t shorts = 0; /* order: the one-chunk queries, then the others, each in batch order */
  for (int64_t t = 0; t < queries; t++)
    if (ctx[t] <= short_context) order[shorts++] = (int32_t)t;
  for (int64_t t = 0, k = shorts; t < queries; t++)
    if (ctx[t] > short_context) order[k++] = (int32_t)t;
  size_t record_bytes = sizeof(float) * (size_t)(heads * SKV_RECORD(va)), cap = (size_t)64 << 20;
  for (int64_t g = shorts; g < queries;) {
    int64_t end = g, records = 0, longest = 0;
    while (end < queries) {
      int64_t own = (ctx[order[end]] + SKV_CHUNK - 1) / SKV_CHUNK;
      if (end > g && (size_t)(records + own) * record_bytes > cap) break;
      first[end - g] = records;
      records += own;
      if (own > longest) longest = own;
      end++;
    }
    float *partial = pool_scratch(7, (size_t)records * record_bytes);
    c.list = order + g;
    if (!partial) { /* out of memory for the records: the per-head loop needs none */
      pool_run(shared_kv_task, &c, (end - g) * heads, 1);
    } else {
      /* As many spans per query as threads (a long query alone keeps them all busy), dealt out
         one at a time (uneven queries balance) */
      int64_t spans = pool_threads() < longest ? pool_threads() : longest;
      skv_flash_ctx f = {c, first, spans, partial};
      pool_run(skv_chunk_task, &f, (end - g) * spans, 1);
      pool_run(skv_merge_task, &f, (end - g) * heads, 4);
    }
    g = end;
  }
  if (shorts > 0) {
    int64_t longest = 1;
    for (int64_t i = 0; i < shorts; i++)
      if (ctx[order[i]] > longest) longest = ctx[order[i]];
    c.list = order;
    /* (query, head) pairs per job chunk: ~64K multiply-adds, so short contexts run on the calling
       thread instead of paying for a thread wake-up per head */
    pool_run(shared_kv_task, &c, shorts * heads, 65536 / (longest * (width + va)) + 1);
  }
  free(first);
  free(order);
}

/* ---------- memory bandwidth probe ---------- */

typedef struct {
  const uint8_t *data;
  int64_t chunk;
  double *sums;
} probe_ctx;

#ifdef DSEEK_X86
TARGET_AVX2 static double sum_avx2(const uint8_t *p, int64_t n) {
  /* Wide loads, four independent accumulators: as fast a streaming read as the core can issue. */
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 128 <= n; i += 128) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps((const float *)(p + i)));
    a1 = _mm256_add_ps(a1, _mm256_load_ps((const float *)(p + i + 32)));
    a2 = _mm256_add_ps(a2, _mm256_load_ps((const float *)(p + i + 64)));
    a3 = _mm256_add_ps(a3, _mm256_load_ps((const float *)(p + i + 96)));
  }
  return hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
#endif

static double sum_scalar(const uint8_t *p, int64_t n) {
  const uint64_t *q = (const uint64_t *)p;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int64_t i = 0; i + 4 <= n / 8; i += 4) {
    s0 += q[i];
    s1 += q[i + 1];
    s2 += q[i + 2];
    s3 += q[i + 3];
  }
  return (double)(s0 ^ s1 ^ s2 ^ s3);
}

static void probe_task(void *p, int64_t start, int64_t end) {
  probe_ctx *c = p;
  for (int64_t i = start; i < end; i++) {
#ifdef DSEEK_X86
    if (x86_level(simd_name)) {
      c->sums[i] = sum_avx2(c->data + i * c->chunk, c->chunk);
      continue;
    }
#endif
    c->sums[i] = sum_scalar(c->data + i * c->chunk, c->chunk);
  }
}

double kernel_read_bandwidth(int64_t bytes, int passes) {
  int64_t chunk = 1 << 20;
  int64_t chunks = bytes / chunk;
  if (chunks < 1) chunks = 1;
  uint8_t *data = NULL;
  if (posix_memalign((void **)&data, 64, (size_t)(chunks * chunk)) != 0) return -1;
  memset(data, 1, (size_t)(chunks * chunk)); /* touch every page first */
  double *sums = calloc((size_t)chunks, sizeof(double));
  probe_ctx c = {data, chunk, sums};
  pool_run(probe_task, &c, chunks, 1); /* warm-up pass */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < passes; i++) pool_run(probe_task, &c, chunks, 1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  volatile double sink = sums[0];
  (void)sink;
  free(sums);
  free(data);
  return (double)(chunks * chunk) * passes / seconds;
}
