/**
 * GGUF (ggml's model file format): a strict reader for versions 2 and 3, a streaming writer of
 * version 3, and a WeightSource over the raw GGUF tensor names.
 *
 * Format (ggml docs/gguf.md, "File Structure"), little-endian:
 *   u32 magic 'GGUF' (bytes 47 47 55 46) · u32 version · u64 tensor_count · u64 metadata_kv_count
 *   metadata_kv_count × { string key · u32 value_type · value }
 *   tensor_count × { string name · u32 n_dimensions · u64 dimensions[n] · u32 ggml_type · u64 offset }
 *   padding to general.alignment (default 32) · tensor data (each offset relative to here, aligned)
 * where string = u64 byte length + UTF-8 bytes (no NUL) and an array value = u32 element type +
 * u64 count + the elements. Versions: v1 used u32 for those counts and lengths (rejected here);
 * v2 made them u64; v3 only added big-endian files, which are not marked as such — a big-endian
 * file shows up as a byte-swapped version number, and is rejected.
 *
 * Strictness. The reader trusts nothing in the file: every count and length is checked against the
 * bytes left in the file before anything is allocated for it, so a corrupt file fails with a
 * ModelFormatError naming the key or tensor and never allocates more than the file's size. The
 * header is read through a 1 MiB window from the fd; tensor data is read on demand. Offsets are
 * plain numbers (exact to 2^53 bytes); no 32-bit bit operations touch them. Checks beyond the
 * spec's wording, chosen so that dseek accepts what llama.cpp's gguf.cpp accepts (or less):
 *  - general.alignment must be a u32 power of two (gguf.cpp's rule; the spec also says "multiple
 *    of 8", which 1, 2 and 4 are not — they are accepted) and at most 1 MiB;
 *  - keys must be non-empty valid UTF-8 of at most 65535 bytes (the spec's limit; its
 *    lower_snake_case rule is not enforced, as gguf.cpp does not); duplicate keys are rejected;
 *  - string values are decoded leniently (invalid UTF-8 becomes U+FFFD): vocabularies in the wild
 *    are not always valid UTF-8;
 *  - bools must be 0 or 1 (the spec: "anything else is invalid");
 *  - arrays may nest (the spec allows it; gguf.cpp does not) up to MAX_ARRAY_DEPTH levels;
 *  - tensor names: valid UTF-8, 1..63 bytes (ggml's GGML_MAX_NAME is 64 with the NUL), unique;
 *  - 1..4 dimensions (GGML_MAX_DIMS), each ≥ 1: a zero-sized weight is never meaningful and would
 *    let two tensors share an offset; element count ≤ 2^53; dimension 0 a whole number of blocks;
 *  - offsets aligned, data inside the file, no two tensors overlapping. Unlike gguf.cpp, tensors
 *    need not be packed in info order — the spec only asks for alignment.
 * 64-bit metadata integers (u64, i64) are numbers when |v| ≤ 2^53 − 1 and bigints otherwise.
 */
import * as fs from 'node:fs';
import { InvalidInputError, ModelFormatError, TensorShapeError } from '../errors.js';
import { blockBytes, blockSize, GGML_TYPE_ID, ggmlTypeFromId, ggmlTypeName, type GgmlType } from './quant/index.js';
import type { WeightSource } from './safetensors.js';
import type { Tensor } from '../kernels/tensor.js';
import { mapFileRegions } from '../kernels/native/index.js';

// --- Values ---------------------------------------------------------------------------------------

export type GgufIntType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32';
export type GgufBigIntType = 'u64' | 'i64';
export type GgufFloatType = 'f32' | 'f64';
export type GgufValueType = GgufIntType | GgufBigIntType | GgufFloatType | 'bool' | 'string' | 'array';

/** A metadata array: its element type and the elements (nested arrays carry their own types). */
export type GgufArray =
  | { readonly type: 'array'; readonly elementType: GgufIntType | GgufFloatType; readonly value: readonly number[] }
  | { readonly type: 'array'; readonly elementType: GgufBigIntType; readonly value: ReadonlyArray<number | bigint> }
  | { readonly type: 'array'; readonly elementType: 'bool'; readonly value: readonly boolean[] }
  | { readonly type: 'array'; readonly elementType: 'string'; readonly value: readonly string[] }
  | { readonly type: 'array'; readonly elementType: 'array'; readonly value: readonly GgufArray[] };

