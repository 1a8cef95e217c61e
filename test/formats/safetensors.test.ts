import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelFormatError } from '../../src/errors.js';
import { openSafetensors, writeSafetensors } from '../../src/formats/safetensors.js';
import { f32ToBf16, f32ToF16, tensorFromF32, type Tensor } from '../../src/kernels/tensor.js';

import { goldenRoot } from '../paths.js';

const goldenDir = path.join(goldenRoot, 'lite');

const tmpDirs: string[] = [];
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dseek-safetensors-'));
  tmpDirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function u16Tensor(dtype: 'f16' | 'bf16', values: number[], shape: number[]): Tensor {
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  const u = Uint16Array.from(values, conv);
  return { dtype, shape, data: new Uint8Array(u.buffer) };
}

/** A hand-made file: 8-byte length (overridable), header text as given, then `dataBytes` bytes. */
function rawFile(header: string | object, dataBytes: number, length?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(length ?? BigInt(h.length));
  const file = path.join(tmpDir(), 'model.safetensors');
  fs.writeFileSync(file, Buffer.concat([len, h, Buffer.alloc(dataBytes, 7)]));
  return file;
}

function entry(dtype: string, shape: number[], begin: number, end: number): object {
  return { dtype, shape, data_offsets: [begin, end] };
}

