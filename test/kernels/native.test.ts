/**
 * Differential tests: every native kernel against the reference backend on random inputs,
 * including sizes that are not multiples of the SIMD width and single-row cases; thread counts
 * 1, 2 and more than the cores give bit-identical results.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxDiffOverTermSums, maxRelDiff, randomVec as randomVecOf, seededRandom } from './helpers.js';
import { createNativeBackend, nativeLevels, nativeLoadError } from '../../src/kernels/native/index.js';
import { referenceBackend as ref } from '../../src/kernels/reference/index.js';
import { sequenceRows, type Backend } from '../../src/kernels/backend.js';
import { f32ToBf16, f32ToF16, type DType, type Tensor } from '../../src/kernels/tensor.js';
import { blockSize, dequantizeRow, quantizeRow, rowBytes } from '../../src/formats/quant/index.js';

const native = createNativeBackend(2);
const skip = native ? false : `native addon unavailable: ${nativeLoadError()}`;

const rand = seededRandom(12345);
const randomVec = (n: number, scale = 1): Float32Array => randomVecOf(rand, n, scale);
function randomTensor(dtype: DType, rows: number, cols: number): Tensor {
  const values = randomVec(rows * cols);
  if (dtype === 'f32') return { dtype, shape: [rows, cols], data: new Uint8Array(values.buffer) };
  const bits = Uint16Array.from(values, (v) => (dtype === 'f16' ? f32ToF16(v) : f32ToBf16(v)));
  return { dtype, shape: [rows, cols], data: new Uint8Array(bits.buffer) };
}

const sizes: Array<[number, number, number]> = [
  [1, 1, 1],
  [7, 13, 1],
  [33, 65, 3],
  [100, 257, 2],
  [64, 512, 5],
  [3, 1000, 1],
];

for (const dtype of ['f32', 'f16', 'bf16'] as const) {
  test(`matmul and Wᵀx agree with the reference (${dtype})`, { skip }, () => {
    const nb = native as Backend;
    for (const [rows, cols, tokens] of sizes) {
      const w = randomTensor(dtype, rows, cols);
      const x = randomVec(cols * tokens);
      const yr = new Float32Array(rows * tokens);
      const yn = new Float32Array(rows * tokens);
      ref.matmul(yr, x, w, tokens);
      nb.matmul(yn, x, w, tokens);
      assert.ok(maxRelDiff(yn, yr) < 1e-5, `matmul ${rows}x${cols}x${tokens}: ${maxRelDiff(yn, yr)}`);
      const xt = randomVec(rows * tokens);
      const tr = new Float32Array(cols * tokens);
      const tn = new Float32Array(cols * tokens);
      ref.matmulTransposed(tr, xt, w, tokens);
      nb.matmulTransposed(tn, xt, w, tokens);
      assert.ok(maxRelDiff(tn, tr) < 1e-5, `Wᵀx ${rows}x${cols}x${tokens}: ${maxRelDiff(tn, tr)}`);
    }
  });
}

test('add and copyRows give the reference bits (strided rows, zero rows, too-short arrays refused)', { skip }, () => {
  const nb = native as Backend;
  for (const n of [0, 1, 15, 16, 17, 2048, 4097]) {
    const y0 = randomVec(n, 3);
    const x = randomVec(n, 100);
    const a = Float32Array.from(y0);
    const b = Float32Array.from(y0);
    ref.add(a, x, n);
    nb.add(b, x, n);
    assert.deepEqual(b, a, `add of ${n}`);
  }
  for (const [rows, width, dstStride, srcStride, repeat, repeatStride] of [
    [0, 5, 5, 5, 1, 0],
    [1, 64, 64, 576, 1, 0],
    [37, 64, 3072, 576, 16, 192],
    [5, 7, 9, 7, 1, 0],
    [4, 3, 3, 0, 1, 0],
    [3, 4, 40, 4, 3, 11],
  ] as const) {
    const src = randomVec(Math.max(1, (rows - 1) * srcStride + width));
    const a = new Float32Array(Math.max(1, (rows - 1) * dstStride + (repeat - 1) * repeatStride + width)).fill(-2);
    const b = Float32Array.from(a);
    ref.copyRows(a, src, rows, width, dstStride, srcStride, repeat, repeatStride);
    nb.copyRows(b, src, rows, width, dstStride, srcStride, repeat, repeatStride);
    assert.deepEqual(b, a, `copyRows ${rows}×${width} at ${dstStride}/${srcStride}, ${repeat} times ${repeatStride} apart`);
  }
  assert.throws(() => nb.add(new Float32Array(3), new Float32Array(4), 4), /too short/);
  assert.throws(() => nb.copyRows(new Float32Array(10), new Float32Array(100), 3, 4, 4, 4), /shorter than the shape/);
});

test('rmsNorm and siluMul agree with the reference', { skip }, () => {
  const nb = native as Backend;
  for (const dim of [1, 5, 64, 129]) {
    const w = randomTensor('bf16', 1, dim);
    const norm = { ...w, shape: [dim] };
    const x = randomVec(dim * 3, 4);
    const a = new Float32Array(dim * 3);
    const b = new Float32Array(dim * 3);
    ref.rmsNorm(a, x, norm, 1e-6, 3);
    nb.rmsNorm(b, x, norm, 1e-6, 3);
    assert.ok(maxRelDiff(b, a) < 1e-6);
    const g = randomVec(dim, 10);
    const u = randomVec(dim);
    ref.siluMul(a, g, u, dim);
    nb.siluMul(b, g, u, dim);
    assert.ok(maxRelDiff(b.subarray(0, dim), a.subarray(0, dim)) < 1e-6);
  }
});

/**
 * The same random latent rows as f32 and as f16 pages of `pageRows` rows (the last one partly
 * used), as the latent cache hands them to sharedKvAttention.
 */