/** A metadata value with its GGUF type. */
export type GgufValue =
  | { readonly type: GgufIntType | GgufFloatType; readonly value: number }
  | { readonly type: GgufBigIntType; readonly value: number | bigint }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string }
  | GgufArray;

/** gguf_metadata_value_type ids (docs/gguf.md). */
const VALUE_TYPE_IDS: readonly GgufValueType[] = [
  'u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64',
];
const VALUE_TYPE_ID: Readonly<Record<GgufValueType, number>> = Object.fromEntries(
  VALUE_TYPE_IDS.map((t, i) => [t, i]),
) as Record<GgufValueType, number>;

/** Bytes of a fixed-size value; strings and arrays have a size prefix of at least this. */
const MIN_BYTES: Readonly<Record<GgufValueType, number>> = {
  u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8, string: 8, array: 12,
};

const INT_RANGE: Readonly<Record<GgufIntType | GgufBigIntType, readonly [bigint, bigint]>> = {
  u8: [0n, 0xffn], i8: [-0x80n, 0x7fn], u16: [0n, 0xffffn], i16: [-0x8000n, 0x7fffn],
  u32: [0n, 0xffffffffn], i32: [-0x80000000n, 0x7fffffffn],
  u64: [0n, 0xffffffffffffffffn], i64: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

const isIntType = (t: GgufValueType): t is GgufIntType | GgufBigIntType => Object.hasOwn(INT_RANGE, t);

/** Arrays of arrays of … deeper than this are rejected (the spec sets no limit; gguf.cpp allows none). */
export const MAX_ARRAY_DEPTH = 4;
export const MAX_ALIGNMENT = 1 << 20;
export const DEFAULT_ALIGNMENT = 32;
/** GGML_MAX_NAME (64) including the terminating NUL. */
export const MAX_TENSOR_NAME_BYTES = 63;
export const MAX_KEY_BYTES = 65535;
export const MAX_DIMS = 4;

/** The GGML types dseek has kernels and quantisers for; tensors of other types are rejected. */
export type { GgmlType } from './quant/index.js';

// --- Tensors ---------------------------------------------------------------------------------------

export interface GgufTensorInfo {
  readonly name: string;
  readonly type: GgmlType;
  /** ggml `ne` order: dims[0] is the fastest-varying (row length). */
  readonly dims: readonly number[];
  /** torch / safetensors order: dims reversed, outermost first. */
  readonly shape: readonly number[];
  /** Absolute position of the tensor's first byte in the file. */
  readonly offset: number;
  readonly byteSize: number;
  readonly elementCount: number;
}

/** A tensor in any GGML type (kernels' Tensor). */
export type GgufTensor = Tensor;

/** WeightSource under another name, kept for readers of this module. */
export type WideWeightSource = WeightSource;

// --- Reading ---------------------------------------------------------------------------------------

const WINDOW = 1 << 20;
/** fs.readSync reads at most 2^31 − 1 bytes per call; stay well below. */
const IO_CHUNK = 1 << 30;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function readFully(fd: number, file: string, buf: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(buf.length - done, IO_CHUNK), position + done);
    if (n === 0) throw new ModelFormatError(file, `file ends at byte ${position + done} while reading ${what}: the file is truncated`);
    done += n;
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Sequential little-endian reads of the header through a window onto the fd. */
class HeaderReader {
  private buf = new Uint8Array(WINDOW);
  private view = new DataView(this.buf.buffer);
  private start = 0; // file position of buf[0]
  private end = 0; // file position just past the valid bytes in buf
  pos = 0;

  constructor(private readonly fd: number, readonly file: string, readonly size: number) {}

  get left(): number {
    return this.size - this.pos;
  }

  fail(message: string): never {
    throw new ModelFormatError(this.file, message);
  }

  /** Make [pos, pos + n) readable at buf[pos − start]; n ≤ WINDOW. */
  private need(n: number, what: string): number {
    if (n > this.left) this.fail(`file ends at byte ${this.size} while reading ${what} (${n} bytes needed at byte ${this.pos}): the file is truncated`);
    if (this.pos < this.start || this.pos + n > this.end) {
      const len = Math.min(WINDOW, this.size - this.pos);
      readFully(this.fd, this.file, this.buf.subarray(0, len), this.pos, what);
      this.start = this.pos;
      this.end = this.pos + len;
    }
    const at = this.pos - this.start;
    this.pos += n;
    return at;
  }

  u8(what: string): number {
    return this.buf[this.need(1, what)]!;
  }
  u32(what: string): number {
    return this.view.getUint32(this.need(4, what), true);
  }
  u64(what: string): bigint {
    return this.view.getBigUint64(this.need(8, what), true);
  }

  /** A u64 count of things each at least `unit` bytes long, checked against the bytes left. */
  count(what: string, unit: number): number {
    const n = this.u64(what);
    if (n * BigInt(unit) > BigInt(this.left)) {
      this.fail(`${what} is ${n} but only ${this.left} bytes are left in the file (each needs at least ${unit}): corrupt or truncated`);
    }
    return Number(n);
  }

  scalar(type: Exclude<GgufValueType, 'string' | 'array'>, what: string): number | bigint | boolean {
    const size = MIN_BYTES[type];
    const at = this.need(size, what);
    const v = this.view;
    switch (type) {
      case 'u8': return v.getUint8(at);
      case 'i8': return v.getInt8(at);
      case 'u16': return v.getUint16(at, true);
      case 'i16': return v.getInt16(at, true);
      case 'u32': return v.getUint32(at, true);
      case 'i32': return v.getInt32(at, true);
      case 'f32': return v.getFloat32(at, true);
      case 'f64': return v.getFloat64(at, true);
      case 'u64':
      case 'i64': {
        const b = type === 'u64' ? v.getBigUint64(at, true) : v.getBigInt64(at, true);
        return b <= MAX_SAFE && b >= -MAX_SAFE ? Number(b) : b;
      }
      case 'bool': {
        const b = v.getUint8(at);
        if (b > 1) this.fail(`${what}: bool byte is ${b}, but GGUF bools must be 0 or 1`);
        return b === 1;
      }
    }
  }

  bytes(n: number, what: string): Uint8Array {
    if (n <= WINDOW) {
      const at = this.need(n, what);
      return this.buf.subarray(at, at + n);
    }
    if (n > this.left) this.need(n, what); // throws
    const out = new Uint8Array(n);
    readFully(this.fd, this.file, out, this.pos, what);
    this.pos += n;
    return out;
  }

  /** A GGUF string; `strict` rejects invalid UTF-8 (keys and names), otherwise U+FFFD replaces it. */
  string(what: string, strict: boolean, maxBytes = Infinity): string {
    const len = this.u64(`the length of ${what}`);
    if (len > BigInt(this.left)) this.fail(`${what}: string length ${len} runs past the end of the file (${this.left} bytes left)`);
    const n = Number(len); // ≤ the file size, so exact
    if (n > maxBytes) this.fail(`${what}: string length ${n} exceeds the limit of ${maxBytes} bytes`);
    const raw = this.bytes(n, what);
    if (!strict) return lenientUtf8.decode(raw);
    try {
      return strictUtf8.decode(raw);
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }

  valueType(what: string): GgufValueType {
    const id = this.u32(what);
    const t = VALUE_TYPE_IDS[id];
    if (t === undefined) this.fail(`${what} is ${id}, not a GGUF value type (0..12)`);
    return t;
  }

  value(type: GgufValueType, what: string, depth: number): GgufValue {
    if (type === 'string') return { type, value: this.string(what, false) };
    if (type !== 'array') return { type, value: this.scalar(type, what) } as GgufValue;
    if (depth >= MAX_ARRAY_DEPTH) this.fail(`${what}: arrays nested more than ${MAX_ARRAY_DEPTH} deep`);
    const elementType = this.valueType(`the element type of ${what}`);
    const n = this.count(`the element count of ${what}`, MIN_BYTES[elementType]);
    const value: unknown[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const item = this.value(elementType, `${what}[${i}]`, depth + 1);
      value[i] = item.type === 'array' ? item : item.value;
    }
    return { type: 'array', elementType, value } as GgufArray;
  }
}

/** Mapping from a `typedKey` kind to what it returns. */
export interface GgufKindValue {
  u8: number; i8: number; u16: number; i16: number; u32: number; i32: number; u64: number; i64: number;
  f32: number; f64: number; bool: boolean; string: string; array: GgufArray;
}
export type GgufKind = keyof GgufKindValue;

function describeValue(v: GgufValue): string {
  if (v.type === 'array') return `array of ${v.value.length} ${v.elementType}`;
  const shown = typeof v.value === 'bigint' ? `${v.value}` : JSON.stringify(v.value);
  return `${v.type} ${shown.length > 40 ? `${shown.slice(0, 40)}…` : shown}`;
}

/** An open GGUF file whose header has been read and validated. */
export class GgufFile {
  private fd: number | undefined;
  private readonly byName: ReadonlyMap<string, GgufTensorInfo>;

  private constructor(
    readonly path: string,
    fd: number,
    readonly version: 2 | 3,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    /** In the order of the file's tensor infos. */
    readonly tensors: readonly GgufTensorInfo[],
    readonly alignment: number,
    /** Absolute file position of the tensor data section. */
    readonly dataOffset: number,
  ) {
    this.fd = fd;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** @internal use openGguf */
  static open(path: string): GgufFile {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new ModelFormatError(path, `cannot open GGUF file: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const h = parseHeader(path, fd);
      return new GgufFile(path, fd, h.version, h.metadata, h.tensors, h.alignment, h.dataOffset);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  tensor(name: string): GgufTensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Views of every tensor over one read-only mapping of the file, made on first use (null: no mmap). */
  private mapped: Map<string, Uint8Array> | null | undefined;

  /**
   * The tensor's bytes: a view of the memory-mapped file when the native addon is available (no
   * copy; the mapping outlives close()), else read now into a new buffer. Throws
   * ModelFormatError for an unknown name.
   */
  readTensor(name: string): GgufTensor {
    const info = this.byName.get(name);
    if (info === undefined) throw new ModelFormatError(this.path, `no tensor named ${JSON.stringify(name)}`);
    if (this.fd === undefined) throw new Error(`${this.path}: read of tensor ${JSON.stringify(name)} after close()`);
    if (this.mapped === undefined) {
      const views = mapFileRegions(this.path, this.tensors.map((t) => ({ offset: t.offset, size: t.byteSize })), false);
      this.mapped = views ? new Map(this.tensors.map((t, i) => [t.name, views[i]!])) : null;
    }
    const view = this.mapped?.get(name);
    if (view) return { dtype: info.type, shape: [...info.shape], data: view };
    const data = new Uint8Array(info.byteSize);
    readFully(this.fd, this.path, data, info.offset, `tensor ${JSON.stringify(name)}`);
    return { dtype: info.type, shape: [...info.shape], data };
  }

  /**
   * The value of metadata `key` as `kind`, or undefined when the key is absent; a present key of
   * the wrong type is a ModelFormatError. Integer kinds accept any GGUF integer type whose value
   * fits the kind's range (so a u64 or i32 block_count reads as u32) and return a number; 64-bit
   * values beyond 2^53 are rejected. llama.cpp's loader is stricter — it wants the exact type
   * (GGUFMeta::GKV::get_kv) — so this accepts a superset; dseek's writer always writes the
   * canonical type. Float kinds accept f32 and f64; bool, string and array must match exactly.
   */
  typedKey<K extends GgufKind>(key: string, kind: K): GgufKindValue[K] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    const fail = (why: string): never => {
      throw new ModelFormatError(this.path, `metadata key ${JSON.stringify(key)} ${why}`);
    };
    if (isIntType(kind)) {
      if (!isIntType(v.type)) fail(`must be an integer (${kind}), but is ${describeValue(v)}`);
      const n = BigInt(v.value as number | bigint);
      const [lo, hi] = INT_RANGE[kind];
      if (n < lo || n > hi) fail(`= ${n} is out of range for ${kind}`);
      if (n > MAX_SAFE || n < -MAX_SAFE) fail(`= ${n} is too large to use`);
      return Number(n) as GgufKindValue[K];
    }
    if (kind === 'f32' || kind === 'f64') {
      if (v.type !== 'f32' && v.type !== 'f64') fail(`must be a float (${kind}), but is ${describeValue(v)}`);
      return v.value as GgufKindValue[K];
    }
    if (v.type !== kind) fail(`must be ${kind === 'array' ? 'an array' : `a ${kind}`}, but is ${describeValue(v)}`);
    return (v.type === 'array' ? v : v.value) as GgufKindValue[K];
  }

  /** typedKey for a key that must be present. */
  requireKey<K extends GgufKind>(key: string, kind: K): GgufKindValue[K] {
    const v = this.typedKey(key, kind);
    if (v === undefined) throw new ModelFormatError(this.path, `metadata key ${JSON.stringify(key)} is missing`);
    return v;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Open a GGUF file: the whole header is read and validated now, tensor data on `readTensor`. */
export function openGguf(path: string): GgufFile {
  return GgufFile.open(path);
}

interface Header {
  version: 2 | 3;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
}

function parseHeader(file: string, fd: number): Header {
  const size = fs.fstatSync(fd).size;
  const r: HeaderReader = new HeaderReader(fd, file, size);
  if (size < 4) r.fail(`file is ${size} bytes: too short for a GGUF header`);
  const magic = r.bytes(4, 'the magic number');
  if (magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 || magic[3] !== 0x46) {
    const hex = [...magic].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    r.fail(`not a GGUF file: the magic number is ${hex}, expected 47 47 55 46 ("GGUF")`);
  }
  const version = r.u32('the version');
  if (version === 1) r.fail('GGUF version 1 is not supported (it used 32-bit counts; v2 changed them to 64-bit): re-convert the model with a current llama.cpp');
  if (version === 0x02000000 || version === 0x03000000) r.fail('this is a big-endian GGUF file; dseek reads little-endian GGUF only');
  if (version !== 2 && version !== 3) r.fail(`unsupported GGUF version ${version}: dseek reads versions 2 and 3`);

  // Each KV is at least a key length (8) + value type (4) + 1 byte of value; each tensor info at
  // least a name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
  const tensorCount = r.count('the tensor count', 32);
  const kvCount = r.count('the metadata key-value count', 13);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`metadata key #${i}`, true, MAX_KEY_BYTES);
    const where = `metadata key ${JSON.stringify(key)}`;
    if (key === '') r.fail(`metadata key #${i} is empty`);
    if (metadata.has(key)) r.fail(`${where} appears more than once`);
    const type = r.valueType(`the value type of ${where}`);
    metadata.set(key, r.value(type, where, 0));
  }

  let alignment = DEFAULT_ALIGNMENT;
  const a = metadata.get('general.alignment');
  if (a !== undefined) {
    if (a.type !== 'u32') r.fail(`metadata key "general.alignment" must be a u32, but is ${describeValue(a)}`);
    const v = a.value;
    if (v === 0 || v > MAX_ALIGNMENT || (v & (v - 1)) !== 0) {
      r.fail(`metadata key "general.alignment" = ${v} must be a power of two between 1 and ${MAX_ALIGNMENT}`);
    }
    alignment = v;
  }

  interface Raw { name: string; type: GgmlType; dims: number[]; rel: number; byteSize: number; elementCount: number }
  const raws: Raw[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`the name of tensor #${i}`, true);
    const where = `tensor ${JSON.stringify(name)}`;
    if (name === '' || new TextEncoder().encode(name).length > MAX_TENSOR_NAME_BYTES) {
      r.fail(`tensor #${i}: name ${JSON.stringify(name)} must be 1..${MAX_TENSOR_NAME_BYTES} bytes (ggml's GGML_MAX_NAME)`);
    }
    if (names.has(name)) r.fail(`${where} appears more than once`);
    names.add(name);
    const nDims = r.u32(`the dimension count of ${where}`);
    if (nDims < 1 || nDims > MAX_DIMS) r.fail(`${where} has ${nDims} dimensions; GGUF tensors have 1 to ${MAX_DIMS}`);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const ne = r.u64(`dimension ${d} of ${where}`);
      if (ne < 1n) r.fail(`${where}: dimension ${d} is 0; every dimension must be at least 1`);
      if (ne > MAX_SAFE || elements * Number(ne) > Number.MAX_SAFE_INTEGER) {
        r.fail(`${where}: dimensions [${[...dims, ne].join(', ')}${d + 1 < nDims ? ', …' : ''}] hold more than 2^53 elements`);
      }
      dims.push(Number(ne));
      elements *= Number(ne);
    }
    const typeId = r.u32(`the type of ${where}`);
    const type = ggmlTypeFromId(typeId);
    if (type === undefined) {
      r.fail(`${where} has GGML type ${typeId} (${ggmlTypeName(typeId)}), which dseek does not support (it reads ${Object.keys(GGML_TYPE_ID).join(', ')})`);
    }
    const bs = blockSize(type);
    if (dims[0]! % bs !== 0) r.fail(`${where}: dimension 0 (${dims[0]}) is not a multiple of ${type}'s block size ${bs}`);
    const byteSize = (elements / bs) * blockBytes(type);
    if (!Number.isSafeInteger(byteSize)) r.fail(`${where} is too large`);
    const rel = r.u64(`the offset of ${where}`);
    if (rel > MAX_SAFE) r.fail(`${where}: offset ${rel} is past the end of the ${size}-byte file`);
    if (Number(rel) % alignment !== 0) r.fail(`${where}: offset ${rel} is not a multiple of the alignment ${alignment}`);
    raws.push({ name, type, dims, rel: Number(rel), byteSize, elementCount: elements });
  }

  const dataOffset = r.pos + ((alignment - (r.pos % alignment)) % alignment);
  for (const t of raws) {
    const end = dataOffset + t.rel + t.byteSize;
    if (end > size) {
      r.fail(`tensor ${JSON.stringify(t.name)}: its ${t.byteSize} bytes at ${dataOffset + t.rel} run past the end of the ${size}-byte file: the file is truncated or the offset is wrong`);
    }
  }
  const sorted = [...raws].sort((x, y) => x.rel - y.rel);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.rel < prev.rel + prev.byteSize) {
      r.fail(`tensor ${JSON.stringify(cur.name)} (data offset ${cur.rel}) overlaps tensor ${JSON.stringify(prev.name)} (data offset ${prev.rel}, ${prev.byteSize} bytes)`);
    }
  }
  const tensors = raws.map((t): GgufTensorInfo => ({
    name: t.name, type: t.type, dims: t.dims, shape: [...t.dims].reverse(), offset: dataOffset + t.rel,
    byteSize: t.byteSize, elementCount: t.elementCount,
  }));
  return { version: version as 2 | 3, metadata, tensors, alignment, dataOffset };
}

