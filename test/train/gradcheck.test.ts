/**
 * Finite-difference checks of every hand-written backward pass, in float64 on tiny shapes:
 * each op alone (linear, RMSNorm, RoPE, SwiGLU, cross-entropy), then whole models covering
 * embeddings, MLA (plain q_proj and the q_a/q_b low-rank path), dense SwiGLU and DeepSeekMoE
 * (shared + routed experts, V3 sigmoid gate with and without weight normalisation), the final
 * norm and lm_head.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/model/config.js';
import { Rng } from '../../src/engine/random.js';
import {
  Scratch,
  crossEntropy,
  jsMatMul,
  linear,
  linearBackward,
  rmsNorm,
  rmsNormBackward,
  rope,
  ropeTables,
  swigluBackward,
  swigluForward,
  type OpContext,
} from '../../src/train/ops.js';
import { initParams } from '../../src/train/params.js';
import { TrainableModel } from '../../src/train/network.js';
import { tinyConfig } from './helpers.js';

const ctx = (): OpContext => ({ mm: jsMatMul, scratch: new Scratch('f64'), precision: 'f64' });

function randVec(rng: Rng, n: number, s = 1): Float64Array {
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = (rng.next() * 2 - 1) * s;
  return v;
}

/** Central difference of f with respect to v[i]. */
function numeric(f: () => number, v: Float64Array, i: number, h = 1e-6): number {
  const old = v[i]!;
  v[i] = old + h;
  const up = f();
  v[i] = old - h;
  const down = f();
  v[i] = old;
  return (up - down) / (2 * h);
}

function assertClose(analytic: number, num: number, what: string, tol = 1e-6): void {
  const err = Math.abs(analytic - num) / Math.max(1e-4, Math.abs(analytic) + Math.abs(num));
  assert.ok(err < tol, `${what}: analytic ${analytic} vs numeric ${num} (rel err ${err.toExponential(2)})`);
}

/** A random linear functional L = ⟨probe, y⟩ turns a vector output into a scalar to differentiate. */
function dotWith(probe: Float64Array, y: Float64Array): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += probe[i]! * y[i]!;
  return s;
}

test('linear: input and weight gradients match finite differences', () => {
  const rng = new Rng(1);
  const [T, R, C] = [3, 4, 5];
  const x = randVec(rng, T * C);
  const w = randVec(rng, R * C);
  const probe = randVec(rng, T * R);
  const c = ctx();
  const f = () => {
    const y = new Float64Array(T * R);
    linear(c, y, x, w, T, R, C);
    return dotWith(probe, y);
  };
  const dw = new Float64Array(R * C);
  const dx = new Float64Array(T * C);
  linearBackward(c, probe, x, w, dw, dx, T, R, C);
  for (let i = 0; i < x.length; i++) assertClose(dx[i]!, numeric(f, x, i), `dx[${i}]`);
  for (let i = 0; i < w.length; i++) assertClose(dw[i]!, numeric(f, w, i), `dw[${i}]`);
});

test('RMSNorm: input and weight gradients match finite differences', () => {
  const rng = new Rng(2);
  const [T, D] = [3, 6];
  const x = randVec(rng, T * D);
  const w = randVec(rng, D);
  const probe = randVec(rng, T * D);
  const f = () => {
    const y = new Float64Array(T * D);
    rmsNorm(y, x, w, 1e-6, T, D, new Float64Array(T));
    return dotWith(probe, y);
  };
  const inv = new Float64Array(T);
  rmsNorm(new Float64Array(T * D), x, w, 1e-6, T, D, inv);
  const dx = new Float64Array(T * D);
  const dw = new Float64Array(D);
  rmsNormBackward(dx, probe, x, w, dw, inv, T, D);
  for (let i = 0; i < x.length; i++) assertClose(dx[i]!, numeric(f, x, i), `dx[${i}]`);
  for (let i = 0; i < w.length; i++) assertClose(dw[i]!, numeric(f, w, i), `dw[${i}]`);
});

test('RoPE: the inverse rotation is the gradient', () => {
  const rng = new Rng(3);
  const [rows, stride, offset] = [4, 7, 3];
  const inv = Float64Array.from([1, 0.1]);
  const tables = ropeTables(inv, 1, 8);
  const pos = Int32Array.from([0, 5]);
  const x = randVec(rng, rows * stride);
  const probe = randVec(rng, rows * stride);
  const f = () => {
    const y = Float64Array.from(x);
    rope(y, rows, stride, offset, pos, 2, tables, false);
    return dotWith(probe, y);
  };
  const g = Float64Array.from(probe);
  rope(g, rows, stride, offset, pos, 2, tables, true);
  for (let i = 0; i < x.length; i++) assertClose(g[i]!, numeric(f, x, i), `dx[${i}]`);
});

