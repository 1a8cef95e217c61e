/*
 * The AMX level: the AVX-512 level plus Intel AMX-INT8 matrix tiles for prompts and AMX-BF16 ones
 * for decode latent attention (built with the AVX-512 flags and -mamx-tile -mamx-int8 -mamx-bf16;
 * chosen only when the CPU has the INT8 tiles and Linux grants this process their state, see
 * amx_usable; the BF16 kernel checks for its own feature).
 *
 * One `tdpbssd` multiplies a 16 × K int8 tile by a K × 16 one into 16 × 16 int32 sums (Intel
 * Architecture Instruction Set Extensions Programming Reference, ch. 3, "Intel AMX"). Here A is 16
 * tokens' activation quants of one block, loaded straight from the act_q8x / act_q8kx rows with
 * their stride, and B is one block of two row groups (16 rows) in the VNNI order the instruction
 * reads, B[k/4][4n + k%4] = W[n][k], rebuilt from the packed layout once per call and row pair
 * into a thread's scratch, then used by every token tile. K is a format's scale block: 32 for
 * Q4_0, Q5_0, Q8_0 and Q4_K's sub-blocks, 16 for Q6_K's groups, so each tile product is one scale
 * block's exact integer sums and the AVX-512 registers apply the scales:
 *   32-element formats: acc[t][n] += (d_w[n]·d_x[t]) · C[t][n], block by block;
 *   K formats: Σ_j sc_j[n]·C_j[t][n] in int32 over a super-block, then as the AVX-512 tile.
 * Those are the AVX-512 tiles' operations in their order (the whole-block form of the 32-element
 * ones, avx512_tiles.h), so the rows and tokens AMX leaves over (an odd last row group, calls of
 * few tokens) run those tiles and every result has the same bits whichever path computed it: the
 * AMX level equals its AVX-512 tiles bit for bit, whatever the batch, tiling or thread count.
 */
#include "avx512_tiles.h"
#include "../../threadpool.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cpuid.h>

/* Calls with fewer tokens run the AVX-512 tiles: a one-token product streams weights from memory,
   and rebuilding its blocks for the tiles only adds work. */
#define AMX_MIN_TOKENS 8

/* ---------- the tiles' state ---------- */

int amx_usable(void) {
  static int known = -1;
  if (known >= 0) return known;
  known = 0;
#if defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  if (!((d >> 24) & 1) || !((d >> 25) & 1)) return 0; /* AMX-TILE, AMX-INT8 */
  if (!((c >> 27) & 1)) return 0;                      /* OSXSAVE, for xgetbv */
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return 0; /* XTILECFG and XTILEDATA enabled by the OS */
  /* Linux keeps the 8 KB tile state off until a process asks for it (ARCH_REQ_XCOMP_PERM for
     XFEATURE_XTILEDATA, Documentation/arch/x86/xstate.rst); the grant covers all its threads. */
  known = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#endif
  return known;
}

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

/* Tiles 0/3: A (tokens × K bytes), 1/4: B (K/4 × 64), 2/5: C (tokens × 16 int32); two of each so
   that one block's product runs while the other's sums are scaled. */
static void configure_tiles(int tokens, int kbytes) {
  tile_config c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int i = 0; i < 2; i++) {
    c.rows[3 * i] = (uint8_t)tokens;
    c.colsb[3 * i] = (uint16_t)kbytes;
    c.rows[3 * i + 1] = (uint8_t)(kbytes / 4);
    c.colsb[3 * i + 1] = 64;
    c.rows[3 * i + 2] = (uint8_t)tokens;
    c.colsb[3 * i + 2] = 64;
  }
  /* not _tile_loadconfig: GCC 12's declares that it reads only the first 8 bytes of the config, so
     the stores to the rest may be dropped (seen at -O2: a #GP from a half-written config) */
  __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* The pool scratch slot of a thread's rebuilt blocks (the latent chunk below takes the four
   before it). */
#define AMX_SLOT_BLOCKS (POOL_SCRATCH_LEVEL + 4)

/* ---------- blocks of two row groups in the tiles' B order ---------- */

/* Two 64-byte vectors of 8 rows × 8 consecutive elements each (lanes 2r, 2r+1: elements 0..3,
   4..7 of row r), group a's rows 0..7 and group b's 8..15, as B rows k/4 = 0 and 1. */
INLINE void put_rows(uint8_t *dst, __m512i a, __m512i b) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  _mm512_store_si512(dst, _mm512_permutex2var_epi32(a, even, b));
  _mm512_store_si512(dst + 64, _mm512_permutex2var_epi32(a, odd, b));
}

