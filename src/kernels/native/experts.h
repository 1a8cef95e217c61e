#ifndef DSEEK_EXPERTS_H
#define DSEEK_EXPERTS_H
#include <stddef.h>
#include <stdint.h>

#include "repack.h"

/*
 * out[t] = Σ_i weight_of[t·k+i] · down_e(SiLU(gate_e x_t) · up_e x_t), e = expert_of[t·k+i], plus
 * the shared triple's output for every row when sdown is not NULL. gate/up: [E] of [I, d];
 * down: [E] of [d, I]; shared: [Is, d] and [d, Is]. Returns 0, -1 (out of memory or k > 64) or
 * -2 (an expert id outside [0, E)).
 */
int experts_forward(float *out, const float *x, int64_t T, int64_t d, int64_t k, const int32_t *expert_of, const float *weight_of,
                    int64_t E, int64_t I, const packed_matrix *gate, const packed_matrix *up, const packed_matrix *down, int64_t Is,
                    const packed_matrix *sgate, const packed_matrix *sup, const packed_matrix *sdown);

#endif
