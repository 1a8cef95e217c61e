/*
 * N-API bindings for the native kernels. Arguments are checked here (types, lengths against the
 * shapes) so that a wrong call from JavaScript is a thrown error, never a read out of bounds.
 */
#include <node_api.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "threadpool.h"
#include "quant.h"
#include "repack.h"
#include "experts.h"
#include "guard.h"

#define CHECK(call)                                     \
  do {                                                  \
    if ((call) != napi_ok) {                            \
      napi_throw_error(env, NULL, "napi call failed");  \
      return NULL;                                      \
    }                                                   \
  } while (0)

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

/* A typed array argument: its data pointer and length in elements. */
typedef struct {
  void *data;
  size_t length;
  napi_typedarray_type type;
} view_t;

static int get_view(napi_env env, napi_value v, view_t *out) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return 0;
  napi_value buf;
  size_t offset;
  return napi_get_typedarray_info(env, v, &out->type, &out->length, &out->data, &buf, &offset) == napi_ok;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) { return napi_get_value_int64(env, v, out) == napi_ok; }
static int get_f64(napi_env env, napi_value v, double *out) { return napi_get_value_double(env, v, out) == napi_ok; }

static size_t weight_bytes(int wtype, int64_t elements) { return kernels_span_bytes(wtype, elements); }

