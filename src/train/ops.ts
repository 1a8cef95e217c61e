/**
 * The building blocks of training: each layer's forward pass and its hand-written backward pass.
 *
 * Everything here works on row-major activations `[rows][width]` in a `Vec` (Float32Array for
 * training, Float64Array for the gradient checks in test/train). All matrix products go through
 * one primitive, `MatMul.mm` (y = x Wᵀ); the three products of a linear layer are that primitive
 * applied to transposed operands:
 *
 *   forward          Y[T,R]  = X[T,C] · W[R,C]ᵀ           mm(Y, X, W)
 *   input gradient   dX[T,C] = dY[T,R] · W[R,C]          mm(dX, dY, Wᵀ)      (Wᵀ is [C][R])
 *   weight gradient  dW[R,C] = dY[T,R]ᵀ · X[T,C]         mm(dW, dYᵀ, Xᵀ)     (dYᵀ [R][T], Xᵀ [C][T])
 *
 * With the native backend the primitive is the SIMD dot-product matmul (~50 GFLOP/s on two cores),
 * which beats its axpy-style transposed product five-fold; the O(T·C) transposes cost little.
 *
 * The forward functions compute exactly what src/model computes for inference (same formulas, same
 * f32 roundings where it matters); test/train/parity.test.ts checks the logits against it.
 */
import type { Backend } from '../kernels/backend.js';
import type { Tensor, Vec } from '../kernels/tensor.js';

/** The activation precision: f32 to train, f64 for finite-difference checks. */
export type TrainPrecision = 'f32' | 'f64';

