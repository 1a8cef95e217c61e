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

/* A thread's scratch for the rebuilt blocks, grown as needed. */
static __thread uint8_t *scratch;
static __thread size_t scratch_size;

static uint8_t *scratch_for(size_t bytes) {
  if (scratch_size < bytes) {
    free(scratch);
    scratch = NULL;
    scratch_size = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    scratch = p;
    scratch_size = bytes;
  }
  return scratch;
}

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
    uint8_t *bs = tokens >= AMX_MIN_TOKENS && pairs > 0 ? scratch_for((size_t)(blocks * (BLOCK_BYTES))) : NULL;                  \
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
 * One `tdpbf16ps` adds a 16 × 32 by 32 × 16 product of bf16 values into 16 × 16 f32 sums. bf16
 * keeps 8 significant bits, so every operand is split into bf16 parts whose sum is exactly the
 * value: an f16 latent (11 bits) into two, t = t₁ + t₂ (t₁ its top 8 bits, t₂ the other 3), an f32
 * query or weight (24 bits) into three. A product then takes the five part products whose weight
 * reaches 2⁻¹⁶ of it, q₁t₁ + q₂t₁ + q₃t₁ + q₁t₂ + q₂t₂; the one left out, q₃t₂, is below
 * 2⁻²⁴ of q·t, under f32 rounding. Each part product is exact in f32 (8 × 8 bits) and the tiles add
 * them in f32 (rounding to nearest even, Intel's ISE reference, ch. 3 "TDPBF16PS"), so the result
 * is an f32 sum like the AVX-512 one, in another order, at 5 tile products per block of 32.
 *
 * Per chunk: the rows' parts as A tiles of the scores (row-major, W values a row) and, for the
 * first va columns, as B tiles of the values (pairs of rows interleaved, B[j/2][2c + j%2]); the
 * queries' parts as B tiles of the scores, built once per query and thread; scores S[j][h] per 16
 * rows, the softmax of latent_softmax_avx512, the weights transposed to P[h][j] and split as A
 * tiles, then O[h][c] per 16 columns. Rows as f32 or q8 (more than 16 bits) go to the AVX-512
 * kernel; so does a CPU without AMX-BF16.
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

/* Lane n: (b's bf16 << 16) | a's bf16, for a and b with their low 16 bits zero: a B tile's pair of
   elements k = 2p (from a) and 2p + 1 (from b) of column n. */
INLINE __m512i bf16_pairs(__m512 a, __m512 b) {
  return _mm512_or_si512(_mm512_castps_si512(b), _mm512_srli_epi32(_mm512_castps_si512(a), 16));
}

/* 32 bf16: the high halves of lo's 16 lanes, then of hi's. */
INLINE __m512i bf16_pack(__m512 lo, __m512 hi) {
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19, 17,
                                       15, 13, 11, 9, 7, 5, 3, 1);
  return _mm512_permutex2var_epi16(_mm512_castps_si512(lo), odd, _mm512_castps_si512(hi));
}

/* out[r·ld + c] = (C0 + C1) + C2 for the 16 × 16 sums of tiles 0, 1, 2: three chains of tile
   products, not one, so that each waits less on the one before (a product's latency is several
   times its issue interval). */
INLINE void tiles_sum3(float *out, int64_t ld, float *sums) {
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
  _tile_stored(2, sums + 512, 64);
  for (int r = 0; r < 16; r++)
    _mm512_storeu_ps(out + r * ld, _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(sums + 16 * r), _mm512_load_ps(sums + 256 + 16 * r)),
                                                 _mm512_load_ps(sums + 512 + 16 * r)));
}

/* A thread's buffers for the chunk, grown as needed. */
typedef struct {
  uint8_t *p;
  size_t bytes;
} lc_buf;
static __thread lc_buf lc_q, lc_k, lc_v, lc_s, lc_p;

static void *lc_grow(lc_buf *b, size_t bytes) {
  if (b->bytes < bytes) {
    free(b->p);
    b->p = NULL;
    b->bytes = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    b->p = p;
    b->bytes = bytes;
  }
  return b->p;
}