/* matmul(y, x, w, wtype, rows, cols, tokens, transposed) */
static napi_value js_matmul(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x, w;
  int64_t wtype, rows, cols, tokens, transposed;
  if (argc < 8 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_view(env, a[2], &w) ||
      !get_i64(env, a[3], &wtype) || !get_i64(env, a[4], &rows) || !get_i64(env, a[5], &cols) ||
      !get_i64(env, a[6], &tokens) || !get_i64(env, a[7], &transposed))
    return fail(env, "matmul(y, x, w, wtype, rows, cols, tokens, transposed): bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array || w.type != napi_uint8_array)
    return fail(env, "matmul: y and x must be Float32Array, w Uint8Array");
  if (!kernels_supports((int)wtype)) return fail(env, "matmul: unsupported weight type");
  if (rows < 0 || cols < 0 || tokens < 0) return fail(env, "matmul: negative size");
  {
    int be = quant_block_elements((int)wtype);
    if (be > 0 && cols % be != 0) return fail(env, "matmul: row length is not a whole number of blocks");
  }
  int64_t in = transposed ? rows : cols, outw = transposed ? cols : rows;
  if (w.length < weight_bytes((int)wtype, rows * cols) || x.length < (size_t)(in * tokens) || y.length < (size_t)(outw * tokens))
    return fail(env, "matmul: array shorter than the shape");
  if (transposed) kernel_matmul_t(y.data, x.data, w.data, (int)wtype, rows, cols, tokens);
  else kernel_matmul(y.data, x.data, w.data, (int)wtype, rows, cols, tokens);
  return NULL;
}

/* rmsNorm(y, x, w, wtype, dim, tokens, eps) */
static napi_value js_rmsnorm(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value a[7];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x, w;
  int64_t wtype, dim, tokens;
  double eps;
  if (argc < 7 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_view(env, a[2], &w) ||
      !get_i64(env, a[3], &wtype) || !get_i64(env, a[4], &dim) || !get_i64(env, a[5], &tokens) || !get_f64(env, a[6], &eps))
    return fail(env, "rmsNorm: bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array || w.type != napi_uint8_array || !kernels_supports((int)wtype))
    return fail(env, "rmsNorm: wrong array types");
  if (dim < 0 || tokens < 0 || w.length < weight_bytes((int)wtype, dim) || x.length < (size_t)(dim * tokens) ||
      y.length < (size_t)(dim * tokens))
    return fail(env, "rmsNorm: array shorter than the shape");
  kernel_rmsnorm(y.data, x.data, w.data, (int)wtype, dim, tokens, (float)eps);
  return NULL;
}

/* siluMul(y, gate, up, n) */
static napi_value js_silu_mul(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value a[4];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, g, u;
  int64_t n;
  if (argc < 4 || !get_view(env, a[0], &y) || !get_view(env, a[1], &g) || !get_view(env, a[2], &u) || !get_i64(env, a[3], &n))
    return fail(env, "siluMul: bad arguments");
  if (y.type != napi_float32_array || g.type != napi_float32_array || u.type != napi_float32_array)
    return fail(env, "siluMul: Float32Array expected");
  if (n < 0 || y.length < (size_t)n || g.length < (size_t)n || u.length < (size_t)n) return fail(env, "siluMul: too short");
  kernel_silu_mul(y.data, g.data, u.data, n);
  return NULL;
}

/* add(y, x, n): y[i] += x[i] */
static napi_value js_add(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x;
  int64_t n;
  if (argc < 3 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_i64(env, a[2], &n)) return fail(env, "add: bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array) return fail(env, "add: Float32Array expected");
  if (n < 0 || y.length < (size_t)n || x.length < (size_t)n) return fail(env, "add: too short");
  kernel_add(y.data, x.data, n);
  return NULL;
}

/* copyRows(dst, src, rows, width, dstStride, srcStride, repeat, repeatStride) */
static napi_value js_copy_rows(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t d, s;
  int64_t rows, width, ds, ss, repeat, rs;
  if (argc < 8 || !get_view(env, a[0], &d) || !get_view(env, a[1], &s) || !get_i64(env, a[2], &rows) || !get_i64(env, a[3], &width) ||
      !get_i64(env, a[4], &ds) || !get_i64(env, a[5], &ss) || !get_i64(env, a[6], &repeat) || !get_i64(env, a[7], &rs))
    return fail(env, "copyRows(dst, src, rows, width, dstStride, srcStride, repeat, repeatStride): bad arguments");
  if (d.type != napi_float32_array || s.type != napi_float32_array) return fail(env, "copyRows: Float32Array expected");
  if (rows < 0 || width < 0 || ds < 0 || ss < 0 || repeat < 0 || rs < 0) return fail(env, "copyRows: negative size");
  if (rows > 0 && width > 0 && repeat > 0 &&
      (d.length < (size_t)((rows - 1) * ds + (repeat - 1) * rs + width) || s.length < (size_t)((rows - 1) * ss + width)))
    return fail(env, "copyRows: array shorter than the shape");
  const float *src = s.data;
  float *dst = d.data;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < repeat; j++) memcpy(dst + r * ds + j * rs, src + r * ss, (size_t)width * sizeof(float));
  return NULL;
}

static int check_ctx(const view_t *ctx, int64_t queries, int64_t max_rows) {
  if (ctx->type != napi_int32_array || ctx->length < (size_t)queries) return 0;
  const int32_t *c = ctx->data;
  for (int64_t t = 0; t < queries; t++)
    if (c[t] < 0 || c[t] > max_rows) return 0;
  return 1;
}

/* attention(out, q, k, v, dk, dv, queries, heads, contextLengths, scale) */
static napi_value js_attention(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value a[10];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t out, q, k, v, ctx;
  int64_t dk, dv, queries, heads;
  double scale;
  if (argc < 10 || !get_view(env, a[0], &out) || !get_view(env, a[1], &q) || !get_view(env, a[2], &k) ||
      !get_view(env, a[3], &v) || !get_i64(env, a[4], &dk) || !get_i64(env, a[5], &dv) || !get_i64(env, a[6], &queries) ||
      !get_i64(env, a[7], &heads) || !get_view(env, a[8], &ctx) || !get_f64(env, a[9], &scale))
    return fail(env, "attention: bad arguments");
  if (out.type != napi_float32_array || q.type != napi_float32_array || k.type != napi_float32_array ||
      v.type != napi_float32_array || dk <= 0 || dv <= 0 || heads <= 0 || queries < 0)
    return fail(env, "attention: wrong array types or sizes");
  int64_t rows = (int64_t)(k.length / (size_t)(heads * dk));
  int64_t vrows = (int64_t)(v.length / (size_t)(heads * dv));
  if (vrows < rows) rows = vrows;
  if (!check_ctx(&ctx, queries, rows) || q.length < (size_t)(queries * heads * dk) || out.length < (size_t)(queries * heads * dv))
    return fail(env, "attention: context length past the keys, or arrays shorter than the shape");
  kernel_attention(out.data, q.data, k.data, v.data, dk, dv, queries, heads, ctx.data, (float)scale);
  return NULL;
}

/* sharedKvAttention(out, qa, qb, segments, segmentPages, pageRows, width, va, queries, heads, contextLengths,
   scale, blockTable, queryPages): segments is an array of Float32Array (f32 rows), Uint16Array (f16 rows)
   or Uint8Array (q8 rows: ggml Q8_0 blocks, 2 · ceil(width / 32) + width bytes a row), each holding
   segmentPages pages of pageRows rows; query t reads its row j from page
   blockTable[queryPages[t] + j / pageRows] (kernels.h). Every page a query reads is checked here. */
static napi_value js_shared_kv_attention(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value a[14];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t out, qa, qb, ctx, table, starts;
  int64_t segment_pages, page_rows, width, va, queries, heads;
  double scale;
  bool is_array = false;
  if (argc < 14 || !get_view(env, a[0], &out) || !get_view(env, a[1], &qa) || !get_view(env, a[2], &qb) ||
      napi_is_array(env, a[3], &is_array) != napi_ok || !is_array || !get_i64(env, a[4], &segment_pages) ||
      !get_i64(env, a[5], &page_rows) || !get_i64(env, a[6], &width) || !get_i64(env, a[7], &va) ||
      !get_i64(env, a[8], &queries) || !get_i64(env, a[9], &heads) || !get_view(env, a[10], &ctx) ||
      !get_f64(env, a[11], &scale) || !get_view(env, a[12], &table) || !get_view(env, a[13], &starts))
    return fail(env, "sharedKvAttention: bad arguments");
  if (out.type != napi_float32_array || qa.type != napi_float32_array || qb.type != napi_float32_array ||
      table.type != napi_int32_array || starts.type != napi_int32_array || segment_pages <= 0 || page_rows <= 0 ||
      width <= 0 || va <= 0 || va > width || heads <= 0 || queries < 0)
    return fail(env, "sharedKvAttention: wrong array types or sizes");
  uint32_t segment_count = 0;
  CHECK(napi_get_array_length(env, a[3], &segment_count));
  const void **segments = malloc((segment_count ? segment_count : 1) * sizeof(void *));
  if (!segments) return fail(env, "sharedKvAttention: out of memory");
  int kvtype = -1;
  int64_t q8_row_bytes = 2 * ((width + 31) / 32) + width;
  for (uint32_t i = 0; i < segment_count; i++) {
    napi_value el;
    view_t segment;
    if (napi_get_element(env, a[3], i, &el) != napi_ok || !get_view(env, el, &segment)) {
      free(segments);
      return fail(env, "sharedKvAttention: each segment must be a typed array");
    }
    int t = segment.type == napi_float32_array  ? 0
            : segment.type == napi_uint16_array ? 1
            : segment.type == napi_uint8_array  ? 2
                                                : -1;
    if (t < 0 || (kvtype >= 0 && t != kvtype)) {
      free(segments);
      return fail(env, "sharedKvAttention: segments must all be Float32Array, all Uint16Array or all Uint8Array (q8)");
    }
    if (segment.length < (size_t)(segment_pages * page_rows * (t == 2 ? q8_row_bytes : width))) {
      free(segments);
      return fail(env, "sharedKvAttention: each segment must hold segmentPages pages of pageRows rows");
    }
    kvtype = t;
    segments[i] = segment.data;
  }
  if (!check_ctx(&ctx, queries, INT32_MAX) || starts.length < (size_t)queries || qa.length < (size_t)(queries * heads * va) ||
      qb.length < (size_t)(queries * heads * (width - va)) || out.length < (size_t)(queries * heads * va)) {
    free(segments);
    return fail(env, "sharedKvAttention: arrays shorter than the shape");
  }
  /* Each query's pages: inside the block table, and each page inside the segments. */
  const int32_t *block_table = table.data, *query_pages = starts.data, *lengths = ctx.data;
  int64_t slab_pages = (int64_t)segment_count * segment_pages;
  for (int64_t t = 0; t < queries; t++) {
    int64_t first = query_pages[t], pages = (lengths[t] + page_rows - 1) / page_rows;
    if (first < 0 || first + pages > (int64_t)table.length) {
      free(segments);
      return fail(env, "sharedKvAttention: a query's context needs more pages than the block table gives it");
    }
    for (int64_t p = first; p < first + pages; p++)
      if (block_table[p] < 0 || block_table[p] >= slab_pages) {
        free(segments);
        return fail(env, "sharedKvAttention: a block table entry names a page past the segments");
      }
  }
  if (queries > 0 && segment_count > 0)
    kernel_shared_kv_attention(out.data, qa.data, qb.data, segments, segment_pages, page_rows, block_table, query_pages,
                               kvtype, width, va, queries, heads, lengths, (float)scale);
  free(segments);
  return NULL;
}

/* A read-only mapping of a whole file, shared by the ArrayBuffers made over its regions; unmapped
   when the last of them is garbage-collected. */
typedef struct {
  void *base;
  size_t length;
  int64_t refs;
} mapping_t;

static void release_region(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  mapping_t *m = hint;
  if (--m->refs == 0) {
    guard_forget(m->base);
    munmap(m->base, m->length);
    free(m);
  }
}

/* mapRegions(path, offsets: Float64Array, sizes: Float64Array) -> ArrayBuffer[] over one mmap. */
static napi_value js_map_regions(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value a[4];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  bool populate = true;
  if (argc >= 4 && napi_get_value_bool(env, a[3], &populate) != napi_ok) populate = true;
  char path[4096];
  size_t path_len = 0;
  view_t offsets, sizes;
  if (argc < 3 || napi_get_value_string_utf8(env, a[0], path, sizeof path, &path_len) != napi_ok || path_len >= sizeof path - 1 ||
      !get_view(env, a[1], &offsets) || !get_view(env, a[2], &sizes) || offsets.type != napi_float64_array ||
      sizes.type != napi_float64_array || offsets.length != sizes.length)
    return fail(env, "mapRegions(path, offsets, sizes): bad arguments");
  int fd = open(path, O_RDONLY);
  if (fd < 0) return fail(env, "mapRegions: cannot open the file");
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    return fail(env, "mapRegions: cannot stat the file, or it is empty");
  }
  size_t length = (size_t)st.st_size;
  const double *off = offsets.data, *len = sizes.data;
  for (size_t i = 0; i < offsets.length; i++) {
    if (off[i] < 0 || len[i] < 0 || off[i] + len[i] > (double)length) {
      close(fd);
      return fail(env, "mapRegions: a region lies outside the file");
    }
  }
  /* Prefault the whole mapping (as llama.cpp does): otherwise every first touch of a 4 KiB page
     during decoding is a page fault, and an MoE model touches new experts for many tokens. */
  int flags = MAP_SHARED;
#ifdef MAP_POPULATE
  if (populate && !getenv("DSEEK_NO_POPULATE")) flags |= MAP_POPULATE;
#endif
  void *base = mmap(NULL, length, PROT_READ, flags, fd, 0);
  close(fd);
  if (base == MAP_FAILED) return fail(env, "mapRegions: mmap failed");
  guard_watch(base, length); /* a file truncated later reads as zeros, not SIGBUS (guard.h) */
  mapping_t *m = malloc(sizeof *m);
  if (!m) {
    guard_forget(base);
    munmap(base, length);
    return fail(env, "mapRegions: out of memory");
  }
  m->base = base;
  m->length = length;
  m->refs = 1; /* held by this call until the end */
  napi_value result;
  CHECK(napi_create_array_with_length(env, offsets.length, &result));
  for (size_t i = 0; i < offsets.length; i++) {
    napi_value ab;
    if (len[i] == 0) {
      void *unused;
      CHECK(napi_create_arraybuffer(env, 0, &unused, &ab));
    } else {
      m->refs++;
      if (napi_create_external_arraybuffer(env, (char *)base + (size_t)off[i], (size_t)len[i], release_region, m, &ab) != napi_ok) {
        m->refs--;
        release_region(env, NULL, m);
        napi_throw_error(env, NULL, "mapRegions: cannot create an external ArrayBuffer (not allowed in this runtime)");
        return NULL;
      }
    }
    CHECK(napi_set_element(env, result, (uint32_t)i, ab));
  }
  release_region(env, NULL, m);
  return result;
}

/* mappedFileFaults() -> faults on mappings whose file shrank, since start (guard.h) */
static napi_value js_mapped_file_faults(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_double(env, (double)guard_faults(), &out));
  return out;
}