export function allocVec(precision: TrainPrecision, n: number): Vec {
  return precision === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

/** Matrix products: y[t·R + r] = Σ_c w[r·C + c] · x[t·C + c] for t < T. */
export interface MatMul {
  readonly name: string;
  mm(y: Vec, x: Vec, w: Vec, T: number, R: number, C: number): void;
}

/** Plain loops (accumulating in f64): the f64 gradient checks, and the fallback without the addon. */
export const jsMatMul: MatMul = {
  name: 'js',
  mm(y, x, w, T, R, C) {
    for (let t = 0; t < T; t++) {
      const xo = t * C;
      for (let r = 0; r < R; r++) {
        const wo = r * C;
        let s = 0;
        for (let c = 0; c < C; c++) s += w[wo + c]! * x[xo + c]!;
        y[t * R + r] = s;
      }
    }
  },
};

function asTensor(w: Float32Array, R: number, C: number): Tensor {
  return { dtype: 'f32', shape: [R, C], data: new Uint8Array(w.buffer, w.byteOffset, R * C * 4) };
}

/**
 * Matrix products on a kernel backend (native SIMD). Rows of x are fed in chunks so that a chunk of
 * activations stays in cache while the weight rows stream past (measured: ~1.7× over one call).
 * Float64 inputs fall back to the loops.
 */
export function backendMatMul(backend: Backend, chunk = 256): MatMul {
  return {
    name: backend.name,
    mm(y, x, w, T, R, C) {
      if (!(y instanceof Float32Array) || !(x instanceof Float32Array) || !(w instanceof Float32Array)) {
        jsMatMul.mm(y, x, w, T, R, C);
        return;
      }
      if (T === 0 || R === 0) return;
      if (C === 0) {
        y.fill(0, 0, T * R);
        return;
      }
      const wt = asTensor(w, R, C);
      for (let t = 0; t < T; t += chunk) {
        const n = Math.min(chunk, T - t);
        backend.matmul(y.subarray(t * R, (t + n) * R), x.subarray(t * C, (t + n) * C), wt, n);
      }
    },
  };
}

/** out[c·R + r] = a[r·C + c]: the transpose of a [R][C] matrix. */
export function transpose(out: Vec, a: Vec, R: number, C: number): Vec {
  // Blocked so that both sides are walked in cache-sized tiles.
  const B = 32;
  for (let r0 = 0; r0 < R; r0 += B) {
    const r1 = Math.min(R, r0 + B);
    for (let c0 = 0; c0 < C; c0 += B) {
      const c1 = Math.min(C, c0 + B);
      for (let r = r0; r < r1; r++) {
        const ro = r * C;
        for (let c = c0; c < c1; c++) out[c * R + r] = a[ro + c]!;
      }
    }
  }
  return out;
}

/** Scratch buffers reused across steps, keyed by name (grown as needed). */
export class Scratch {
  private readonly bufs = new Map<string, Vec>();
  constructor(readonly precision: TrainPrecision) {}
  get(name: string, n: number): Vec {
    let b = this.bufs.get(name);
    if (!b || b.length < n) {
      b = allocVec(this.precision, n);
      this.bufs.set(name, b);
    }
    return b.subarray(0, n);
  }
}

/** Everything a layer needs to run: the product engine and scratch space. */
export interface OpContext {
  readonly mm: MatMul;
  readonly scratch: Scratch;
  readonly precision: TrainPrecision;
}

// ---- linear -------------------------------------------------------------------------------------

/** y[T][R] = x[T][C] Wᵀ. */
export function linear(ctx: OpContext, y: Vec, x: Vec, w: Vec, T: number, R: number, C: number): void {
  ctx.mm.mm(y, x, w, T, R, C);
}

/**
 * Backward of y = x Wᵀ: dW += dyᵀ x, and dx = dy W (added into dx when `accumulate`).
 * `dx` may be null when the input needs no gradient (token embeddings are gathered, not multiplied).
 */
export function linearBackward(
  ctx: OpContext,
  dy: Vec,
  x: Vec,
  w: Vec,
  dw: Vec,
  dx: Vec | null,
  T: number,
  R: number,
  C: number,
  accumulate = false,
): void {
  const { mm, scratch } = ctx;
  // dW[R][C] = dyᵀ[R][T] · (xᵀ[C][T])ᵀ
  const dyT = transpose(scratch.get('lin.dyT', R * T), dy, T, R);
  const xT = transpose(scratch.get('lin.xT', C * T), x, T, C);
  const g = scratch.get('lin.dw', R * C);
  mm.mm(g, dyT, xT, R, C, T);
  for (let i = 0; i < R * C; i++) dw[i] = dw[i]! + g[i]!;
  if (!dx) return;
  const wT = transpose(scratch.get('lin.wT', C * R), w, R, C);
  if (accumulate) {
    const tmp = scratch.get('lin.dx', T * C);
    mm.mm(tmp, dy, wT, T, C, R);
    for (let i = 0; i < T * C; i++) dx[i] = dx[i]! + tmp[i]!;
  } else {
    mm.mm(dx, dy, wT, T, C, R);
  }
}

// ---- RMSNorm ------------------------------------------------------------------------------------

/**
 * y = x / sqrt(mean(x²) + eps) · w over rows of width D (docs/SPEC.md §2). `inv` receives each row's
 * 1/rms for the backward pass. y may alias x.
 */
export function rmsNorm(y: Vec, x: Vec, w: Vec, eps: number, rows: number, D: number, inv: Float64Array): void {
  for (let t = 0; t < rows; t++) {
    const o = t * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[o + i]! * x[o + i]!;
    // Rounded to f32 as the native kernel does, so that training and inference agree to the last bits that matter.
    const r = 1 / Math.sqrt(ss / D + eps);
    inv[t] = y instanceof Float32Array ? Math.fround(r) : r;
    const rr = inv[t]!;
    for (let i = 0; i < D; i++) y[o + i] = x[o + i]! * rr * w[i]!;
  }
}

/**
 * Backward of rmsNorm: with r = 1/rms, y_i = x_i r w_i,
 *   dw_i += Σ_t dy_i x_i r,   dx_i = r (dy_i w_i) − x_i r³/D · Σ_j dy_j w_j x_j.
 * dx is written (or added, when `accumulate`); dx may alias dy only when not accumulating.
 */
export function rmsNormBackward(
  dx: Vec,
  dy: Vec,
  x: Vec,
  w: Vec,
  dw: Vec,
  inv: Float64Array,
  rows: number,
  D: number,
  accumulate = false,
): void {
  for (let t = 0; t < rows; t++) {
    const o = t * D;
    const r = inv[t]!;
    let dot = 0;
    for (let i = 0; i < D; i++) {
      const gy = dy[o + i]!;
      dot += gy * w[i]! * x[o + i]!;
      dw[i] = dw[i]! + gy * x[o + i]! * r;
    }
    const k = (r * r * r * dot) / D;
    for (let i = 0; i < D; i++) {
      const g = r * dy[o + i]! * w[i]! - x[o + i]! * k;
      dx[o + i] = accumulate ? dx[o + i]! + g : g;
    }
  }
}

// ---- RoPE ---------------------------------------------------------------------------------------

/** cos and sin tables [positions][pairs] for the inference model's frequencies (src/model/rope.ts). */
export interface RopeTables {
  readonly pairs: number;
  readonly cos: Float64Array;
  readonly sin: Float64Array;
}

export function ropeTables(invFreq: Float64Array, magnitude: number, positions: number): RopeTables {
  const pairs = invFreq.length;
  const cos = new Float64Array(positions * pairs);
  const sin = new Float64Array(positions * pairs);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < pairs; i++) {
      // The same expression as the reference kernel's ropeAdjacent.
      const angle = p * invFreq[i]!;
      cos[p * pairs + i] = Math.cos(angle) * magnitude;
      sin[p * pairs + i] = Math.sin(angle) * magnitude;
    }
  }
  return { pairs, cos, sin };
}

/**
 * Rotate adjacent pairs (2i, 2i+1) of the 2·pairs values at `offset` of each row (docs/SPEC.md §4.1) by
 * the angle of the row's position, or by minus that angle when `inverse`: the backward pass, since
 * the transpose of m·R(θ) is m·R(−θ). Row r has position pos[floor(r / rowsPerPos)].
 */
