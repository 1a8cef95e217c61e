/**
 * One latent attention call for a whole batch: sequences of one page pool, addressed through a
 * block table into the pool's slab (batchRows), against one call per sequence (the form before it).
 * Pages are allocated interleaved and released out of order so that no sequence's pages are in
 * slab order, and two sequences share a prefix page, as the scheduler's prefix cache makes them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxRelDiff, randomVec as randomVecOf, seededRandom } from '../kernels/helpers.js';
import { createNativeBackend, nativeLoadError } from '../../src/kernels/native/index.js';
import { referenceBackend as ref } from '../../src/kernels/reference/index.js';
import type { Backend } from '../../src/kernels/backend.js';
import { batchRows, LatentCache, type BatchPart } from '../../src/cache/latentCache.js';
import { PagePool, type LatentCacheDType } from '../../src/cache/pagePool.js';

const native = createNativeBackend(2);
const skip = native ? false : `native addon unavailable: ${nativeLoadError()}`;
const rand = seededRandom(913);
const randomVec = (n: number, scale = 1): Float32Array => randomVecOf(rand, n, scale);

/**
 * Sequences of `lengths` tokens of random rows in one pool of `pageTokens`-token pages, their
 * pages allocated round-robin; the second sequence starts from the first one's first page.
 */
function batchOf(dtype: LatentCacheDType, width: number, pageTokens: number, lengths: readonly number[], layers = 2) {
  const pool = new PagePool({ layers, width, pageTokens, dtype, maxPages: 64 });
  // Pages taken and given back first, so the free list hands ids out of order.
  const scratch = Array.from({ length: 5 }, () => pool.allocate());
  for (const p of [scratch[3]!, scratch[0]!, scratch[4]!, scratch[1]!, scratch[2]!]) pool.release(p);
  const caches = lengths.map(() => new LatentCache({ pool, maxTokens: 4096 }));
  const shared = lengths.length > 1 && lengths[0]! >= pageTokens && lengths[1]! >= pageTokens;
  const rows = randomVec(lengths[0]! * width);
  const write = (cache: LatentCache, from: number, to: number, values: Float32Array) => {
    for (let l = 0; l < layers; l++) for (let pos = from; pos < to; pos++) cache.writeRow(l, pos, values, (pos - from) * width);
  };
  // Round-robin page allocation: reserve one page's worth per sequence in turn.
  const filled = lengths.map(() => 0);
  if (shared) {
    caches[0]!.reserve(pageTokens);
    write(caches[0]!, 0, pageTokens, rows);
    caches[0]!.commit(pageTokens);
    const page = caches[0]!.pageList[0]!;
    pool.retain(page);
    caches[1]!.adoptPrefix([page]);
    filled[0] = filled[1] = pageTokens;
  }
  for (let more = true; more; ) {
    more = false;
    caches.forEach((cache, s) => {
      const n = Math.min(pageTokens, lengths[s]! - filled[s]!);
      if (n <= 0) return;
      cache.reserve(n);
      write(cache, filled[s]!, filled[s]! + n, randomVec(n * width));
      cache.commit(n);
      filled[s]! += n;
      more = true;
    });
  }
  return { pool, caches };
}

const cases: Array<{ dtype: LatentCacheDType; heads: number; width: number; va: number; pageTokens: number; lengths: number[]; queries: number[] }> = [
  // decode of 4 sequences, uneven, one of them past one 128-key chunk (the flash-decoding path)
  { dtype: 'f16', heads: 16, width: 576, va: 512, pageTokens: 64, lengths: [130, 70, 1, 300], queries: [1, 1, 1, 1] },
  // 128 heads (V2/V3), pages of 3 rows, a chunk of 3 queries in the middle of the batch
  { dtype: 'f32', heads: 128, width: 72, va: 64, pageTokens: 3, lengths: [20, 9, 140], queries: [1, 3, 2] },
  { dtype: 'q8', heads: 5, width: 40, va: 32, pageTokens: 16, lengths: [33, 17, 260], queries: [2, 1, 1] },
];

/** The batch's queries and each query's context: a part's q queries end at its sequence's length. */
function shapeOf(lengths: readonly number[], queries: readonly number[], heads: number) {
  const contextLengths = Int32Array.from(lengths.flatMap((n, s) => Array.from({ length: queries[s]! }, (_, i) => n - queries[s]! + 1 + i)));
  return { queries: contextLengths.length, heads, contextLengths, scale: 0.1 };
}