/* readBandwidth(bytes, passes) -> bytes per second */
static napi_value js_read_bandwidth(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int64_t bytes, passes;
  if (argc < 2 || !get_i64(env, a[0], &bytes) || !get_i64(env, a[1], &passes) || bytes <= 0 || passes <= 0)
    return fail(env, "readBandwidth(bytes, passes): bad arguments");
  napi_value out;
  CHECK(napi_create_double(env, kernel_read_bandwidth(bytes, (int)passes), &out));
  return out;
}


/* levels() -> [{ name, supported }], best first */
static napi_value js_levels(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr;
  CHECK(napi_create_array_with_length(env, (size_t)ops_level_count(), &arr));
  for (int i = 0; i < ops_level_count(); i++) {
    napi_value obj, name, ok;
    CHECK(napi_create_object(env, &obj));
    CHECK(napi_create_string_utf8(env, ops_level_name(i), NAPI_AUTO_LENGTH, &name));
    CHECK(napi_get_boolean(env, ops_level_supported(i) != 0, &ok));
    CHECK(napi_set_named_property(env, obj, "name", name));
    CHECK(napi_set_named_property(env, obj, "supported", ok));
    CHECK(napi_set_element(env, arr, (uint32_t)i, obj));
  }
  return arr;
}

/* setLevel(name) */
static napi_value js_set_level(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  char name[32];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, a[0], name, sizeof name, &len) != napi_ok)
    return fail(env, "setLevel(name): expected a string");
  if (kernels_set_level(name) != 0) return fail(env, "setLevel: unknown level, or this CPU lacks it");
  return NULL;
}

