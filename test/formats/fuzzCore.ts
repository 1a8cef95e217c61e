/**
 * Mutation fuzzing of the model-file loaders. Each case takes a small valid file, applies one to
 * three mutations (bit flips, boundary-value overwrites of bytes and of known header fields, huge
 * counts and lengths, wrong value and element types, overlapping / misaligned / out-of-range
 * tensor offsets, truncation, extension, slice deletion and duplication), writes it to a temp
 * file and runs the loader over it: open, then read every tensor (and, for GGUF, decode it).
 *
 * Outcomes: `ok` (the file still loads), `typed` (a DseekError such as ModelFormatError: the
 * loader noticed), or a failure: any other exception, or a case slower than the time limit. The
 * loaders are synchronous, so a case cannot be interrupted; its time is measured afterwards (a
 * true hang is left to the test runner's timeout).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DseekError } from '../../src/errors.js';
import { Rng } from '../../src/engine/random.js';
import { openGguf, writeGguf, type GgufValue } from '../../src/formats/gguf.js';
import { dequantizeRow, quantizeRow, rowBytes, type GgmlType } from '../../src/formats/quant/index.js';
import { openSafetensors, writeSafetensors } from '../../src/formats/safetensors.js';
import type { Tensor } from '../../src/kernels/tensor.js';

export interface FuzzOptions {
  /** A case slower than this is a failure (default 2000 ms). */
  readonly timeLimitMs?: number;
  /** Copy every failing input here (created if needed). */
  readonly saveFailuresTo?: string;
  /** At most this many failure descriptions are returned (default 20). */
  readonly maxSamples?: number;
  /** When given, counts each typed error by the shape of its message (numbers and quoted names elided). */
  readonly histogram?: Map<string, number>;
}

export interface FuzzResult {
  readonly format: 'gguf' | 'safetensors';
  readonly cases: number;
  readonly seed: number;
  readonly ok: number;
  readonly typed: number;
  readonly failures: number;
  readonly samples: string[];
  readonly slowestMs: number;
}

interface Field {
  readonly pos: number;
  readonly width: 1 | 4 | 8;
  readonly kind: string;
}

class Mutator {
  readonly notes: string[] = [];
  constructor(readonly rng: Rng, public bytes: Uint8Array) {}