test('SwiGLU: input and weight gradients match finite differences', () => {
  const rng = new Rng(4);
  const [T, D, F] = [3, 4, 5];
  const x = randVec(rng, T * D);
  const p = { gate: randVec(rng, F * D), up: randVec(rng, F * D), down: randVec(rng, D * F) };
  const probe = randVec(rng, T * D);
  const c = ctx();
  const f = () => {
    const y = new Float64Array(T * D);
    swigluForward(c, p, x, T, D, F, y);
    return dotWith(probe, y);
  };
  const saved = swigluForward(c, p, x, T, D, F, new Float64Array(T * D));
  const g = { gate: new Float64Array(F * D), up: new Float64Array(F * D), down: new Float64Array(D * F) };
  const dx = new Float64Array(T * D);
  swigluBackward(c, p, g, saved, probe, dx, D, F, false);
  for (let i = 0; i < x.length; i++) assertClose(dx[i]!, numeric(f, x, i), `dx[${i}]`);
  for (const k of ['gate', 'up', 'down'] as const) {
    for (let i = 0; i < p[k].length; i++) assertClose(g[k][i]!, numeric(f, p[k], i), `d${k}[${i}]`);
  }
});

test('cross-entropy: logit gradients match finite differences', () => {
  const rng = new Rng(5);
  const [T, V] = [3, 7];
  const logits = randVec(rng, T * V, 3);
  const targets = Int32Array.from([1, 6, 0]);
  const f = () => crossEntropy(logits, targets, T, V, null) / T;
  const d = new Float64Array(T * V);
  crossEntropy(logits, targets, T, V, d);
  for (let i = 0; i < logits.length; i++) assertClose(d[i]!, numeric(f, logits, i), `dlogits[${i}]`);
});

function checkModel(overrides: Record<string, unknown>, seed: number): void {
  const config = parseConfig(tinyConfig(overrides));
  const params = initParams(config, seed, 'f64');
  // Larger weights than the init so that every path carries a visible signal.
  const rng = new Rng(seed + 1);
  for (let i = 0; i < params.flat.length; i++) params.flat[i] = params.flat[i]! * 4 + (rng.next() - 0.5) * 0.1;
  const grads = params.like('f64');
  const biases = Array.from({ length: config.numHiddenLayers }, (_, l) =>
    l >= config.firstKDenseReplace ? Float32Array.from({ length: config.nRoutedExperts }, (_, e) => 0.01 * e) : null,
  );
  const model = new TrainableModel(config, params, grads, biases, ctx(), 16);
  const B = 2;
  const T = 5;
  const inputs = Int32Array.from({ length: B * T }, () => Math.floor(rng.next() * config.vocabSize));
  const targets = Int32Array.from({ length: B * T }, () => Math.floor(rng.next() * config.vocabSize));
  const loss = () => model.run(inputs, B, T, { targets }).lossSum / (B * T);
  model.run(inputs, B, T, { targets, backward: true });
  // Routing must not change under the perturbation: compare experts chosen before and after.
  let checked = 0;
  for (const spec of params.specs) {
    const v = params.get(spec.name);
    const g = grads.get(spec.name);
    const picks = new Set<number>();
    for (let j = 0; j < Math.min(4, spec.size); j++) picks.add(Math.floor(rng.next() * spec.size));
    for (const i of picks) {
      // Embedding rows of tokens not in the batch have zero gradient, which the check also confirms.
      assertClose(g[i]!, numeric(loss, v as Float64Array, i, 1e-5), `${spec.name}[${i}]`, 1e-5);
      checked++;
    }
  }
  assert.ok(checked > 20);
}

test('whole model, MLA with q_proj, dense + MoE layers (normalised top-k): gradients match finite differences', () => {
  checkModel({}, 11);
});

test('whole model, MLA with q_a/q_b low-rank queries, MoE unnormalised with scaling: gradients match finite differences', () => {
  checkModel({ q_lora_rank: 6, norm_topk_prob: false, routed_scaling_factor: 1.7, first_k_dense_replace: 0, n_shared_experts: 2 }, 12);
});