function pagedRows(rows: number, width: number, pageRows: number, queries: number) {
  const all32 = randomVec(rows * width);
  const all16 = Uint16Array.from(all32, (x) => f32ToF16(x));
  const paged = <T extends Float32Array | Uint16Array>(all: T): T[] => {
    const pages: T[] = [];
    for (let r = 0; r < rows; r += pageRows) {
      const page = new (all.constructor as new (n: number) => T)(pageRows * width);
      page.set(all.subarray(r * width, Math.min(rows, r + pageRows) * width) as never);
      pages.push(page);
    }
    return pages;
  };
  return [
    sequenceRows('f32', paged(all32), pageRows, width, queries),
    sequenceRows('f16', paged(all16), pageRows, width, queries),
  ];
}

test('attention and shared-KV attention agree with the reference', { skip }, () => {
  const nb = native as Backend;
  for (const [queries, heads, dk, dv, rows] of [
    [1, 1, 3, 2, 1],
    [4, 3, 24, 16, 9],
    [1, 16, 576, 512, 37],
    [5, 2, 9, 7, 5],
    // Past one 128-key chunk: the flash-decoding path (chunks merged by online softmax), a partial
    // last chunk, queries of different lengths in one call.
    [1, 16, 576, 512, 300],
    [3, 4, 40, 32, 700],
    // A value width that is not a whole register panel (37 = 2·16 + 5) past one chunk.
    [2, 3, 45, 37, 150],
    // 128 heads (V2/V3: 21 six-row tiles and a short one) and 5 heads (one padded tile), each over
    // several chunks whose next rows are fetched ahead across pages.
    [2, 128, 72, 64, 260],
    [3, 5, 20, 13, 400],
  ] as const) {
    const contextLengths = Int32Array.from({ length: queries }, (_, t) => rows - queries + t + 1);
    const shape = { queries, heads, contextLengths, scale: 0.17 };
    const q = randomVec(queries * heads * dk);
    const k = randomVec(rows * heads * dk);
    const v = randomVec(rows * heads * dv);
    const a = new Float32Array(queries * heads * dv);
    const b = new Float32Array(queries * heads * dv);
    ref.attention(a, q, k, v, dk, dv, shape);
    nb.attention(b, q, k, v, dk, dv, shape);
    assert.ok(maxRelDiff(b, a) < 1e-5, `attention ${queries}/${heads}/${dk}/${dv}`);

    const width = dk;
    const va = dv <= dk ? dv : dk;
    const qa = randomVec(queries * heads * va);
    const qb = randomVec(queries * heads * (width - va));
    // Pages of 4 rows, the last one partly used.
    for (const kv of pagedRows(rows, width, 4, queries)) {
      const ra = new Float32Array(queries * heads * va);
      const na = new Float32Array(queries * heads * va);
      ref.sharedKvAttention(ra, qa, qb, kv, va, shape);
      nb.sharedKvAttention(na, qa, qb, kv, va, shape);
      assert.ok(maxRelDiff(na, ra) < 1e-5, `shared-kv ${kv.dtype} ${queries}/${heads}/${width}`);
    }
  }
});