  int(n: number): number {
    return Math.floor(this.rng.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** A position, biased towards the first `hot` bytes (the header). */
  position(hot: number): number {
    const n = this.bytes.length;
    if (n === 0) return 0;
    return this.rng.next() < 0.75 ? this.int(Math.min(hot, n)) : this.int(n);
  }
  write(pos: number, width: number, v: bigint): void {
    for (let i = 0; i < width && pos + i < this.bytes.length; i++) this.bytes[pos + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  }
  read(pos: number, width: number): bigint {
    let v = 0n;
    for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.bytes[pos + i] ?? 0);
    return v;
  }
  bitFlip(hot: number): void {
    const flips = 1 + this.int(4);
    for (let i = 0; i < flips && this.bytes.length > 0; i++) {
      const p = this.position(hot);
      this.bytes[p] = this.bytes[p]! ^ (1 << this.int(8));
      this.notes.push(`flip@${p}`);
    }
  }
  overwriteByte(hot: number): void {
    if (this.bytes.length === 0) return;
    const p = this.position(hot);
    const v = this.pick([0x00, 0xff, 0x7f, 0x80, 0x01, this.int(256)]);
    this.bytes[p] = v;
    this.notes.push(`byte@${p}=${v}`);
  }
  truncate(hot: number): void {
    const len = this.position(hot);
    this.bytes = this.bytes.slice(0, len);
    this.notes.push(`truncate@${len}`);
  }
  extend(): void {
    const extra = Uint8Array.from({ length: 1 + this.int(64) }, () => this.int(256));
    const out = new Uint8Array(this.bytes.length + extra.length);
    out.set(this.bytes);
    out.set(extra, this.bytes.length);
    this.bytes = out;
    this.notes.push(`extend+${extra.length}`);
  }
  deleteSlice(hot: number): void {
    if (this.bytes.length === 0) return;
    const p = this.position(hot);
    const n = 1 + this.int(16);
    this.bytes = Uint8Array.from([...this.bytes.subarray(0, p), ...this.bytes.subarray(p + n)]);
    this.notes.push(`delete@${p}+${n}`);
  }
  duplicateSlice(hot: number): void {
    if (this.bytes.length === 0) return;
    const from = this.position(hot);
    const to = this.position(hot);
    const n = 1 + this.int(32);
    const slice = this.bytes.slice(from, from + n);
    const insert = this.rng.next() < 0.5;
    this.bytes = insert
      ? Uint8Array.from([...this.bytes.subarray(0, to), ...slice, ...this.bytes.subarray(to)])
      : (() => {
          const out = this.bytes.slice();
          out.set(slice.subarray(0, Math.max(0, out.length - to)), to);
          return out;
        })();
    this.notes.push(`${insert ? 'insert' : 'copy'}[${from},+${n}]@${to}`);
  }
}

const U64_BOUNDARIES = [0n, 1n, 2n, 0x7fffffffn, 0xffffffffn, 0x100000000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];
const U32_BOUNDARIES = [0n, 1n, 2n, 4n, 5n, 7n, 8n, 9n, 12n, 13n, 14n, 15n, 16n, 29n, 30n, 31n, 39n, 40n, 255n, 0x80000000n, 0xffffffffn];

function runCase(
  format: 'gguf' | 'safetensors',
  file: string,
  load: (file: string) => void,
  notes: string,
  opts: Required<Pick<FuzzOptions, 'timeLimitMs' | 'maxSamples'>> & FuzzOptions,
  acc: { ok: number; typed: number; failures: number; samples: string[]; slowestMs: number },
  index: number,
): void {
  const start = performance.now();
  let failure: string | undefined;
  try {
    load(file);
    acc.ok++;
  } catch (e) {
    if (e instanceof DseekError) {
      acc.typed++;
      if (opts.histogram !== undefined) {
        const shape = e.message.slice(file.length + 2).replace(/"(?:[^"\\]|\\.)*"/g, '"…"').replace(/-?\d+/g, 'N').slice(0, 90);
        opts.histogram.set(shape, (opts.histogram.get(shape) ?? 0) + 1);
      }
    }
    else failure = `${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`.split('\n')[0]!;
  }
  const ms = performance.now() - start;
  acc.slowestMs = Math.max(acc.slowestMs, ms);
  if (failure === undefined && ms > opts.timeLimitMs) failure = `took ${ms.toFixed(0)} ms (limit ${opts.timeLimitMs} ms)`;
  if (failure === undefined) return;
  acc.failures++;
  if (acc.samples.length < opts.maxSamples) acc.samples.push(`${format} case ${index} [${notes}]: ${failure}`);
  if (opts.saveFailuresTo !== undefined) {
    fs.mkdirSync(opts.saveFailuresTo, { recursive: true });
    fs.copyFileSync(file, path.join(opts.saveFailuresTo, `${format}-case-${index}${format === 'gguf' ? '.gguf' : '.safetensors'}`));
  }
}

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dseek-fuzz-'));
  try {
    return fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function defaults(opts: FuzzOptions): Required<Pick<FuzzOptions, 'timeLimitMs' | 'maxSamples'>> & FuzzOptions {
  return { timeLimitMs: 2000, maxSamples: 20, ...opts };
}

// --- GGUF ----------------------------------------------------------------------------------------

function baseGguf(dir: string, rng: Rng): Uint8Array {
  const tensor = (name: string, type: GgmlType, shape: number[]): { name: string; type: GgmlType; shape: number[]; data: Uint8Array } => {
    const n = shape.reduce((p, d) => p * d, 1);
    const data = new Uint8Array(rowBytes(type, n));
    quantizeRow(type, Float32Array.from({ length: n }, () => rng.next() * 2 - 1), data);
    return { name, type, shape, data };
  };
  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', { type: 'string', value: 'deepseek2' }],
    ['deepseek2.block_count', { type: 'u32', value: 2 }],
    ['deepseek2.rope.freq_base', { type: 'f32', value: 10000 }],
    ['deepseek2.expert_weights_norm', { type: 'bool', value: true }],
    ['general.big', { type: 'u64', value: 2n ** 60n }],
    ['tokenizer.ggml.tokens', { type: 'array', elementType: 'string', value: ['a', 'bc', 'Ġd', ''] }],
    ['tokenizer.ggml.token_type', { type: 'array', elementType: 'i32', value: [1, 1, 3, 6] }],
    ['test.nested', { type: 'array', elementType: 'array', value: [{ type: 'array', elementType: 'u8', value: [1, 2] }] }],
  ];
  const tensors = [
    tensor('token_embd.weight', 'f16', [4, 8]),
    tensor('blk.0.attn_norm.weight', 'f32', [8]),
    tensor('blk.0.attn_q.weight', 'q8_0', [2, 32]),
    tensor('blk.0.ffn_up.weight', 'q4_k', [1, 256]),
    tensor('output.weight', 'q6_k', [1, 256]),
    tensor('blk.0.ffn_down.weight', 'q4_0', [1, 32]),
  ];
  const file = path.join(dir, 'base.gguf');
  writeGguf(file, { metadata, tensors });
  return new Uint8Array(fs.readFileSync(file));
}

/** Positions of the header's fields in a valid GGUF (trusted: it is our own base file). */
function ggufFields(b: Uint8Array): { fields: Field[]; offsets: number[]; headerEnd: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: Field[] = [];
  const offsets: number[] = [];
  let pos = 8;
  const field = (width: 1 | 4 | 8, kind: string): number => {
    fields.push({ pos, width, kind });
    const v = width === 1 ? b[pos]! : width === 4 ? dv.getUint32(pos, true) : Number(dv.getBigUint64(pos, true));
    pos += width;
    return v;
  };
  const string = (): void => {
    const n = field(8, 'strlen'); // (not `pos += field(…)`: that would read pos before field moves it)
    pos += n;
  };
  const SIZES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  const value = (t: number): void => {
    if (t === 8) string();
    else if (t === 9) {
      const et = field(4, 'vtype');
      const n = field(8, 'count');
      for (let i = 0; i < n; i++) value(et);
    } else if (t === 7) field(1, 'bool');
    else pos += SIZES[t]!;
  };
  const tensors = field(8, 'count');
  const kvs = field(8, 'count');
  for (let i = 0; i < kvs; i++) {
    string();
    value(field(4, 'vtype'));
  }
  for (let i = 0; i < tensors; i++) {
    string();
    const nd = field(4, 'ndims');
    for (let d = 0; d < nd; d++) field(8, 'dim');
    field(4, 'ggmltype');
    offsets.push(pos);
    field(8, 'offset');
  }
  return { fields, offsets, headerEnd: pos };
}

function mutateGguf(m: Mutator, layout: ReturnType<typeof ggufFields>): void {
  const hot = layout.headerEnd;
  const kind = m.int(10);
  switch (kind) {
    case 0: m.bitFlip(hot); break;
    case 1: m.overwriteByte(hot); break;
    case 2:
    case 3: {
      // A known field set to a boundary value (or its neighbour).
      const f = m.pick(layout.fields);
      const old = m.read(f.pos, f.width);
      const pool = f.width === 8 ? U64_BOUNDARIES : f.width === 4 ? U32_BOUNDARIES : [0n, 1n, 2n, 255n];
      const v = m.pick([...pool, old + 1n, old - 1n, old * 2n, BigInt(m.bytes.length), BigInt(m.int(2 ** 31))]);
      m.write(f.pos, f.width, BigInt.asUintN(8 * f.width, v));
      m.notes.push(`${f.kind}@${f.pos}=${BigInt.asUintN(8 * f.width, v)}`);
      break;
    }
    case 4: {
      // Tensor offsets: another tensor's (overlap), past the end, or misaligned.
      const at = m.pick(layout.offsets);
      const choice = m.int(3);
      const v = choice === 0 ? m.read(m.pick(layout.offsets), 8) : choice === 1 ? BigInt(m.bytes.length + m.int(64)) : m.read(at, 8) + BigInt(1 + m.int(31));
      m.write(at, 8, v);
      m.notes.push(`offset@${at}=${v}`);
      break;
    }
    case 5: {
      // A value type or element type swapped for another (valid or not).
      const types = layout.fields.filter((f) => f.kind === 'vtype' || f.kind === 'ggmltype');
      const f = m.pick(types);
      const v = BigInt(f.kind === 'vtype' ? m.int(14) : m.pick([0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 30, 31, 40]));
      m.write(f.pos, 4, v);
      m.notes.push(`${f.kind}@${f.pos}=${v}`);
      break;
    }
    case 6: m.truncate(m.bytes.length); break;
    case 7: m.extend(); break;
    case 8: m.deleteSlice(hot); break;
    default: m.duplicateSlice(hot); break;
  }
}

function loadGguf(file: string): void {
  const f = openGguf(file);
  try {
    for (const t of f.tensors) {
      const data = f.readTensor(t.name).data;
      dequantizeRow(t.type, data, t.elementCount, new Float32Array(t.elementCount));
    }
  } finally {
    f.close();
  }
}

/** Fuzz openGguf + readTensor + dequantizeRow over `cases` mutated files. */
export function fuzzGguf(cases: number, seed: number, options: FuzzOptions = {}): FuzzResult {
  const opts = defaults(options);
  return withTempDir((dir) => {
    const rng = new Rng(seed);
    const base = baseGguf(dir, rng);
    const layout = ggufFields(base);
    const file = path.join(dir, 'case.gguf');
    const acc = { ok: 0, typed: 0, failures: 0, samples: [] as string[], slowestMs: 0 };
    for (let i = 0; i < cases; i++) {
      const m = new Mutator(rng, base.slice());
      const rounds = 1 + m.int(3);
      for (let r = 0; r < rounds; r++) mutateGguf(m, layout);
      fs.writeFileSync(file, m.bytes);
      runCase('gguf', file, loadGguf, m.notes.join(' '), opts, acc, i);
    }
    return { format: 'gguf', cases, seed, ...acc };
  });
}

// --- safetensors ----------------------------------------------------------------------------------

function baseSafetensors(dir: string, rng: Rng): Uint8Array {
  const f32 = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.next());
  const tensors: Array<[string, Tensor]> = [
    ['model.embed_tokens.weight', { dtype: 'f16', shape: [4, 3], data: new Uint8Array(24).map(() => rng.nextUint32() & 0xff) }],
    ['model.norm.weight', { dtype: 'f32', shape: [3], data: new Uint8Array(f32(3).buffer) }],
    ['lm_head.weight', { dtype: 'bf16', shape: [2, 3], data: new Uint8Array(12).map(() => rng.nextUint32() & 0xff) }],
    ['scalar', { dtype: 'f32', shape: [], data: new Uint8Array(f32(1).buffer) }],
  ];
  const file = path.join(dir, 'base.safetensors');
  writeSafetensors(file, tensors, { format: 'pt' });
  return new Uint8Array(fs.readFileSync(file));
}