static int get_weight_shape(napi_env env, napi_value *a, int64_t *wtype, int64_t *rows, int64_t *cols) {
  return get_i64(env, a[0], wtype) && get_i64(env, a[1], rows) && get_i64(env, a[2], cols) && *rows >= 0 && *cols >= 0 &&
         kernels_supports((int)*wtype);
}

/* repackPlan(wtype, rows, cols) -> [layout, bytes] (layout 0: the level keeps the rows) */
static napi_value js_repack_plan(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int64_t wtype, rows, cols;
  if (argc < 3 || !get_weight_shape(env, a, &wtype, &rows, &cols)) return fail(env, "repackPlan(wtype, rows, cols): bad arguments");
  int layout = repack_layout((int)wtype, rows, cols);
  napi_value arr, l, b;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_int32(env, layout, &l));
  CHECK(napi_create_double(env, layout ? (double)repack_bytes((int)wtype, rows, cols) : 0, &b));
  CHECK(napi_set_element(env, arr, 0, l));
  CHECK(napi_set_element(env, arr, 1, b));
  return arr;
}

/* repack(src, dst, wtype, rows, cols) -> layout written into dst */
static napi_value js_repack(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value a[5];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t src, dst;
  int64_t wtype, rows, cols;
  if (argc < 5 || !get_view(env, a[0], &src) || !get_view(env, a[1], &dst) || !get_weight_shape(env, a + 2, &wtype, &rows, &cols) ||
      src.type != napi_uint8_array || dst.type != napi_uint8_array)
    return fail(env, "repack(src, dst, wtype, rows, cols): bad arguments");
  int layout = repack_layout((int)wtype, rows, cols);
  if (layout == 0) return fail(env, "repack: this weight keeps its rows at this level (see repackPlan)");
  if (src.length < weight_bytes((int)wtype, rows * cols) || dst.length < repack_bytes((int)wtype, rows, cols))
    return fail(env, "repack: array shorter than the shape");
  napi_value out;
  CHECK(napi_create_int32(env, repack_weight(src.data, (int)wtype, rows, cols, dst.data), &out));
  return out;
}

