import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatentCache } from '../../src/cache/latentCache.js';
import { ContextLengthExceededError } from '../../src/errors.js';
import { CacheFullError, PagePool } from '../../src/cache/pagePool.js';

test('rows round-trip across pages', () => {
  const cache = new LatentCache({ layers: 2, width: 5, maxTokens: 100, pageTokens: 2 });
  const row = new Float32Array(5);
  for (let pos = 0; pos < 9; pos++) {
    cache.reserve(1);
    for (let l = 0; l < 2; l++) {
      row.forEach((_, i) => (row[i] = pos * 100 + l * 10 + i));
      cache.writeRow(l, pos, row, 0);
    }
    cache.commit(1);
  }
  assert.equal(cache.length, 9);
  assert.equal(cache.valueCount, 9 * 2 * 5);
  const out = new Float32Array(9 * 5);
  cache.readRows(1, 0, 9, out);
  for (let pos = 0; pos < 9; pos++) for (let i = 0; i < 5; i++) assert.equal(out[pos * 5 + i], pos * 100 + 10 + i);
});

test('f16 storage rounds to half precision and halves the bytes', () => {
  const f16 = new LatentCache({ layers: 1, width: 3, maxTokens: 4, dtype: 'f16' });
  const f32 = new LatentCache({ layers: 1, width: 3, maxTokens: 4 });
  assert.equal(f16.bytesPerToken * 2, f32.bytesPerToken);
  f16.reserve(1);
  f16.writeRow(0, 0, Float64Array.of(1, 1 / 3, -65504), 0);
  f16.commit(1);
  const out = new Float64Array(3);
  f16.readRows(0, 0, 1, out);
  assert.equal(out[0], 1);
  assert.ok(Math.abs(out[1]! - 1 / 3) < 2e-4 && out[1] !== 1 / 3);
  assert.equal(out[2], -65504);
});

test('the context window is enforced with a typed error', () => {
  const cache = new LatentCache({ layers: 1, width: 2, maxTokens: 3 });
  cache.reserve(3);
  cache.commit(3);
  assert.throws(() => cache.reserve(1), ContextLengthExceededError);
  cache.truncate(1);
  assert.equal(cache.length, 1);
  cache.reserve(2);
});

test('sequences share the full pages of a common prefix and never write into them', () => {
  const pool = new PagePool({ layers: 1, width: 2, pageTokens: 2, dtype: 'f32', maxPages: 4 });
  const a = new LatentCache({ layers: 1, width: 2, maxTokens: 8, pool });
  a.reserve(4);
  for (let pos = 0; pos < 4; pos++) a.writeRow(0, pos, Float32Array.of(pos, -pos), 0);
  a.commit(4);
  assert.equal(pool.pagesInUse, 2);
  const b = new LatentCache({ layers: 1, width: 2, maxTokens: 8, pool });
  for (const p of a.pageList) pool.retain(p);
  b.adoptPrefix(a.pageList.slice(0, 2));
  assert.equal(b.length, 4);
  assert.equal(pool.pagesInUse, 2, 'shared, not copied');
  assert.throws(() => b.writeRow(0, 3, Float32Array.of(9, 9), 0), RangeError);
  b.reserve(1);
  b.writeRow(0, 4, Float32Array.of(4, -4), 0);
  b.commit(1);
  assert.equal(pool.pagesInUse, 3);
  const out = new Float32Array(10);
  b.readRows(0, 0, 5, out);
  assert.deepEqual(Array.from(out), [0, -0, 1, -1, 2, -2, 3, -3, 4, -4]);
  // The budget: a fourth page fits, a fifth does not.
  const c = new LatentCache({ layers: 1, width: 2, maxTokens: 8, pool });
  c.reserve(2);
  assert.throws(() => c.reserve(3), CacheFullError);
  a.release();
  b.release();
  c.release();
  assert.equal(pool.pagesInUse, 0);
});
