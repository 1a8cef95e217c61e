/**
 * Kernel-owned layouts: at every instruction level this CPU runs (scalar, avx2, avx512 / neon),
 * weights repacked into interleaved row groups multiply exactly as the TypeScript reference
 * defines (8-bit activations), on awkward shapes — row counts below, at and past a group of 8 (the
 * plain tail), one block or many, every token-tile size and its tails — and give the same bits
 * at 1, 2 and 7 threads. Levels the CPU lacks are listed as skipped with the reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxRelDiff, randomVec as randomVecOf, seededRandom } from './helpers.js';
import { createNativeBackend, nativeLevels, nativeLoadError } from '../../src/kernels/native/index.js';
import { referenceBackend as ref } from '../../src/kernels/reference/index.js';
import type { Backend, Weight } from '../../src/kernels/backend.js';
import type { Tensor } from '../../src/kernels/tensor.js';
import { blockSize, quantizeRow, rowBytes, type GgmlType } from '../../src/formats/quant/index.js';

const levels = nativeLevels();
const noAddon = levels.length === 0 ? `native addon unavailable: ${nativeLoadError()}` : false;

const rand = seededRandom(987654321);
const randomVec = (n: number, scale = 1): Float32Array => randomVecOf(rand, n, scale);
function quantised(dtype: GgmlType, rows: number, cols: number): Tensor {
  const values = randomVec(rows * cols);
  const rb = rowBytes(dtype, cols);
  const data = new Uint8Array(rb * rows);
  for (let r = 0; r < rows; r++) quantizeRow(dtype, values.subarray(r * cols, (r + 1) * cols), data.subarray(r * rb));
  return { dtype, shape: [rows, cols], data };
}
function product(backend: Backend, w: Weight, x: Float32Array, tokens: number): Float32Array {
  const y = new Float32Array(w.shape[0]! * tokens);
  backend.matmul(y, x, w, tokens);
  return y;
}

const types = ['q4_0', 'q8_0', 'q5_0', 'q4_k', 'q6_k'] as const;
// [rows, blocks]: below a group (plain rows only), one group, groups + tail, many groups.
const shapes: Array<[number, number]> = [
  [7, 1],
  [8, 1],
  [13, 3],
  [24, 2],
  [41, 5],
];
// up to 33: the AMX level's 16-token tiles, their tail, and calls too short for them
const tokenCounts = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 33];

for (const level of levels.length ? levels : [{ name: 'native', supported: false }]) {
  const skip = noAddon || (level.supported ? false : `this CPU lacks the ${level.name} instructions`);
  test(`${level.name}: repacked q4_0, q8_0, q5_0, q4_k, q6_k weights multiply as the reference on awkward shapes and token counts`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    let packedSeen = 0;
    for (const dtype of types) {
      for (const [rows, blocks] of shapes) {
        const cols = blocks * blockSize(dtype);
        const w = quantised(dtype, rows, cols);
        const { weights, report } = nb.prepareAll([w]);
        const pw = weights[0]!;
        if (pw.packed) packedSeen++;
        assert.equal(report.repacked, pw.packed ? 1 : 0);
        for (const tokens of tokenCounts) {
          const x = randomVec(cols * tokens, 3);
          const yr = new Float32Array(rows * tokens);
          ref.matmul(yr, x, w, tokens);
          const yp = product(nb, pw, x, tokens);
          assert.ok(maxRelDiff(yp, yr) < 2e-5, `${level.name} ${dtype} ${rows}x${cols}x${tokens}: ${maxRelDiff(yp, yr)}`);
          // repacked against the row kernels on the same inputs
          const yu = product(nb, w, x, tokens);
          assert.ok(maxRelDiff(yp, yu) < 2e-5, `${level.name} ${dtype} packed vs rows ${rows}x${cols}x${tokens}`);
        }
      }
    }
    // Every level repacks q4_0 and q8_0 once a weight has a whole group; the K formats where the level has kernels.
    assert.ok(packedSeen >= 2 * 4, `${level.name}: only ${packedSeen} weights were repacked`);
  });

  test(`${level.name}: repacked products give identical bits at 1, 2 and 7 threads`, { skip }, () => {
    for (const dtype of types) {
      const rows = 45;
      const cols = 3 * blockSize(dtype);
      const w = quantised(dtype, rows, cols);
      const x = randomVec(cols * 11, 2);
      const results = [1, 2, 7].map((threads) => {
        const nb = createNativeBackend(threads, level.name)!;
        return product(nb, nb.prepareAll([w]).weights[0]!, x, 11);
      });
      assert.deepEqual(results[1], results[0], `${dtype}: 2 threads differ from 1`);
      assert.deepEqual(results[2], results[0], `${dtype}: 7 threads differ from 1`);
    }
  });
}

/* A weight whose every quant is its type's largest (Q4_0 15, Q5_0 31, Q8_0 −127, Q4_K 15 with
   scales and mins 63, Q6_K 63 with scales 127) and a small f16 scale: where a level sums maddubs
   pairs in int16 before widening, these are the sums that come nearest ±2¹⁵. */