/* packedMatmul(y, x, w, layout, wtype, rows, cols, tokens) */
static napi_value js_packed_matmul(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x, w;
  int64_t layout, wtype, rows, cols, tokens;
  if (argc < 8 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_view(env, a[2], &w) || !get_i64(env, a[3], &layout) ||
      !get_weight_shape(env, a + 4, &wtype, &rows, &cols) || !get_i64(env, a[7], &tokens) || tokens < 0)
    return fail(env, "packedMatmul(y, x, w, layout, wtype, rows, cols, tokens): bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array || w.type != napi_uint8_array)
    return fail(env, "packedMatmul: y and x must be Float32Array, w Uint8Array");
  int be = quant_block_elements((int)wtype);
  if (be <= 0 || cols % be != 0 || rows < 8) return fail(env, "packedMatmul: not a repackable shape");
  if (!packed_layout_fits((int)layout, (int)wtype)) return fail(env, "packedMatmul: the layout does not belong to this weight type");
  if (w.length < packed_bytes((int)layout, (int)wtype, rows, cols) || x.length < (size_t)(cols * tokens) || y.length < (size_t)(rows * tokens))
    return fail(env, "packedMatmul: array shorter than the shape");
  int rc = packed_matmul(y.data, x.data, w.data, (int)layout, (int)wtype, rows, cols, tokens);
  if (rc == -1) return fail(env, "packedMatmul: the layout does not belong to this weight type");
  if (rc != 0) return fail(env, "packedMatmul: out of memory");
  return NULL;
}

/* releasePages(view): the whole pages inside a mapped view are dropped from this process (they are
   read back from the file if touched again): a repacked weight's original bytes stop counting in RSS. */
static napi_value js_release_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t v;
  if (argc < 1 || !get_view(env, a[0], &v)) return fail(env, "releasePages(view): bad arguments");
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)v.data + page - 1) & ~(uintptr_t)(page - 1);
  uintptr_t end = ((uintptr_t)v.data + v.length) & ~(uintptr_t)(page - 1);
  if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
  return NULL;
}

/* prefault(view): read every page of a mapped view in now (what MAP_POPULATE does for a whole file),
   so that decoding does not page-fault its way through weights that stay in their stored rows. */
typedef struct {
  const volatile uint8_t *p;
  size_t n, page;
} touch_ctx;

static void touch_task(void *c_, int64_t start, int64_t end) {
  touch_ctx *c = c_;
  for (int64_t i = start; i < end; i++) (void)c->p[(size_t)i * c->page];
}

static napi_value js_prefault(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t v;
  if (argc < 1 || !get_view(env, a[0], &v)) return fail(env, "prefault(view): bad arguments");
  if (v.length == 0) return NULL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  touch_ctx c = {v.data, v.length, page};
  pool_run(touch_task, &c, (int64_t)((v.length + page - 1) / page), 256);
  return NULL;
}

/* A 64-bit content hash (4 lanes of multiply-xor over 8-byte words, 1 MiB chunks hashed on the
   pool, chunk hashes combined in order): fast enough to check a whole repacked file at each load. */
typedef struct {
  const uint8_t *p;
  size_t n, chunk;
  uint64_t *out;
} hash_ctx;

static inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static uint64_t hash_chunk(const uint8_t *p, size_t n, uint64_t seed) {
  uint64_t h[4] = {seed ^ 0x9e3779b97f4a7c15ULL, seed + 1, seed + 2, seed + 3};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; l++) {
      uint64_t w;
      memcpy(&w, p + i + 8 * l, 8);
      h[l] = (h[l] ^ w) * 0x100000001b3ULL + (h[l] >> 29);
    }
  uint64_t t = 0;
  for (; i < n; i++) t = (t << 8 | p[i]) * 0x100000001b3ULL;
  return mix64(h[0] ^ mix64(h[1] ^ mix64(h[2] ^ mix64(h[3] ^ t ^ n))));
}

static void hash_task(void *c_, int64_t start, int64_t end) {
  hash_ctx *c = c_;
  for (int64_t i = start; i < end; i++) {
    size_t off = (size_t)i * c->chunk, len = off + c->chunk > c->n ? c->n - off : c->chunk;
    c->out[i] = hash_chunk(c->p + off, len, (uint64_t)i);
  }
}

/* hashBytes(view) -> 16 hex digits */
static napi_value js_hash_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t v;
  if (argc < 1 || !get_view(env, a[0], &v) || v.type != napi_uint8_array) return fail(env, "hashBytes(Uint8Array): bad arguments");
  size_t chunk = 1 << 20, chunks = (v.length + chunk - 1) / chunk;
  uint64_t *out = calloc(chunks ? chunks : 1, sizeof(uint64_t));
  if (!out) return fail(env, "hashBytes: out of memory");
  hash_ctx c = {v.data, v.length, chunk, out};
  pool_run(hash_task, &c, (int64_t)chunks, 1);
  uint64_t h = mix64((uint64_t)v.length);
  for (size_t i = 0; i < chunks; i++) h = mix64(h ^ out[i]);
  free(out);
  char hex[17];
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) hex[i] = digits[(h >> (60 - 4 * i)) & 15];
  hex[16] = 0;
  napi_value s;
  CHECK(napi_create_string_utf8(env, hex, 16, &s));
  return s;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int64_t n;
  if (argc < 1 || !get_i64(env, a[0], &n) || n < 1 || n > 1024) return fail(env, "setThreads: expected 1..1024");
  if (pool_set_threads((int)n) != 0) return fail(env, "setThreads: could not start threads");
  return NULL;
}