// --- WeightSource ------------------------------------------------------------------------------------

/** The tensors of one GGUF file under their GGUF names, in the file's order, in their stored types. */
export class GgufWeightSource implements WideWeightSource {
  readonly path: string;
  constructor(readonly file: GgufFile) {
    this.path = file.path;
  }
  static open(path: string): GgufWeightSource {
    return new GgufWeightSource(openGguf(path));
  }
  names(): string[] {
    return this.file.tensors.map((t) => t.name);
  }
  has(name: string): boolean {
    return this.file.tensor(name) !== undefined;
  }
  describe(name: string): { dtype: GgmlType; shape: number[] } | undefined {
    const t = this.file.tensor(name);
    return t === undefined ? undefined : { dtype: t.type, shape: [...t.shape] };
  }
  get(name: string): GgufTensor {
    return this.file.readTensor(name);
  }
  close(): void {
    this.file.close();
  }
}

// --- Writing -----------------------------------------------------------------------------------------

export interface GgufWriteTensor {
  readonly name: string;
  readonly type: GgmlType;
  /** torch order (outermost first); written reversed as ggml's ne. */
  readonly shape: readonly number[];
  /** The bytes, or a function producing them when the tensor's turn comes (so they need not all be in memory). */
  readonly data: Uint8Array | (() => Uint8Array);
}