function extremeWeight(dtype: (typeof types)[number], rows: number, cols: number): Tensor {
  const rb = rowBytes(dtype, cols), bb = rowBytes(dtype, blockSize(dtype));
  const data = new Uint8Array(rb * rows).fill(0xff);
  const setHalf = (at: number): void => {
    data[at] = 0x00;
    data[at + 1] = 0x20; // f16 2^-7
  };
  for (let b = 0; b < data.length; b += bb) {
    if (dtype === 'q4_k') {
      setHalf(b);
      setHalf(b + 2);
    } else if (dtype === 'q6_k') {
      data.fill(0x7f, b + 192, b + 208); // int8 scales 127
      setHalf(b + 208);
    } else {
      setHalf(b);
      if (dtype === 'q8_0') data.fill(0x81, b + 2, b + bb); // −127
    }
  }
  return { dtype, shape: [rows, cols], data };
}

for (const level of levels.filter((l) => l.supported)) {
  test(`${level.name}: weights at their largest quants times activations at ±127 multiply as the reference (no int16 sum wraps)`, { skip: noAddon }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const dtype of types) {
      const rows = 16, cols = 2 * blockSize(dtype);
      const w = extremeWeight(dtype, rows, cols);
      const pw = nb.prepareAll([w]).weights[0]!;
      for (const sign of [1, -1]) {
        for (const tokens of [1, 4, 9]) {
          const x = new Float32Array(cols * tokens).fill(sign);
          const yr = new Float32Array(rows * tokens);
          ref.matmul(yr, x, w, tokens);
          const yp = product(nb, pw, x, tokens);
          assert.ok(Math.abs(yr[0]!) > 0, `${dtype}: the reference product is not zero`);
          assert.ok(maxRelDiff(yp, yr) < 2e-5, `${level.name} ${dtype} x=${sign} ×${tokens}: ${maxRelDiff(yp, yr)}`);
        }
      }
    }
  });
}

// At the AMX level a batch of 9 or 40 tokens runs on matrix tiles (16-token tiles, a tail tile, an
// odd fifth row group on the AVX-512 tiles) and a lone token on the AVX-512 tiles: the same bits.
for (const level of levels.filter((l) => l.supported)) {
  test(`${level.name}: a token computed alone or inside a batch gives the same bits (tiles do not change the sums)`, { skip: noAddon }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const dtype of types) {
      const cols = 3 * blockSize(dtype), rows = 40;
      const w = nb.prepareAll([quantised(dtype, rows, cols)]).weights[0]!;
      for (const tokens of [9, 40]) {
        const x = randomVec(cols * tokens, 2);
        const batch = product(nb, w, x, tokens);
        for (const t of [0, 4, 8, 17, 39].filter((t) => t < tokens)) {
          const alone = product(nb, w, x.subarray(t * cols, (t + 1) * cols), 1);
          assert.deepEqual(alone, batch.subarray(t * rows, (t + 1) * rows), `${dtype} token ${t} of ${tokens}`);
        }
      }
    }
  });
}

