#ifndef DSEEK_OPS_H
#define DSEEK_OPS_H
/*
 * Kernel-owned weight layouts and the table of operations each instruction level fills.
 *
 * A repacked weight interleaves 8 rows ("a row group") block by block, so that one unpacked
 * activation block meets eight rows, the eight scales load as one vector, and the int32 lanes of
 * an 8-bit dot product fall on whole rows (no horizontal sum per row). The idea and the 8-row,
 * 8-byte interleave are those of ggml-cpu's repack.h (`block_q4_0x8`) and ik_llama.cpp's
 * `_r8` types; the byte orders below are ours, chosen for the lane pattern described at each
 * layout. Rows past the last whole group stay in the file's own row format, after the groups.
 *
 * Every level (arch/scalar.c, arch/x86/avx2.c, arch/x86/avx512.c, arch/arm/neon.c) computes exactly
 * the same integer sums; results differ from the scalar level only by float summation order.
 */
#include <stddef.h>
#include <stdint.h>

#include "gemm_f32.h"

#define ROW_GROUP 8

/* Layout ids (0: the file's own row-major bytes). */
enum packed_layout {
  LAYOUT_ROWS = 0,
  /* Q4_0, per group and 32-column block (144 bytes):
       uint16 d[8]                 f16 scales of rows 0..7
       uint8  qs[2][8][8]          [h][r][i] = row r's Q4_0 byte 8h+i: low nibble element 8h+i,
                                   high nibble element 16+8h+i
     so the 64 bytes of one h hold 8 consecutive elements of every row, 8 bytes per row: the
     16 int32 lanes of a 4-byte dot product are (row r, elements 4k..4k+3) at lane 2r+k. */
  LAYOUT_Q4_0X8 = 1,
  /* Q8_0, per group and block (272 bytes): uint16 d[8]; uint8 qs[4][8][8] = [c][r][i] = row r's
     quant 8c+i XOR 0x80 (biased to unsigned, so x86's u8·s8 dot applies; Σ(w+128)x − 128Σx). */
  LAYOUT_Q8_0X8 = 2,
  /* Q4_K, per group and 256-column super-block (1184 bytes):
       uint16 d[8], dmin[8]
       uint8  sc[4][8][2]          [p][r][s] = row r's 6-bit scale of sub-block 2p+s
       uint8  mn[4][8][2]          the same for the mins
       uint8  qs[4][4][8][8]       [c][k][r][i] = row r's byte 32c+8k+i: low nibble element
                                   32·2c+8k+i (sub-block 2c), high nibble sub-block 2c+1 */
  LAYOUT_Q4_KX8 = 3,
  /* 4: retired. Q6_K with its 4 + 2 bits joined into one byte per weight at repack (2,192 bytes
     per group and super-block, +30 %): once the AVX-512 level's choice, since a single Zen 4 core
     read it faster than it unpacked 6 bits; two cores decoding together are bound by DRAM instead,
     and every level now reads LAYOUT_Q6_K6X8. The id stays unused so that cache files written
     with it miss (their key names it) rather than alias another layout. */
  /* Q5_0, per group and block (176 bytes): uint16 d[8]; uint8 hb[4][8] = [p][r] byte p of row r's
     32 fifth bits (bit i of byte p: element 8p+i); uint8 qs[2][8][8] as Q4_0. The bytes of hb[p]
     taken as one 64-bit word are a byte mask over a 64-byte register of 8 rows × 8 elements.
     (Q4_K_M files store the experts' down products, 1,408 columns, in Q5_0: K blocks need 256.) */
  LAYOUT_Q5_0X8 = 5,
  /* Q6_K at the file's 6.56 bits per weight, per group and super-block (1680 bytes):
       uint16 d[8]
       int8   sc[8][8][2]          [p][r][s] = row r's scale of 16-element group 2p+s
       uint8  ql[8][2][8][8]       [p][k][r][i] = row r's low 4 bits of element 32p+8k+i (low
                                   nibble) and of element 32p+16+8k+i (high nibble)
       uint8  qh[8][8][8]          [p][r][i] = row r's high 2 bits of element 32p+8j+i at bits
                                   2j, 2j+1 (j < 4)
     so three 32-byte loads (ql k = 0, 1 and qh) give, with masks and shifts, the four 8-element
     chunks 4p … 4p+3 of 4 rows as bytes 0..63 (64-byte loads: of 8 rows). Two cores decoding
     together are bound by DRAM, not by those instructions: the 102,400-row Q6_K head of V2-Lite
     read 172 MB a token instead of 225 (AMD EPYC Zen 3, figures at the AVX2 kernel). Prompts pay a
     little for it: a 2,048 × 2,048 product at 8–64 tokens ran 1.0× the 8-bit layout's, at 512
     tokens 0.83–0.89× (AVX2; 0.86–0.91× on AMX tiles); joining a group once into an 8-bit buffer
     for all token tiles measured slower still. All levels read Q6_K in this layout only. Against the retired 8-bit layout, the 102,400-row head at
     the AVX-512 level: 12.4–16.1 → 9.3–11.7 ms a token (Intel Xeon with AMX, 2 threads). */
  LAYOUT_Q6_K6X8 = 6,
  LAYOUT_COUNT = 7,
};