/* The 8 f16 scales of each group as 16 floats. */
INLINE __m512 scales16(const uint8_t *a, const uint8_t *b) {
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                                 _mm_loadu_si128((const __m128i *)b), 1));
}

/* 32-element formats: per block 512 bytes of B (signed weights) and 16 float scales. */
#define Q8X_BLOCK 576

static void build_q4_0(uint8_t *dst, const uint8_t *wa, const uint8_t *wb, int64_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
  for (int64_t i = 0; i < blocks; i++, dst += Q8X_BLOCK) {
    const uint8_t *a = wa + i * 144, *b = wb + i * 144;
    for (int h = 0; h < 2; h++) { /* qs[h]: low nibbles elements 8h.., high nibbles 16+8h.. */
      __m512i va = _mm512_loadu_si512(a + 16 + 64 * h), vb = _mm512_loadu_si512(b + 16 + 64 * h);
      put_rows(dst + 128 * h, _mm512_sub_epi8(_mm512_and_si512(va, m4), eight), _mm512_sub_epi8(_mm512_and_si512(vb, m4), eight));
      put_rows(dst + 256 + 128 * h, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(va, 4), m4), eight),
               _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(vb, 4), m4), eight));
    }
    _mm512_store_ps(dst + 512, scales16(a, b));
  }
}

static void build_q5_0(uint8_t *dst, const uint8_t *wa, const uint8_t *wb, int64_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(15), sixteen = _mm512_set1_epi8(16);
  for (int64_t i = 0; i < blocks; i++, dst += Q8X_BLOCK) {
    const uint8_t *a = wa + i * 176, *b = wb + i * 176;
    for (int h = 0; h < 2; h++) { /* fifth bits: hb[h] for the low nibbles, hb[2 + h] for the high */
      __m512i va = _mm512_loadu_si512(a + 48 + 64 * h), vb = _mm512_loadu_si512(b + 48 + 64 * h);
      __m512i la = _mm512_or_si512(_mm512_and_si512(va, m4), bits_mask(a + 16 + 8 * h));
      __m512i lb = _mm512_or_si512(_mm512_and_si512(vb, m4), bits_mask(b + 16 + 8 * h));
      __m512i ha = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(va, 4), m4), bits_mask(a + 32 + 8 * h));
      __m512i hb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(vb, 4), m4), bits_mask(b + 32 + 8 * h));
      put_rows(dst + 128 * h, _mm512_sub_epi8(la, sixteen), _mm512_sub_epi8(lb, sixteen));
      put_rows(dst + 256 + 128 * h, _mm512_sub_epi8(ha, sixteen), _mm512_sub_epi8(hb, sixteen));
    }
    _mm512_store_ps(dst + 512, scales16(a, b));
  }
}

static void build_q8_0(uint8_t *dst, const uint8_t *wa, const uint8_t *wb, int64_t blocks) {
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  for (int64_t i = 0; i < blocks; i++, dst += Q8X_BLOCK) {
    const uint8_t *a = wa + i * 272, *b = wb + i * 272;
    for (int c = 0; c < 4; c++) /* qs[c]: elements 8c..8c+7, biased by +128 */
      put_rows(dst + 128 * c, _mm512_xor_si512(_mm512_loadu_si512(a + 16 + 64 * c), bias),
               _mm512_xor_si512(_mm512_loadu_si512(b + 16 + 64 * c), bias));
    _mm512_store_ps(dst + 512, scales16(a, b));
  }
}

/* Q4_K, per super-block: 8 sub-blocks × 512 bytes of B (nibbles, 0..15), the sub-blocks' scales
   as int32 [8][16], the mins as int16 pairs (sub-blocks 2p, 2p+1) [4][16][2], d and dmin [16]. */
#define Q4K_BLOCK (4096 + 512 + 256 + 128)

/* Bytes [r][s] of 8 rows of each group (16 each) as int32: s = 0 lanes, then s = 1 lanes, 16 rows. */
INLINE void put_scale_pairs(uint8_t *dst0, uint8_t *dst1, __m512i a, __m512i b) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  _mm512_store_si512(dst0, _mm512_permutex2var_epi32(a, even, b));
  _mm512_store_si512(dst1, _mm512_permutex2var_epi32(a, odd, b));
}

