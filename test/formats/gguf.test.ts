import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvalidInputError, ModelFormatError, TensorShapeError } from '../../src/errors.js';
import { Rng } from '../../src/engine/random.js';
import {
  GgufWeightSource, openGguf, writeGguf, type GgufValue, type GgufWriteTensor,
} from '../../src/formats/gguf.js';
import { GGML_TYPE_ID, quantizeRow, rowBytes, type GgmlType } from '../../src/formats/quant/index.js';

const tmpDirs: string[] = [];
function tmpFile(name = 'model.gguf'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dseek-gguf-'));
  tmpDirs.push(dir);
  return path.join(dir, name);
}
after(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** Opening `p` and reading every tensor throws a one-line ModelFormatError matching `pattern`. */
function assertFormatError(p: string, pattern: RegExp): void {
  assert.throws(
    () => {
      const f = openGguf(p);
      try {
        for (const t of f.tensors) f.readTensor(t.name);
      } finally {
        f.close();
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

// --- A byte-level GGUF builder, written from docs/gguf.md, independent of the writer --------------

class Bytes {
  private parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(...b);
    return this;
  }
  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
    this.parts.push(...b);
    return this;
  }
  raw(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.parts.push(b[i]!);
    return this;
  }
  str(s: string, len?: number | bigint): this {
    const b = Buffer.from(s, 'utf8');
    return this.u64(len ?? b.length).raw(b);
  }
  get length(): number {
    return this.parts.length;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

const VT = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 };

function kv(key: string, type: number, value: (b: Bytes) => void): Uint8Array {
  const b = new Bytes().str(key).u32(type);
  value(b);
  return b.bytes();
}

function info(name: string, dims: Array<number | bigint>, type: number, offset: number | bigint): Uint8Array {
  const b = new Bytes().str(name).u32(dims.length);
  for (const d of dims) b.u64(d);
  return b.u32(type).u64(offset).bytes();
}

interface RawFile {
  magic?: ArrayLike<number>;
  version?: number;
  tensorCount?: number | bigint;
  kvCount?: number | bigint;
  kvs?: Uint8Array[];
  infos?: Uint8Array[];
  alignment?: number;
  /** Bytes of tensor data after the padding (filled with 7s), or the data itself. */
  data?: number | Uint8Array;
}

function rawGguf(f: RawFile): Uint8Array {
  const kvs = f.kvs ?? [];
  const infos = f.infos ?? [];
  const b = new Bytes()
    .raw(f.magic ?? [0x47, 0x47, 0x55, 0x46])
    .u32(f.version ?? 3)
    .u64(f.tensorCount ?? infos.length)
    .u64(f.kvCount ?? kvs.length);
  for (const k of kvs) b.raw(k);
  for (const i of infos) b.raw(i);
  const align = f.alignment ?? 32;
  while (b.length % align !== 0) b.u8(0);
  const data = f.data ?? 0;
  b.raw(typeof data === 'number' ? new Uint8Array(data).fill(7) : data);
  return b.bytes();
}

function writeRaw(f: RawFile | Uint8Array): string {
  const p = tmpFile();
  fs.writeFileSync(p, f instanceof Uint8Array ? f : rawGguf(f));
  return p;
}

// --- Round trips ------------------------------------------------------------------------------------

const everyValueType: Array<[string, GgufValue]> = [
  ['general.architecture', { type: 'string', value: 'deepseek2' }],
  ['t.u8', { type: 'u8', value: 255 }],
  ['t.i8', { type: 'i8', value: -128 }],
  ['t.u16', { type: 'u16', value: 65535 }],
  ['t.i16', { type: 'i16', value: -32768 }],
  ['t.u32', { type: 'u32', value: 4294967295 }],
  ['t.i32', { type: 'i32', value: -2147483648 }],
  ['t.u64.small', { type: 'u64', value: Number.MAX_SAFE_INTEGER }],
  ['t.u64.big', { type: 'u64', value: 2n ** 64n - 1n }],
  ['t.i64.small', { type: 'i64', value: -5 }],
  ['t.i64.big', { type: 'i64', value: -(2n ** 63n) }],
  ['t.f32', { type: 'f32', value: 1.5 }],
  ['t.f64', { type: 'f64', value: 0.1 }],
  ['t.bool.true', { type: 'bool', value: true }],
  ['t.bool.false', { type: 'bool', value: false }],
  ['t.string.empty', { type: 'string', value: '' }],
  ['t.string.unicode', { type: 'string', value: 'Ġhello 你好 🙂\n"quoted"' }],
  ['t.arr.u8', { type: 'array', elementType: 'u8', value: [0, 1, 255] }],
  ['t.arr.i32', { type: 'array', elementType: 'i32', value: [-1, 0, 2147483647] }],
  ['t.arr.f32', { type: 'array', elementType: 'f32', value: [0.5, -2, 2 ** 100] }],
  ['t.arr.f64', { type: 'array', elementType: 'f64', value: [Math.PI] }],
  ['t.arr.u64', { type: 'array', elementType: 'u64', value: [1, 2n ** 60n] }],
  ['t.arr.bool', { type: 'array', elementType: 'bool', value: [true, false] }],
  ['tokenizer.ggml.tokens', { type: 'array', elementType: 'string', value: ['<｜begin▁of▁sentence｜>', '', 'Ġthe', 'é'] }],
  ['t.arr.empty', { type: 'array', elementType: 'string', value: [] }],
  ['t.arr.nested', {
    type: 'array',
    elementType: 'array',
    value: [{ type: 'array', elementType: 'i16', value: [-7, 8] }, { type: 'array', elementType: 'string', value: ['x'] }],
  }],
];

function randomTensor(rng: Rng, name: string, type: GgmlType, shape: number[]): GgufWriteTensor & { data: Uint8Array } {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Uint8Array(rowBytes(type, n));
  quantizeRow(type, Float32Array.from({ length: n }, () => rng.next() * 2 - 1), data);
  return { name, type, shape, data };
}

describe('GGUF round trip', () => {
  test('metadata of every value type and tensors of several types and odd shapes', () => {
    const rng = new Rng(1);
    const tensors = [
      randomTensor(rng, 'token_embd.weight', 'f16', [7, 3]),
      randomTensor(rng, 'odd.f32', 'f32', [3, 5, 7]),
      randomTensor(rng, 'one', 'bf16', [1]),
      randomTensor(rng, 'blk.0.attn_kv_a_mqa.weight', 'q8_0', [3, 64]),
      randomTensor(rng, 'q4_0.3d', 'q4_0', [2, 3, 32]),
      randomTensor(rng, 'q4_1.4d', 'q4_1', [1, 2, 1, 32]),
      randomTensor(rng, 'q5_0', 'q5_0', [5, 32]),
      randomTensor(rng, 'q5_1', 'q5_1', [32]),
      randomTensor(rng, 'q2_k', 'q2_k', [256]),
      randomTensor(rng, 'q3_k', 'q3_k', [2, 256]),
      randomTensor(rng, 'blk.0.ffn_down_exps.weight', 'q4_k', [3, 2, 512]),
      randomTensor(rng, 'q5_k', 'q5_k', [1, 256]),
      randomTensor(rng, 'output.weight', 'q6_k', [3, 256]),
    ];
    const p = tmpFile();
    writeGguf(p, { metadata: everyValueType, tensors });
    const f = openGguf(p);
    try {
      assert.equal(f.version, 3);
      assert.equal(f.alignment, 32);
      assert.equal(f.dataOffset % 32, 0);
      assert.deepEqual([...f.metadata.keys()], everyValueType.map(([k]) => k));
      for (const [k, v] of everyValueType) {
        assert.deepEqual(f.metadata.get(k), v, k);
      }
      assert.deepEqual(f.tensors.map((t) => t.name), tensors.map((t) => t.name));
      for (const t of tensors) {
        const info = f.tensor(t.name)!;
        assert.equal(info.type, t.type);
        assert.deepEqual(info.shape, t.shape);
        assert.deepEqual(info.dims, [...t.shape].reverse());
        assert.equal(info.byteSize, t.data.length);
        assert.equal((info.offset - f.dataOffset) % 32, 0);
        const got = f.readTensor(t.name);
        assert.equal(got.dtype, t.type);
        assert.deepEqual(got.shape, t.shape);
        assert.deepEqual(got.data, t.data);
      }
    } finally {
      f.close();
    }
  });

  test('f32 values read back rounded to f32', () => {
    const p = tmpFile();
    writeGguf(p, { metadata: [['x', { type: 'f32', value: 0.1 }]], tensors: [] });
    const f = openGguf(p);
    assert.equal(f.metadata.get('x')?.value, Math.fround(0.1));
    assert.equal(f.tensors.length, 0);
    f.close();
  });

  test('alignment option: general.alignment is written and every offset honours it', () => {
    for (const alignment of [1, 64, 4096]) {
      const rng = new Rng(alignment);
      const tensors = [randomTensor(rng, 'a', 'f16', [3]), randomTensor(rng, 'b', 'q8_0', [32]), randomTensor(rng, 'c', 'f32', [1])];
      const p = tmpFile();
      writeGguf(p, { metadata: [], tensors }, { alignment });
      const f = openGguf(p);
      assert.equal(f.alignment, alignment);
      assert.deepEqual(f.metadata.get('general.alignment'), alignment === 32 ? undefined : { type: 'u32', value: alignment });
      for (const t of f.tensors) assert.equal((t.offset - f.dataOffset) % alignment, 0);
      assert.equal(f.dataOffset % alignment, 0);
      for (const t of tensors) assert.deepEqual(f.readTensor(t.name).data, t.data);
      f.close();
    }
  });

  test('tensor data given as functions is produced one tensor at a time, in order', () => {
    const calls: string[] = [];
    const p = tmpFile();
    const tensors = ['x', 'y', 'z'].map((name, i) => ({
      name, type: 'f32' as const, shape: [i + 1],
      data: () => {
        calls.push(name);
        return new Uint8Array(4 * (i + 1)).fill(i + 1);
      },
    }));
    writeGguf(p, { metadata: [], tensors });
    assert.deepEqual(calls, ['x', 'y', 'z']);
    const f = openGguf(p);
    assert.deepEqual(f.readTensor('z').data, new Uint8Array(12).fill(3));
    f.close();
  });

  test('writer rejects bad input and leaves no file behind', () => {
    const p = tmpFile();
    const f32 = (name: string, shape: number[], bytes: number): GgufWriteTensor => ({ name, type: 'f32', shape, data: new Uint8Array(bytes) });
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [f32('a', [2], 4)] }), TensorShapeError);
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [f32('a', [1], 4), f32('a', [1], 4)] }), /given twice/);
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [f32('a'.repeat(64), [1], 4)] }), /1\.\.63 bytes/);
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [f32('a', [1, 1, 1, 1, 1], 4)] }), /1 to 4 dimensions/);
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [{ name: 'q', type: 'q4_0', shape: [16], data: new Uint8Array(9) }] }), /multiple of q4_0's block size 32/);
    assert.throws(() => writeGguf(p, { metadata: [['k', { type: 'u8', value: 256 }]], tensors: [] }), InvalidInputError);
    assert.throws(() => writeGguf(p, { metadata: [['k', { type: 'u32', value: 1 }], ['k', { type: 'u32', value: 1 }]], tensors: [] }), /given twice/);
    assert.throws(() => writeGguf(p, { metadata: [['general.alignment', { type: 'u32', value: 64 }]], tensors: [] }), /general\.alignment/);
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [] }, { alignment: 24 }), /power of two/);
    const boom = (): Uint8Array => {
      throw new Error('producer failed');
    };
    assert.throws(() => writeGguf(p, { metadata: [], tensors: [f32('a', [1], 4), { name: 'b', type: 'f32', shape: [1], data: boom }] }), /producer failed/);
    assert.deepEqual(fs.readdirSync(path.dirname(p)), []);
  });

  test('tensors past 4 GiB are located with 64-bit offsets (sparse file)', () => {
    const p = tmpFile();
    const rel = 5 * 2 ** 30; // 5 GiB into the data section
    const header = rawGguf({ infos: [info('far', [4], GGML_TYPE_ID.f32, rel)] });
    const fd = fs.openSync(p, 'w');
    try {
      fs.writeSync(fd, header);
      fs.writeSync(fd, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16), 0, 16, header.length + rel);
    } finally {
      fs.closeSync(fd);
    }
    const f = openGguf(p);
    assert.equal(f.tensors[0]!.offset, header.length + rel);
    assert.deepEqual([...f.readTensor('far').data], Array.from({ length: 16 }, (_, i) => i + 1));
    f.close();
  });
});

