/*
 * Repacking weights into the kernel-owned layouts of ops.h, the products over them (activations
 * quantised once per call, row groups split over the thread pool), and the choice of instruction
 * level. Kernels know nothing about models: a weight is bytes, a GGML type and a shape.
 */
#include "repack.h"
#include "ops.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

const kernel_ops *active_ops = &ops_scalar;

float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) bits = sign;
    else {
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) bits = sign | 0x7f800000 | (mant << 13);
  else bits = sign | ((exp + 112) << 23) | (mant << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Round half away from zero, as roundf and ggml's reference quantisers do (and the TypeScript
   reference: src/formats/quant). */
void quantise_block_scalar(const float *x, int n, float *d_out, int8_t *q) {
  float amax = 0;
  for (int i = 0; i < n; i++) {
    float a = fabsf(x[i]);
    if (a > amax) amax = a;
  }
  float d = amax / 127.0f;
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  for (int i = 0; i < n; i++) q[i] = (int8_t)roundf(x[i] * id);
}

void silu_mul_scalar(float *y, const float *gate, const float *up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float g = gate[i];
    y[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

float exp_shifted_scalar(float *s, int64_t n, float max) {
  float sum = 0;
  for (int64_t j = 0; j < n; j++) {
    s[j] = expf(s[j] - max);
    sum += s[j];
  }
  return sum;
}

float scale_max_scalar(float *s, int64_t n, float scale) {
  float max = -INFINITY;
  for (int64_t j = 0; j < n; j++) {
    s[j] *= scale;
    if (s[j] > max) max = s[j];
  }
  return max;
}

/* ---------- levels ---------- */

static int cpu_has(const kernel_ops *ops) {
  if (ops == &ops_scalar) return 1;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (ops == &ops_avx2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (ops == &ops_avx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  if (ops == &ops_amx) return cpu_has(&ops_avx512) && amx_usable();
#endif
#if defined(__aarch64__)
  if (ops == &ops_neon) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    return 1; /* every Apple ARM64 CPU has the dot-product instructions */
#else
    return 0;
#endif
  }
#endif
  return 0;
}

/* Best first. */
static const kernel_ops *const levels[] = {
#if defined(__x86_64__) || defined(_M_X64)
    &ops_amx,
    &ops_avx512,
    &ops_avx2,
#endif
#if defined(__aarch64__)
    &ops_neon,
#endif
    &ops_scalar,
};
#define LEVEL_COUNT (sizeof levels / sizeof levels[0])

int ops_level_count(void) { return (int)LEVEL_COUNT; }

const char *ops_level_name(int i) { return i >= 0 && i < (int)LEVEL_COUNT ? levels[i]->name : NULL; }

int ops_level_supported(int i) { return i >= 0 && i < (int)LEVEL_COUNT && cpu_has(levels[i]); }

int ops_select(const char *name) {
  for (size_t i = 0; i < LEVEL_COUNT; i++) {
    if (name ? strcmp(levels[i]->name, name) == 0 : 1) {
      if (!cpu_has(levels[i])) {
        if (name) return -1;
        continue;
      }
      active_ops = levels[i];
      return 0;
    }
  }
  return -1;
}

const char *ops_active_name(void) { return active_ops->name; }

/* ---------- layouts ---------- */

/* The layout the active level repacks a type into: for Q6_K the 6-bit one where the level has
   its kernel. */
static int layout_of(int wtype) {
  switch (wtype) {
    case QT_Q4_0: return LAYOUT_Q4_0X8;
    case QT_Q8_0: return LAYOUT_Q8_0X8;
    case QT_Q4_K: return LAYOUT_Q4_KX8;
    case QT_Q6_K: return LAYOUT_Q6_K6X8;
    case QT_Q5_0: return LAYOUT_Q5_0X8;
    default: return LAYOUT_ROWS;
  }
}

int packed_layout_fits(int layout, int wtype) {
  return layout > LAYOUT_ROWS && layout < LAYOUT_COUNT && layout == layout_of(wtype);
}

/* Bytes of one row group's block (8 rows × one 32- or 256-element block). */
static size_t group_block_bytes(int layout) {
  switch (layout) {
    case LAYOUT_Q4_0X8: return 144;
    case LAYOUT_Q8_0X8: return 272;
    case LAYOUT_Q4_KX8: return 1184;
    case LAYOUT_Q5_0X8: return 176;
    case LAYOUT_Q6_K6X8: return 1680;
    default: return 0;
  }
}

size_t packed_group_bytes(int layout, int wtype, int64_t cols) {
  int be = quant_block_elements(wtype);
  return be > 0 ? (size_t)(cols / be) * group_block_bytes(layout) : 0;
}

int repack_layout(int wtype, int64_t rows, int64_t cols) {
  int layout = layout_of(wtype);
  if (layout == LAYOUT_ROWS || rows < ROW_GROUP || active_ops->gemm[layout] == NULL) return LAYOUT_ROWS;
  int be = quant_block_elements(wtype);
  if (be <= 0 || cols % be != 0 || cols == 0) return LAYOUT_ROWS;
  return layout;
}

size_t repack_bytes(int wtype, int64_t rows, int64_t cols) { return packed_bytes(layout_of(wtype), wtype, rows, cols); }

size_t packed_bytes(int layout, int wtype, int64_t rows, int64_t cols) {
  /* Q4_K gains 4 bytes per row and super-block from unpacked 6-bit scales; the others are a
     permutation of the rows. */
  int be = quant_block_elements(wtype), bb = quant_block_bytes(wtype);
  int64_t groups = rows / ROW_GROUP, blocks = cols / be;
  return (size_t)(groups * blocks) * group_block_bytes(layout) + (size_t)((rows - groups * ROW_GROUP) * blocks * bb);
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

/* One group-block from the 8 source rows' block b. */
/* Element e's 6-bit quant of a Q6_K block (ggml's block_q6_K: ql[128], qh[64], scales[16], d):
   element 128h + 32t + l (l < 32) is ql[64h + 32(t mod 2) + l]'s low nibble for t < 2, high for
   t ≥ 2, with bits 2t, 2t+1 of qh[32h + l] on top (dequantize_row_q6_K in ggml-quants.c). */
static uint8_t q6_k_quant(const uint8_t *block, int e) {
  int h = e >> 7, t = (e >> 5) & 3, l = e & 31;
  uint8_t ql = block[64 * h + 32 * (t & 1) + l], qh = block[128 + 32 * h + l];
  return (uint8_t)((t < 2 ? ql & 15 : ql >> 4) | (((qh >> (2 * t)) & 3) << 4));
}

static void pack_block(int layout, const uint8_t *const src[ROW_GROUP], uint8_t *o) {
  switch (layout) {
    case LAYOUT_Q4_0X8:
      for (int r = 0; r < 8; r++) {
        memcpy(o + 2 * r, src[r], 2);
        for (int h = 0; h < 2; h++) memcpy(o + 16 + h * 64 + r * 8, src[r] + 2 + 8 * h, 8);
      }
      break;
    case LAYOUT_Q5_0X8:
      for (int r = 0; r < 8; r++) {
        memcpy(o + 2 * r, src[r], 2);
        for (int p = 0; p < 4; p++) o[16 + p * 8 + r] = src[r][2 + p]; /* qh, little-endian: byte p = bits 8p..8p+7 */
        for (int h = 0; h < 2; h++) memcpy(o + 48 + h * 64 + r * 8, src[r] + 6 + 8 * h, 8);
      }
      break;
    case LAYOUT_Q8_0X8:
      for (int r = 0; r < 8; r++) {
        memcpy(o + 2 * r, src[r], 2);
        for (int c = 0; c < 4; c++)
          for (int i = 0; i < 8; i++) o[16 + c * 64 + r * 8 + i] = (uint8_t)(src[r][2 + 8 * c + i] ^ 0x80);
      }
      break;
    case LAYOUT_Q4_KX8:
      for (int r = 0; r < 8; r++) {
        const uint8_t *s = src[r];
        memcpy(o + 2 * r, s, 2);
        memcpy(o + 16 + 2 * r, s + 2, 2);
        for (int j = 0; j < 8; j++) {
          int sc, m;
          scale_min_k4(s + 4, j, &sc, &m);
          o[32 + (j >> 1) * 16 + r * 2 + (j & 1)] = (uint8_t)sc;
          o[96 + (j >> 1) * 16 + r * 2 + (j & 1)] = (uint8_t)m;
        }
        for (int c = 0; c < 4; c++)
          for (int k = 0; k < 4; k++) memcpy(o + 160 + (c * 4 + k) * 64 + r * 8, s + 16 + 32 * c + 8 * k, 8);
      }
      break;
    case LAYOUT_Q6_K6X8:
      memset(o + 144, 0, 1680 - 144);
      for (int r = 0; r < 8; r++) {
        const uint8_t *s = src[r];
        memcpy(o + 2 * r, s + 208, 2);
        for (int g = 0; g < 16; g++) o[16 + (g >> 1) * 16 + r * 2 + (g & 1)] = s[192 + g];
        for (int e = 0; e < 256; e++) {
          int q = q6_k_quant(s, e), p = e >> 5, j = (e >> 3) & 3, i = e & 7;
          o[144 + p * 128 + (j & 1) * 64 + r * 8 + i] |= (uint8_t)((q & 15) << (j < 2 ? 0 : 4));
          o[1168 + p * 64 + r * 8 + i] |= (uint8_t)((q >> 4) << (2 * j));
        }
      }
      break;
  }
}

typedef struct {
  const uint8_t *src;
  uint8_t *dst;
  int layout;
  size_t row_bytes, gb;
  int64_t blocks;
  int bb;
} repack_ctx;

static void repack_task(void *p, int64_t start, int64_t end) {
  repack_ctx *c = p;
  for (int64_t g = start; g < end; g++) {
    uint8_t *o = c->dst + (size_t)g * c->blocks * c->gb;
    for (int64_t b = 0; b < c->blocks; b++) {
      const uint8_t *src[ROW_GROUP];
      for (int r = 0; r < ROW_GROUP; r++) src[r] = c->src + (size_t)(g * ROW_GROUP + r) * c->row_bytes + (size_t)b * c->bb;
      pack_block(c->layout, src, o + (size_t)b * c->gb);
    }
  }
}

int repack_weight(const uint8_t *src, int wtype, int64_t rows, int64_t cols, uint8_t *dst) {
  int layout = repack_layout(wtype, rows, cols);
  if (layout == LAYOUT_ROWS) return LAYOUT_ROWS;
  int be = quant_block_elements(wtype), bb = quant_block_bytes(wtype);
  int64_t blocks = cols / be, groups = rows / ROW_GROUP;
  repack_ctx c = {src, dst, layout, (size_t)(blocks * bb), group_block_bytes(layout), blocks, bb};
  pool_run(repack_task, &c, groups, 16);
  size_t tail_rows = (size_t)(rows - groups * ROW_GROUP);
  memcpy(dst + (size_t)(groups * blocks) * c.gb, src + (size_t)groups * ROW_GROUP * c.row_bytes, tail_rows * c.row_bytes);
  return layout;
}

/* ---------- activations ---------- */

/* The offset act_q8x.bias is built for: what a packed weight's stored value exceeds its value by. */
static int32_t stored_offset(int wtype) {
  return wtype == QT_Q4_0 ? 8 : wtype == QT_Q5_0 ? 16 : wtype == QT_Q8_0 ? 128 : 0;
}

static void quantise_q8x(const float *x, int64_t n, int32_t offset, act_q8x *out) {
  for (int64_t b = 0; b < n / 32; b++) {
    act_q8x *a = out + b;
    active_ops->quantise_block(x + 32 * b, 32, &a->d, a->q);
    int32_t s0 = 0, s1 = 0;
    for (int i = 0; i < 32; i++) {
      if ((i & 7) < 4) s0 += a->q[i];
      else s1 += a->q[i];
    }
    a->bias[0] = -offset * s0;
    a->bias[1] = -offset * s1;
    a->bias_sum = a->bias[0] + a->bias[1];
  }
}

static void quantise_q8kx(const float *x, int64_t n, act_q8kx *out) {
  for (int64_t b = 0; b < n / 256; b++) {
    act_q8kx *a = out + b;
    active_ops->quantise_block(x + 256 * b, 256, &a->d, a->q);
    for (int g = 0; g < 16; g++) {
      int s = 0;
      for (int i = 0; i < 16; i++) s += a->q[16 * g + i];
      a->bs16[g] = (int16_t)s;
    }
    for (int j = 0; j < 8; j++) a->bs32[j] = (int16_t)(a->bs16[2 * j] + a->bs16[2 * j + 1]);
    memset(a->pad, 0, sizeof a->pad);
  }
}

size_t packed_act_bytes(int wtype, int64_t cols) {
  return quant_block_elements(wtype) == 256 ? (size_t)(cols / 256) * sizeof(act_q8kx) : (size_t)(cols / 32) * sizeof(act_q8x);
}

packed_gemm_fn packed_gemm_for(int layout) {
  packed_gemm_fn fn = active_ops->gemm[layout];
  return fn ? fn : ops_scalar.gemm[layout]; /* packed under another level: still computed right */
}

void packed_quantise_row(int wtype, const float *x, int64_t cols, void *out) {
  if (quant_block_elements(wtype) == 256) quantise_q8kx(x, cols, out);
  else quantise_q8x(x, cols, stored_offset(wtype), out);
}

/* ---------- products ---------- */

/* Rows past the last group (the file's own format) against the same activations: decoded to
   f32 block by block (only awkward shapes have them; real weights have rows in multiples of 8). */
static void tail_rows(float *y, int64_t ys, const uint8_t *rows, int wtype, int64_t first, int64_t count, int64_t cols,
                      const void *x, int64_t xs, int64_t tokens) {
  int be = quant_block_elements(wtype), bb = quant_block_bytes(wtype);
  int64_t blocks = cols / be;
  float w[256];
  for (int64_t r = 0; r < count; r++) {
    const uint8_t *row = rows + (size_t)(r * blocks * bb);
    for (int64_t t = 0; t < tokens; t++) {
      float sum = 0;
      for (int64_t b = 0; b < blocks; b++) {
        quant_decode_row(wtype, row + b * bb, be, w);
        float s = 0, d;
        const int8_t *q;
        if (be == 256) {
          const act_q8kx *a = (const act_q8kx *)x + t * xs + b;
          d = a->d;
          q = a->q;
        } else {
          const act_q8x *a = (const act_q8x *)x + t * xs + b;
          d = a->d;
          q = a->q;
        }
        for (int i = 0; i < be; i++) s += w[i] * (float)q[i];
        sum += s * d;
      }
      y[t * ys + first + r] = sum;
    }
  }
}

typedef struct {
  const float *x;
  void *xq;
  int64_t cols, blocks;
  int be;
  int32_t offset;
} quantise_ctx;

static void quantise_task(void *p, int64_t start, int64_t end) {
  quantise_ctx *c = p;
  for (int64_t t = start; t < end; t++) {
    if (c->be == 256) quantise_q8kx(c->x + t * c->cols, c->cols, (act_q8kx *)c->xq + t * c->blocks);
    else quantise_q8x(c->x + t * c->cols, c->cols, c->offset, (act_q8x *)c->xq + t * c->blocks);
  }
}

typedef struct {
  float *y;
  int64_t ys;
  const uint8_t *w;
  size_t group_bytes;
  const void *x;
  int64_t xs, blocks, tokens;
  packed_gemm_fn fn;
} packed_ctx;

static void packed_task(void *p, int64_t start, int64_t end) {
  packed_ctx *c = p;
  c->fn(c->y, c->ys, c->w, c->group_bytes, c->x, c->xs, c->blocks, c->tokens, start, end);
}

int packed_matmul(float *y, const float *x, const uint8_t *w, int layout, int wtype, int64_t rows, int64_t cols, int64_t tokens) {
  if (!packed_layout_fits(layout, wtype)) return -1;
  packed_gemm_fn fn = packed_gemm_for(layout);
  int be = quant_block_elements(wtype);
  int64_t blocks = cols / be, groups = rows / ROW_GROUP;
  void *xq = NULL;
  if (posix_memalign(&xq, 64, packed_act_bytes(wtype, cols) * (size_t)tokens + 64) != 0) return -2;
  /* Quantising a prompt chunk's activations is serial work the other threads would wait out. */
  quantise_ctx qc = {x, xq, cols, blocks, be, stored_offset(wtype)};
  pool_run(quantise_task, &qc, tokens, tokens >= 16 ? 4 : tokens);
  size_t gb = (size_t)blocks * group_block_bytes(layout);
  packed_ctx c = {y, rows, w, gb, xq, blocks, blocks, tokens, fn};
  /* ~144 KB of weights per chunk for one token (a long unbroken stream per thread: see experts.c),
     fewer groups when many tokens share them, and at least two chunks per thread for balance. */
  int64_t grain = (int64_t)(147456 / (gb + 1)) / (tokens > 8 ? 8 : tokens) + 1;
  int64_t balanced = groups / (2 * pool_threads());
  if (grain > balanced) grain = balanced > 0 ? balanced : 1;
  grain += grain & 1; /* whole pairs of groups: the AMX level's tiles span 16 rows */
  pool_run(packed_task, &c, groups, grain);
  if (rows > groups * ROW_GROUP)
    tail_rows(y, rows, w + (size_t)groups * gb, wtype, groups * ROW_GROUP, rows - groups * ROW_GROUP, cols, xq, blocks, tokens);
  free(xq);
  return 0;
}

/* ---------- one product per head ---------- */

typedef struct {
  float *y;
  const float *x;
  uint8_t *xq;
  size_t xrow;
  int64_t T, xstride, H, rows, cols, blocks, groups, per_item;
  int shared; /* every head reads token t's one row: T rows quantised once, not H·T */
  const packed_matrix *w;
} heads_ctx;

static void heads_quantise_task(void *p, int64_t start, int64_t end) {
  heads_ctx *c = p;
  for (int64_t i = start; i < end; i++) { /* item i = (head i / T, token i mod T): each head's rows contiguous */
    int64_t h = i / c->T, t = i % c->T;
    const float *row = c->x + (c->shared ? t : t * c->H + h) * c->xstride;
    packed_quantise_row(c->w[0].wtype, row, c->cols, c->xq + (size_t)i * c->xrow);
  }
}

/* Items are runs of `per_item` row groups in (head, group) order: a run may cross into the next
   head's matrix, so a thread streams several small head matrices without a break. */
static void heads_gemm_task(void *p, int64_t start, int64_t end) {
  heads_ctx *c = p;
  for (int64_t i = start; i < end; i++) {
    int64_t f0 = i * c->per_item, f1 = f0 + c->per_item < c->H * c->groups ? f0 + c->per_item : c->H * c->groups;
    while (f0 < f1) {
      int64_t h = f0 / c->groups, g0 = f0 % c->groups, g1 = g0 + (f1 - f0) < c->groups ? g0 + (f1 - f0) : c->groups;
      const packed_matrix *m = &c->w[h];
      packed_gemm_for(m->layout)(c->y + h * c->rows, c->H * c->rows, m->data, m->group_bytes,
                                 c->xq + (size_t)(c->shared ? 0 : h * c->T) * c->xrow,
                                 c->blocks, c->blocks, c->T, g0, g1);
      f0 += g1 - g0;
    }
  }
}

int packed_matmul_heads(float *y, const float *x, int64_t T, int64_t xstride, int shared, int64_t H, const packed_matrix *w,
                        int64_t rows, int64_t cols) {
  heads_ctx c = {.y = y, .x = x, .T = T, .xstride = xstride, .H = H, .rows = rows, .cols = cols, .shared = shared, .w = w};
  c.xrow = packed_act_bytes(w[0].wtype, cols);
  c.blocks = cols / quant_block_elements(w[0].wtype);
  c.groups = rows / ROW_GROUP;
  /* ~144 KB of weights per work item for one token (fewer groups when tokens share them), and two
     items per thread at least */
  int64_t total = H * c.groups;
  c.per_item = (int64_t)(147456 / w[0].group_bytes) / (T > 8 ? 8 : T);
  if (c.per_item > total / (2 * pool_threads())) c.per_item = total / (2 * pool_threads());
  if (c.per_item < 1) c.per_item = 1;
  c.per_item += c.per_item & 1; /* whole pairs of groups (the AMX level's 16-row tiles) */
  void *xq = NULL;
  int64_t quantised_rows = shared ? T : H * T;
  if (posix_memalign(&xq, 64, c.xrow * (size_t)quantised_rows + 64) != 0) return -1;
  c.xq = xq;
  pool_run(heads_quantise_task, &c, quantised_rows, 16);
  pool_run(heads_gemm_task, &c, (total + c.per_item - 1) / c.per_item, 1);
  free(xq);
  return 0;
}