static void build_q4_k(uint8_t *dst, const uint8_t *wa, const uint8_t *wb, int64_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(15);
  for (int64_t i = 0; i < blocks; i++, dst += Q4K_BLOCK) {
    const uint8_t *a = wa + i * 1184, *b = wb + i * 1184;
    for (int c = 0; c < 4; c++)
      for (int k = 0; k < 4; k++) { /* byte 32c+8k+i: low nibble sub-block 2c, high 2c+1, element 8k+i */
        __m512i va = _mm512_loadu_si512(a + 160 + (4 * c + k) * 64), vb = _mm512_loadu_si512(b + 160 + (4 * c + k) * 64);
        put_rows(dst + 2 * c * 512 + 128 * k, _mm512_and_si512(va, m4), _mm512_and_si512(vb, m4));
        put_rows(dst + (2 * c + 1) * 512 + 128 * k, _mm512_and_si512(_mm512_srli_epi16(va, 4), m4),
                 _mm512_and_si512(_mm512_srli_epi16(vb, 4), m4));
      }
    uint8_t *sc = dst + 4096, *mn = sc + 512, *dd = mn + 256;
    for (int p = 0; p < 4; p++) {
      put_scale_pairs(sc + 2 * p * 64, sc + (2 * p + 1) * 64, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(a + 32 + 16 * p))),
                      _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 32 + 16 * p))));
      __m256i ma = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a + 96 + 16 * p)));
      __m256i mb = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + 96 + 16 * p)));
      _mm512_store_si512(mn + 64 * p, _mm512_inserti64x4(_mm512_castsi256_si512(ma), mb, 1));
    }
    _mm512_store_ps(dd, scales16(a, b));
    _mm512_store_ps(dd + 64, scales16(a + 16, b + 16));
  }
}

/* Q6_K, per super-block: 16 groups × 256 bytes of B (quants − 32, K = 16), the groups' scales as
   int32 [16][16], d [16]. */
#define Q6K_BLOCK (4096 + 1024 + 64)

/* From LAYOUT_Q6_K6X8 (1,680 bytes per group and super-block), its chunks joined as the AVX-512
   tile joins them. */
static void build_q6_k6(uint8_t *dst, const uint8_t *wa, const uint8_t *wb, int64_t blocks) {
  const __m512i off = _mm512_set1_epi8(32);
  for (int64_t i = 0; i < blocks; i++, dst += Q6K_BLOCK) {
    const uint8_t *a = wa + i * 1680, *b = wb + i * 1680;
    for (int p = 0; p < 8; p++) {
      __m512i ca[4], cb[4];
      q6_k6_chunks(a, p, ca);
      q6_k6_chunks(b, p, cb);
      for (int j = 0; j < 4; j++) {
        const int c = 4 * p + j;
        put_rows(dst + (c / 2) * 256 + (c % 2) * 128, _mm512_sub_epi8(ca[j], off), _mm512_sub_epi8(cb[j], off));
      }
    }
    uint8_t *sc = dst + 4096;
    for (int p = 0; p < 8; p++)
      put_scale_pairs(sc + 2 * p * 64, sc + (2 * p + 1) * 64, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a + 16 + 16 * p))),
                      _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 16 + 16 * p))));
    _mm512_store_ps(sc + 1024, scales16(a, b));
  }
}

/* ---------- token tiles × 16 rows ---------- */

/* The next row pair's packed bytes of blocks [b0, b1) (`bb` bytes per block and group), asked for
   while this pair computes: its rebuild would otherwise wait on DRAM with the tiles idle. */
INLINE void prefetch_next(const uint8_t *na, const uint8_t *nb, int64_t bb, int64_t b0, int64_t b1) {
  if (!na) return;
  for (int64_t o = b0 * bb; o < b1 * bb; o += 64) {
    _mm_prefetch((const char *)na + o, _MM_HINT_T0);
    _mm_prefetch((const char *)nb + o, _MM_HINT_T0);
  }
}

/* One scale block's product into C tile `c` (A tile `a`, B tile `bt`), stored to sums. */
#define TILE_PRODUCT(a, bt, c, aptr, astride, bptr, sums) \
  do {                                                    \
    _tile_loadd(a, aptr, astride);                        \
    _tile_loadd(bt, bptr, 64);                            \
    _tile_zero(c);                                        \
    _tile_dpbssd(c, a, bt);                               \
    _tile_stored(c, sums, 64);                            \
  } while (0)