/* Activations for the 32-element formats: 32 values as d·q, and what a lane's integer sum of
   stored weight value × q needs added to become Σ (weight value − offset)·q for the weight type
   the row was quantised for (packed_quantise_row): bias[k] = −offset·Σ q_e over the block's
   elements e with e mod 8 in [4k, 4k+4), the offset being 8 for Q4_0's nibbles, 16 for Q5_0's
   5-bit values and 128 for packed Q8_0's biased bytes (levels that sign Q8_0's bytes again leave
   it). A level starts each lane's sum at it, so the offset costs no operation per block and
   token: the shift and subtract it replaced were 2 of the 9 vector arithmetic operations per
   block and token of the AVX-512 Q4_0 tile, which a Zen 4 core issues at about two 512-bit
   operations a cycle whatever they are (V2-Lite Q4_0 pp512 medians 67.7 → 71.9 tok/s, AMD EPYC
   Zen 4, 2 threads, 9 runs each alternating). */
typedef struct {
  float d;
  int32_t bias[2];
  int32_t bias_sum; /* bias[0] + bias[1]: a lane that holds a whole row's block */
  int8_t q[32];
} act_q8x;

/* Activations for the K formats: one scale per 256 values, Σq per 16 and per 32. */
typedef struct {
  float d;
  int16_t bs16[16];
  int16_t bs32[8];
  int32_t pad[3];
  int8_t q[256];
} act_q8kx;

/*
 * A level's products over packed weights: rows of row groups [g0, g1) of a packed weight
 * (group stride `group_bytes`) times `tokens` activation rows (`x` + t·xs blocks), into
 * y[t·ys + 8g + r]. NULL where the level keeps the type in rows.
 */
typedef void (*packed_gemm_fn)(float *y, int64_t ys, const uint8_t *w, size_t group_bytes, const void *x, int64_t xs,
                               int64_t blocks, int64_t tokens, int64_t g0, int64_t g1);

/* A level's packed_gemm_fn NAME over its product on one row group, GROUP(yg, ys, wg, x, xs, blocks,
   tokens) with x as ACT: every level walks the groups alike and differs only in how it tiles the
   tokens of a group. */
#define PACKED_GEMM(NAME, GROUP, ACT)                                                                                \
  static void NAME(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *x, int64_t xs, int64_t blocks,   \
                   int64_t tokens, int64_t g0, int64_t g1) {                                                          \
    for (int64_t g = g0; g < g1; g++) GROUP(y + 8 * g, ys, w + (size_t)g * gbytes, (const ACT *)x, xs, blocks, tokens); \
  }

/*
 * One chunk of decode-time latent attention (kernels.c, skv_chunk), for levels whose registers
 * hold a panel of 16 heads: rows[j] (j < m) are the chunk's latent rows of W values, f16 bits when
 * rows_f16 and f32 otherwise; `queries` are the H heads' [q_lat | q_rope] rows packed as gemm_f32
 * panels (gemm_f32.h: K = W, 16 heads a panel), new since this thread's previous call when
 * queries_new. Writes, per head h, rec[h·R] = max_j s_j, rec[h·R + 1] = Σ_j e^(s_j − max) and
 * rec[h·R + 8 + c] = Σ_j e^(s_j − max)·rows[j][c] for c < va, where s_j = scale·(rows_j · q_h);
 * the other floats of the records may be overwritten (the caller sets them after). `step(arg)` is
 * called LATENT_CHUNK_STEPS times, once per 16 rows × 32 columns of scores and 32 rows × 16
 * columns of values, spread over the work (the caller prefetches its next rows a slice a call).
 * Every sum runs in a fixed order, whatever the thread count.
 */
typedef void (*latent_chunk_fn)(float *rec, int64_t R, const void *const *rows, int rows_f16, int64_t m, int64_t W,
                                int64_t va, const float *queries, int queries_new, int64_t H, float scale,
                                void (*step)(void *), void *arg);
#define LATENT_CHUNK_STEPS(m, H, W, va) \
  ((((H) + 15) / 16) * (((m) + 15) / 16) * (((W) + 31) / 32) + (((va) + 15) / 16) * (((m) + 31) / 32))

