/** The page codec on its own (no store): what it writes, it reads back; anything else it refuses, saying why. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodePage, encodePage, payloadBytes, type PageMeta } from '../../src/cache/pageCodec.js';

const meta: PageMeta = { fingerprint: 'f'.repeat(64), key: 'ns:abc', layers: 3, width: 5, pageTokens: 4, dtype: 'f16' };
const layers = Array.from({ length: 3 }, (_, l) => Uint16Array.from({ length: 20 }, (_, i) => l * 1000 + i));

test('a page round-trips: the payload is the layers’ rows, in order', async () => {
  const bytes = await encodePage(meta, layers);
  const r = await decodePage(bytes, meta);
  assert.ok(r.ok);
  assert.equal(r.payload.byteLength, payloadBytes(meta));
  const expected = new Uint8Array(payloadBytes(meta));
  layers.forEach((l, i) => expected.set(new Uint8Array(l.buffer), i * l.byteLength));
  assert.deepEqual(new Uint8Array(r.payload), expected);
});

test('any flipped byte, a truncation, another model, another key or another geometry is refused', async () => {
  const bytes = await encodePage(meta, layers);
  for (const at of [0, 5, 13, bytes.length >> 1, bytes.length - 1]) {
    const bad = Uint8Array.from(bytes);
    bad[at]! ^= 0x01;
    const r = await decodePage(bad, meta);
    assert.equal(r.ok, false, `byte ${at}`);
  }
  const cases: Array<[Uint8Array, PageMeta, RegExp]> = [
    [bytes.subarray(0, 20), meta, /truncated/],
    [bytes.subarray(0, bytes.length - 1), meta, /checksum|truncated/],
    [bytes, { ...meta, fingerprint: '0'.repeat(64) }, /another model/],
    [bytes, { ...meta, key: 'ns:other' }, /another prefix/],
    [bytes, { ...meta, pageTokens: 8 }, /geometry/],
    [new TextEncoder().encode('+OK garbage from a store that is not what it seems'), meta, /magic/],
  ];
  for (const [input, expect, why] of cases) {
    const r = await decodePage(input, expect);
    assert.ok(!r.ok && why.test(r.problem), `${why}: ${JSON.stringify(r)}`);
  }
});

test('a payload of the wrong size is refused when encoding', () => {
  assert.throws(() => encodePage(meta, layers.slice(0, 2)), /geometry says/);
});
