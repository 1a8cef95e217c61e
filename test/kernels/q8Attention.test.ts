/**
 * Shared-KV (absorbed MLA) attention over q8 latent rows: the native kernel (kernels.c, kvtype 2)
 * against the TypeScript reference on random shapes, and the same bits at 1, 2 and 7 threads.
 * The rows are written through LatentCache, so the pages are exactly what the engine hands over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxRelDiff, randomVec as randomVecOf, seededRandom } from './helpers.js';
import { createNativeBackend, nativeLevels, nativeLoadError } from '../../src/kernels/native/index.js';
import { quantizeQ8Query, referenceBackend as ref } from '../../src/kernels/reference/index.js';
import { sequenceRows, type Backend, type SharedKvRows } from '../../src/kernels/backend.js';
import { LatentCache } from '../../src/cache/latentCache.js';

const native = createNativeBackend(2);
const skip = native ? false : `native addon unavailable: ${nativeLoadError()}`;

const rand = seededRandom(4242);
const randomVec = (n: number, scale = 1): Float32Array => randomVecOf(rand, n, scale);

/** `rows` random latent rows in a q8 LatentCache of `pageRows`-token pages (the last page partly used). */
function q8Rows(rows: number, width: number, pageRows: number, queries: number): { kv: SharedKvRows; cache: LatentCache } {
  const cache = new LatentCache({ layers: 1, width, maxTokens: rows, pageTokens: pageRows, dtype: 'q8' });
  const x = randomVec(rows * width, 2);
  cache.reserve(rows);
  for (let pos = 0; pos < rows; pos++) cache.writeRow(0, pos, x, pos * width);
  cache.commit(rows);
  return { kv: cache.rows(0, queries), cache };
}

/** Each (query, head)'s [qa | qb] row rounded to 8 bits per block of 32, as the q8 path rounds it. */
function roundedQueries(qa: Float32Array, qb: Float32Array, rows: number, width: number, va: number): [Float32Array, Float32Array] {
  const a = new Float32Array(qa.length);
  const b = new Float32Array(qb.length);
  const row = new Float64Array(width);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < va; i++) row[i] = qa[r * va + i]!;
    for (let i = va; i < width; i++) row[i] = qb[r * (width - va) + i - va]!;
    quantizeQ8Query(row, width);
    for (let i = 0; i < va; i++) a[r * va + i] = row[i]!;
    for (let i = va; i < width; i++) b[r * (width - va) + i - va] = row[i]!;
  }
  return [a, b];
}

test('q8 shared-KV attention: native agrees with the reference (128 heads, page boundaries, one token, uneven contexts)', { skip }, () => {
  const nb = native as Backend;
  // [queries, heads, width, valueWidth, rows, pageRows, contexts (default: the last `queries` lengths)]
  const cases: Array<[number, number, number, number, number, number, number[]?]> = [
    [1, 1, 32, 16, 1, 64], // one token
    [1, 128, 576, 512, 1, 64], // one token, V2's 128 heads
    [1, 128, 576, 512, 130, 64], // V2: three pages, the flash-decoding path (two 128-key chunks)
    [3, 16, 576, 512, 65, 64, [1, 64, 65]], // one row past a page boundary; one token, a full page, and one more
    [4, 3, 40, 32, 9, 4, [9, 2, 7, 5]], // width not a multiple of 32: a short last block (8 values)
    [2, 5, 72, 64, 300, 64, [300, 129]], // uneven lengths across chunks
    [5, 2, 33, 31, 50, 16, [50, 1, 17, 16, 33]], // value width not a multiple of 32; pages of 16
    [2, 17, 33, 31, 260, 16, [260, 131]], // a one-value last block and a second panel of one head, over chunks
  ];
  for (const [queries, heads, width, va, rows, pageRows, ctx] of cases) {
    const contextLengths = Int32Array.from(ctx ?? Array.from({ length: queries }, (_, t) => rows - queries + t + 1));
    const shape = { queries, heads, contextLengths, scale: 0.13 };
    const qa = randomVec(queries * heads * va);
    const qb = randomVec(queries * heads * (width - va));
    const { kv, cache } = q8Rows(rows, width, pageRows, queries);
    const ra = new Float32Array(queries * heads * va);
    const na = new Float32Array(queries * heads * va);
    ref.sharedKvAttention(ra, qa, qb, kv, va, shape);
    nb.sharedKvAttention(na, qa, qb, kv, va, shape);
    const diff = maxRelDiff(na, ra);
    assert.ok(diff < 1e-5, `q8 shared-kv ${queries}/${heads}/${width}/${va} over ${rows} rows: ${diff}`);
    // And the same as f32 rows holding the dequantised values, given the queries rounded to 8 bits
    // as the q8 path rounds them: q8 changes the rows and the queries, not the operation.
    const [qa8, qb8] = roundedQueries(qa, qb, queries * heads, width, va);
    const f32 = new LatentCache({ layers: 1, width, maxTokens: rows, pageTokens: pageRows, dtype: 'f32' });
    const deq = new Float32Array(rows * width);
    cache.readRows(0, 0, rows, deq);
    f32.reserve(rows);
    for (let pos = 0; pos < rows; pos++) f32.writeRow(0, pos, deq, pos * width);
    f32.commit(rows);
    const fa = new Float32Array(queries * heads * va);
    nb.sharedKvAttention(fa, qa8, qb8, f32.rows(0, queries), va, shape);
    assert.ok(maxRelDiff(na, fa) < 1e-5, `q8 equals f32 over the dequantised rows and rounded queries (${queries}/${heads}/${width})`);
  }
});