// Decode latent attention past one 128-key chunk runs each level's whole-chunk kernel (AVX-512: 8-row
// and 8-head register tiles; AMX: bf16 tiles over split parts of f16 rows). Shapes cross its edges:
// V2-Lite's 16 heads × 576 (a last chunk of 44 rows), 20 heads (a partial 16-head panel), 128
// heads, a width and value width off the 32-column blocks (45, 37), a last chunk of 5 rows, pages
// of 48 rows (a page boundary inside chunks), uneven contexts in one call.
const chunkShapes = [
  [1, 16, 576, 512, 300],
  [2, 20, 72, 64, 261],
  [1, 128, 64, 48, 140],
  [3, 3, 45, 37, 133],
  [2, 16, 576, 512, 129],
] as const;

for (const level of nativeLevels().filter((l) => l.supported)) {
  test(`${level.name}: decode latent attention over key chunks (f32 and f16 rows, partial panels and tiles) agrees with the reference`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const [queries, heads, width, va, rows] of chunkShapes) {
      const contextLengths = Int32Array.from({ length: queries }, (_, t) => rows - 2 * (queries - 1 - t));
      const shape = { queries, heads, contextLengths, scale: 0.13 };
      const qa = randomVec(queries * heads * va);
      const qb = randomVec(queries * heads * (width - va));
      for (const kv of pagedRows(rows, width, 48, queries)) {
        const ra = new Float32Array(queries * heads * va);
        const na = new Float32Array(queries * heads * va);
        ref.sharedKvAttention(ra, qa, qb, kv, va, shape);
        nb.sharedKvAttention(na, qa, qb, kv, va, shape);
        const diff = maxRelDiff(na, ra);
        assert.ok(diff < 1e-5, `${level.name} ${kv.dtype} ${queries}/${heads}/${width}/${va}/${rows}: ${diff}`);
      }
    }
  });

  test(`${level.name}: decode latent attention gives identical bits at 1, 2 and 7 threads (f32 and f16 rows)`, { skip }, () => {
    const [queries, heads, width, va, rows] = [2, 20, 72, 64, 420];
    const shape = { queries, heads, contextLengths: Int32Array.from([rows - 77, rows]), scale: 0.11 };
    const qa = randomVec(queries * heads * va);
    const qb = randomVec(queries * heads * (width - va));
    for (const kv of pagedRows(rows, width, 64, queries)) {
      const outputs = [1, 2, 7].map((threads) => {
        const out = new Float32Array(queries * heads * va);
        createNativeBackend(threads, level.name)!.sharedKvAttention(out, qa, qb, kv, va, shape);
        return out;
      });
      assert.deepEqual(outputs[1], outputs[0], kv.dtype);
      assert.deepEqual(outputs[2], outputs[0], kv.dtype);
    }
  });
}

// Prompt attention runs as register-tiled products per (head, block of 48 queries), each head's
// keys and values packed once over the longest context; the tile is 6 queries × 16 keys or values
// (AVX-512 and AMX: also 6 × 32 over two whole panels). Shapes cross every boundary: one query, a
// partial query block, several blocks, a partial tile, 128 heads (V2/V3), contexts longer than the
// chunk's own queries (up to 1,100 keys), and a query whose context ends long before its block's.
const promptShapes = [
  [1, 1, 1, 1, 1],
  [50, 3, 40, 32, 60],
  [97, 2, 192, 128, 97],
  [7, 128, 24, 16, 20],
  [13, 4, 17, 5, 300],
  [60, 2, 72, 32, 1100],
  [3, 1, 16, 16, 513],
] as const;