for (const backend of [
  ['reference', ref],
  ['native', native],
] as const) {
  test(`${backend[0]}: one shared-KV call over a block table of 3–4 sequences (uneven, a shared prefix page, pages out of slab order) equals one call per sequence`, { skip: backend[1] ? false : skip }, () => {
    const b = backend[1] as Backend;
    for (const c of cases) {
      const { caches } = batchOf(c.dtype, c.width, c.pageTokens, c.lengths);
      const ids = caches.flatMap((cache) => cache.pageList.map((p) => p.id));
      assert.ok(
        ids.some((id, i) => i > 0 && id < ids[i - 1]!),
        'some page ids are out of slab order',
      );
      const shape = shapeOf(c.lengths, c.queries, c.heads);
      const T = shape.queries;
      const qa = randomVec(T * c.heads * c.va);
      const qb = randomVec(T * c.heads * (c.width - c.va));
      const parts: BatchPart[] = caches.map((cache, s) => ({ cache, queries: c.queries[s]! }));
      const layer = 1;
      const batched = new Float32Array(T * c.heads * c.va);
      b.sharedKvAttention(batched, qa, qb, batchRows(caches[0]!.pool, layer, parts), c.va, shape);
      const alone = new Float32Array(T * c.heads * c.va);
      let t = 0;
      caches.forEach((cache, s) => {
        const q = c.queries[s]!;
        const [a, z] = [t * c.heads, (t + q) * c.heads];
        const part = { ...shape, queries: q, contextLengths: shape.contextLengths.subarray(t, t + q) };
        b.sharedKvAttention(alone.subarray(a * c.va, z * c.va), qa.subarray(a * c.va, z * c.va), qb.subarray(a * (c.width - c.va), z * (c.width - c.va)), cache.rows(layer, q), c.va, part);
        t += q;
      });
      assert.deepEqual(batched, alone, `${c.dtype} ${c.heads} heads, lengths ${c.lengths}`);
      if (backend[0] === 'native') {
        const expected = new Float32Array(T * c.heads * c.va);
        ref.sharedKvAttention(expected, qa, qb, batchRows(caches[0]!.pool, layer, parts), c.va, shape);
        assert.ok(maxRelDiff(batched, expected) < 1e-5, `${c.dtype}: native against the reference ${maxRelDiff(batched, expected)}`);
      }
    }
  });
}

test('one shared-KV call over a block table gives identical bits at 1, 2 and 7 threads', { skip }, () => {
  for (const c of cases) {
    const { caches } = batchOf(c.dtype, c.width, c.pageTokens, c.lengths);
    const shape = shapeOf(c.lengths, c.queries, c.heads);
    const qa = randomVec(shape.queries * c.heads * c.va);
    const qb = randomVec(shape.queries * c.heads * (c.width - c.va));
    const kv = batchRows(caches[0]!.pool, 0, caches.map((cache, s) => ({ cache, queries: c.queries[s]! })));
    const outputs = [1, 2, 7].map((threads) => {
      const out = new Float32Array(shape.queries * c.heads * c.va);
      createNativeBackend(threads)!.sharedKvAttention(out, qa, qb, kv, c.va, shape);
      return out;
    });
    assert.deepEqual(outputs[1], outputs[0], `${c.dtype}: 2 threads`);
    assert.deepEqual(outputs[2], outputs[0], `${c.dtype}: 7 threads`);
  }
  createNativeBackend(2);
});

test('the addon and the reference refuse a block table that names a page past the slab or gives a query too few pages', { skip }, () => {
  const { caches } = batchOf('f16', 40, 4, [10]);
  const kv = caches[0]!.rows(0, 1);
  const shape = { queries: 1, heads: 2, contextLengths: Int32Array.of(10), scale: 1 };
  const run = (b: Backend, rows: typeof kv) => b.sharedKvAttention(new Float32Array(64), new Float32Array(64), new Float32Array(16), rows, 32, shape);
  const pastSlab = { ...kv, blockTable: Int32Array.of(kv.blockTable[0]!, 64, kv.blockTable[2]!) };
  const tooFew = { ...kv, blockTable: kv.blockTable.subarray(0, 2) };
  const negative = { ...kv, queryPages: Int32Array.of(-1) };
  for (const rows of [pastSlab, tooFew, negative]) {
    assert.throws(() => run(native as Backend, rows), /block table/);
    assert.throws(() => run(ref, rows), /block table/);
  }
  assert.doesNotThrow(() => run(native as Backend, kv));
});

test('a bounded pool keeps each layer in one slab; an unbounded one grows by segments; a page is its slab rows', () => {
  const bounded = new PagePool({ layers: 3, width: 8, pageTokens: 4, dtype: 'f16', maxPages: 10 });
  const pages = Array.from({ length: 10 }, () => bounded.allocate());
  assert.equal(bounded.segmentPages, 10);
  for (let l = 0; l < 3; l++) {
    assert.equal(bounded.slab(l).length, 1);
    assert.equal(bounded.slab(l)[0]!.length, 10 * 4 * 8);
  }
  const p = pages[7]!;
  p.layers[2]![5] = 0x3c00;
  assert.equal(bounded.slab(2)[0]![p.id * 32 + 5], 0x3c00, 'page views are rows of the slab');
  assert.ok(p.layers[2]!.buffer instanceof SharedArrayBuffer);

  const unbounded = new PagePool({ layers: 1, width: 8, pageTokens: 4, dtype: 'q8', maxPages: Infinity });
  const first = unbounded.slab(0);
  for (let i = 0; i < unbounded.segmentPages + 1; i++) unbounded.allocate();
  assert.equal(unbounded.slab(0).length, 2, 'one more page than a segment adds a segment');
  assert.equal(unbounded.slab(0), first, 'the slab array grows in place');
  assert.throws(() => bounded.slab(3), /no layer 3/);
});