export interface GgufWriteInput {
  readonly metadata: ReadonlyArray<readonly [string, GgufValue]>;
  readonly tensors: readonly GgufWriteTensor[];
}

/** Little-endian bytes collected in 1 MiB pieces and flushed to a file. */
class ByteSink {
  private buf = new Uint8Array(WINDOW);
  private view = new DataView(this.buf.buffer);
  private used = 0;
  written = 0;
  constructor(private readonly fd: number) {}

  private room(n: number): number {
    if (this.used + n > this.buf.length) this.flush();
    const at = this.used;
    this.used += n;
    this.written += n;
    return at;
  }
  flush(): void {
    writeFully(this.fd, this.buf.subarray(0, this.used));
    this.used = 0;
  }
  bytes(b: Uint8Array): void {
    if (b.length > this.buf.length) {
      this.flush();
      writeFully(this.fd, b);
      this.written += b.length;
    } else {
      this.buf.set(b, this.room(b.length));
    }
  }
  u32(v: number): void {
    this.view.setUint32(this.room(4), v, true);
  }
  u64(v: number | bigint): void {
    this.view.setBigUint64(this.room(8), BigInt(v), true);
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  pad(alignment: number): void {
    const n = (alignment - (this.written % alignment)) % alignment;
    if (n > 0) this.bytes(new Uint8Array(n));
  }
  scalar(type: Exclude<GgufValueType, 'string' | 'array'>, v: number | bigint | boolean): void {
    const at = this.room(MIN_BYTES[type]);
    const dv = this.view;
    switch (type) {
      case 'u8': dv.setUint8(at, v as number); break;
      case 'i8': dv.setInt8(at, v as number); break;
      case 'u16': dv.setUint16(at, v as number, true); break;
      case 'i16': dv.setInt16(at, v as number, true); break;
      case 'u32': dv.setUint32(at, v as number, true); break;
      case 'i32': dv.setInt32(at, v as number, true); break;
      case 'f32': dv.setFloat32(at, v as number, true); break;
      case 'f64': dv.setFloat64(at, v as number, true); break;
      case 'u64': dv.setBigUint64(at, BigInt(v as number | bigint), true); break;
      case 'i64': dv.setBigInt64(at, BigInt(v as number | bigint), true); break;
      case 'bool': dv.setUint8(at, v ? 1 : 0); break;
    }
  }
}

function writeFully(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, Math.min(data.length - done, IO_CHUNK));
}