/* 32-element formats: y[t·ys + n] for n < 16 rows, t < nt tokens. */
INLINE void tile_q8x(float *y, int64_t ys, const uint8_t *bp, const act_q8x *x, int64_t xs, int64_t blocks, const uint8_t *na,
                     const uint8_t *nb, int64_t bb, const int nt) {
  __m512 acc[16];
  int32_t sums[2][16][16] __attribute__((aligned(64)));
  const size_t stride = (size_t)xs * sizeof(act_q8x);
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const uint8_t *p0 = bp + b * Q8X_BLOCK, *p1 = p0 + Q8X_BLOCK;
    prefetch_next(na, nb, bb, b, b + 2);
    TILE_PRODUCT(0, 1, 2, x[b].q, stride, p0, sums[0]);
    TILE_PRODUCT(3, 4, 5, x[b + 1].q, stride, p1, sums[1]);
    const __m512 d0 = _mm512_load_ps(p0 + 512), d1 = _mm512_load_ps(p1 + 512);
    _Pragma("GCC unroll 16")
    for (int t = 0; t < nt; t++) {
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d0, _mm512_set1_ps(x[t * xs + b].d)), _mm512_cvtepi32_ps(_mm512_load_si512(sums[0][t])), acc[t]);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d1, _mm512_set1_ps(x[t * xs + b + 1].d)), _mm512_cvtepi32_ps(_mm512_load_si512(sums[1][t])),
                               acc[t]);
    }
  }
  if (b < blocks) {
    const uint8_t *p0 = bp + b * Q8X_BLOCK;
    prefetch_next(na, nb, bb, b, b + 1);
    TILE_PRODUCT(0, 1, 2, x[b].q, stride, p0, sums[0]);
    const __m512 d0 = _mm512_load_ps(p0 + 512);
    _Pragma("GCC unroll 16")
    for (int t = 0; t < nt; t++)
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d0, _mm512_set1_ps(x[t * xs + b].d)), _mm512_cvtepi32_ps(_mm512_load_si512(sums[0][t])), acc[t]);
  }
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

/* K formats: isum[t][n] = Σ_j sc_j[n]·C_j[t][n] over a super-block's `groups` scale groups of
   `kbytes` elements each (B at bp + j·kbytes·16, the groups' int32 scales at sc + 64j), exact in
   int32 as the AVX-512 tiles sum them. */
INLINE void scaled_sums(__m512i isum[16], const int8_t *q, size_t stride, const uint8_t *bp, const uint8_t *sc, const int groups,
                        const int kbytes, const int nt) {
  int32_t sums[2][16][16] __attribute__((aligned(64)));
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
  for (int j = 0; j < groups; j += 2) {
    TILE_PRODUCT(0, 1, 2, q + kbytes * j, stride, bp + j * kbytes * 16, sums[0]);
    TILE_PRODUCT(3, 4, 5, q + kbytes * (j + 1), stride, bp + (j + 1) * kbytes * 16, sums[1]);
    const __m512i s0 = _mm512_load_si512(sc + 64 * j), s1 = _mm512_load_si512(sc + 64 * (j + 1));
    _Pragma("GCC unroll 16")
    for (int t = 0; t < nt; t++)
      isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(_mm512_load_si512(sums[0][t]), s0),
                                                           _mm512_mullo_epi32(_mm512_load_si512(sums[1][t]), s1)));
  }
}

INLINE void tile_q4_k(float *y, int64_t ys, const uint8_t *bp, const act_q8kx *x, int64_t xs, int64_t blocks, const uint8_t *na,
                      const uint8_t *nb, int64_t bb, const int nt) {
  float acc[16][16] __attribute__((aligned(64)));
  const size_t stride = (size_t)xs * sizeof(act_q8kx);
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) _mm512_store_ps(acc[t], _mm512_setzero_ps());
  for (int64_t b = 0; b < blocks; b++, bp += Q4K_BLOCK) {
    prefetch_next(na, nb, bb, b, b + 1);
    const uint8_t *sc = bp + 4096, *mn = sc + 512, *dd = mn + 256;
    __m512i isum[16];
    scaled_sums(isum, x[b].q, stride, bp, sc, 8, 32, nt);
    const __m512 d = _mm512_load_ps(dd), dmin = _mm512_load_ps(dd + 64);
    _Pragma("GCC unroll 16")
    for (int t = 0; t < nt; t++) {
      const act_q8kx *a = x + t * xs + b;
      __m512i msum = _mm512_setzero_si512();
      for (int p = 0; p < 4; p++)
        msum = _mm512_add_epi32(msum, _mm512_madd_epi16(_mm512_load_si512(mn + 64 * p),
                                                        _mm512_set1_epi32((int32_t)(uint16_t)a->bs32[2 * p] | ((int32_t)(uint16_t)a->bs32[2 * p + 1] << 16))));
      const __m512 dx = _mm512_set1_ps(a->d);
      __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[t]), _mm512_load_ps(acc[t]));
      _mm512_store_ps(acc[t], _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(msum), v));
    }
  }
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, _mm512_load_ps(acc[t]));
}