/** Opening (and reading every tensor of) `p` throws a ModelFormatError whose message matches. */
function assertFormatError(p: string, pattern: RegExp): void {
  assert.throws(
    () => {
      const src = openSafetensors(p);
      try {
        for (const n of src.names()) src.get(n);
      } finally {
        src.close();
      }
    },
    (e: unknown) => {
      assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${String(e)}`);
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes('\n'), 'message is one line');
      return true;
    },
  );
}

test('round trip of f32, f16 and bf16 tensors keeps bytes, order, shapes and metadata', () => {
  const file = path.join(tmpDir(), 'rt.safetensors');
  const tensors: Array<[string, Tensor]> = [
    ['b.f16', u16Tensor('f16', [1, -2.5, 65504, 0.1, 3, 4], [2, 3])],
    ['a.f32', tensorFromF32([1.5, -2, 3.25], [3])],
    ['c.bf16', u16Tensor('bf16', [1e30, -1e-30, 7], [3, 1])],
    ['scalar', tensorFromF32([42], [])],
    ['empty', tensorFromF32([], [0, 5])],
  ];
  writeSafetensors(file, tensors, { format: 'pt', note: 'héllo' });

  const len = Number(fs.readFileSync(file).readBigUInt64LE(0));
  assert.equal(len % 8, 0, 'header padded to a multiple of 8');
  const header = JSON.parse(fs.readFileSync(file).subarray(8, 8 + len).toString('utf8')) as Record<string, unknown>;
  assert.deepEqual(header['__metadata__'], { format: 'pt', note: 'héllo' });
  assert.deepEqual(header['b.f16'], { dtype: 'F16', shape: [2, 3], data_offsets: [0, 12] });

  const src = openSafetensors(file);
  assert.equal(src.path, file);
  assert.deepEqual(src.names(), tensors.map(([n]) => n)); // storage order = order given
  for (const [name, t] of tensors) {
    assert.ok(src.has(name));
    assert.deepEqual(src.describe(name), { dtype: t.dtype, shape: [...t.shape] });
    const got = src.get(name);
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual(got.data, t.data);
    assert.equal(got.data.byteOffset % 8, 0, 'typed views of any element type can be made over the bytes');
  }
  assert.deepEqual([...new Float32Array(src.get('a.f32').data.buffer)], [1.5, -2, 3.25]);
  assert.equal(src.has('nope'), false);
  assert.equal(src.describe('nope'), undefined);
  src.close();

  // The object form writes in insertion order too.
  const file2 = path.join(tmpDir(), 'rt2.safetensors');
  writeSafetensors(file2, { x: tensorFromF32([1, 2], [2]), y: u16Tensor('bf16', [3], [1]) });
  const src2 = openSafetensors(file2);
  assert.deepEqual(src2.names(), ['x', 'y']);
  src2.close();
});

test('get of a missing tensor names the tensor and the file', () => {
  const file = path.join(tmpDir(), 'one.safetensors');
  writeSafetensors(file, { w: tensorFromF32([1], [1]) });
  const src = openSafetensors(file);
  assert.throws(
    () => src.get('model.missing.weight'),
    (e: unknown) => e instanceof ModelFormatError && e.message.includes('"model.missing.weight"') && e.message.includes(file),
  );
  src.close();
});

test('reads the golden lite model.safetensors (folder and file) byte for byte', () => {
  const file = path.join(goldenDir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  assert.ok(names.length > 0);
  for (const p of [goldenDir, file]) {
    const src = openSafetensors(p);
    assert.deepEqual(new Set(src.names()), new Set(names));
    for (const name of names) {
      const info = header[name]!;
      const t = src.get(name);
      assert.equal(t.dtype, info.dtype.toLowerCase());
      assert.deepEqual(t.shape, info.shape);
      const [b, e] = info.data_offsets;
      assert.deepEqual(t.data, new Uint8Array(bytes.subarray(8 + n + b, 8 + n + e)));
    }
    src.close();
  }
});

function writeSharded(): { dir: string; a: Tensor; b: Tensor; c: Tensor } {
  const dir = tmpDir();
  const a = tensorFromF32([1, 2, 3, 4], [2, 2]);
  const b = u16Tensor('bf16', [5, 6], [2]);
  const c = u16Tensor('f16', [7], [1]);
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [['a', a], ['b', b]]);
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [['c', c]]);
  const index = {
    metadata: { total_size: 22 },
    weight_map: { c: 'model-00002-of-00002.safetensors', a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors' },
  };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  return { dir, a, b, c };
}

test('sharded folder: index.json maps tensors to shards', () => {
  const { dir, a, b, c } = writeSharded();
  for (const p of [dir, path.join(dir, 'model.safetensors.index.json')]) {
    const src = openSafetensors(p);
    assert.equal(src.path, p);
    assert.deepEqual(src.names(), ['c', 'a', 'b']); // shard by shard, in index order of first use
    assert.deepEqual(src.get('a').data, a.data);
    assert.deepEqual(src.get('b'), { dtype: 'bf16', shape: [2], data: b.data });
    assert.deepEqual(src.get('c'), { dtype: 'f16', shape: [1], data: c.data });
    assert.throws(() => src.get('d'), (e: unknown) => e instanceof ModelFormatError && e.message.includes(p) && e.message.includes('"d"'));
    src.close();
  }
});

test('sharded folder: index errors', () => {
  const { dir } = writeSharded();
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  const setIndex = (v: unknown): void => fs.writeFileSync(indexPath, JSON.stringify(v));

  setIndex({ weight_map: { a: 'model-00001-of-00002.safetensors', x: 'model-00009-of-00009.safetensors' } });
  assertFormatError(dir, /shard "model-00009-of-00009\.safetensors".*does not exist/);

  setIndex({ weight_map: { a: '../model-00001-of-00002.safetensors' } });
  assertFormatError(dir, /"\.\.\/model-00001-of-00002\.safetensors" is not a plain file name/);
  setIndex({ weight_map: { a: '/etc/passwd' } });
  assertFormatError(dir, /not a plain file name/);
  setIndex({ weight_map: { a: '..' } });
  assertFormatError(dir, /not a plain file name/);

  setIndex({ weight_map: { a: 'model-00001-of-00002.safetensors', zz: 'model-00001-of-00002.safetensors' } });
  assertFormatError(dir, /tensor "zz" is listed in shard "model-00001-of-00002\.safetensors" but that file does not contain it/);

  setIndex({ weight_map: { a: 3 } });
  assertFormatError(dir, /weight_map\["a"\] must be a shard file name/);
  setIndex([1, 2]);
  assertFormatError(dir, /"weight_map" object/);
  setIndex({ metadata: {} });
  assertFormatError(dir, /"weight_map" object/);
  fs.writeFileSync(indexPath, '{not json');
  assertFormatError(dir, /model\.safetensors\.index\.json: cannot read the shard index/);
});

test('missing path, folder without weights, several files without an index', () => {
  const dir = tmpDir();
  assertFormatError(path.join(dir, 'nowhere'), /no weights found: the path does not exist.*model\.safetensors\.index\.json/);
  assertFormatError(dir, /no weights found: expected model\.safetensors\.index\.json \(sharded\), model\.safetensors, or one \*\.safetensors/);
  writeSafetensors(path.join(dir, 'x.safetensors'), { x: tensorFromF32([1], [1]) });
  const src = openSafetensors(dir); // exactly one *.safetensors
  assert.deepEqual(src.names(), ['x']);
  src.close();
  writeSafetensors(path.join(dir, 'y.safetensors'), { y: tensorFromF32([1], [1]) });
  assertFormatError(dir, /found 2 \.safetensors files .*but no model\.safetensors\.index\.json/);
});

test('header length: too short file, past the end of the file, over 100 MB', () => {
  const tiny = path.join(tmpDir(), 'tiny.safetensors');
  fs.writeFileSync(tiny, Buffer.alloc(5));
  assertFormatError(tiny, /too short for the 8-byte header length/);
  assertFormatError(rawFile({ a: entry('F32', [1], 0, 4) }, 4, 1000n), /header length 1000 runs past the end of the \d+-byte file/);
  assertFormatError(rawFile({ a: entry('F32', [1], 0, 4) }, 4, 100_000_001n), /header length 100000001 exceeds the safetensors limit of 100000000 bytes/);
  assertFormatError(rawFile({ a: entry('F32', [1], 0, 4) }, 4, 2n ** 63n), /exceeds the safetensors limit/);
});

test('header not JSON, not an object, not UTF-8', () => {
  assertFormatError(rawFile('{"a": {"dtype": "F32",', 0), /header is not valid JSON/);
  assertFormatError(rawFile('[{"dtype":"F32","shape":[1],"data_offsets":[0,4]}]', 4), /header must be a JSON object beginning with '\{'/);
  assertFormatError(rawFile(' {}', 0), /beginning with '\{'/);
  const bad = rawFile('{"\u00e9":1}', 0);
  const buf = fs.readFileSync(bad);
  buf[10] = 0xff; // break the UTF-8 sequence
  fs.writeFileSync(bad, buf);
  assertFormatError(bad, /not valid UTF-8/);
});

test('empty header object and trailing-space padding are valid', () => {
  const src = openSafetensors(rawFile('{}      ', 0));
  assert.deepEqual(src.names(), []);
  src.close();
});

test('duplicate tensor names (also through escapes) are rejected', () => {
  const e = JSON.stringify(entry('F32', [1], 0, 4));
  assertFormatError(rawFile(`{"w":${e},"w":${e}}`, 4), /header names "w" more than once/);
  assertFormatError(rawFile(`{"w":${e},"\\u0077":${e}}`, 4), /header names "w" more than once/);
  // The same key nested deeper, or as a string value, is not a duplicate.
  const ok = rawFile(`{"__metadata__":{"w":"w","x":"{\\"w\\":1}"},"w":${e}}`, 4);
  openSafetensors(ok).close();
});

test('__metadata__ must map strings to strings', () => {
  assertFormatError(rawFile({ __metadata__: { a: 1 }, w: entry('F32', [1], 0, 4) }, 4), /__metadata__ key "a" must be a string/);
  assertFormatError(rawFile({ __metadata__: ['x'], w: entry('F32', [1], 0, 4) }, 4), /__metadata__ must be an object/);
});

test('tensor entries: malformed dtype, shape, offsets', () => {
  assertFormatError(rawFile({ w: 5 }, 0), /tensor "w": entry must be an object/);
  assertFormatError(rawFile({ w: entry('Q4', [1], 0, 4) }, 4), /tensor "w": unknown dtype "Q4"/);
  assertFormatError(rawFile({ w: entry('F32', [-1], 0, 4) }, 4), /tensor "w": shape must be an array of non-negative integers/);
  assertFormatError(rawFile({ w: entry('F32', [1.5], 0, 4) }, 4), /shape must be an array of non-negative integers/);
  assertFormatError(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), /tensor "w": data_offsets must be \[begin, end\]/);
  assertFormatError(rawFile({ w: entry('F32', [1], 4, 0) }, 4), /tensor "w": data_offsets \[4, 0\] begin after they end/);
  assertFormatError(rawFile({ w: entry('F32', [1], 0, 2 ** 60) }, 4), /data_offsets must be \[begin, end\] with non-negative integers/);
});

test('overlapping offsets', () => {
  assertFormatError(
    rawFile({ a: entry('F32', [2], 0, 8), b: entry('F32', [1], 4, 8) }, 8),
    /tensor "b": data_offsets \[4, 8\] overlap tensor "a", which ends at 8/,
  );
});

test('a gap between tensors, or before the first', () => {
  assertFormatError(
    rawFile({ a: entry('F32', [1], 0, 4), b: entry('F32', [1], 8, 12) }, 12),
    /tensor "b": data_offsets \[8, 12\] leave a gap of 4 bytes after offset 4/,
  );
  assertFormatError(rawFile({ a: entry('F32', [1], 4, 8) }, 8), /tensor "a".*gap of 4 bytes after offset 0/);
});

test('offsets past the end of the file, and bytes after the last tensor', () => {
  assertFormatError(
    rawFile({ a: entry('F32', [1], 0, 4), b: entry('F32', [4], 4, 20) }, 12),
    /tensor "b": data_offsets \[4, 20\] end past the 12-byte data section/,
  );
  assertFormatError(rawFile({ a: entry('F32', [1], 0, 4) }, 9), /tensors cover 4 bytes of the 9-byte data section: 5 bytes after the last tensor/);
});

test('byte size must equal element count × dtype size', () => {
  assertFormatError(
    rawFile({ a: entry('F32', [2, 3], 0, 12) }, 12),
    /tensor "a": data_offsets \[0, 12\] hold 12 bytes but shape \[2, 3\] of F32 needs 24/,
  );
  assertFormatError(rawFile({ a: entry('BF16', [3], 0, 12) }, 12), /hold 12 bytes but shape \[3\] of BF16 needs 6/);
});

test('unsupported dtypes are rejected at open with the conversion hint (after their sizes check out)', () => {
  const hint = /dseek loads F32, F16 and BF16 safetensors \(convert the checkpoint, e\.g\. FP8 → BF16\)/;
  for (const [dtype, size] of [['I32', 4], ['F8_E4M3', 1], ['F64', 8], ['BOOL', 1], ['U8', 1]] as const) {
    const p = rawFile({ ok: entry('F32', [2], 0, 8), [`w.${dtype}`]: entry(dtype, [2], 8, 8 + 2 * size) }, 8 + 2 * size);
    assertFormatError(p, new RegExp(`unsupported dtype ${dtype} for tensor "w\\.${dtype}": ${hint.source}`));
  }
  // A wrong size for an unsupported dtype is reported as the size problem it is.
  assertFormatError(rawFile({ w: entry('F8_E4M3', [4], 0, 8) }, 8), /hold 8 bytes but shape \[4\] of F8_E4M3 needs 4/);
});

test('a truncated file (last bytes cut) is rejected at open', () => {
  const file = path.join(tmpDir(), 'model.safetensors');
  writeSafetensors(file, [['a', tensorFromF32([1, 2, 3, 4], [4])], ['b', tensorFromF32([5, 6], [2])]]);
  const full = fs.readFileSync(file);
  fs.writeFileSync(file, full.subarray(0, full.length - 3));
  assertFormatError(file, /tensor "b": data_offsets \[16, 24\] end past the 21-byte data section: the file is truncated/);
  fs.writeFileSync(file, full.subarray(0, 20)); // cut inside the header
  assertFormatError(file, /runs past the end of the 20-byte file/);
});

test('writeSafetensors rejects data that does not match its shape, and duplicate names', () => {
  const file = path.join(tmpDir(), 'bad.safetensors');
  assert.throws(() => writeSafetensors(file, { w: { dtype: 'f16', shape: [3], data: new Uint8Array(4) } }), /needs 6/);
  const t = tensorFromF32([1], [1]);
  assert.throws(() => writeSafetensors(file, [['w', t], ['w', t]]), /given twice/);
  assert.throws(() => writeSafetensors(file, [['__metadata__', t]]), /reserved/);
});