/** Structured edits of the JSON header, re-serialised with (usually) a matching length. */
function mutateHeaderJson(m: Mutator, base: Uint8Array): void {
  const n = Number(new DataView(base.buffer, base.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(base.subarray(8, 8 + n))) as Record<string, Record<string, unknown>>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = m.pick(names);
  const entry = header[name]!;
  const weird: unknown[] = [-1, 0, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, 1e300, -0, 'F32', null, [], {}, [1, 2]];
  switch (m.int(9)) {
    case 0: entry['dtype'] = m.pick(['F64', 'I8', 'BOOL', 'F8_E4M3', 'FOO', '', 12, null]); break;
    case 1: entry['shape'] = m.pick([[-1], [2 ** 53], [2 ** 40, 2 ** 40], [1e300], [0.5], ['3'], [[3]], 7, [], [0]]); break;
    case 2: {
      const other = header[m.pick(names)]!['data_offsets'] as number[];
      entry['data_offsets'] = m.pick([[other[0], other[1]], [0, 2 ** 53], [-1, 3], [5, 2], [2 ** 64, 2 ** 64 + 4], [0], 'x', [m.pick(weird), m.pick(weird)]]);
      break;
    }
    case 3: delete entry[m.pick(['dtype', 'shape', 'data_offsets'])]; break;
    case 4: header['__metadata__'] = m.pick<Record<string, unknown>>([{ a: 1 }, { a: null }, { a: ['x'] }]) as Record<string, unknown>; break;
    case 5: header[name] = m.pick(weird) as Record<string, unknown>; break;
    default: break;
  }
  let text = JSON.stringify(header);
  switch (m.int(6)) {
    case 0: text = text.replace(`"${name}"`, `"${m.pick(names)}"`); break; // maybe a duplicate name
    case 1: text = m.pick(['[', '"', '{"a":{}}', '[]', '1', '{"a":' + '['.repeat(100000) + ']'.repeat(100000) + '}', '\ufeff{}', '{"x":"\\ud800"}']); break;
    default: break;
  }
  const bytes = new TextEncoder().encode(text);
  const data = base.subarray(8 + n);
  const len = m.rng.next() < 0.85 ? BigInt(bytes.length) : BigInt(bytes.length + m.int(9) - 4);
  const out = new Uint8Array(8 + bytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, len), true);
  out.set(bytes, 8);
  out.set(data, 8 + bytes.length);
  m.bytes = out;
  m.notes.push(`json(${text.length > 60 ? `${text.slice(0, 60)}…` : text})`);
}

