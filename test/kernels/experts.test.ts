/**
 * The fused expert operation (one native call for a mixture-of-experts layer's routed and shared
 * SwiGLU triples) against the composition it replaces — per expert: gather its rows, gate and up
 * products, SiLU·mul, down product, weighted sum back — computed with the TypeScript reference on
 * the same weights; at every level the CPU has, for q4_0, q8_0, q4_k and q6_k triples, 1 to 17
 * tokens, unused experts, with and without a shared triple; identical bits at 1, 2 and 7 threads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxRelDiff, seededRandom } from './helpers.js';
import { createNativeBackend, nativeLevels, nativeLoadError } from '../../src/kernels/native/index.js';
import { referenceBackend as ref } from '../../src/kernels/reference/index.js';
import type { Backend, SwiGluTriple } from '../../src/kernels/backend.js';
import type { Tensor } from '../../src/kernels/tensor.js';
import { quantizeRow, rowBytes, type GgmlType } from '../../src/formats/quant/index.js';

const levels = nativeLevels();
const noAddon = levels.length === 0 ? `native addon unavailable: ${nativeLoadError()}` : false;

const rand = seededRandom(4242);
function quantised(dtype: GgmlType, rows: number, cols: number, scale = 1): Tensor {
  const rb = rowBytes(dtype, cols);
  const data = new Uint8Array(rb * rows);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) row[c] = rand() * 2 * scale;
    quantizeRow(dtype, row, data.subarray(r * rb));
  }
  return { dtype, shape: [rows, cols], data };
}
function triple(type: GgmlType, width: number, d: number, downType: GgmlType = type): SwiGluTriple {
  return { gate: quantised(type, width, d), up: quantised(type, width, d), down: quantised(downType, d, width, 0.5) };
}
/** What moeForward computes without the fused path: per token, Σ over its experts in expert order, plus shared. */
function composed(backend: Backend, x: Float32Array, T: number, d: number, k: number, expertOf: Int32Array, weightOf: Float32Array, experts: readonly SwiGluTriple[], shared: SwiGluTriple | null): Float32Array {
  const out = new Float32Array(T * d);
  const run = (t3: SwiGluTriple, xs: Float32Array, n: number): Float32Array => {
    const width = t3.gate.shape[0]!;
    const g = new Float32Array(n * width);
    const u = new Float32Array(n * width);
    backend.matmul(g, xs, t3.gate, n);
    backend.matmul(u, xs, t3.up, n);
    backend.siluMul(g, g, u, n * width);
    const y = new Float32Array(n * d);
    backend.matmul(y, g, t3.down, n);
    return y;
  };
  const acc = new Float32Array(T * d);
  experts.forEach((e, id) => {
    const slots: number[] = [];
    for (let i = 0; i < T * k; i++) if (expertOf[i] === id) slots.push(i);
    if (slots.length === 0) return;
    const xs = new Float32Array(slots.length * d);
    slots.forEach((s, j) => xs.set(x.subarray(Math.floor(s / k) * d, (Math.floor(s / k) + 1) * d), j * d));
    const y = run(e, xs, slots.length);
    slots.forEach((s, j) => {
      const t = Math.floor(s / k);
      for (let i = 0; i < d; i++) acc[t * d + i] += weightOf[s]! * y[j * d + i]!;
    });
  });
  if (shared) {
    const ys = run(shared, x, T);
    for (let i = 0; i < T * d; i++) out[i] = ys[i]! + acc[i]!;
  } else out.set(acc);
  return out;
}
function routing(T: number, k: number, E: number): { expertOf: Int32Array; weightOf: Float32Array } {
  const expertOf = new Int32Array(T * k);
  const weightOf = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const chosen = new Set<number>();
    // experts 0..E-2 only: the last one stays unused
    while (chosen.size < k) chosen.add(Math.floor((rand() + 0.5) * (E - 1)) % (E - 1));
    [...chosen].forEach((e, i) => {
      expertOf[t * k + i] = e;
      weightOf[t * k + i] = 0.1 + (rand() + 0.5);
    });
  }
  return { expertOf, weightOf };
}

const cases: Array<{ type: GgmlType; d: number; width: number; sharedWidth: number; downType?: GgmlType }> = [
  // As Q4_K_M files store V2-Lite's experts: gate/up Q4_K, down (1,408 columns: not whole K blocks) Q5_0.
  { type: 'q4_k', d: 256, width: 96, sharedWidth: 0, downType: 'q5_0' },
  { type: 'q4_0', d: 64, width: 32, sharedWidth: 64 },
  { type: 'q8_0', d: 96, width: 64, sharedWidth: 0 },
  { type: 'q4_k', d: 256, width: 256, sharedWidth: 256 },
  { type: 'q6_k', d: 256, width: 256, sharedWidth: 0 },
];

