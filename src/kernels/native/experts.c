/*
 * A group of SwiGLU experts run as one operation over a batch (the role of ggml's `mul_mat_id`
 * plus the element-wise work around it): tokens are grouped by expert inside the call, each
 * expert's gate and up products read its weights once for all of its tokens, SiLU·mul and the
 * activation quantisation for the down product run on the pool, and the weighted sum back into
 * each token's row is done per token in a fixed order. Four pool jobs per call instead of three
 * per expert: a decode step of a 64-expert top-6 layer posts 4 jobs instead of ~21, a 512-token
 * prompt chunk 4 instead of ~200. Kernels know nothing of models: this is "rows of x, each sent
 * to k of E weight triples with a weight", plus an optional triple every row goes through.
 *
 * Results depend on the inputs only (not on threads or on which rows share the call): every
 * output value is summed by one thread in one order.
 */
#include "experts.h"
#include "ops.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Grown as needed, reused across calls (the pool is not re-entrant either: one caller at a time). */
static void *scratch[6];
static size_t scratch_size[6];

static void *scratch_get(int i, size_t bytes) {
  if (scratch_size[i] < bytes) {
    free(scratch[i]);
    scratch[i] = NULL;
    scratch_size[i] = 0;
    if (posix_memalign(&scratch[i], 64, bytes + 64) != 0) return NULL;
    scratch_size[i] = bytes;
  }
  return scratch[i];
}

typedef struct {
  const packed_matrix *gate, *up, *down;
  const packed_matrix *sgate, *sup, *sdown; /* shared: NULL when absent */
  int64_t E, I, Is, d, T, k, slots;
  const int32_t *expert_of;
  const float *weight_of;
  /* slot order: rows of the routed part grouped by expert */
  int32_t *first;   /* [E+1] first slot of each expert */
  int32_t *token_of; /* [slots] token of each grouped slot */
  int32_t *slot_of;  /* [T*k] grouped slot of routing entry i */
  const float *x;
  uint8_t *xq;       /* quantised input rows (gate/up format): T rows */
  uint8_t *xg;       /* the same, gathered in slot order */
  size_t xrow;       /* bytes per quantised input row */
  float *g, *u;      /* [slots][I] routed, then [T][Is] shared */
  uint8_t *hq;       /* quantised SiLU(g)·u rows (down format) */
  size_t hrow, hsrow;
  float *y;          /* [slots][d] routed, then [T][d] shared */
  float *out;
  /* experts with at least one row, and the item counts of jobs A and C */
  int32_t *active;
  int64_t n_active, items_routed, items_shared;
  int64_t gpi_gu, gpi_d; /* row groups per work item of the gate/up and the down products */
} moe_ctx;

/* Bytes of weights per work item: one token's item is a contiguous stream of this many bytes.
   Measured on AMD EPYC Zen 4, 2 threads, V2-Lite Q4_0 decode: 36 KB items (4 row groups) ran the
   experts at 25 GB/s, 74 KB at 28, 147 KB and more at 31 (33 ms per token instead of 40): each
   item restarts the hardware prefetcher's stream, and two threads on alternating short items keep
   breaking each other's DRAM page locality. */
#define ITEM_BYTES (144 * 1024)

/* Even, so that an item is whole pairs of groups: the AMX level's tiles span 16 rows. */
static int64_t groups_per_item(const packed_matrix *m, int64_t groups) {
  int64_t n = (int64_t)(ITEM_BYTES / m->group_bytes);
  n = n < 2 ? 2 : n & ~(int64_t)1;
  return n > groups ? groups : n;
}

static packed_gemm_fn gemm_of(const packed_matrix *m) { return packed_gemm_for(m->layout); }

static void task_quantise_x(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  for (int64_t t = start; t < end; t++) packed_quantise_row(c->gate->wtype, c->x + t * c->d, c->d, c->xq + t * c->xrow);
}

static void task_gather(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  for (int64_t s = start; s < end; s++) memcpy(c->xg + s * c->xrow, c->xq + (size_t)c->token_of[s] * c->xrow, c->xrow);
}

