/**
 * The 8-bit latent cache (--cache-type q8): rows stored as ggml Q8_0 blocks (an f16 scale and 32
 * int8 per 32 values), quantised in writeRow, dequantised by readRows and the attention kernels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatentCache } from '../../src/cache/latentCache.js';
import { CACHE_TYPES, PagePool, parseCacheType, rowBytes } from '../../src/cache/pagePool.js';
import { decodePage, encodePage, payloadBytes, type PageMeta } from '../../src/cache/pageCodec.js';
import { q8RowBytes, q8Scale } from '../../src/kernels/q8Row.js';
import { InvalidInputError } from '../../src/errors.js';
import { seededRandom } from '../kernels/helpers.js';

/** Rows with the spread of real latents: most values O(1), a few outliers, some tiny blocks. */
function randomRows(rows: number, width: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const x = new Float32Array(rows * width);
  for (let i = 0; i < x.length; i++) {
    const u = rand() * 2; // uniform in [-1, 1)
    const block = Math.floor((i % width) / 32);
    x[i] = block % 5 === 3 ? u * 1e-4 : rand() < 0.01 ? u * 40 : u * 3; // tiny blocks have subnormal f16 scales
  }
  x[7] = 0; // an exact zero survives
  return x;
}

for (const width of [576, 40, 31, 32, 5]) {
  test(`q8 rows round-trip within d/2 per value (width ${width}, last block ${width % 32 || 32} values)`, () => {
    const rows = 70; // past one 64-token page
    const cache = new LatentCache({ layers: 2, width, maxTokens: 100, dtype: 'q8' });
    const x = randomRows(rows, width, width);
    cache.reserve(rows);
    for (let l = 0; l < 2; l++) for (let pos = 0; pos < rows; pos++) cache.writeRow(l, pos, x, pos * width);
    cache.commit(rows);
    const out = new Float32Array(rows * width);
    cache.readRows(1, 0, rows, out);
    const stride = q8RowBytes(width);
    let worst = 0;
    for (let pos = 0; pos < rows; pos++) {
      const page = cache.pageList[Math.floor(pos / 64)]!.layers[1] as Uint8Array;
      for (let i = 0; i < width; i++) {
        const d = q8Scale(page, (pos % 64) * stride, i);
        const err = Math.abs(out[pos * width + i]! - x[pos * width + i]!);
        // d/2 in real arithmetic; the f32 input and f32 output add at most an ulp of the value.
        assert.ok(err <= d / 2 + Math.abs(x[pos * width + i]!) * 2 ** -23, `row ${pos} value ${i}: |error| ${err} > d/2 = ${d / 2}`);
        worst = Math.max(worst, d > 0 ? err / d : 0);
      }
    }
    assert.ok(worst > 0.4, 'the bound is tight, not vacuous');
    assert.equal(out[7], 0);
    // The same dequantised values through rows() as the kernels read them.
    const kv = cache.rows(1);
    assert.equal(kv.dtype, 'q8');
    assert.ok(kv.segments.every((p) => p instanceof Uint8Array && p.length === cache.pool.segmentPages * 64 * stride));
    assert.deepEqual([...kv.blockTable], cache.pageList.map((p) => p.id));
  });
}

test('q8 bytes per token: 34 per 32 values, 612 per V2 row, 16,524 per V2-Lite token (f16: 31,104)', () => {
  assert.equal(rowBytes(576, 'q8'), 612);
  assert.equal(rowBytes(576, 'f16'), 1152);
  assert.equal(rowBytes(40, 'q8'), 2 * 34 - 32 + 8, 'a short last block: its scale and 8 values');
  assert.equal(rowBytes(40, 'q8'), 44);
  const lite = (dtype: 'q8' | 'f16' | 'f32') => new LatentCache({ layers: 27, width: 512 + 64, maxTokens: 64, dtype }).bytesPerToken;
  assert.equal(lite('q8'), 16_524);
  assert.equal(lite('f16'), 31_104);
  assert.equal(lite('f32'), 62_208);
  const pool = new PagePool({ layers: 27, width: 576, pageTokens: 64, dtype: 'q8', maxPages: 2 });
  assert.equal(pool.bytesPerPage, 16_524 * 64);
  const page = pool.allocate();
  assert.equal(page.layers.length, 27);
  assert.ok(page.layers.every((l) => l instanceof Uint8Array && l.byteLength === 612 * 64 && l.buffer instanceof SharedArrayBuffer));
  assert.equal(payloadBytes({ layers: 27, width: 576, pageTokens: 64, dtype: 'q8' }), 16_524 * 64);
});

test('an all-zero row and huge values stay finite; truncating a shared q8 page copies its bytes', () => {
  const cache = new LatentCache({ layers: 1, width: 33, maxTokens: 8, pageTokens: 4, dtype: 'q8' });
  cache.reserve(2);
  cache.writeRow(0, 0, new Float32Array(33), 0);
  const big = new Float32Array(33).fill(1e30);
  big[32] = -3e38;
  cache.writeRow(0, 1, big, 0);
  cache.commit(2);
  const out = new Float32Array(66);
  cache.readRows(0, 0, 2, out);
  assert.ok(out.subarray(0, 33).every((v) => v === 0));
  assert.ok(out.every(Number.isFinite), 'a scale past f16 is clamped to 65504, not infinite');
  assert.equal(out[33 + 32], -65504 * 127);
  // A copy on truncate keeps the bytes.
  const pool = cache.pool;
  pool.retain(cache.pageList[0]!);
  cache.truncate(1);
  const again = new Float32Array(33);
  cache.readRows(0, 0, 1, again);
  assert.ok(again.every((v) => v === 0));
});

test('cache types: f16, f32 and q8; anything else is an InvalidInputError naming them', () => {
  assert.deepEqual([...CACHE_TYPES], ['f16', 'f32', 'q8']);
  for (const t of CACHE_TYPES) assert.equal(parseCacheType(t, '--cache-type'), t);
  for (const bad of ['q4', 'F16', '', 'f64', undefined, 8]) {
    assert.throws(
      () => parseCacheType(bad, '--cache-type'),
      (e: unknown) => e instanceof InvalidInputError && e.message === `--cache-type: must be f16, f32 or q8, got ${String(bad)}` && !e.message.includes('\n'),
    );
  }
});

test('a q8 page is never served to an f16 cache, nor an f16 page to a q8 one', () => {
  const base = { fingerprint: 'f'.repeat(64), key: 'k'.repeat(64), layers: 2, width: 40, pageTokens: 4 };
  const q8: PageMeta = { ...base, dtype: 'q8' };
  const f16: PageMeta = { ...base, dtype: 'f16' };
  const pool = new PagePool({ layers: 2, width: 40, pageTokens: 4, dtype: 'q8', maxPages: 1 });
  const page = pool.allocate();
  const bytes = encodePage(q8, page.layers);
  assert.equal(decodePage(bytes, q8).ok, true);
  const refused = decodePage(bytes, f16);
  assert.equal(refused.ok, false);
  assert.match((refused as { problem: string }).problem, /type/);
  const f16Pool = new PagePool({ layers: 2, width: 40, pageTokens: 4, dtype: 'f16', maxPages: 1 });
  const f16Bytes = encodePage(f16, f16Pool.allocate().layers);
  assert.equal(decodePage(f16Bytes, q8).ok, false);
  assert.throws(() => encodePage(f16, page.layers), RangeError, 'q8 rows framed as f16 do not fit the geometry');
});