test('a packed weight whose layout is not its type\'s, or whose bytes fall short of its layout, is refused with the reason', { skip: noAddon }, () => {
  const nb = createNativeBackend(1)!;
  const pw = nb.prepareAll([quantised('q6_k', 16, 512)]).weights[0]!;
  const packed = pw.packed;
  assert.ok(packed, 'q6_k with a whole group is repacked at every level that runs here');
  const x = randomVec(512);
  const Q4_0X8 = 1, RETIRED_Q6_K8 = 4, Q6_K6X8 = 6; // ops.h
  assert.throws(() => product(nb, { ...pw, packed: { ...packed, layout: Q4_0X8 } }, x, 1), /layout does not belong to this weight type/);
  assert.throws(() => product(nb, { ...pw, packed: { ...packed, bytes: packed.bytes.subarray(0, packed.bytes.length - 1) } }, x, 1), /shorter than the shape/);
  // Q6_K is packed at 6 bits; the retired 8-bit layout's id is refused, not read as it.
  assert.equal(packed.layout, Q6_K6X8);
  assert.throws(() => product(nb, { ...pw, packed: { ...packed, layout: RETIRED_Q6_K8 } }, x, 1), /layout does not belong to this weight type/);
});

test('DSEEK_SIMD names only levels this CPU runs', { skip: noAddon }, () => {
  assert.throws(() => createNativeBackend(1, 'no-such-level'), /not a kernel level this CPU runs/);
  const unsupported = levels.find((l) => !l.supported);
  if (unsupported) assert.throws(() => createNativeBackend(1, unsupported.name), /not a kernel level/);
  assert.equal(levels.at(-1)!.name, 'scalar');
  assert.ok(levels.at(-1)!.supported);
});