/* An expert group: the matrices' pointers and shapes, checked once (the JS side keeps the buffers alive). */
typedef struct {
  int64_t E, I, d, Is;
  int shared;
  packed_matrix *m; /* gate[E], up[E], down[E], then shared gate, up, down */
} expert_group;

static void free_group(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  expert_group *g = data;
  free(g->m);
  free(g);
}

/* One matrix descriptor [data: Uint8Array, wtype, layout, rows, cols] into m; 0 if malformed. */
static int get_matrix(napi_env env, napi_value v, packed_matrix *m, int64_t *rows, int64_t *cols) {
  napi_value el[5];
  for (uint32_t i = 0; i < 5; i++)
    if (napi_get_element(env, v, i, &el[i]) != napi_ok) return 0;
  view_t data;
  int64_t wtype, layout;
  if (!get_view(env, el[0], &data) || data.type != napi_uint8_array || !get_i64(env, el[1], &wtype) || !get_i64(env, el[2], &layout) ||
      !get_i64(env, el[3], rows) || !get_i64(env, el[4], cols))
    return 0;
  int be = quant_block_elements((int)wtype);
  if (be <= 0 || *rows < 8 || *rows % 8 != 0 || *cols <= 0 || *cols % be != 0 || !packed_layout_fits((int)layout, (int)wtype)) return 0;
  if (data.length < packed_bytes((int)layout, (int)wtype, *rows, *cols)) return 0;
  m->data = data.data;
  m->wtype = (int)wtype;
  m->layout = (int)layout;
  m->group_bytes = packed_group_bytes((int)layout, (int)wtype, *cols);
  return 1;
}

/* expertGroup(matrices, E, shared) -> handle | null (null: shapes or types this op does not take) */
static napi_value js_expert_group(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int64_t E;
  bool shared = false, is_array = false;
  if (argc < 3 || napi_is_array(env, a[0], &is_array) != napi_ok || !is_array || !get_i64(env, a[1], &E) || E < 1 ||
      napi_get_value_bool(env, a[2], &shared) != napi_ok)
    return fail(env, "expertGroup(matrices, E, shared): bad arguments");
  uint32_t count = 0;
  CHECK(napi_get_array_length(env, a[0], &count));
  if (count != (uint32_t)(3 * E + (shared ? 3 : 0))) return fail(env, "expertGroup: expected 3·E (+3 shared) matrices");
  expert_group *g = calloc(1, sizeof *g);
  if (g) g->m = calloc(count, sizeof(packed_matrix));
  if (!g || !g->m) {
    if (g) free(g);
    return fail(env, "expertGroup: out of memory");
  }
  g->E = E;
  g->shared = shared;
  int64_t *rows = calloc(count, sizeof(int64_t)), *cols = calloc(count, sizeof(int64_t));
  int ok = rows && cols;
  for (uint32_t i = 0; i < count && ok; i++) {
    napi_value el;
    ok = napi_get_element(env, a[0], i, &el) == napi_ok && get_matrix(env, el, &g->m[i], &rows[i], &cols[i]);
  }
  if (ok) {
    /* gate, up: [I, d]; down: [d, I]; shared gate, up: [Is, d], shared down: [d, Is] */
    g->I = rows[0];
    g->d = cols[0];
    g->Is = shared ? rows[3 * E] : 0;
    for (int64_t e = 0; e < E && ok; e++) {
      ok = rows[e] == g->I && cols[e] == g->d && rows[E + e] == g->I && cols[E + e] == g->d && rows[2 * E + e] == g->d &&
           cols[2 * E + e] == g->I;
      /* gate and up read one quantised input, so one type; the routed downs share one type */
      ok = ok && g->m[e].wtype == g->m[0].wtype && g->m[E + e].wtype == g->m[0].wtype && g->m[2 * E + e].wtype == g->m[2 * E].wtype;
    }
    if (ok && shared) {
      int64_t s = 3 * E;
      ok = rows[s] == g->Is && cols[s] == g->d && rows[s + 1] == g->Is && cols[s + 1] == g->d && rows[s + 2] == g->d &&
           cols[s + 2] == g->Is && g->m[s].wtype == g->m[0].wtype && g->m[s + 1].wtype == g->m[0].wtype;
    }
  }
  free(rows);
  free(cols);
  if (!ok) {
    free_group(env, g, NULL);
    napi_value nul;
    CHECK(napi_get_null(env, &nul));
    return nul;
  }
  napi_value handle;
  if (napi_create_external(env, g, free_group, NULL, &handle) != napi_ok) {
    free_group(env, g, NULL);
    return fail(env, "expertGroup: cannot create the handle");
  }
  return handle;
}

