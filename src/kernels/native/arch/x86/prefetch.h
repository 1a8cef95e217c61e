#ifndef DSEEK_X86_PREFETCH_H
#define DSEEK_X86_PREFETCH_H
/*
 * Software prefetch for the x86 levels' packed products. Decoding streams weights from memory
 * once, and the hardware prefetcher alone keeps too few lines in flight: one core read Q4_0 at
 * ~14 GB/s in the AVX-512 loop (AMD EPYC Zen 4), and at 9.5 GB/s in the AVX2 loop of two 4-row
 * passes per group (AMD EPYC Zen 3, 3,072 × 2,048, one token), where one 8-row pass asking 4 KB
 * ahead read 14.3, that machine's single-core streaming rate.
 */
#include <immintrin.h>

#ifndef PREFETCH_DISTANCE /* a build may try another: CFLAGS=-DPREFETCH_DISTANCE=8192 npm run build:native */
#define PREFETCH_DISTANCE 4096
#endif

/* Asks for the `bytes` bytes `distance` past p, a cache line at a time. */
#define PREFETCH_AHEAD_BY(p, bytes, distance)                                                                \
  do {                                                                                                       \
    for (int pf_ = 0; pf_ < (bytes); pf_ += 64) _mm_prefetch((const char *)(p) + (distance) + pf_, _MM_HINT_T0); \
  } while (0)

/* Asks for the `bytes` bytes PREFETCH_DISTANCE past p. */
#define PREFETCH_AHEAD(p, bytes) PREFETCH_AHEAD_BY(p, bytes, PREFETCH_DISTANCE)

#endif