INLINE void tile_q6_k(float *y, int64_t ys, const uint8_t *bp, const act_q8kx *x, int64_t xs, int64_t blocks, const uint8_t *na,
                      const uint8_t *nb, int64_t bb, const int nt) {
  float acc[16][16] __attribute__((aligned(64)));
  const size_t stride = (size_t)xs * sizeof(act_q8kx);
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) _mm512_store_ps(acc[t], _mm512_setzero_ps());
  for (int64_t b = 0; b < blocks; b++, bp += Q6K_BLOCK) {
    prefetch_next(na, nb, bb, b, b + 1);
    const uint8_t *sc = bp + 4096;
    __m512i isum[16];
    scaled_sums(isum, x[b].q, stride, bp, sc, 16, 16, nt);
    const __m512 d = _mm512_load_ps(sc + 1024);
    _Pragma("GCC unroll 16")
    for (int t = 0; t < nt; t++)
      _mm512_store_ps(acc[t], _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x[t * xs + b].d)), _mm512_cvtepi32_ps(isum[t]),
                                              _mm512_load_ps(acc[t])));
  }
  _Pragma("GCC unroll 16")
  for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, _mm512_load_ps(acc[t]));
}

/* ---------- the level's products ---------- */

/* The AVX-512 tiles for what the matrix tiles leave over (whole-block sums: the same bits). */
GROUP(rest_group_q4_0x8, q4_0_tile_whole, act_q8x, 8)
GROUP(rest_group_q8_0x8, q8_0_tile_whole, act_q8x, 8)
GROUP(rest_group_q5_0x8, q5_0_tile_whole, act_q8x, 8)
GROUP(rest_group_q4_kx8, q4_k_tile, act_q8kx, 4)
GROUP(rest_group_q6_k6x8, q6_k6_tile, act_q8kx, 4)
PACKED_GEMM(rest_q4_0x8, rest_group_q4_0x8, act_q8x)
PACKED_GEMM(rest_q8_0x8, rest_group_q8_0x8, act_q8x)
PACKED_GEMM(rest_q5_0x8, rest_group_q5_0x8, act_q8x)
PACKED_GEMM(rest_q4_kx8, rest_group_q4_kx8, act_q8kx)
PACKED_GEMM(rest_q6_k6x8, rest_group_q6_k6x8, act_q8kx)

/* The tail tile of `n` tokens (1..15) with a constant count, as GROUP does. */
#define TAIL_TILE(TILE, n, ...)             \
  switch (n) {                              \
    case 15: TILE(__VA_ARGS__, 15); break;  \
    case 14: TILE(__VA_ARGS__, 14); break;  \
    case 13: TILE(__VA_ARGS__, 13); break;  \
    case 12: TILE(__VA_ARGS__, 12); break;  \
    case 11: TILE(__VA_ARGS__, 11); break;  \
    case 10: TILE(__VA_ARGS__, 10); break;  \
    case 9: TILE(__VA_ARGS__, 9); break;    \
    case 8: TILE(__VA_ARGS__, 8); break;    \
    case 7: TILE(__VA_ARGS__, 7); break;    \
    case 6: TILE(__VA_ARGS__, 6); break;    \
    case 5: TILE(__VA_ARGS__, 5); break;    \
    case 4: TILE(__VA_ARGS__, 4); break;    \
    case 3: TILE(__VA_ARGS__, 3); break;    \
    case 2: TILE(__VA_ARGS__, 2); break;    \
    case 1: TILE(__VA_ARGS__, 1); break;    \
    default: break;                         \
  }

/* Row groups [g0, g1) × tokens: pairs of groups on the tiles (each pair's blocks rebuilt into the
   thread's scratch, then every 16-token tile and the tail tile over them, the next pair's bytes
   prefetched meanwhile), an odd last group and calls of few tokens on the AVX-512 tiles. */
