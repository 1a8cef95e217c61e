#ifndef DSEEK_QUANT_H
#define DSEEK_QUANT_H
#include <stdint.h>

/* GGML type ids of the block formats (ggml.h enum ggml_type). */
enum quant_type {
  QT_Q4_0 = 2, QT_Q4_1 = 3, QT_Q5_0 = 6, QT_Q5_1 = 7, QT_Q8_0 = 8,
  QT_Q2_K = 10, QT_Q3_K = 11, QT_Q4_K = 12, QT_Q5_K = 13, QT_Q6_K = 14,
};

/* An activation block: 32 values as d * q (ggml block_q8_0 with an f32 scale). */
typedef struct {
  float d;
  int32_t sum; /* Σ q, for formats with per-block minimums */
  int8_t q[32];
} block_q8;

int quant_block_elements(int type); /* 0 for non-block types */
int quant_block_bytes(int type);
void quant_init(int avx2);
/* Decode n (a whole number of blocks) weights of a row into f32. */
void quant_decode_row(int type, const uint8_t *row, int64_t n, float *out);
/* Quantise n activations (a multiple of 32) into n/32 blocks. */
void quant_activations(const float *x, int64_t n, block_q8 *out);
/* Σ dequant(row)[i] · (d·q)[i] over n elements. */
float quant_row_dot(int type, const uint8_t *row, const block_q8 *x, int64_t n);

/* The same for four activation rows at once; returns 0 (nothing written) when the type has no such path. */
int quant_row_dot4(int type, const uint8_t *row, const block_q8 *const x[4], int64_t n, float out[4]);

#endif