/* Job A: item i < items_routed: (expert, gate|up, row group); after: the shared expert's. */
static void task_gate_up(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  const int64_t G = c->gpi_gu, items = (c->I / 8 + G - 1) / G, sitems = (c->Is / 8 + G - 1) / G;
  for (int64_t i = start; i < end; i++) {
    if (i < c->items_routed) {
      int64_t e = c->active[i / (2 * items)], r = i % (2 * items), which = r / items, g = (r % items) * G;
      int64_t n = c->first[e + 1] - c->first[e], g1 = g + G < c->I / 8 ? g + G : c->I / 8;
      const packed_matrix *m = which ? &c->up[e] : &c->gate[e];
      float *y = (which ? c->u : c->g) + (size_t)c->first[e] * c->I;
      int64_t blocks = c->d / quant_block_elements(m->wtype);
      gemm_of(m)(y, c->I, m->data, m->group_bytes, c->xg + (size_t)c->first[e] * c->xrow, blocks, blocks, n, g, g1);
    } else {
      int64_t j = i - c->items_routed, which = j / sitems, g = (j % sitems) * G;
      int64_t g1 = g + G < c->Is / 8 ? g + G : c->Is / 8;
      const packed_matrix *m = which ? c->sup : c->sgate;
      float *y = (which ? c->u : c->g) + (size_t)c->slots * c->I;
      int64_t blocks = c->d / quant_block_elements(m->wtype);
      gemm_of(m)(y, c->Is, m->data, m->group_bytes, c->xq, blocks, blocks, c->T, g, g1);
    }
  }
}

/* Job B: SiLU(gate)·up per row, quantised for the down product. Rows: slots, then T shared. */
static void task_silu_quantise(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  for (int64_t r = start; r < end; r++) {
    int shared = r >= c->slots;
    int64_t width = shared ? c->Is : c->I;
    float *g = c->g + (shared ? (size_t)c->slots * c->I + (size_t)(r - c->slots) * c->Is : (size_t)r * c->I);
    const float *u = c->u + (g - c->g);
    active_ops->silu_mul(g, g, u, width);
    const packed_matrix *down = shared ? c->sdown : &c->down[0]; /* the routed downs share one type (checked by the caller) */
    uint8_t *dst = c->hq + (shared ? (size_t)c->slots * c->hrow + (size_t)(r - c->slots) * c->hsrow : (size_t)r * c->hrow);
    packed_quantise_row(down->wtype, g, width, dst);
  }
}

/* Job C: down products: (expert, row group of d), then the shared expert's. */
static void task_down(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  const int64_t G = c->gpi_d, groups = c->d / 8, items = (groups + G - 1) / G;
  for (int64_t i = start; i < end; i++) {
    int64_t g = (i % items) * G, g1 = g + G < groups ? g + G : groups;
    if (i < c->n_active * items) {
      int64_t e = c->active[i / items];
      int64_t n = c->first[e + 1] - c->first[e];
      const packed_matrix *m = &c->down[e];
      int64_t blocks = c->I / quant_block_elements(m->wtype);
      gemm_of(m)(c->y + (size_t)c->first[e] * c->d, c->d, m->data, m->group_bytes, c->hq + (size_t)c->first[e] * c->hrow, blocks,
                 blocks, n, g, g1);
    } else {
      const packed_matrix *m = c->sdown;
      int64_t blocks = c->Is / quant_block_elements(m->wtype);
      gemm_of(m)(c->y + (size_t)c->slots * c->d, c->d, m->data, m->group_bytes, c->hq + (size_t)c->slots * c->hrow, blocks, blocks,
                 c->T, g, g1);
    }
  }
}

/* Job D: out[t] = shared(t) + Σ over t's experts in increasing expert id of w·y (as the
   TypeScript composition sums them). */
static void task_combine(void *p, int64_t start, int64_t end) {
  moe_ctx *c = p;
  for (int64_t t = start; t < end; t++) {
    float *o = c->out + t * c->d;
    int32_t order[64];
    int64_t k = c->k;
    for (int64_t i = 0; i < k; i++) order[i] = (int32_t)i;
    for (int64_t i = 1; i < k; i++) /* insertion sort of t's k entries by expert id */
      for (int64_t j = i; j > 0 && c->expert_of[t * k + order[j]] < c->expert_of[t * k + order[j - 1]]; j--) {
        int32_t tmp = order[j];
        order[j] = order[j - 1];
        order[j - 1] = tmp;
      }
    /* o accumulates Σ_i w_i·y_i expert by expert (the same order of additions per element as a
       scalar sum over i, but contiguous rows the compiler vectorises), then the shared output */
    for (int64_t x = 0; x < c->d; x++) o[x] = 0;
    for (int64_t i = 0; i < k; i++) {
      int64_t entry = t * k + order[i];
      const float w = c->weight_of[entry], *y = c->y + (size_t)c->slot_of[entry] * c->d;
      for (int64_t x = 0; x < c->d; x++) o[x] += w * y[x];
    }
    if (c->sdown) {
      const float *shared = c->y + ((size_t)c->slots + t) * c->d;
      for (int64_t x = 0; x < c->d; x++) o[x] = shared[x] + o[x];
    }
  }
}