for (const level of nativeLevels().filter((l) => l.supported)) {
  test(`${level.name}: prompt attention (query blocks, 128 heads, partial tiles) agrees with the reference`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const [queries, heads, dk, dv, rows] of promptShapes) {
      // Causal lengths, plus one query whose context ends early (a length out of order in its block).
      const contextLengths = Int32Array.from({ length: queries }, (_, t) => (t === queries - 2 ? 1 : rows - queries + t + 1));
      const shape = { queries, heads, contextLengths, scale: 0.13 };
      const q = randomVec(queries * heads * dk);
      const k = randomVec(rows * heads * dk);
      const v = randomVec(rows * heads * dv);
      const a = new Float32Array(queries * heads * dv);
      const b = new Float32Array(queries * heads * dv);
      ref.attention(a, q, k, v, dk, dv, shape);
      nb.attention(b, q, k, v, dk, dv, shape);
      assert.ok(maxRelDiff(b, a) < 1e-5, `${level.name} attention ${queries}/${heads}/${dk}/${dv}/${rows}: ${maxRelDiff(b, a)}`);
    }
  });
}
// Decode attention over the latent rows past one 128-key chunk: f16 and f32 rows read in place by
// the values tiles (6 and 4 heads at a time, a short panel of values), pages of 3 and 64 rows.
for (const level of nativeLevels().filter((l) => l.supported)) {
  test(`${level.name}: shared-KV attention past one chunk (16, 128 and 5 heads, f16 and f32 pages) agrees with the reference`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const [queries, heads, width, va, rows, pageRows] of [
      [1, 16, 576, 512, 300, 64],
      [2, 128, 72, 64, 260, 3],
      [3, 5, 20, 13, 400, 64],
    ] as const) {
      const contextLengths = Int32Array.from({ length: queries }, (_, t) => rows - 2 * (queries - 1 - t));
      const shape = { queries, heads, contextLengths, scale: 0.09 };
      const qa = randomVec(queries * heads * va);
      const qb = randomVec(queries * heads * (width - va));
      for (const kv of pagedRows(rows, width, pageRows, queries)) {
        const a = new Float32Array(queries * heads * va);
        const b = new Float32Array(queries * heads * va);
        ref.sharedKvAttention(a, qa, qb, kv, va, shape);
        nb.sharedKvAttention(b, qa, qb, kv, va, shape);
        assert.ok(maxRelDiff(b, a) < 1e-5, `${level.name} shared-kv ${kv.dtype} ${queries}/${heads}/${width}/${va}/${rows}: ${maxRelDiff(b, a)}`);
      }
    }
  });
}
for (const level of nativeLevels().filter((l) => l.supported)) {
  test(`${level.name}: siluMul agrees with the reference from −100 to 100 (exp clamped, odd lengths)`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    for (const n of [1, 7, 8, 1001]) {
      const g = Float32Array.from({ length: n }, (_, i) => (n === 1 ? 95 : -100 + (200 * i) / (n - 1)));
      const u = randomVec(n);
      const a = new Float32Array(n);
      const b = new Float32Array(n);
      ref.siluMul(a, g, u, n);
      nb.siluMul(b, g, u, n);
      for (let i = 0; i < n; i++) {
        assert.ok(Math.abs(b[i]! - a[i]!) <= 1e-6 * Math.abs(a[i]!) + 1e-30, `${level.name} silu(${g[i]}) ${b[i]} vs ${a[i]}`);
      }
    }
    // A NaN gate stays NaN (a clamp must not turn it into a number).
    const g = Float32Array.from({ length: 9 }, (_, i) => (i === 4 ? NaN : 1));
    const y = new Float32Array(9);
    nb.siluMul(y, g, new Float32Array(9).fill(1), 9);
    assert.ok(Number.isNaN(y[4]) && Number.isFinite(y[3]!), `${level.name}: NaN in, NaN out`);
  });
}
createNativeBackend(2);

for (const level of nativeLevels().filter((l) => l.supported)) {
  test(`${level.name}: attention keeps a NaN score NaN (the vectorised exp does not clamp it away)`, { skip }, () => {
    const nb = createNativeBackend(2, level.name)!;
    const [dk, dv, rows] = [8, 4, 16]; // whole 8-lane vectors: no scalar tail to carry the NaN
    const q = randomVec(dk);
    q[3] = NaN;
    const out = new Float32Array(dv);
    nb.attention(out, q, randomVec(rows * dk), randomVec(rows * dv), dk, dv, { queries: 1, heads: 1, contextLengths: Int32Array.of(rows), scale: 1 });
    assert.ok(out.every((v) => Number.isNaN(v)), `${level.name}: ${out}`);
  });
}
createNativeBackend(2);

test('prompt attention and many-token Wᵀx give identical bits at 1, 2 and 7 threads', { skip }, () => {
  const [queries, heads, dk, dv, rows] = [61, 5, 40, 24, 80];
  const shape = { queries, heads, contextLengths: Int32Array.from({ length: queries }, (_, t) => rows - queries + t + 1), scale: 0.2 };
  const q = randomVec(queries * heads * dk);
  const k = randomVec(rows * heads * dk);
  const v = randomVec(rows * heads * dv);
  const w = randomTensor('f16', 130, 70);
  const xt = randomVec(130 * 23);
  const outputs = [1, 2, 7].map((threads) => {
    const nb = createNativeBackend(threads) as Backend;
    const o = new Float32Array(queries * heads * dv);
    nb.attention(o, q, k, v, dk, dv, shape);
    const y = new Float32Array(70 * 23);
    nb.matmulTransposed(y, xt, w, 23);
    return [o, y];
  });
  assert.deepEqual(outputs[1], outputs[0]);
  assert.deepEqual(outputs[2], outputs[0]);
  createNativeBackend(2);
});