// One product per head over all heads in one call (absorbed attention's W^UK and W^UV): each
// head's rows equal the packed matmul of that head's gathered inputs, bit for bit, at every level
// and thread count; a mixed group (another type or shape) is refused with null.
for (const level of levels.filter((l) => l.supported)) {
  test(`${level.name}: matmulHeads equals one packed matmul per head (16 and 128 heads, strided inputs, 1–9 tokens)`, { skip: noAddon }, () => {
    for (const [dtype, heads, rows, cols, stride] of [
      ['q4_0', 16, 64, 128, 192],
      ['q8_0', 128, 8, 64, 64],
      ['q6_k', 3, 16, 256, 300],
      ['q5_0', 5, 24, 96, 100],
    ] as const) {
      const firstRun = new Map<string, Float32Array>();
      const stored = Array.from({ length: heads }, () => quantised(dtype, rows, cols));
      const inputs = new Map([1, 2, 9].map((tokens) => [tokens, randomVec(tokens * heads * stride, 2)]));
      for (const threads of [1, 2, 7]) {
        const nb = createNativeBackend(threads, level.name)!;
        const weights = nb.prepareAll(stored).weights;
        const group = nb.prepareHeads!(weights);
        assert.ok(group, `${dtype}: a group of ${heads} packed heads`);
        for (const [tokens, x] of inputs) {
          const y = new Float32Array(tokens * heads * rows);
          nb.matmulHeads!(y, x, tokens, stride, group);
          const composed = new Float32Array(tokens * heads * rows);
          for (let h = 0; h < heads; h++) {
            const xh = new Float32Array(tokens * cols);
            for (let t = 0; t < tokens; t++) xh.set(x.subarray((t * heads + h) * stride, (t * heads + h) * stride + cols), t * cols);
            const yh = product(nb, weights[h]!, xh, tokens);
            for (let t = 0; t < tokens; t++) composed.set(yh.subarray(t * rows, (t + 1) * rows), (t * heads + h) * rows);
          }
          assert.deepEqual(y, composed, `${level.name} ${dtype} ${heads} heads, ${tokens} tokens, ${threads} threads`);
          const key = `${tokens}`;
          if (threads === 1) firstRun.set(key, y);
          else assert.deepEqual(y, firstRun.get(key), `${dtype} ${tokens} tokens: ${threads} threads differ from 1`);
          // shared: every head reads token t's one row at t·stride
          const ys = new Float32Array(tokens * heads * rows);
          nb.matmulHeads!(ys, x, tokens, stride, group, true);
          const xt = new Float32Array(tokens * cols);
          for (let t = 0; t < tokens; t++) xt.set(x.subarray(t * stride, t * stride + cols), t * cols);
          const sharedComposed = new Float32Array(tokens * heads * rows);
          for (let h = 0; h < heads; h++) {
            const yh = product(nb, weights[h]!, xt, tokens);
            for (let t = 0; t < tokens; t++) sharedComposed.set(yh.subarray(t * rows, (t + 1) * rows), (t * heads + h) * rows);
          }
          assert.deepEqual(ys, sharedComposed, `${level.name} ${dtype} shared input, ${tokens} tokens, ${threads} threads`);
          if (threads === 1) firstRun.set(`shared ${key}`, ys);
          else assert.deepEqual(ys, firstRun.get(`shared ${key}`), `${dtype} shared, ${tokens} tokens: ${threads} threads differ from 1`);
        }
      }
    }
    const nb = createNativeBackend(2, level.name)!;
    const mixed = nb.prepareAll([quantised('q4_0', 16, 64), quantised('q8_0', 16, 64)]).weights;
    assert.equal(nb.prepareHeads!(mixed), null, 'heads of two types are refused');
    const shapes = nb.prepareAll([quantised('q4_0', 16, 64), quantised('q4_0', 24, 64)]).weights;
    assert.equal(nb.prepareHeads!(shapes), null, 'heads of two shapes are refused');
  });
}
// Wᵀx per head over the same tokens in one call (prefill's decompression of latent rows into every
// head's keys), each head's result at a stride: the bits of matmulTransposed on that head's rows
// at every level and thread count (across the few-token path, one 48-token block and past it),
// within 1e-5 of the reference, and the stride's gaps untouched.
for (const level of levels.filter((l) => l.supported)) {
  test(`${level.name}: matmulTransposedHeads equals matmulTransposed per head at a stride (1–97 tokens, 1, 2 and 7 threads)`, { skip: noAddon }, () => {
    const f32 = (rows: number, cols: number): Tensor => ({ dtype: 'f32', shape: [rows, cols], data: new Uint8Array(randomVec(rows * cols).buffer) });
    for (const [dtype, heads, rows, cols, stride] of [
      ['q4_0', 16, 37, 128, 192],
      ['q8_0', 3, 20, 64, 64],
      ['q4_k', 2, 9, 256, 300],
      ['q5_0', 5, 12, 32, 40],
      ['f32', 4, 11, 24, 30],
    ] as const) {
      const w = dtype === 'f32' ? f32(heads * rows, cols) : quantised(dtype, heads * rows, cols);
      const firstRun = new Map<number, Float32Array>();
      const inputs = new Map([1, 5, 6, 49, 97].map((tokens) => [tokens, randomVec(tokens * rows)]));
      for (const threads of [1, 2, 7]) {
        const nb = createNativeBackend(threads, level.name)!;
        for (const [tokens, x] of inputs) {
          const y = new Float32Array(tokens * heads * stride).fill(7.5);
          nb.matmulTransposedHeads!(y, x, w, heads, tokens, stride);
          const composed = new Float32Array(tokens * heads * stride).fill(7.5);
          const reference = new Float32Array(tokens * heads * stride).fill(7.5);
          const one = new Float32Array(tokens * cols);
          for (let h = 0; h < heads; h++) {
            const wh: Tensor = { dtype: w.dtype, shape: [rows, cols], data: w.data.subarray(h * rowBytes(dtype, cols) * rows, (h + 1) * rowBytes(dtype, cols) * rows) };
            nb.matmulTransposed(one, x, wh, tokens);
            for (let t = 0; t < tokens; t++) composed.set(one.subarray(t * cols, (t + 1) * cols), (t * heads + h) * stride);
            ref.matmulTransposed(one, x, wh, tokens);
            for (let t = 0; t < tokens; t++) reference.set(one.subarray(t * cols, (t + 1) * cols), (t * heads + h) * stride);
          }
          const label = `${level.name} ${dtype} ${heads} heads of ${rows}×${cols}, ${tokens} tokens, ${threads} threads`;
          assert.deepEqual(y, composed, label);
          assert.ok(maxRelDiff(y, reference) < 1e-5, `${label}: ${maxRelDiff(y, reference)} from the reference`);
          if (threads === 1) firstRun.set(tokens, y);
          else assert.deepEqual(y, firstRun.get(tokens), `${label}: differs from 1 thread`);
        }
      }
    }
    const nb = createNativeBackend(2, level.name)!;
    assert.throws(() => nb.matmulTransposedHeads!(new Float32Array(64), new Float32Array(64), quantised('q4_0', 10, 32), 3, 1, 32), /do not split into 3 heads/);
    assert.throws(() => nb.matmulTransposedHeads!(new Float32Array(10), new Float32Array(64), quantised('q4_0', 8, 32), 2, 1, 32), /shorter than the shape/);
  });
}
createNativeBackend(2);