/* expertsForward(out, x, tokens, k, expertOf: Int32Array, weightOf: Float32Array, group) */
static napi_value js_experts_forward(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value a[7];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t out, x, eo, wo;
  int64_t T, k;
  expert_group *g = NULL;
  if (argc < 7 || !get_view(env, a[0], &out) || !get_view(env, a[1], &x) || !get_i64(env, a[2], &T) || !get_i64(env, a[3], &k) ||
      !get_view(env, a[4], &eo) || !get_view(env, a[5], &wo) || napi_get_value_external(env, a[6], (void **)&g) != napi_ok || !g)
    return fail(env, "expertsForward(out, x, tokens, k, expertOf, weightOf, group): bad arguments");
  if (out.type != napi_float32_array || x.type != napi_float32_array || eo.type != napi_int32_array || wo.type != napi_float32_array)
    return fail(env, "expertsForward: out, x Float32Array; expertOf Int32Array; weightOf Float32Array");
  if (T < 1 || k < 1 || k > 64 || out.length < (size_t)(T * g->d) || x.length < (size_t)(T * g->d) || eo.length < (size_t)(T * k) ||
      wo.length < (size_t)(T * k))
    return fail(env, "expertsForward: arrays shorter than the shape, or k outside [1, 64]");
  int64_t E = g->E;
  int rc = experts_forward(out.data, x.data, T, g->d, k, eo.data, wo.data, E, g->I, g->m, g->m + E, g->m + 2 * E, g->Is,
                           g->shared ? g->m + 3 * E : NULL, g->shared ? g->m + 3 * E + 1 : NULL, g->shared ? g->m + 3 * E + 2 : NULL);
  if (rc == -2) return fail(env, "expertsForward: an expert id outside [0, E)");
  if (rc != 0) return fail(env, "expertsForward: out of memory");
  return NULL;
}

/* A head group: H matrices of one type, layout and shape, for one product per head. */
typedef struct {
  int64_t H, rows, cols;
  packed_matrix *m;
} head_group;

static void free_head_group(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  head_group *g = data;
  free(g->m);
  free(g);
}

/* headGroup(matrices) -> handle | null (null: the matrices differ in type, layout or shape) */
static napi_value js_head_group(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  bool is_array = false;
  uint32_t count = 0;
  if (argc < 1 || napi_is_array(env, a[0], &is_array) != napi_ok || !is_array || napi_get_array_length(env, a[0], &count) != napi_ok ||
      count < 1)
    return fail(env, "headGroup(matrices): expected a non-empty array");
  head_group *g = calloc(1, sizeof *g);
  if (g) g->m = calloc(count, sizeof(packed_matrix));
  if (!g || !g->m) {
    if (g) free(g);
    return fail(env, "headGroup: out of memory");
  }
  g->H = count;
  int ok = 1;
  for (uint32_t i = 0; i < count && ok; i++) {
    napi_value el;
    int64_t rows, cols;
    ok = napi_get_element(env, a[0], i, &el) == napi_ok && get_matrix(env, el, &g->m[i], &rows, &cols);
    if (ok && i == 0) {
      g->rows = rows;
      g->cols = cols;
    }
    ok = ok && rows == g->rows && cols == g->cols && g->m[i].wtype == g->m[0].wtype && g->m[i].layout == g->m[0].layout;
  }
  if (!ok) {
    free_head_group(env, g, NULL);
    napi_value nul;
    CHECK(napi_get_null(env, &nul));
    return nul;
  }
  napi_value handle;
  if (napi_create_external(env, g, free_head_group, NULL, &handle) != napi_ok) {
    free_head_group(env, g, NULL);
    return fail(env, "headGroup: cannot create the handle");
  }
  return handle;
}