#define AMX_GEMM(NAME, ACT, BUILD, BLOCK_BYTES, KBYTES, TILE, REST, PACKED_BYTES)                                             \
  static void NAME(float *y, int64_t ys, const uint8_t *w, size_t gbytes, const void *xv, int64_t xs, int64_t blocks,            \
                   int64_t tokens, int64_t g0, int64_t g1) {                                                                     \
    const ACT *x = xv;                                                                                                           \
    const int64_t pairs = (g1 - g0) / 2;                                                                                         \
    uint8_t *bs = tokens >= AMX_MIN_TOKENS && pairs > 0 ? (uint8_t *)pool_scratch(AMX_SLOT_BLOCKS, (size_t)(blocks * (BLOCK_BYTES))) : NULL;                  \
    if (!bs) {                                                                                                                   \
      REST(y, ys, w, gbytes, xv, xs, blocks, tokens, g0, g1);                                                                    \
      return;                                                                                                                    \
    }                                                                                                                            \
    const int64_t full = tokens / 16 * 16, tail = tokens - full;                                                                 \
    int rows = 0; /* the tiles' configured token rows */                                                                         \
    BUILD(bs, w + (size_t)g0 * gbytes, w + (size_t)(g0 + 1) * gbytes, blocks);                                                   \
    for (int64_t p = 0; p < pairs; p++) {                                                                                        \
      const uint8_t *na = p + 1 < pairs ? w + (size_t)(g0 + 2 * p + 2) * gbytes : NULL, *nb = na ? na + gbytes : NULL;          \
      float *yp = y + 8 * (g0 + 2 * p);                                                                                          \
      if (full && rows != 16) configure_tiles(rows = 16, KBYTES);                                                               \
      for (int64_t t = 0; t < full; t += 16)                                                                                     \
        TILE(yp + t * ys, ys, bs, x + t * xs, xs, blocks, t == 0 ? na : NULL, nb, PACKED_BYTES, 16);                            \
      if (tail) {                                                                                                                \
        if (rows != (int)tail) configure_tiles(rows = (int)tail, KBYTES);                                                        \
        TAIL_TILE(TILE, tail, yp + full * ys, ys, bs, x + full * xs, xs, blocks, full == 0 ? na : NULL, nb, PACKED_BYTES)        \
      }                                                                                                                          \
      if (na) BUILD(bs, na, nb, blocks);                                                                                         \
    }                                                                                                                            \
    _tile_release();                                                                                                             \
    if (g0 + 2 * pairs < g1) REST(y, ys, w, gbytes, xv, xs, blocks, tokens, g0 + 2 * pairs, g1);                                \
  }

AMX_GEMM(gemm_q4_0x8, act_q8x, build_q4_0, Q8X_BLOCK, 32, tile_q8x, rest_q4_0x8, 144)
AMX_GEMM(gemm_q8_0x8, act_q8x, build_q8_0, Q8X_BLOCK, 32, tile_q8x, rest_q8_0x8, 272)
AMX_GEMM(gemm_q5_0x8, act_q8x, build_q5_0, Q8X_BLOCK, 32, tile_q8x, rest_q5_0x8, 176)
AMX_GEMM(gemm_q4_kx8, act_q8kx, build_q4_k, Q4K_BLOCK, 32, tile_q4_k, rest_q4_kx8, 1184)
AMX_GEMM(gemm_q6_k6x8, act_q8kx, build_q6_k6, Q6K_BLOCK, 16, tile_q6_k, rest_q6_k6x8, 1680)
/* ---------- decode latent attention on AMX-BF16 tiles ---------- */

/*
 * One `tdpbf16ps` adds to 16 × 16 f32 sums C[i][n] the products of a 16-row A and a 16-row B of
 * bf16 pairs, Σ_p A[i][2p]·B[p][2n] + A[i][2p+1]·B[p][2n+1] (Intel ISE reference, ch. 3,
 * "TDPBF16PS"). bf16 keeps 8 significant bits, so each operand is split into bf16 parts whose sum
 * is exactly the value: an f16 latent (11 bits) into two, t = t₁ + t₂ (its top 8 bits and the
 * other 3), an f32 query or softmax weight (24 bits) into three, q = q₁ + q₂ + q₃. The two parts of
 * a latent go into one 32-bit word, t₂ in the low half and t₁ in the high, and a query part into
 * both halves of its word; one pair of a tile product is then q_p·t₂ + q_p·t₁ = q_p·t, the whole
 * latent. So the rows of a chunk, as these words (one f32-sized word per value, the same for the
 * scores' A tiles and the values' B tiles, loaded straight with the row stride), meet three query
 * or weight parts: three tile products per 16 × 16 × 16 block, every part product exact in f32 and
 * added in f32 (round to nearest even), so the sums are f32 sums like the other levels', in another
 * order. Two output tiles run side by side, so that each B (scores) or A (values) tile loaded is
 * used twice: the loads from L2, not the products, bound these loops. Measured per 128-key chunk
 * of 16 heads × 576 (one core, TSC at 2 GHz): ≈ 36–66 TSC per tile product against 14–16 for
 * products on L1-resident tiles, and converting the rows to words about a quarter of the chunk;
 * three output tiles a pass instead of two measured no faster.
 *
 * Per chunk: the rows as words; the queries' parts as the scores' B tiles (once per query and
 * thread); scores S[j][h] per 16 rows; the softmax of latent_softmax_avx512; the weights transposed
 * to P[h][j] and split as the values' A tiles; O[h][c] per 16 columns into the records. Rows stored
 * as f32 or q8 (more than 16 bits) go to the AVX-512 kernel, as does a CPU without AMX-BF16.
 */