function mutateSafetensors(m: Mutator, base: Uint8Array): void {
  const hot = 8 + Number(new DataView(base.buffer, base.byteOffset).getBigUint64(0, true));
  switch (m.int(9)) {
    case 0: m.bitFlip(hot); break;
    case 1: m.overwriteByte(hot); break;
    case 2: {
      const v = m.pick([...U64_BOUNDARIES, BigInt(hot - 8 + 1), BigInt(hot - 8 - 1), BigInt(m.bytes.length), 100_000_001n]);
      m.write(0, 8, v);
      m.notes.push(`length=${v}`);
      break;
    }
    case 3:
    case 4: mutateHeaderJson(m, m.bytes); break;
    case 5: m.truncate(m.bytes.length); break;
    case 6: m.extend(); break;
    case 7: m.deleteSlice(hot); break;
    default: m.duplicateSlice(hot); break;
  }
}

function loadSafetensors(file: string): void {
  const src = openSafetensors(file);
  try {
    for (const name of src.names()) src.get(name);
  } finally {
    src.close();
  }
}

/** Fuzz openSafetensors + get over `cases` mutated files. */
export function fuzzSafetensors(cases: number, seed: number, options: FuzzOptions = {}): FuzzResult {
  const opts = defaults(options);
  return withTempDir((dir) => {
    const rng = new Rng(seed);
    const base = baseSafetensors(dir, rng);
    const file = path.join(dir, 'case.safetensors');
    const acc = { ok: 0, typed: 0, failures: 0, samples: [] as string[], slowestMs: 0 };
    for (let i = 0; i < cases; i++) {
      const m = new Mutator(rng, base.slice());
      const rounds = 1 + m.int(2);
      for (let r = 0; r < rounds; r++) {
        // A JSON edit needs a parseable header: only as the first mutation.
        if (r > 0) {
          const k = m.int(6);
          if (k < 2) m.bitFlip(m.bytes.length);
          else if (k < 4) m.overwriteByte(m.bytes.length);
          else m.truncate(m.bytes.length);
        } else mutateSafetensors(m, m.bytes);
      }
      fs.writeFileSync(file, m.bytes);
      runCase('safetensors', file, loadSafetensors, m.notes.join(' '), opts, acc, i);
    }
    return { format: 'safetensors', cases, seed, ...acc };
  });
}