test('Wᵀx of a token in a batch of 23 equals the same token alone', { skip }, () => {
  const nb = native as Backend;
  for (const dtype of ['f32', 'f16'] as const) {
    const w = randomTensor(dtype, 130, 70);
    const xt = randomVec(130 * 23);
    const batch = new Float32Array(70 * 23);
    nb.matmulTransposed(batch, xt, w, 23);
    for (const t of [0, 5, 22]) {
      const alone = new Float32Array(70);
      nb.matmulTransposed(alone, xt.subarray(t * 130, (t + 1) * 130), w, 1);
      assert.deepEqual(alone, batch.subarray(t * 70, (t + 1) * 70), `${dtype} token ${t}`);
    }
  }
});

test('results do not depend on the thread count', { skip }, () => {
  const w = randomTensor('f16', 301, 77);
  const x = randomVec(77 * 4);
  const outputs = [1, 2, 7].map((threads) => {
    const nb = createNativeBackend(threads) as Backend;
    const y = new Float32Array(301 * 4);
    nb.matmul(y, x, w, 4);
    return y;
  });
  assert.deepEqual(outputs[1], outputs[0]);
  assert.deepEqual(outputs[2], outputs[0]);
  createNativeBackend(2);
});

test('the addon rejects calls whose arrays are shorter than the shape', { skip }, () => {
  const nb = native as Backend;
  const w = randomTensor('f32', 4, 4);
  assert.throws(() => nb.matmul(new Float32Array(3), new Float32Array(4), w, 1), RangeError);
  assert.throws(
    () =>
      nb.attention(new Float32Array(2), new Float32Array(2), new Float32Array(2), new Float32Array(2), 2, 2, {
        queries: 1,
        heads: 1,
        contextLengths: Int32Array.of(5),
        scale: 1,
      }),
    RangeError,
  );
});

/** |W| of a block-quantised tensor as f32: the weights each output's terms are made of. */
function absoluteWeights(w: Tensor, rows: number, cols: number): Tensor {
  const dtype = w.dtype as (typeof blockTypes)[number];
  const out = new Float32Array(rows * cols);
  const stride = rowBytes(dtype, cols);
  for (let r = 0; r < rows; r++) dequantizeRow(dtype, w.data.subarray(r * stride, (r + 1) * stride), cols, out, r * cols);
  for (let i = 0; i < out.length; i++) out[i] = Math.abs(out[i]!);
  return { dtype: 'f32', shape: [rows, cols], data: new Uint8Array(out.buffer) };
}

const blockTypes = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const;

for (const dtype of blockTypes) {
  test(`block-quantised ${dtype}: matmul and Wᵀx agree with the reference (8-bit activations)`, { skip }, () => {
    const nb = native as Backend;
    const per = blockSize(dtype);
    for (const [rows, blocks, tokens] of [
      [1, 1, 1],
      [7, 3, 2],
      [37, 2, 5],
      [9, 2, 13], // 8 + 4 + 1 tokens: every token tile
    ] as const) {
      const cols = blocks * per;
      const values = randomVec(rows * cols);
      const data = new Uint8Array(rowBytes(dtype, cols) * rows);
      for (let r = 0; r < rows; r++) quantizeRow(dtype, values.subarray(r * cols, (r + 1) * cols), data.subarray(r * rowBytes(dtype, cols)));
      const w: Tensor = { dtype, shape: [rows, cols], data };
      const x = randomVec(cols * tokens, 3);
      const yr = new Float32Array(rows * tokens);
      const yn = new Float32Array(rows * tokens);
      ref.matmul(yr, x, w, tokens);
      nb.matmul(yn, x, w, tokens);
      // One row and one token can cancel to near zero: judge by the terms' magnitudes (|W|·|x|).
      const magnitudes = absoluteWeights(w, rows, cols);
      const ya = new Float32Array(rows * tokens);
      ref.matmul(ya, x.map(Math.abs), magnitudes, tokens);
      const err = maxDiffOverTermSums(yn, yr, ya);
      assert.ok(err < 1e-5, `${dtype} matmul ${rows}x${cols}x${tokens}: ${err}`);
      const xt = randomVec(rows * tokens);
      const tr = new Float32Array(cols * tokens);
      const tn = new Float32Array(cols * tokens);
      ref.matmulTransposed(tr, xt, w, tokens);
      nb.matmulTransposed(tn, xt, w, tokens);
      const ta = new Float32Array(cols * tokens);
      ref.matmulTransposed(ta, xt.map(Math.abs), magnitudes, tokens);
      const errT = maxDiffOverTermSums(tn, tr, ta);
      assert.ok(errT < 1e-5, `${dtype} Wᵀx ${rows}x${cols}x${tokens}: ${errT}`);
    }
  });
}