static int amx_bf16_usable(void) {
  static int known = -1;
  if (known < 0) {
    unsigned a, b, c, d;
    known = amx_usable() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 22) & 1); /* AMX-BF16 */
  }
  return known;
}

static void configure_bf16_tiles(void) {
  tile_config c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int i = 0; i < 8; i++) {
    c.rows[i] = 16;
    c.colsb[i] = 64;
  }
  __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* x with its mantissa cut to bf16's 7 bits: the top part of a split, exact as bf16. */
INLINE __m512 bf16_top(__m512 x) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* A bf16 part (low 16 bits zero) in both halves of its word. */
INLINE __m512i bf16_both(__m512 t) {
  return _mm512_or_si512(_mm512_castps_si512(t), _mm512_srli_epi32(_mm512_castps_si512(t), 16));
}

/* Three words a lane, the parts of x, into dst, dst + stride, dst + 2·stride (32-bit words). */
INLINE void bf16_parts3(uint32_t *dst, int64_t stride, __m512 x) {
  for (int part = 0; part < 3; part++) {
    __m512 t = part < 2 ? bf16_top(x) : x;
    _mm512_storeu_si512(dst + part * stride, bf16_both(t));
    x = _mm512_sub_ps(x, t);
  }
}

/* Pool scratch slots of the chunk's row words and scores (those of the AVX-512 kernel, which runs
   instead of this one or not at all in a call), its weights' parts and its query tiles (kept from
   call to call while queries_new is 0). */
#define LCA_SLOT_ROWS (POOL_SCRATCH_LEVEL + 0)
#define LCA_SLOT_SCORES (POOL_SCRATCH_LEVEL + 1)
#define LCA_SLOT_WEIGHTS (POOL_SCRATCH_LEVEL + 2)
#define LCA_SLOT_QUERIES (POOL_SCRATCH_LEVEL + 3)