describe('GGUF reading, files built byte by byte from the spec', () => {
  test('a v2 file and a v3 file with the same content read the same', () => {
    for (const version of [2, 3]) {
      const data = new Uint8Array(64 + 18);
      data.set([1, 0, 0, 0, 2, 0, 0, 0], 0); // the f32 tensor's bytes, compared as bytes
      const p = writeRaw({
        version,
        kvs: [
          kv('general.architecture', VT.string, (b) => b.str('deepseek2')),
          kv('deepseek2.block_count', VT.u32, (b) => b.u32(27)),
          kv('deepseek2.rope.freq_base', VT.f32, (b) => b.raw(new Uint8Array(new Float32Array([10000]).buffer))),
          kv('tokenizer.ggml.scores', VT.array, (b) => b.u32(VT.f32).u64(2).raw(new Uint8Array(new Float32Array([-1, 0.5]).buffer))),
          kv('flag', VT.bool, (b) => b.u8(1)),
        ],
        infos: [info('blk.0.attn_norm.weight', [2], GGML_TYPE_ID.f32, 0), info('blk.0.ffn_up.weight', [32, 1], GGML_TYPE_ID.q4_0, 64)],
        data,
      });
      const f = openGguf(p);
      assert.equal(f.version, version);
      assert.equal(f.requireKey('general.architecture', 'string'), 'deepseek2');
      assert.equal(f.requireKey('deepseek2.block_count', 'u32'), 27);
      assert.equal(f.requireKey('deepseek2.rope.freq_base', 'f32'), 10000);
      assert.deepEqual(f.requireKey('tokenizer.ggml.scores', 'array'), { type: 'array', elementType: 'f32', value: [-1, 0.5] });
      assert.equal(f.requireKey('flag', 'bool'), true);
      assert.deepEqual(f.tensors.map((t) => [t.name, t.type, t.shape, t.offset - f.dataOffset, t.byteSize]), [
        ['blk.0.attn_norm.weight', 'f32', [2], 0, 8],
        ['blk.0.ffn_up.weight', 'q4_0', [1, 32], 64, 18],
      ]);
      assert.deepEqual([...f.readTensor('blk.0.attn_norm.weight').data], [1, 0, 0, 0, 2, 0, 0, 0]);
      f.close();
    }
  });

  test('typedKey accepts any integer type that fits, and checks types and ranges', () => {
    const p = writeRaw({
      kvs: [
        kv('as.u64', VT.u64, (b) => b.u64(27)),
        kv('as.i8', VT.i8, (b) => b.u8(27)),
        kv('negative', VT.i32, (b) => b.u32(-1)),
        kv('huge', VT.u64, (b) => b.u64(2n ** 60n)),
        kv('text', VT.string, (b) => b.str('27')),
        kv('f64', VT.f64, (b) => b.raw(new Uint8Array(new Float64Array([0.5]).buffer))),
      ],
    });
    const f = openGguf(p);
    assert.equal(f.typedKey('as.u64', 'u32'), 27);
    assert.equal(f.typedKey('as.i8', 'u32'), 27);
    assert.equal(f.typedKey('negative', 'i32'), -1);
    assert.equal(f.typedKey('absent', 'u32'), undefined);
    assert.equal(f.typedKey('f64', 'f32'), 0.5);
    assert.throws(() => f.typedKey('negative', 'u32'), /"negative" = -1 is out of range for u32/);
    assert.throws(() => f.typedKey('huge', 'u32'), /out of range for u32/);
    assert.throws(() => f.typedKey('huge', 'u64'), /too large/);
    assert.throws(() => f.typedKey('text', 'u32'), (e: unknown) => e instanceof ModelFormatError && /"text" must be an integer \(u32\), but is string "27"/.test(e.message));
    assert.throws(() => f.typedKey('as.u64', 'f32'), /must be a float/);
    assert.throws(() => f.typedKey('as.u64', 'string'), /must be a string/);
    assert.throws(() => f.requireKey('absent', 'u32'), /"absent" is missing/);
    f.close();
  });

  test('GgufWeightSource exposes raw GGUF names, GGML dtypes and torch-order shapes', () => {
    const rng = new Rng(3);
    const tensors = [randomTensor(rng, 'blk.0.attn_q.weight', 'q4_k', [3, 256]), randomTensor(rng, 'output_norm.weight', 'f32', [5])];
    const p = tmpFile();
    writeGguf(p, { metadata: [], tensors });
    const src = GgufWeightSource.open(p);
    assert.equal(src.path, p);
    assert.deepEqual(src.names(), ['blk.0.attn_q.weight', 'output_norm.weight']);
    assert.ok(src.has('output_norm.weight') && !src.has('model.norm.weight'));
    assert.deepEqual(src.describe('blk.0.attn_q.weight'), { dtype: 'q4_k', shape: [3, 256] });
    assert.equal(src.describe('nope'), undefined);
    assert.deepEqual(src.get('blk.0.attn_q.weight').data, tensors[0]!.data);
    assert.throws(() => src.get('nope'), ModelFormatError);
    src.close();
  });
});