/*
 * The same chunk over q8 rows (kernels.c, kvtype 2: ggml block_q8_0, 34 bytes a block of 32, the
 * last block short when W mod 32 ≠ 0), for levels with 8-bit dot products. The queries come
 * rounded to 8 bits per block of 32 (kernels.c, skv_query_q8), in panels of 16 heads: for panel p
 * and block b (nb = ⌈W/32⌉ blocks), q.qs[(p·nb + b)·512 + 64·kk + 4·l + i] is head 16p + l's value
 * k = 32b + 4kk + i (0 past W or H), q.d[(p·nb + b)·16 + l] its block's scale and
 * q.sum[(p·nb + b)·16 + l] the sum of its block's values. s_j = scale·Σ_b d_jb·d_qb·Σ_k q_jk·q_qk;
 * the records and steps as latent_chunk_fn's.
 */
typedef struct {
  const int8_t *qs;
  const float *d;
  const int32_t *sum;
} latent_queries_q8;
typedef void (*latent_chunk_q8_fn)(float *rec, int64_t R, const uint8_t *const *rows, int64_t m, int64_t W, int64_t va,
                                   const latent_queries_q8 *queries, int64_t H, float scale, void (*step)(void *), void *arg);

typedef struct {
  const char *name;
  packed_gemm_fn gemm[LAYOUT_COUNT];
  /* NULL: kernels.c composes the chunk from its f32 panel products (gemm_f32.h). */
  latent_chunk_fn latent_chunk;
  /* NULL: q8 rows dequantised for latent_chunk (or the composition), the queries rounded alike. */
  latent_chunk_q8_fn latent_chunk_q8;
  /* NULL: gemm_f32.c's own panel tile (AVX2 on x86), and no two-panel tile. */
  gemm_f32_tile_fn f32_tile;
  gemm_f32_tile2_fn f32_tile2;
  /* Quantise one block (32 or 256 values) as d = amax/127, q = round-half-away(x/d). */
  void (*quantise_block)(const float *x, int n, float *d, int8_t *q);
  /* y[i] = silu(gate[i]) · up[i] (y may alias gate): the experts' activation between products. */
  void (*silu_mul)(float *y, const float *gate, const float *up, int64_t n);
  /* s[j] = exp(s[j] − max) for j < n (softmax numerators); returns their sum. */
  float (*exp_shifted)(float *s, int64_t n, float max);
  /* s[j] = scale · s[j] for j < n; returns the largest (NaN never taken: s > max ? s : max, as the
     scalar loop's; −∞ for n = 0). The same value at every level: max does not depend on order. */
  float (*scale_max)(float *s, int64_t n, float scale);
} kernel_ops;

/* The levels, best first; a level is usable when the CPU has its features. */
extern const kernel_ops ops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const kernel_ops ops_avx2;
extern const kernel_ops ops_avx512;
extern const kernel_ops ops_amx;
/* Whether the CPU has AMX-INT8 tiles and the OS lets this process use them (arch/x86/amx.c). */
int amx_usable(void);
#endif
#if defined(__aarch64__)
extern const kernel_ops ops_neon;
#endif

/* The level in use (set once at start; tests may lower it). */
extern const kernel_ops *active_ops;

/* Shared helpers every level uses (repack.c). */
void quantise_block_scalar(const float *x, int n, float *d, int8_t *q);
void silu_mul_scalar(float *y, const float *gate, const float *up, int64_t n);
float exp_shifted_scalar(float *s, int64_t n, float max);
float scale_max_scalar(float *s, int64_t n, float scale);
#if defined(__x86_64__) || defined(_M_X64)
void silu_mul_avx2(float *y, const float *gate, const float *up, int64_t n); /* the AVX-512 level uses these too */
float exp_shifted_avx2(float *s, int64_t n, float max);
float scale_max_avx2(float *s, int64_t n, float scale);
void quantise_block_avx512(const float *x, int n, float *d, int8_t *q); /* and the AMX level this */
float exp_shifted_avx512(float *s, int64_t n, float max);              /* and this */
void latent_chunk_avx512(float *rec, int64_t R, const void *const *rows, int rows_f16, int64_t m, int64_t W, int64_t va,
                         const float *queries, int queries_new, int64_t H, float scale, void (*step)(void *), void *arg); /* and this */
void f32_tile_avx512(float out[GEMM_F32_MR][GEMM_F32_NR], const float *const rows[GEMM_F32_MR], const float *panel, int64_t ld,
                     int64_t K); /* and these */
void f32_tile2_avx512(float out[GEMM_F32_MR][2 * GEMM_F32_NR], const float *const rows[GEMM_F32_MR], const float *panel0,
                      const float *panel1, int64_t ld, int64_t K);
void latent_chunk_q8_avx512(float *rec, int64_t R, const uint8_t *const *rows, int64_t m, int64_t W, int64_t va,
                            const latent_queries_q8 *queries, int64_t H, float scale, void (*step)(void *), void *arg); /* and this */
/* The chunk's softmax, s[j·16⌈H/16⌉ + h] = e^(scale·s − max_h) for j < m, max and sum into the records. */
void latent_softmax_avx512(float *rec, int64_t R, float *s, int64_t m, int64_t H, float scale);
#endif
float f16_bits_to_f32(uint16_t h);

#endif