int experts_forward(float *out, const float *x, int64_t T, int64_t d, int64_t k, const int32_t *expert_of, const float *weight_of,
                    int64_t E, int64_t I, const packed_matrix *gate, const packed_matrix *up, const packed_matrix *down, int64_t Is,
                    const packed_matrix *sgate, const packed_matrix *sup, const packed_matrix *sdown) {
  if (k > 64 || T <= 0) return -1;
  moe_ctx c = {.gate = gate, .up = up, .down = down, .sgate = sgate, .sup = sup, .sdown = sdown, .E = E, .I = I, .Is = Is,
               .d = d, .T = T, .k = k, .slots = T * k, .expert_of = expert_of, .weight_of = weight_of};
  int64_t slots = T * k, shared_rows = sdown ? T : 0;
  c.first = calloc((size_t)(E + 1), sizeof(int32_t));
  c.token_of = malloc(sizeof(int32_t) * (size_t)slots);
  c.slot_of = malloc(sizeof(int32_t) * (size_t)slots);
  if (!c.first || !c.token_of || !c.slot_of) goto oom;
  for (int64_t i = 0; i < slots; i++) {
    if (expert_of[i] < 0 || expert_of[i] >= E) goto bad;
    c.first[expert_of[i] + 1]++;
  }
  for (int64_t e = 0; e < E; e++) c.first[e + 1] += c.first[e];
  {
    int32_t *fill = malloc(sizeof(int32_t) * (size_t)E);
    if (!fill) goto oom;
    for (int64_t e = 0; e < E; e++) fill[e] = c.first[e];
    for (int64_t i = 0; i < slots; i++) { /* token order within each expert, as moeForward gathers */
      int32_t s = fill[expert_of[i]]++;
      c.token_of[s] = (int32_t)(i / k);
      c.slot_of[i] = s;
    }
    free(fill);
  }
  c.x = x;
  c.out = out;
  c.xrow = packed_act_bytes(gate->wtype, d);
  c.hrow = packed_act_bytes(down->wtype, I);
  c.hsrow = sdown ? packed_act_bytes(sdown->wtype, Is) : 0;
  c.xq = scratch_get(0, c.xrow * (size_t)T);
  c.xg = scratch_get(1, c.xrow * (size_t)slots);
  c.g = scratch_get(2, sizeof(float) * ((size_t)slots * I + (size_t)shared_rows * Is));
  c.u = scratch_get(3, sizeof(float) * ((size_t)slots * I + (size_t)shared_rows * Is));
  c.hq = scratch_get(4, c.hrow * (size_t)slots + c.hsrow * (size_t)shared_rows);
  c.y = scratch_get(5, sizeof(float) * (size_t)(slots + shared_rows) * d);
  if (!c.xq || !c.xg || !c.g || !c.u || !c.hq || !c.y) goto oom;
  c.active = malloc(sizeof(int32_t) * (size_t)E);
  if (!c.active) goto oom;
  c.n_active = 0;
  for (int64_t e = 0; e < E; e++)
    if (c.first[e + 1] > c.first[e]) c.active[c.n_active++] = (int32_t)e;
  c.gpi_gu = groups_per_item(&gate[0], I / 8);
  c.gpi_d = groups_per_item(&down[0], d / 8);
  int64_t per_gu = (I / 8 + c.gpi_gu - 1) / c.gpi_gu, per_s = (Is / 8 + c.gpi_gu - 1) / c.gpi_gu;
  int64_t per_d = (d / 8 + c.gpi_d - 1) / c.gpi_d;
  c.items_routed = c.n_active * 2 * per_gu;
  c.items_shared = sdown ? 2 * per_s : 0;

  pool_run(task_quantise_x, &c, T, T >= 16 ? 4 : T);
  pool_run(task_gather, &c, slots, 64);
  /* one item per ITEM_BYTES of one matrix's rows: the stream a thread reads without a break */
  pool_run(task_gate_up, &c, c.items_routed + c.items_shared, 1);
  pool_run(task_silu_quantise, &c, slots + shared_rows, 4);
  pool_run(task_down, &c, c.n_active * per_d + (sdown ? per_d : 0), 1);
  pool_run(task_combine, &c, T, T >= 8 ? 2 : 1);
  free(c.active);
  free(c.first);
  free(c.token_of);
  free(c.slot_of);
  return 0;
bad:
  free(c.active);
  free(c.first);
  free(c.token_of);
  free(c.slot_of);
  return -2;
oom:
  free(c.active);
  free(c.first);
  free(c.token_of);
  free(c.slot_of);
  return -1;
}