for (const level of levels.length ? levels : [{ name: 'native', supported: false }]) {
  const skip = noAddon || (level.supported ? false : `this CPU lacks the ${level.name} instructions`);
  test(`${level.name}: fused experts equal the per-expert composition (reference) for q4_0, q8_0, q4_k, q6_k and q4_k with q5_0 downs, 1–17 tokens, with and without shared`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    let fusedSeen = 0;
    for (const { type, d, width, sharedWidth, downType } of cases) {
      const E = 5;
      const raw = Array.from({ length: E }, () => triple(type, width, d, downType));
      const rawShared = sharedWidth ? triple(type, sharedWidth, d, downType) : null;
      const flat = [...raw.flatMap((t) => [t.gate, t.up, t.down]), ...(rawShared ? [rawShared.gate, rawShared.up, rawShared.down] : [])];
      const prepared = nb.prepareAll(flat).weights;
      const experts = raw.map((_, e) => ({ gate: prepared[3 * e]!, up: prepared[3 * e + 1]!, down: prepared[3 * e + 2]! }));
      const shared = rawShared ? { gate: prepared[3 * E]!, up: prepared[3 * E + 1]!, down: prepared[3 * E + 2]! } : null;
      const group = nb.prepareExperts!(experts, shared);
      if (!group) continue; // this level keeps the type in rows (no packed kernel): the composition runs
      fusedSeen++;
      for (const [T, k] of [[1, 2], [3, 3], [9, 2], [17, 3]] as const) {
        const x = Float32Array.from({ length: T * d }, () => rand() * 4);
        const { expertOf, weightOf } = routing(T, k, E);
        const want = composed(ref, x, T, d, k, expertOf, weightOf, raw, rawShared);
        const got = new Float32Array(T * d);
        nb.expertsForward!(got, x, T, k, expertOf, weightOf, group);
        assert.ok(maxRelDiff(got, want) < 1e-4, `${level.name} ${type} T=${T} k=${k}: ${maxRelDiff(got, want)}`);
        // and against the native composition of the same packed weights
        const nat = composed(nb, x, T, d, k, expertOf, weightOf, experts, shared);
        assert.ok(maxRelDiff(got, nat) < 1e-5, `${level.name} ${type} T=${T} k=${k} vs native composition: ${maxRelDiff(got, nat)}`);
      }
    }
    assert.ok(fusedSeen >= 2, `${level.name}: the fused path took only ${fusedSeen} of 5 cases (q4_0 and q8_0 are packed at every level)`);
  });
}

test('fused experts give identical bits at 1, 2 and 7 threads, and for a token alone or in a batch', { skip: noAddon }, () => {
  const { type, d, width, sharedWidth } = cases[1]!; // q4_0 with a shared triple
  const E = 5;
  const raw = Array.from({ length: E }, () => triple(type, width, d));
  const rawShared = triple(type, sharedWidth, d);
  const T = 11;
  const k = 2;
  const x = Float32Array.from({ length: T * d }, () => rand() * 4);
  const { expertOf, weightOf } = routing(T, k, E);
  const results = [1, 2, 7].map((threads) => {
    const nb = createNativeBackend(threads)!;
    const flat = [...raw.flatMap((t) => [t.gate, t.up, t.down]), rawShared.gate, rawShared.up, rawShared.down];
    const p = nb.prepareAll(flat).weights;
    const group = nb.prepareExperts!(
      raw.map((_, e) => ({ gate: p[3 * e]!, up: p[3 * e + 1]!, down: p[3 * e + 2]! })),
      { gate: p[3 * E]!, up: p[3 * E + 1]!, down: p[3 * E + 2]! },
    )!;
    const out = new Float32Array(T * d);
    nb.expertsForward!(out, x, T, k, expertOf, weightOf, group);
    if (threads === 2) {
      const alone = new Float32Array(d);
      nb.expertsForward!(alone, x.subarray(4 * d, 5 * d), 1, k, expertOf.subarray(4 * k, 5 * k), weightOf.subarray(4 * k, 5 * k), group);
      assert.deepEqual(alone, out.subarray(4 * d, 5 * d), 'token 4 alone');
    }
    return out;
  });
  assert.deepEqual(results[1], results[0]);
  assert.deepEqual(results[2], results[0]);
});

test('prepareExperts declines weights it cannot fuse (kept in rows, or gate and up of different types), so the composition runs', { skip: noAddon }, () => {
  const nb = createNativeBackend(2)!;
  const rows = triple('q4_0', 32, 64);
  assert.equal(nb.prepareExperts!([rows], null), null, 'not repacked');
  const p = nb.prepareAll([rows.gate, quantised('q8_0', 32, 64), rows.down]).weights;
  assert.equal(nb.prepareExperts!([{ gate: p[0]!, up: p[1]!, down: p[2]! }], null), null, 'gate q4_0, up q8_0');
});