/** Throws InvalidInputError unless `v` is a well-formed value of its declared type. */
function checkValue(v: GgufValue, where: string, depth: number): void {
  const bad = (why: string): never => {
    throw new InvalidInputError(where, why);
  };
  if (!VALUE_TYPE_IDS.includes(v.type)) bad(`unknown GGUF value type ${JSON.stringify(v.type)}`);
  if (v.type === 'array') {
    if (depth >= MAX_ARRAY_DEPTH) bad(`arrays nested more than ${MAX_ARRAY_DEPTH} deep`);
    if (!VALUE_TYPE_IDS.includes(v.elementType)) bad(`unknown array element type ${JSON.stringify(v.elementType)}`);
    v.value.forEach((item: unknown, i: number) => {
      const element = (v.elementType === 'array' ? item : { type: v.elementType, value: item }) as GgufValue;
      if (element.type !== v.elementType) bad(`element ${i} is a ${element.type}, but the array holds ${v.elementType}`);
      checkValue(element, `${where}[${i}]`, depth + 1);
    });
    return;
  }
  // Callers may be plain JavaScript: check the runtime type, not just the declared one.
  const actual: unknown = v.value;
  if (v.type === 'string') {
    if (typeof actual !== 'string') bad('string value must be a string');
  } else if (v.type === 'bool') {
    if (typeof actual !== 'boolean') bad('bool value must be a boolean');
  } else if (v.type === 'f32' || v.type === 'f64') {
    if (typeof actual !== 'number') bad(`${v.type} value must be a number`);
  } else {
    const n = v.value;
    if (!(typeof n === 'bigint' || Number.isSafeInteger(n))) bad(`${v.type} value must be an integer, got ${String(n)}`);
    const [lo, hi] = INT_RANGE[v.type];
    if (BigInt(n) < lo || BigInt(n) > hi) bad(`${n} is out of range for ${v.type}`);
  }
}