/* matmulHeads(y, x, tokens, xStride, group, shared) */
static napi_value js_matmul_heads(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x;
  int64_t T, xs, shared;
  head_group *g = NULL;
  if (argc < 6 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_i64(env, a[2], &T) || !get_i64(env, a[3], &xs) ||
      napi_get_value_external(env, a[4], (void **)&g) != napi_ok || !g || !get_i64(env, a[5], &shared))
    return fail(env, "matmulHeads(y, x, tokens, xStride, group, shared): bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array) return fail(env, "matmulHeads: y and x must be Float32Array");
  int64_t x_rows = shared ? T : T * g->H;
  if (T < 1 || xs < g->cols || y.length < (size_t)(T * g->H * g->rows) || x.length < (size_t)((x_rows - 1) * xs + g->cols))
    return fail(env, "matmulHeads: arrays shorter than the shape, or a stride below the columns");
  if (packed_matmul_heads(y.data, x.data, T, xs, shared != 0, g->H, g->m, g->rows, g->cols) != 0)
    return fail(env, "matmulHeads: out of memory");
  return NULL;
}

/* matmulTransposedHeads(y, x, w, wtype, heads, rows, cols, tokens, yStride) */
static napi_value js_matmul_t_heads(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value a[9];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  view_t y, x, w;
  int64_t wtype, H, rows, cols, T, ys;
  if (argc < 9 || !get_view(env, a[0], &y) || !get_view(env, a[1], &x) || !get_view(env, a[2], &w) || !get_i64(env, a[3], &wtype) ||
      !get_i64(env, a[4], &H) || !get_i64(env, a[5], &rows) || !get_i64(env, a[6], &cols) || !get_i64(env, a[7], &T) ||
      !get_i64(env, a[8], &ys))
    return fail(env, "matmulTransposedHeads(y, x, w, wtype, heads, rows, cols, tokens, yStride): bad arguments");
  if (y.type != napi_float32_array || x.type != napi_float32_array || w.type != napi_uint8_array)
    return fail(env, "matmulTransposedHeads: y and x must be Float32Array, w Uint8Array");
  if (!kernels_supports((int)wtype)) return fail(env, "matmulTransposedHeads: unsupported weight type");
  if (H < 1 || rows < 1 || cols < 1 || T < 1 || ys < cols) return fail(env, "matmulTransposedHeads: empty shape, or a stride below the columns");
  {
    int be = quant_block_elements((int)wtype);
    if (be > 0 && cols % be != 0) return fail(env, "matmulTransposedHeads: row length is not a whole number of blocks");
  }
  if (w.length < weight_bytes((int)wtype, H * rows * cols) || x.length < (size_t)(T * rows) ||
      y.length < (size_t)((T * H - 1) * ys + cols))
    return fail(env, "matmulTransposedHeads: array shorter than the shape");
  kernel_matmul_t_heads(y.data, ys, x.data, w.data, (int)wtype, H, rows, cols, T);
  return NULL;
}

/* poolStats(iterations) -> { jobs, overheadUs } */
static napi_value js_pool_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int64_t iterations = 0;
  if (argc >= 1 && !get_i64(env, a[0], &iterations)) return fail(env, "poolStats(iterations): bad arguments");
  napi_value obj, jobs, us;
  double overhead = iterations > 0 ? pool_overhead_us((int)iterations) : 0;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_double(env, (double)pool_jobs(), &jobs));
  CHECK(napi_create_double(env, overhead, &us));
  CHECK(napi_set_named_property(env, obj, "jobs", jobs));
  CHECK(napi_set_named_property(env, obj, "overheadUs", us));
  return obj;
}

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, simd, threads;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_string_utf8(env, kernels_simd_name(), NAPI_AUTO_LENGTH, &simd));
  CHECK(napi_create_int32(env, pool_threads(), &threads));
  CHECK(napi_set_named_property(env, obj, "simd", simd));
  CHECK(napi_set_named_property(env, obj, "threads", threads));
  return obj;
}

/* Node environments (the main thread, worker threads) that loaded the addon and have not exited.
   Node unloads the shared object when the last one exits (a model run in a worker thread alone:
   `dseek chat`, the server); the pool's threads and the SIGBUS handler are this object's code, so
   the last one out stops them first, or a spinning pool thread faults on unmapped code. */
static atomic_int live_envs = 0;

static void on_env_exit(void *arg) {
  (void)arg;
  if (atomic_fetch_sub(&live_envs, 1) == 1) {
    pool_shutdown();
    guard_uninstall();
  }
}

static napi_value init(napi_env env, napi_value exports) {
  if (napi_add_env_cleanup_hook(env, on_env_exit, NULL) != napi_ok) return NULL;
  atomic_fetch_add(&live_envs, 1);
  kernels_init();
  napi_property_descriptor props[] = {
      {"matmul", NULL, js_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"matmulTransposedHeads", NULL, js_matmul_t_heads, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, js_rmsnorm, NULL, NULL, NULL, napi_default, NULL},
      {"siluMul", NULL, js_silu_mul, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"copyRows", NULL, js_copy_rows, NULL, NULL, NULL, napi_default, NULL},
      {"attention", NULL, js_attention, NULL, NULL, NULL, napi_default, NULL},
      {"sharedKvAttention", NULL, js_shared_kv_attention, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_default, NULL},
      {"mapRegions", NULL, js_map_regions, NULL, NULL, NULL, napi_default, NULL},
      {"readBandwidth", NULL, js_read_bandwidth, NULL, NULL, NULL, napi_default, NULL},
      {"levels", NULL, js_levels, NULL, NULL, NULL, napi_default, NULL},
      {"setLevel", NULL, js_set_level, NULL, NULL, NULL, napi_default, NULL},
      {"repackPlan", NULL, js_repack_plan, NULL, NULL, NULL, napi_default, NULL},
      {"repack", NULL, js_repack, NULL, NULL, NULL, napi_default, NULL},
      {"packedMatmul", NULL, js_packed_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"releasePages", NULL, js_release_pages, NULL, NULL, NULL, napi_default, NULL},
      {"hashBytes", NULL, js_hash_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"prefault", NULL, js_prefault, NULL, NULL, NULL, napi_default, NULL},
      {"poolStats", NULL, js_pool_stats, NULL, NULL, NULL, napi_default, NULL},
      {"expertGroup", NULL, js_expert_group, NULL, NULL, NULL, napi_default, NULL},
      {"headGroup", NULL, js_head_group, NULL, NULL, NULL, napi_default, NULL},
      {"matmulHeads", NULL, js_matmul_heads, NULL, NULL, NULL, napi_default, NULL},
      {"expertsForward", NULL, js_experts_forward, NULL, NULL, NULL, napi_default, NULL},
      {"mappedFileFaults", NULL, js_mapped_file_faults, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
