/*
 * Every instruction level against the scalar level on the packed layouts, as a standalone program:
 * for a level the test machine lacks (NEON on x86-64), test/kernels/levels.test.ts cross-compiles
 * this with the kernels and runs it under qemu-user. Random weights of every repacked type and
 * awkward shapes (tails of rows, one to 33 tokens); exit status 1 on the first disagreement.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/kernels/native/ops.h"
#include "../../../src/kernels/native/quant.h"
#include "../../../src/kernels/native/repack.h"
#include "../../../src/kernels/native/threadpool.h"

static uint32_t seed = 12345;
static uint32_t next(void) {
  seed = seed * 1103515245u + 12345u;
  return seed >> 8;
}

/* A random f16 in [2^-8, 2^-4) (a plausible block scale). */
static uint16_t random_scale(void) { return (uint16_t)(((15 - 8 + (next() % 4)) << 10) | (next() & 0x3ff)); }

static void random_blocks(int type, uint8_t *p, size_t bytes) {
  for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)next();
  int bb = quant_block_bytes(type);
  for (size_t b = 0; b + bb <= bytes; b += bb) {
    uint16_t d = random_scale(), m = random_scale();
    switch (type) {
      case QT_Q4_0: case QT_Q8_0: case QT_Q5_0: memcpy(p + b, &d, 2); break;
      case QT_Q4_K: memcpy(p + b, &d, 2); memcpy(p + b + 2, &m, 2); break;
      case QT_Q6_K: memcpy(p + b + 208, &d, 2); break;
    }
  }
}

int main(int argc, char **argv) {
  const char *level = argc > 1 ? argv[1] : NULL;
  if (ops_select(level) != 0) {
    printf("level %s: not supported here\n", level ? level : "(best)");
    return 2;
  }
  const char *name = ops_active_name();
  const int types[] = {QT_Q4_0, QT_Q8_0, QT_Q5_0, QT_Q4_K, QT_Q6_K};
  const int shapes[][2] = {{8, 1}, {13, 3}, {24, 2}, {41, 5}};
  int checked = 0;
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
    int type = types[ti], be = quant_block_elements(type), bb = quant_block_bytes(type);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
      int rows = shapes[si][0], cols = shapes[si][1] * be;
      size_t wbytes = (size_t)rows * (cols / be) * bb;
      uint8_t *w = malloc(wbytes);
      random_blocks(type, w, wbytes);
      ops_select(name);
      if (repack_layout(type, rows, cols) == 0) { free(w); continue; } /* the level keeps these rows */
      uint8_t *packed = malloc(repack_bytes(type, rows, cols));
      int layout = repack_weight(w, type, rows, cols, packed);
      const int token_counts[] = {1, 4, 7, 10, 13, 16, 33}; /* 16 and 33: the AMX level's token tiles and a tail */
      for (size_t ki = 0; ki < sizeof token_counts / sizeof token_counts[0]; ki++) {
        int tokens = token_counts[ki];
        float *x = malloc(sizeof(float) * cols * tokens), *ya = malloc(sizeof(float) * rows * tokens), *yb = malloc(sizeof(float) * rows * tokens);
        for (int i = 0; i < cols * tokens; i++) x[i] = (float)((int)(next() % 2001) - 1000) / 300.0f;
        ops_select(name);
        packed_matmul(ya, x, packed, layout, type, rows, cols, tokens);
        ops_select("scalar");
        packed_matmul(yb, x, packed, layout, type, rows, cols, tokens);
        float scale = 1e-6f, diff = 0;
        for (int i = 0; i < rows * tokens; i++) {
          if (fabsf(yb[i]) > scale) scale = fabsf(yb[i]);
          if (fabsf(ya[i] - yb[i]) > diff) diff = fabsf(ya[i] - yb[i]);
        }
        if (!(diff <= 2e-5f * scale)) {
          printf("%s type %d %dx%d tokens %d: differs from scalar by %g of %g\n", name, type, rows, cols, tokens, diff, scale);
          return 1;
        }
        checked++;
        free(x), free(ya), free(yb);
      }
      free(packed), free(w);
    }
  }
  printf("%s: %d products agree with the scalar level\n", name, checked);
  return 0;
}