describe('malformed GGUF files are ModelFormatErrors naming the problem', () => {
  const goodKv = kv('general.architecture', VT.string, (b) => b.str('deepseek2'));
  const f32Info = (name: string, n: number, offset: number | bigint): Uint8Array => info(name, [n], GGML_TYPE_ID.f32, offset);

  test('bad magic, unsupported versions', () => {
    assertFormatError(writeRaw({ magic: [0x47, 0x47, 0x4d, 0x4c] }), /not a GGUF file: the magic number is 47 47 4d 4c/);
    assertFormatError(writeRaw(new Uint8Array(0)), /too short for a GGUF header/);
    assertFormatError(writeRaw({ version: 1 }), /version 1 is not supported/);
    assertFormatError(writeRaw({ version: 4 }), /unsupported GGUF version 4/);
    assertFormatError(writeRaw({ version: 0x03000000 }), /big-endian/);
  });

  test('a file truncated anywhere before the end of its last tensor', () => {
    const rng = new Rng(4);
    const p = tmpFile();
    writeGguf(p, {
      metadata: [['general.name', { type: 'string', value: 'tiny' }], ['t.arr', { type: 'array', elementType: 'u32', value: [1, 2, 3] }]],
      tensors: [randomTensor(rng, 'a', 'q8_0', [32]), randomTensor(rng, 'b', 'f16', [3])],
    });
    const full = fs.readFileSync(p);
    const f = openGguf(p);
    const last = f.tensors[1]!;
    const end = last.offset + last.byteSize;
    const dataOffset = f.dataOffset;
    f.close();
    const seen = new Set<string>();
    for (let len = 0; len < end; len++) {
      const q = writeRaw(full.subarray(0, len));
      assertFormatError(q, /truncated|too short|past the end|ends at byte/);
      let message = '';
      try {
        openGguf(q).close();
      } catch (e) {
        message = (e as Error).message;
      }
      // Which region each truncation was reported in.
      if (/magic|version|tensor count|key-value count/.test(message)) seen.add('header');
      else if (/metadata key/.test(message)) seen.add('kv');
      else if (/of tensor #|of tensor "|name of tensor/.test(message)) seen.add('tensor info');
      else if (/run past the end/.test(message)) seen.add('data');
      fs.rmSync(q);
      if (len > dataOffset + 8 && len < end - 8) len = end - 8; // the data region needs few samples
    }
    assert.deepEqual([...seen].sort(), ['data', 'header', 'kv', 'tensor info']);
  });

  test('huge lengths and counts are refused before allocating', () => {
    assertFormatError(writeRaw({ kvs: [new Bytes().str('k', 2n ** 64n - 1n).bytes()] }), /metadata key #0: string length 18446744073709551615 runs past the end/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.string, (b) => b.u64(2n ** 62n))] }), /metadata key "k": string length 4611686018427387904 runs past/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.array, (b) => b.u32(VT.u8).u64(2n ** 64n - 1n))] }), /element count of metadata key "k" is 18446744073709551615 but only \d+ bytes are left/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.array, (b) => b.u32(VT.string).u64(1000))] }), /element count of metadata key "k" is 1000/);
    assertFormatError(writeRaw({ tensorCount: 2n ** 64n - 1n }), /tensor count is 18446744073709551615/);
    assertFormatError(writeRaw({ kvCount: 2n ** 63n }), /key-value count is 9223372036854775808/);
    assertFormatError(writeRaw({ kvCount: 3, kvs: [goodKv] }), /metadata key #1/); // the padding reads as an empty key
    assertFormatError(writeRaw({ kvs: [new Bytes().str('x'.repeat(70000)).u32(VT.u8).u8(0).bytes()] }), /exceeds the limit of 65535 bytes/);
  });

  test('bad alignment', () => {
    const align = (type: number, v: (b: Bytes) => void): string => writeRaw({ kvs: [kv('general.alignment', type, v)] });
    assertFormatError(align(VT.u32, (b) => b.u32(0)), /general\.alignment" = 0 must be a power of two/);
    assertFormatError(align(VT.u32, (b) => b.u32(48)), /= 48 must be a power of two/);
    assertFormatError(align(VT.u32, (b) => b.u32(2 ** 21)), /= 2097152 must be a power of two between 1 and 1048576/);
    assertFormatError(align(VT.u64, (b) => b.u64(32)), /general\.alignment" must be a u32, but is u64 32/);
  });

  test('unknown value types, bad bools, invalid keys, deep nesting', () => {
    assertFormatError(writeRaw({ kvs: [kv('k', 13, (b) => b.u32(0))] }), /value type of metadata key "k" is 13, not a GGUF value type/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.array, (b) => b.u32(99).u64(0))] }), /element type of metadata key "k" is 99/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.bool, (b) => b.u8(2))] }), /metadata key "k": bool byte is 2/);
    assertFormatError(writeRaw({ kvs: [new Bytes().u64(2).raw([0xc3, 0x28]).u32(VT.u8).u8(0).bytes()] }), /metadata key #0 is not valid UTF-8/);
    assertFormatError(writeRaw({ kvs: [kv('', VT.u8, (b) => b.u8(0))] }), /metadata key #0 is empty/);
    assertFormatError(writeRaw({ kvs: [kv('k', VT.u8, (b) => b.u8(1)), kv('k', VT.u8, (b) => b.u8(2))] }), /metadata key "k" appears more than once/);
    const deep = (b: Bytes): void => {
      for (let i = 0; i < 6; i++) b.u32(VT.array).u64(1);
      b.u32(VT.u8).u64(0);
    };
    assertFormatError(writeRaw({ kvs: [kv('k', VT.array, (b) => { b.u32(VT.array).u64(1); deep(b); })] }), /nested more than 4 deep/);
  });

  test('bad tensor infos', () => {
    const t = (infos: Uint8Array[], data = 64): string => writeRaw({ kvs: [goodKv], infos, data });
    assertFormatError(t([info('w', [32], 16, 0)]), /tensor "w" has GGML type 16 \(IQ2_XXS\), which dseek does not support/);
    assertFormatError(t([info('w', [32], 999, 0)]), /tensor "w" has GGML type 999 \(unknown\)/);
    assertFormatError(t([info('w', [1, 1, 1, 1, 1], GGML_TYPE_ID.f32, 0)]), /tensor "w" has 5 dimensions; GGUF tensors have 1 to 4/);
    assertFormatError(t([info('w', [], GGML_TYPE_ID.f32, 0)]), /tensor "w" has 0 dimensions/);
    assertFormatError(t([info('w', [4, 0], GGML_TYPE_ID.f32, 0)]), /tensor "w": dimension 1 is 0/);
    assertFormatError(t([info('w', [2n ** 40n, 2n ** 20n], GGML_TYPE_ID.f32, 0)]), /tensor "w": dimensions .* more than 2\^53 elements/);
    assertFormatError(t([info('w', [16], GGML_TYPE_ID.q4_0, 0)]), /tensor "w": dimension 0 \(16\) is not a multiple of q4_0's block size 32/);
    assertFormatError(t([f32Info('w', 1, 8)]), /tensor "w": offset 8 is not a multiple of the alignment 32/);
    assertFormatError(t([f32Info('w', 4, 0), f32Info('v', 4, 0)]), /tensor "v" \(data offset 0\) overlaps tensor "w"/);
    assertFormatError(t([f32Info('w', 16, 0), f32Info('v', 4, 32)], 128), /tensor "v" \(data offset 32\) overlaps tensor "w" \(data offset 0, 64 bytes\)/);
    assertFormatError(t([f32Info('w', 17, 0)]), /tensor "w": its 68 bytes at \d+ run past the end of the \d+-byte file/);
    assertFormatError(t([f32Info('w', 1, 2n ** 63n)]), /tensor "w": offset 9223372036854775808 is past the end/);
    assertFormatError(t([f32Info('w', 1, 0), f32Info('w', 1, 32)]), /tensor "w" appears more than once/);
    assertFormatError(t([f32Info('x'.repeat(64), 1, 0)]), /name "x{64}" must be 1\.\.63 bytes/);
    assertFormatError(t([new Bytes().u64(1).raw([0xff]).bytes()]), /name of tensor #0 is not valid UTF-8/);
  });

  test('a valid tensor layout out of info order is accepted (the spec only asks for alignment)', () => {
    const p = writeRaw({ infos: [info('b', [8], GGML_TYPE_ID.f32, 32), info('a', [8], GGML_TYPE_ID.f32, 0)], data: 64 });
    const f = openGguf(p);
    assert.deepEqual(f.tensors.map((x) => x.offset - f.dataOffset), [32, 0]);
    f.close();
  });
});