static void latent_chunk_amx(float *rec, int64_t R, const void *const *rows, int rows_f16, int64_t m, int64_t W, int64_t va,
                             const float *queries, int queries_new, int64_t H, float scale, void (*step)(void *), void *arg) {
  if (!rows_f16 || m <= 0 || va > W || !amx_bf16_usable()) {
    latent_chunk_avx512(rec, R, rows, rows_f16, m, W, va, queries, queries_new, H, scale, step, arg);
    return;
  }
  static __thread int64_t q_w, q_h; /* the shape the query tiles were built for */
  const int64_t panels = (H + 15) / 16, HS = 16 * panels, Wp = (W + 31) / 32 * 32, KB = Wp / 32;
  const int64_t mp = (m + 31) / 32 * 32, CT = (va + 15) / 16;
  uint8_t *qv = lc_grow(&lc_q, (size_t)(panels * KB * 3 * 1024));
  uint16_t *ka = lc_grow(&lc_k, sizeof(uint16_t) * (size_t)(2 * mp * Wp));
  uint8_t *vb = lc_grow(&lc_v, (size_t)((mp / 32) * CT * 2 * 1024));
  float *s = lc_grow(&lc_s, sizeof(float) * (size_t)(mp * HS));
  uint16_t *pa = lc_grow(&lc_p, sizeof(uint16_t) * (size_t)(panels * 3 * 16 * mp));
  if (!qv || !ka || !vb || !s || !pa) abort();

  /* the queries' three parts as B tiles: tile (panel, block, part) row p = q_h[32·block + 2p + i] */
  if (queries_new || q_w != W || q_h != H) {
    q_w = W;
    q_h = H;
    for (int64_t hp = 0; hp < panels; hp++)
      for (int64_t kb = 0; kb < KB; kb++)
        for (int64_t p = 0; p < 16; p++) {
          int64_t k = 32 * kb + 2 * p;
          const float *panel = queries + hp * W * 16;
          __m512 a = k < W ? _mm512_loadu_ps(panel + k * 16) : _mm512_setzero_ps();
          __m512 b = k + 1 < W ? _mm512_loadu_ps(panel + (k + 1) * 16) : _mm512_setzero_ps();
          uint8_t *t = qv + (hp * KB + kb) * 3 * 1024 + p * 64;
          for (int part = 0; part < 3; part++) {
            __m512 ta = part < 2 ? bf16_top(a) : a, tb = part < 2 ? bf16_top(b) : b;
            _mm512_store_si512(t + part * 1024, bf16_pairs(ta, tb));
            a = _mm512_sub_ps(a, ta);
            b = _mm512_sub_ps(b, tb);
          }
        }
  }

  /* the rows' two parts: K (plane 0 the tops, plane 1 the rests) and, for c < va, V's B tiles */
  uint16_t *k1 = ka, *k2 = ka + mp * Wp;
  for (int64_t j = 0; j < mp; j += 2) {
    const uint16_t *ra = j < m ? rows[j] : NULL, *rb = j + 1 < m ? rows[j + 1] : NULL;
    for (int64_t kb = 0; kb < KB; kb++) {
      int64_t k = 32 * kb, n = W - k < 32 ? W - k : 32;
      __mmask32 mask = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
      __m512i ha = ra ? _mm512_maskz_loadu_epi16(mask, ra + k) : _mm512_setzero_si512();
      __m512i hb = rb ? _mm512_maskz_loadu_epi16(mask, rb + k) : _mm512_setzero_si512();
      __m512 a0 = _mm512_cvtph_ps(_mm512_castsi512_si256(ha)), a1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(ha, 1));
      __m512 b0 = _mm512_cvtph_ps(_mm512_castsi512_si256(hb)), b1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(hb, 1));
      __m512 ta0 = bf16_top(a0), ta1 = bf16_top(a1), tb0 = bf16_top(b0), tb1 = bf16_top(b1);
      __m512 ea0 = _mm512_sub_ps(a0, ta0), ea1 = _mm512_sub_ps(a1, ta1), eb0 = _mm512_sub_ps(b0, tb0), eb1 = _mm512_sub_ps(b1, tb1);
      _mm512_store_si512(k1 + j * Wp + k, bf16_pack(ta0, ta1));
      _mm512_store_si512(k2 + j * Wp + k, bf16_pack(ea0, ea1));
      _mm512_store_si512(k1 + (j + 1) * Wp + k, bf16_pack(tb0, tb1));
      _mm512_store_si512(k2 + (j + 1) * Wp + k, bf16_pack(eb0, eb1));
      for (int64_t q = 0; q < 2 && k + 16 * q < va; q++) {
        uint8_t *t = vb + (((j / 32) * CT + (k / 16 + q)) * 2) * 1024 + (j % 32) / 2 * 64;
        _mm512_store_si512(t, q ? bf16_pairs(ta1, tb1) : bf16_pairs(ta0, tb0));
        _mm512_store_si512(t + 1024, q ? bf16_pairs(ea1, eb1) : bf16_pairs(ea0, eb0));
      }
    }
  }

  float sums[3 * 256] __attribute__((aligned(64)));
  configure_bf16_tiles();
  /* scores S[j][h], 16 rows × 16 heads a tile */
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t g = 0; g < m; g += 16) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      for (int64_t kb = 0; kb < KB; kb++) {
        const uint8_t *t = qv + (hp * KB + kb) * 3 * 1024;
        _tile_loadd(3, k1 + g * Wp + 32 * kb, Wp * 2);
        _tile_loadd(4, k2 + g * Wp + 32 * kb, Wp * 2);
        _tile_loadd(5, t, 64);
        _tile_loadd(6, t + 1024, 64);
        _tile_loadd(7, t + 2048, 64);
        _tile_dpbf16ps(0, 3, 5);
        _tile_dpbf16ps(1, 3, 6);
        _tile_dpbf16ps(2, 3, 7);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 5);
        if (step) step(arg);
      }
      tiles_sum3(s + g * HS + 16 * hp, HS, sums);
    }
  latent_softmax_avx512(rec, R, s, m, H, scale);

  /* the weights as P[h][j] in three parts, rows past m zero */
  const __m512i rowsHS = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)HS));
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t h = 0; h < 16; h++)
      for (int64_t j = 0; j < mp; j += 32) {
        __mmask16 m0 = j >= m ? 0 : m - j >= 16 ? 0xFFFF : (__mmask16)((1u << (m - j)) - 1);
        __mmask16 m1 = j + 16 >= m ? 0 : m - j - 16 >= 16 ? 0xFFFF : (__mmask16)((1u << (m - j - 16)) - 1);
        const float *at = s + j * HS + 16 * hp + h;
        __m512 lo = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, rowsHS, at, 4);
        __m512 hi = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, rowsHS, at + 16 * HS, 4);
        for (int part = 0; part < 3; part++) {
          __m512 tl = part < 2 ? bf16_top(lo) : lo, th = part < 2 ? bf16_top(hi) : hi;
          _mm512_storeu_si512(pa + ((hp * 3 + part) * 16 + h) * mp + j, bf16_pack(tl, th));
          lo = _mm512_sub_ps(lo, tl);
          hi = _mm512_sub_ps(hi, th);
        }
      }

  /* values O[h][c], 16 heads × 16 columns a tile, into the records */
  float tail[16 * 16];
  for (int64_t hp = 0; hp < panels; hp++)
    for (int64_t ct = 0; ct < CT; ct++) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      for (int64_t jb = 0; jb < mp / 32; jb++) {
        const uint8_t *t = vb + ((jb * CT + ct) * 2) * 1024;
        const uint16_t *a = pa + hp * 3 * 16 * mp + 32 * jb;
        _tile_loadd(3, a, mp * 2);
        _tile_loadd(4, a + 16 * mp, mp * 2);
        _tile_loadd(5, a + 32 * mp, mp * 2);
        _tile_loadd(6, t, 64);
        _tile_loadd(7, t + 1024, 64);
        _tile_dpbf16ps(0, 3, 6);
        _tile_dpbf16ps(1, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(0, 4, 7);
        _tile_dpbf16ps(1, 3, 7);
        if (step && hp == 0) step(arg);
      }
      int64_t heads = H - 16 * hp < 16 ? H - 16 * hp : 16, cols = va - 16 * ct < 16 ? va - 16 * ct : 16;
      float *o = rec + 16 * hp * R + 8 + 16 * ct;
      if (heads == 16 && cols == 16) {
        tiles_sum3(o, R, sums);
      } else {
        tiles_sum3(tail, 16, sums);
        for (int64_t h = 0; h < heads; h++) memcpy(o + h * R, tail + 16 * h, sizeof(float) * (size_t)cols);
      }
    }
  _tile_release();
}

const kernel_ops ops_amx = {
    .name = "amx",
    .gemm = {[LAYOUT_Q4_0X8] = gemm_q4_0x8, [LAYOUT_Q8_0X8] = gemm_q8_0x8, [LAYOUT_Q4_KX8] = gemm_q4_kx8, [LAYOUT_Q5_0X8] = gemm_q5_0x8,
             [LAYOUT_Q6_K6X8] = gemm_q6_k6x8},
    .latent_chunk = latent_chunk_amx,
    .quantise_block = quantise_block_avx512,
    .silu_mul = silu_mul_avx2,
    .exp_shifted = exp_shifted_avx2,
};