static void latent_chunk_amx(float *rec, int64_t R, const void *const *rows, int rows_f16, int64_t m, int64_t W, int64_t va,
                             const float *queries, int queries_new, int64_t H, float scale, void (*step)(void *), void *arg) {
  if (!rows_f16 || m <= 0 || va > W || !amx_bf16_usable()) {
    latent_chunk_avx512(rec, R, rows, rows_f16, m, W, va, queries, queries_new, H, scale, step, arg);
    return;
  }
  static __thread int64_t q_w, q_h; /* the shape the query tiles were built for */
  const int64_t panels = (H + 15) / 16, HS = 16 * panels, KB = (W + 15) / 16, Wp = 16 * KB;
  const int64_t mp = (m + 31) / 32 * 32, JB = mp / 16, CT = (va + 15) / 16;
  uint32_t *qv = pool_scratch(LCA_SLOT_QUERIES, 4 * (size_t)(panels * KB * 3 * 256));
  uint32_t *kw = pool_scratch(LCA_SLOT_ROWS, 4 * (size_t)(mp * Wp));
  float *s = pool_scratch(LCA_SLOT_SCORES, 4 * (size_t)(mp * HS));
  uint32_t *pw = pool_scratch(LCA_SLOT_WEIGHTS, 4 * (size_t)(panels * 3 * 16 * mp));
  if (!qv || !kw || !s || !pw) abort();

  /* the queries' parts as B tiles: tile (panel, block of 16 k, part) row r = that part of the
     panel's row k = 16·block + r (16 heads), in both halves of each word */
  if (queries_new || q_w != W || q_h != H) {
    q_w = W;
    q_h = H;
    for (int64_t hp = 0; hp < panels; hp++)
      for (int64_t k = 0; k < Wp; k++) {
        __m512 x = k < W ? _mm512_loadu_ps(queries + hp * W * 16 + k * 16) : _mm512_setzero_ps();
        bf16_parts3(qv + (hp * KB + k / 16) * 3 * 256 + (k % 16) * 16, 256, x);
      }
  }

  /* the rows as words (t₁ << 16 | t₂), rows past m and columns past W zero */
  for (int64_t j = 0; j < mp; j++) {
    const uint16_t *row = j < m ? rows[j] : NULL;
    for (int64_t k = 0; k < Wp; k += 16) {
      __mmask16 mask = W - k >= 16 ? 0xFFFF : (__mmask16)((1u << (W - k)) - 1);
      __m512 x = row ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + k)) : _mm512_setzero_ps();
      __m512 t = bf16_top(x);
      _mm512_store_si512(kw + j * Wp + k, _mm512_or_si512(_mm512_castps_si512(t), _mm512_srli_epi32(_mm512_castps_si512(_mm512_sub_ps(x, t)), 16)));
    }
  }

  configure_bf16_tiles();
  /* scores S[j][h], two tiles of 16 rows × 16 heads at a time (each query part's B tile loaded
     once for both) */
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t g = 0; g < mp; g += 32) {
      _tile_zero(0);
      _tile_zero(1);
      for (int64_t kb = 0; kb < KB; kb++) {
        const uint32_t *t = qv + (hp * KB + kb) * 3 * 256;
        _tile_loadd(2, kw + g * Wp + 16 * kb, Wp * 4);
        _tile_loadd(3, kw + (g + 16) * Wp + 16 * kb, Wp * 4);
        _tile_loadd(4, t, 64);
        _tile_loadd(5, t + 256, 64);
        _tile_loadd(6, t + 512, 64);
        _tile_dpbf16ps(0, 2, 4);
        _tile_dpbf16ps(1, 3, 4);
        _tile_dpbf16ps(0, 2, 5);
        _tile_dpbf16ps(1, 3, 5);
        _tile_dpbf16ps(0, 2, 6);
        _tile_dpbf16ps(1, 3, 6);
        if (step && (kb % 2 == 1 || kb == KB - 1)) { /* once per 32 columns of each 16 rows */
          step(arg);
          if (g + 16 < m) step(arg);
        }
      }
      _tile_stored(0, s + g * HS + 16 * hp, HS * 4);
      _tile_stored(1, s + (g + 16) * HS + 16 * hp, HS * 4);
    }
  latent_softmax_avx512(rec, R, s, m, H, scale);

  /* the weights as P[h][j] in three parts (words), rows past m zero */
  const __m512i rowsHS = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)HS));
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t h = 0; h < 16; h++)
      for (int64_t j = 0; j < mp; j += 16) {
        __mmask16 mj = m - j >= 16 ? 0xFFFF : (__mmask16)((1u << (m - j)) - 1);
        __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mj, rowsHS, s + j * HS + 16 * hp + h, 4);
        bf16_parts3(pw + (hp * 3 * 16 + h) * mp + j, 16 * mp, x);
      }

  /* values O[h][c], two tiles of 16 heads × 16 columns at a time (the weights' A tiles loaded once
     for both), into the records */
  float tail[16 * 16];
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t ct = 0; ct < CT; ct += 2) {
      const int two = ct + 1 < CT;
      _tile_zero(0);
      _tile_zero(1);
      const uint32_t *a = pw + hp * 3 * 16 * mp;
      for (int64_t jb = 0; jb < JB; jb++) {
        _tile_loadd(2, kw + jb * 16 * Wp + 16 * ct, Wp * 4);
        if (two) _tile_loadd(3, kw + jb * 16 * Wp + 16 * ct + 16, Wp * 4);
        _tile_loadd(4, a + 16 * jb, mp * 4);
        _tile_loadd(5, a + 16 * mp + 16 * jb, mp * 4);
        _tile_loadd(6, a + 32 * mp + 16 * jb, mp * 4);
        _tile_dpbf16ps(0, 4, 2);
        if (two) _tile_dpbf16ps(1, 4, 3);
        _tile_dpbf16ps(0, 5, 2);
        if (two) _tile_dpbf16ps(1, 5, 3);
        _tile_dpbf16ps(0, 6, 2);
        if (two) _tile_dpbf16ps(1, 6, 3);
        if (step && hp == 0 && (jb % 2 == 1 || jb == JB - 1)) {
          step(arg);
          if (two) step(arg);
        }
      }
      for (int i = 0; i <= two; i++) {
        int64_t c0 = 16 * (ct + i);
        int64_t heads = H - 16 * hp < 16 ? H - 16 * hp : 16, cols = va - c0 < 16 ? va - c0 : 16;
        float *o = rec + 16 * hp * R + 8 + c0;
        if (heads == 16 && cols == 16) {
          if (i == 0) _tile_stored(0, o, R * 4);
          else _tile_stored(1, o, R * 4);
        } else {
          if (i == 0) _tile_stored(0, tail, 64);
          else _tile_stored(1, tail, 64);
          for (int64_t h = 0; h < heads; h++) memcpy(o + h * R, tail + 16 * h, sizeof(float) * (size_t)cols);
        }
      }
    }
  _tile_release();
}

const kernel_ops ops_amx = {
    .name = "amx",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q5_0X8] = gemm_q5_0x8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .latent_chunk = latent_chunk_amx,
    .latent_chunk_q8 = latent_chunk_q8_avx512,
    .f32_tile = f32_tile_avx512,
    .f32_tile2 = f32_tile2_avx512,
    .quantise_block = quantise_block_avx512,
    .silu_mul = silu_mul_avx2,
    .exp_shifted = exp_shifted_avx512,
    .scale_max = scale_max_avx2,
};
