#ifndef DSEEK_QUANT_H
#define DSEEK_QUANT_H
#include <stddef.h>
#include <stdint.h>

/* GGML type ids of the block formats (ggml.h enum ggml_type). */
enum quant_type {
  QT_Q4_0 = 2, QT_Q4_1 = 3, QT_Q5_0 = 6, QT_Q5_1 = 7, QT_Q8_0 = 8,
  QT_Q2_K = 10, QT_Q3_K = 11, QT_Q4_K = 12, QT_Q5_K = 13, QT_Q6_K = 14,
};

/* An activation block for the 32-element formats: 32 values as d * q (ggml block_q8_0 with an f32
   scale), plus Σ q for formats with minimums. */
typedef struct {
  float d;
  int32_t sum;
  int8_t q[32];
  /* 8·Σ q per group of four (as the int32 lanes of an 8-bit dot product fall): Q4_0's −8 offset
     subtracted as one vector operation. */
  int32_t sum8[8];
} block_q8;

/* An activation block for the 256-element K formats (ggml block_q8_K): one scale for 256 values,
   and Σ q per 16, so that whole super-blocks accumulate in integers. */
typedef struct {
  float d;
  int16_t bsums[16];
  int8_t q[256];
} block_q8k;

int quant_block_elements(int type); /* 0 for non-block types */
int quant_block_bytes(int type);
void quant_init(int avx2);
/* Decode n (a whole number of blocks) weights of a row into f32. */
void quant_decode_row(int type, const uint8_t *row, int64_t n, float *out);
/* Bytes of quantised activations for n values multiplied with weights of `type`. */
size_t quant_act_bytes(int type, int64_t n);
/* Quantise n activations (a whole number of the type's blocks) for weights of `type`. */
void quant_act(int type, const float *x, int64_t n, void *out);
/* Σ dequant(row)[i] · (d·q)[i] over n elements, x quantised by quant_act for this type. */
float quant_row_dot(int type, const uint8_t *row, const void *x, int64_t n);
/* The same for four activation rows at once; returns 0 (nothing written) when the type has no such path. */
int quant_row_dot4(int type, const uint8_t *row, const void *const x[4], int64_t n, float out[4]);

#endif
