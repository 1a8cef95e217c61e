/**
 * YaRN rotary embeddings as the DeepSeek reference computes them (docs/SPEC.md §4; the original
 * `DeepseekV2YarnRotaryEmbedding`, DeepSeek-V3 `precompute_freqs_cis`; YaRN paper, Peng et al.
 * 2023, §3.2–3.4). Frequencies are computed in float64; the kernels rotate adjacent pairs.
 */
import type { ModelConfig, YarnScaling } from './config.js';

export interface RopeParams {
  /** Per rotated pair i (i < qk_rope_head_dim / 2): the angle per position, f'_i. */
  readonly invFreq: Float64Array;
  /** Multiplier on cos and sin: m(s, mscale) / m(s, mscale_all_dim) (1.0 for released checkpoints). */
  readonly magnitude: number;
  /** Attention logit scale: (qk_nope + qk_rope)^-½ × m(s, mscale_all_dim)² (docs/SPEC.md §3.4, pitfall 1). */
  readonly softmaxScale: number;
}

/** YaRN's attention-temperature factor m(s, k) = 1 + 0.1·k·ln s for s > 1, else 1. */
export function yarnMscale(factor: number, k: number): number {
  return factor <= 1 ? 1 : 0.1 * k * Math.log(factor) + 1;
}

/** The dimension index at which a frequency completes `rotations` turns over the original context. */
function correctionDim(rotations: number, dim: number, base: number, originalContext: number): number {
  return (dim * Math.log(originalContext / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

export function ropeParams(c: ModelConfig): RopeParams {
  const dim = c.qkRopeHeadDim;
  const half = dim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / c.ropeTheta ** ((2 * i) / dim);
  const baseScale = 1 / Math.sqrt(c.qkNopeHeadDim + c.qkRopeHeadDim);
  const y: YarnScaling | null = c.ropeScaling;
  if (!y) return { invFreq, magnitude: 1, softmaxScale: baseScale };

  // Blend between extrapolation (original frequency) and interpolation (÷ factor) with a linear
  // ramp over the pair indices [low, high] (YaRN "NTK-by-parts").
  const low = Math.max(Math.floor(correctionDim(y.betaFast, dim, c.ropeTheta, y.originalMaxPositionEmbeddings)), 0);
  let high = Math.min(Math.ceil(correctionDim(y.betaSlow, dim, c.ropeTheta, y.originalMaxPositionEmbeddings)), dim - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < half; i++) {
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const extrapolation = 1 - ramp;
    const f = invFreq[i]!;
    invFreq[i] = f * extrapolation + (f / y.factor) * (1 - extrapolation);
  }
  const mAll = yarnMscale(y.factor, y.mscaleAllDim);
  return {
    invFreq,
    magnitude: yarnMscale(y.factor, y.mscale) / mAll,
    softmaxScale: baseScale * mAll * mAll,
  };
}