export function rope(
  x: Vec,
  rows: number,
  stride: number,
  offset: number,
  pos: Int32Array,
  rowsPerPos: number,
  tables: RopeTables,
  inverse: boolean,
): void {
  const { pairs, cos, sin } = tables;
  for (let r = 0; r < rows; r++) {
    const p = pos[Math.floor(r / rowsPerPos)]! * pairs;
    const base = r * stride + offset;
    for (let i = 0; i < pairs; i++) {
      const c = cos[p + i]!;
      const s = inverse ? -sin[p + i]! : sin[p + i]!;
      const a = x[base + 2 * i]!;
      const b = x[base + 2 * i + 1]!;
      x[base + 2 * i] = a * c - b * s;
      x[base + 2 * i + 1] = a * s + b * c;
    }
  }
}

// ---- SwiGLU -------------------------------------------------------------------------------------

export interface SwiGluParams {
  readonly gate: Vec;
  readonly up: Vec;
  readonly down: Vec;
}

/** What the SwiGLU backward pass needs from its forward pass. */
export interface SwiGluSaved {
  readonly x: Vec;
  readonly g: Vec;
  readonly u: Vec;
  /** silu(g)·u: the input of down_proj. */
  readonly a: Vec;
  readonly rows: number;
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

/** out[T][D] = down(silu(gate x) · up x) with hidden width F (docs/SPEC.md §2). Keeps its activations (fresh arrays). */
export function swigluForward(ctx: OpContext, p: SwiGluParams, x: Vec, rows: number, D: number, F: number, out: Vec): SwiGluSaved {
  const g = allocVec(ctx.precision, rows * F);
  const u = allocVec(ctx.precision, rows * F);
  const a = allocVec(ctx.precision, rows * F);
  linear(ctx, g, x, p.gate, rows, F, D);
  linear(ctx, u, x, p.up, rows, F, D);
  const f32 = a instanceof Float32Array;
  for (let i = 0; i < rows * F; i++) {
    const gi = g[i]!;
    // The native kernel computes silu in f32: g / (1 + expf(-g)) · up.
    a[i] = f32 ? Math.fround(Math.fround(gi / Math.fround(1 + Math.fround(Math.exp(-gi)))) * u[i]!) : (gi / (1 + Math.exp(-gi))) * u[i]!;
  }
  linear(ctx, out, a, p.down, rows, D, F);
  return { x, g, u, a, rows };
}

/**
 * Backward of SwiGLU: da = dy W_down; with s = σ(g): dg = da·u·s(1 + g(1 − s)), du = da·g·s;
 * dx (+)= dg W_gate + du W_up; weight gradients into `grads`.
 */
export function swigluBackward(
  ctx: OpContext,
  p: SwiGluParams,
  grads: SwiGluParams,
  saved: SwiGluSaved,
  dy: Vec,
  dx: Vec,
  D: number,
  F: number,
  accumulate: boolean,
): void {
  const { rows, x, g, u, a } = saved;
  const da = ctx.scratch.get('swiglu.da', rows * F);
  linearBackward(ctx, dy, a, p.down, grads.down, da, rows, D, F);
  const dg = allocVec(ctx.precision, rows * F);
  const du = allocVec(ctx.precision, rows * F);
  for (let i = 0; i < rows * F; i++) {
    const gi = g[i]!;
    const s = sigmoid(gi);
    const d = da[i]!;
    du[i] = d * gi * s;
    dg[i] = d * u[i]! * s * (1 + gi * (1 - s));
  }
  linearBackward(ctx, dg, x, p.gate, grads.gate, dx, rows, F, D, accumulate);
  linearBackward(ctx, du, x, p.up, grads.up, dx, rows, F, D, true);
}

// ---- cross-entropy ------------------------------------------------------------------------------

/**
 * Mean next-token cross-entropy of `logits` [rows][V] against `targets`; when `dlogits` is given it
 * receives d(loss)/d(logits) = (softmax − onehot) / rows. Returns the summed (not mean) loss in nats.
 */
export function crossEntropy(logits: Vec, targets: Int32Array, rows: number, V: number, dlogits: Vec | null, scale = 1 / rows): number {
  let total = 0;
  for (let t = 0; t < rows; t++) {
    const o = t * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[o + v]! > max) max = logits[o + v]!;
    let sum = 0;
    if (dlogits) {
      for (let v = 0; v < V; v++) {
        const e = Math.exp(logits[o + v]! - max);
        dlogits[o + v] = e;
        sum += e;
      }
    } else {
      for (let v = 0; v < V; v++) sum += Math.exp(logits[o + v]! - max);
    }
    const logZ = max + Math.log(sum);
    const y = targets[t]!;
    total += logZ - logits[o + y]!;
    if (dlogits) {
      const k = scale / sum;
      for (let v = 0; v < V; v++) dlogits[o + v] = dlogits[o + v]! * k;
      dlogits[o + y] = dlogits[o + y]! - scale;
    }
  }
  return total;
}
