/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019): Adam moments
 * with bias correction, and weight decay applied to the weights directly rather than through the
 * gradient. Plus the schedule (linear warm-up, then cosine decay to a floor; as in DeepSeek LLM /
 * GPT-3 practice) and global-norm gradient clipping (Pascanu et al. 2013).
 */
import type { Vec } from '../kernels/tensor.js';
import type { ParamSet } from './params.js';

export interface AdamWOptions {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

export class AdamW {
  /** First and second moments, one value per parameter (f32). */
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** Steps taken (for bias correction). */
  t = 0;
  private readonly decayMask: Uint8Array;

  constructor(
    readonly params: ParamSet,
    readonly options: AdamWOptions = DEFAULT_ADAMW,
  ) {
    this.m = new Float32Array(params.size);
    this.v = new Float32Array(params.size);
    this.decayMask = new Uint8Array(params.size);
    for (const s of params.specs) if (s.decay) this.decayMask.fill(1, s.offset, s.offset + s.size);
  }

  /** One update with learning rate `lr` from gradients `g` (same layout as the parameters). */
  step(g: Vec, lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.options;
    this.t++;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    const p = this.params.flat;
    const { m, v, decayMask } = this;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]!;
      const mi = beta1 * m[i]! + (1 - beta1) * gi;
      const vi = beta2 * v[i]! + (1 - beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      let w = p[i]!;
      if (decayMask[i]) w -= lr * weightDecay * w; // decoupled decay (AdamW, Algorithm 2 line 12)
      p[i] = w - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
    }
  }
}

/** Global L2 norm of the gradient; scales it down to `maxNorm` when larger. Returns the norm before clipping. */
export function clipGradNorm(g: Vec, maxNorm: number): number {
  let ss = 0;
  for (let i = 0; i < g.length; i++) ss += g[i]! * g[i]!;
  const norm = Math.sqrt(ss);
  if (maxNorm > 0 && norm > maxNorm) {
    const s = maxNorm / (norm + 1e-12);
    for (let i = 0; i < g.length; i++) g[i] = g[i]! * s;
  }
  return norm;
}

export interface Schedule {
  readonly lr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
  /** The floor of the cosine, as a fraction of lr. */
  readonly minLrRatio: number;
}

/** Learning rate for step `step` (0-based): linear warm-up to lr, then cosine decay to lr·minLrRatio. */
export function learningRate(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  const floor = s.lr * s.minLrRatio;
  return floor + (s.lr - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