function writeValue(sink: ByteSink, v: GgufValue): void {
  if (v.type === 'string') sink.string(v.value);
  else if (v.type === 'array') {
    sink.u32(VALUE_TYPE_ID[v.elementType]);
    sink.u64(v.value.length);
    for (const item of v.value) {
      if (v.elementType === 'array') writeValue(sink, item as GgufArray);
      else if (v.elementType === 'string') sink.string(item as string);
      else sink.scalar(v.elementType, item as number | bigint | boolean);
    }
  } else sink.scalar(v.type, v.value);
}

/**
 * Write a GGUF v3 file: the metadata in the order given (general.alignment is added when the
 * alignment is not the default 32, and must agree with it when given), then the tensor infos, then
 * each tensor's data in turn, padded to the alignment. Tensor data is fetched (or produced, when
 * given as a function) one tensor at a time and written straight to disk, so a model far larger
 * than memory can be written. The file is written under a temporary name and renamed into place,
 * so a failure leaves no partial file at `path`.
 */
export function writeGguf(path: string, input: GgufWriteInput, options: { alignment?: number } = {}): void {
  const alignment = options.alignment ?? DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment < 1 || alignment > MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) {
    throw new InvalidInputError('alignment', `must be a power of two between 1 and ${MAX_ALIGNMENT}, got ${alignment}`);
  }
  const metadata = [...input.metadata];
  const keys = new Set<string>();
  for (const [key, value] of metadata) {
    const bytes = new TextEncoder().encode(key).length;
    if (bytes === 0 || bytes > MAX_KEY_BYTES) throw new InvalidInputError('metadata', `key ${JSON.stringify(key)} must be 1..${MAX_KEY_BYTES} bytes`);
    if (keys.has(key)) throw new InvalidInputError('metadata', `key ${JSON.stringify(key)} is given twice`);
    keys.add(key);
    checkValue(value, `metadata ${JSON.stringify(key)}`, 0);
    if (key === 'general.alignment' && (value.type !== 'u32' || value.value !== alignment)) {
      throw new InvalidInputError('metadata', `general.alignment must be the u32 ${alignment} (the alignment the file is written with)`);
    }
  }
  if (alignment !== DEFAULT_ALIGNMENT && !keys.has('general.alignment')) {
    metadata.push(['general.alignment', { type: 'u32', value: alignment }]);
  }

  const names = new Set<string>();
  const layout = input.tensors.map((t) => {
    const bytes = new TextEncoder().encode(t.name).length;
    if (bytes === 0 || bytes > MAX_TENSOR_NAME_BYTES) throw new InvalidInputError('tensors', `name ${JSON.stringify(t.name)} must be 1..${MAX_TENSOR_NAME_BYTES} bytes`);
    if (names.has(t.name)) throw new InvalidInputError('tensors', `tensor ${JSON.stringify(t.name)} is given twice`);
    names.add(t.name);
    if (!Object.hasOwn(GGML_TYPE_ID, t.type)) throw new TensorShapeError(t.name, `unknown GGML type ${JSON.stringify(t.type)}`);
    if (t.shape.length < 1 || t.shape.length > MAX_DIMS || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
      throw new TensorShapeError(t.name, `shape [${t.shape.join(', ')}] must have 1 to ${MAX_DIMS} dimensions, each at least 1`);
    }
    const dims = [...t.shape].reverse();
    const elements = dims.reduce((p, d) => p * d, 1);
    if (!Number.isSafeInteger(elements)) throw new TensorShapeError(t.name, `shape [${t.shape.join(', ')}] is too large`);
    if (dims[0]! % blockSize(t.type) !== 0) {
      throw new TensorShapeError(t.name, `the last dimension of shape [${t.shape.join(', ')}] must be a multiple of ${t.type}'s block size ${blockSize(t.type)}`);
    }
    return { tensor: t, dims, byteSize: (elements / blockSize(t.type)) * blockBytes(t.type), offset: 0 };
  });
  let offset = 0;
  for (const l of layout) {
    l.offset = offset;
    offset += l.byteSize + ((alignment - (l.byteSize % alignment)) % alignment);
  }

  const partial = `${path}.partial`;
  const fd = fs.openSync(partial, 'w');
  let ok = false;
  try {
    const sink = new ByteSink(fd);
    sink.bytes(Uint8Array.of(0x47, 0x47, 0x55, 0x46)); // "GGUF"
    sink.u32(3);
    sink.u64(layout.length);
    sink.u64(metadata.length);
    for (const [key, value] of metadata) {
      sink.string(key);
      sink.u32(VALUE_TYPE_ID[value.type]);
      writeValue(sink, value);
    }
    for (const l of layout) {
      sink.string(l.tensor.name);
      sink.u32(l.dims.length);
      for (const d of l.dims) sink.u64(d);
      sink.u32(GGML_TYPE_ID[l.tensor.type]);
      sink.u64(l.offset);
    }
    sink.pad(alignment);
    for (const l of layout) {
      const data = typeof l.tensor.data === 'function' ? l.tensor.data() : l.tensor.data;
      if (!(data instanceof Uint8Array) || data.length !== l.byteSize) {
        throw new TensorShapeError(l.tensor.name, `${data instanceof Uint8Array ? data.length : typeof data} bytes of data but shape [${l.tensor.shape.join(', ')}] of ${l.tensor.type} needs ${l.byteSize}`);
      }
      sink.bytes(data);
      sink.pad(alignment);
    }
    sink.flush();
    ok = true;
  } finally {
    fs.closeSync(fd);
    if (ok) fs.renameSync(partial, path);
    else fs.rmSync(partial, { force: true });
  }
}