test('q8 shared-KV attention gives identical bits at 1, 2 and 7 threads (one chunk and several)', { skip }, () => {
  for (const [queries, heads, width, va, rows, ctx] of [
    [2, 128, 576, 512, 200, [200, 71]],
    [3, 8, 72, 64, 60, [60, 1, 33]], // every context within one chunk: the per-(query, head) loop
    [2, 4, 40, 32, 500, [423, 500]],
  ] as Array<[number, number, number, number, number, number[]]>) {
    const shape = { queries, heads, contextLengths: Int32Array.from(ctx), scale: 0.11 };
    const qa = randomVec(queries * heads * va);
    const qb = randomVec(queries * heads * (width - va));
    const { kv } = q8Rows(rows, width, 64, queries);
    const outputs = [1, 2, 7].map((threads) => {
      const out = new Float32Array(queries * heads * va);
      createNativeBackend(threads)!.sharedKvAttention(out, qa, qb, kv, va, shape);
      return out;
    });
    assert.deepEqual(outputs[1], outputs[0], `2 threads, ${heads} heads, ${rows} rows`);
    assert.deepEqual(outputs[2], outputs[0], `7 threads, ${heads} heads, ${rows} rows`);
  }
  createNativeBackend(2);
});

test('q8 shared-KV attention agrees with the reference at every kernel level this CPU runs', { skip }, () => {
  const levels = nativeLevels().filter((l) => l.supported).map((l) => l.name);
  for (const [queries, heads, width, va, rows, ctx] of [
    [2, 128, 576, 512, 150, [150, 64]],
    [3, 4, 40, 32, 50, [50, 1, 33]],
  ] as Array<[number, number, number, number, number, number[]]>) {
    const shape = { queries, heads, contextLengths: Int32Array.from(ctx), scale: 0.09 };
    const qa = randomVec(queries * heads * va);
    const qb = randomVec(queries * heads * (width - va));
    const { kv } = q8Rows(rows, width, 64, queries);
    const expected = new Float32Array(queries * heads * va);
    ref.sharedKvAttention(expected, qa, qb, kv, va, shape);
    for (const level of levels) {
      const out = new Float32Array(queries * heads * va);
      createNativeBackend(2, level)!.sharedKvAttention(out, qa, qb, kv, va, shape);
      assert.ok(maxRelDiff(out, expected) < 1e-5, `${level}: ${heads} heads over ${rows} rows`);
    }
  }
  createNativeBackend(2);
});

test('the addon refuses q8 pages shorter than pageRows rows of blocks', { skip }, () => {
  const nb = native as Backend;
  const width = 40; // 44 bytes a row
  const kv = sequenceRows('q8', [new Uint8Array(4 * 44 - 1)], 4, width, 1);
  const shape = { queries: 1, heads: 1, contextLengths: Int32Array.of(2), scale: 1 };
  assert.throws(() => nb.sharedKvAttention(new Float32Array(32), new Float32Array(32), new Float32Array(8), kv, 32, shape), RangeError);
  const mixed = sequenceRows('q8', [new Uint8Array(4 * 44), new Uint16Array(4 * 40)], 4, width, 1);
  assert.throws(() => nb.sharedKvAttention(new Float32Array(32), new Float32Array(32), new Float32Array(8), mixed, 32, shape), RangeError);
});
