/**
 * Hugging Face safetensors: read (single file, or a sharded folder with
 * `model.safetensors.index.json`) and write.
 *
 * Format (https://github.com/huggingface/safetensors, README "Format"):
 *   8 bytes   N, little-endian u64: the size of the header
 *   N bytes   UTF-8 JSON object, beginning with '{', optionally padded at the end with spaces:
 *             { "__metadata__"?: {string: string},
 *               "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ... }
 *   rest      the data section; offsets are relative to its start, little-endian, C order.
 * The validation below is what the reference reader (safetensors/src/tensor.rs `read_metadata` and
 * `Metadata::validate`) does: header ≤ 100 MB, tensors sorted by offset cover the data section
 * exactly (no overlap, no gap, nothing after the last), each tensor's byte size equals its element
 * count × dtype size. On top of that we reject duplicate names (JSON.parse, like serde, would keep
 * the last one silently).
 *
 * Dtypes: F32, F16 and BF16 are loaded as they are stored (16-bit stays 16-bit). A tensor of any
 * other dtype the reference knows (FP8, integers, …) is first validated with that dtype's size, then
 * rejected when the file is opened, not on `get`: a checkpoint dseek cannot run should fail at load
 * with the conversion hint, not halfway through building the model, and `describe` can then
 * always answer in dseek's own `DType`.
 *
 * Reading never pulls a whole file into memory: the header is read with positioned reads, and each
 * tensor is read on `get` into its own freshly allocated buffer (so a Float32Array over it is
 * aligned). Offsets are plain numbers (exact up to 2^53 bytes); no 32-bit bit operations touch them.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { InvalidInputError, ModelFormatError, TensorShapeError } from '../errors.js';
import { bytesPerElement, elementCount, isFloatType, type DType, type Tensor } from '../kernels/tensor.js';
import { mapFileRegions } from '../kernels/native/index.js';

/** Where the model loader gets its weights: safetensors now, GGUF later. */
export interface WeightSource {
  /** The file or folder the weights were opened from. */
  readonly path: string;
  /** Every tensor name, in storage order (shard by shard, by offset within a shard). */
  names(): string[];
  has(name: string): boolean;
  describe(name: string): { dtype: DType; shape: number[] } | undefined;
  /** The tensor's bytes, read now into a new buffer. Throws ModelFormatError for an unknown name. */
  get(name: string): Tensor;
  /** Releases the open files; the source cannot be used afterwards. */
  close(): void;
}

/** The reference's limit on the header size (MAX_HEADER_SIZE in safetensors/src/tensor.rs). */
const MAX_HEADER_BYTES = 100_000_000;
const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';
/** fs.readSync reads at most 2^31 − 1 bytes per call; stay well below. */
const READ_CHUNK = 1 << 30;

/** Bits per element of every dtype the reference knows (the `Dtype` enum in safetensors/src/tensor.rs). */
const DTYPE_BITS: ReadonlyMap<string, number> = new Map([
  ['BOOL', 8], ['F4', 4], ['F6_E2M3', 6], ['F6_E3M2', 6], ['U8', 8], ['I8', 8],
  ['F8_E5M2', 8], ['F8_E4M3', 8], ['F8_E8M0', 8], ['I16', 16], ['U16', 16], ['F16', 16],
  ['BF16', 16], ['I32', 32], ['U32', 32], ['F32', 32], ['C64', 64], ['F64', 64], ['I64', 64],
  ['U64', 64],
]);

const LOADED: ReadonlyMap<string, DType> = new Map([['F32', 'f32'], ['F16', 'f16'], ['BF16', 'bf16']]);
const STORED_NAME: Readonly<Partial<Record<DType, string>>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** One tensor of one file: where its bytes are, absolute in the file. */
interface Entry {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly position: number;
  readonly size: number;
}

/** An open .safetensors file whose header has been read and validated. */
class SafetensorsFile {
  private fd: number | undefined;
  private constructor(
    readonly path: string,
    fd: number,
    /** In offset order. */
    readonly entries: ReadonlyMap<string, Entry>,
  ) {
    this.fd = fd;
  }

  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new ModelFormatError(file, `cannot open safetensors file: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      return new SafetensorsFile(file, fd, readHeader(file, fd));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Views of every tensor over one read-only mapping of the file, made on first use (null: no mmap). */
  private mapped: Map<string, Uint8Array> | null | undefined;

  /**
   * A tensor's bytes: a view of the memory-mapped file when the native addon is available (no copy,
   * pages load on first touch), else read now into a new buffer (4-byte aligned for f32 views).
   */
  read(name: string, entry: Entry): Uint8Array {
    if (this.fd === undefined) throw new Error(`${this.path}: read of tensor ${JSON.stringify(name)} after close()`);
    if (this.mapped === undefined) {
      const list = [...this.entries];
      const views = mapFileRegions(this.path, list.map(([, e]) => ({ offset: e.position, size: e.size })), false);
      this.mapped = views ? new Map(list.map(([n], i) => [n, views[i]!])) : null;
    }
    const view = this.mapped?.get(name);
    // A misaligned f32 tensor cannot back a Float32Array view: read it into a fresh buffer instead.
    if (view && (entry.dtype !== 'f32' || entry.position % 4 === 0)) return view;
    const data = new Uint8Array(entry.size);
    readFully(this.fd, this.path, data, entry.position, `tensor ${JSON.stringify(name)}`);
    return data;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Fill `buf` from `position`, looping over short reads; running out of file is a format error. */
function readFully(fd: number, file: string, buf: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(buf.length - done, READ_CHUNK), position + done);
    if (n === 0) {
      throw new ModelFormatError(file, `file ends at byte ${position + done} while reading ${what}: the file is truncated`);
    }
    done += n;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Read and validate the header of an open file; the entries come back in offset order. */
function readHeader(file: string, fd: number): Map<string, Entry> {
  const fileSize = fs.fstatSync(fd).size;
  const fail = (message: string): never => {
    throw new ModelFormatError(file, message);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes, too short for the 8-byte header length of a safetensors file`);

  const lenBytes = new Uint8Array(8);
  readFully(fd, file, lenBytes, 0, 'the header length');
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  // Compare as bigint first: a garbage length can exceed 2^53.
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${n64} exceeds the safetensors limit of ${MAX_HEADER_BYTES} bytes: not a safetensors file, or corrupt`);
  }
  const n = Number(n64);
  if (8 + n > fileSize) {
    fail(`header length ${n} runs past the end of the ${fileSize}-byte file: not a safetensors file, or truncated`);
  }

  const headerBytes = new Uint8Array(n);
  readFully(fd, file, headerBytes, 8, 'the header');
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail('header is not valid UTF-8');
  }
  // The spec: "The header data MUST begin with a { character".
  if (!text.startsWith('{')) fail(`header must be a JSON object beginning with '{' but begins with ${JSON.stringify(text.slice(0, 16))}`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (!isObject(header)) fail('header must be a JSON object');
  const dup = firstDuplicateKey(text);
  if (dup !== undefined) fail(`header names ${JSON.stringify(dup)} more than once`);
  const obj = header as Record<string, unknown>;

  interface Raw { name: string; dtype: string; bits: number; shape: number[]; begin: number; end: number }
  const raws: Raw[] = [];
  for (const [name, value] of Object.entries(obj)) {
    const where = `tensor ${JSON.stringify(name)}`;
    if (name === '__metadata__') {
      // Free-form string → string map (the reference reads it as HashMap<String, String>).
      if (!isObject(value)) fail('__metadata__ must be an object of string values');
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ key ${JSON.stringify(k)} must be a string, not ${JSON.stringify(v)}`);
      }
      continue;
    }
    if (!isObject(value)) fail(`${where}: entry must be an object {dtype, shape, data_offsets}`);
    const info = value as Record<string, unknown>;
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== 'string') fail(`${where}: dtype must be a string`);
    const bits = DTYPE_BITS.get(dtype as string);
    if (bits === undefined) fail(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isSize)) {
      fail(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize)) {
      fail(`${where}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`${where}: data_offsets [${begin}, ${end}] begin after they end`);
    raws.push({ name, dtype: dtype as string, bits: bits as number, shape: shape as number[], begin, end });
  }

  // As the reference: sort by (begin, end), then the tensors must tile the data section from 0.
  raws.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  let expected = 0;
  let previous = '';
  for (const r of raws) {
    const where = `tensor ${JSON.stringify(r.name)}`;
    const span = `data_offsets [${r.begin}, ${r.end}]`;
    if (r.begin < expected) fail(`${where}: ${span} overlap tensor ${JSON.stringify(previous)}, which ends at ${expected}`);
    if (r.begin > expected) fail(`${where}: ${span} leave a gap of ${r.begin - expected} bytes after offset ${expected}`);
    const elements = elementCount(r.shape);
    const bits = elements * r.bits;
    if (!Number.isSafeInteger(bits)) fail(`${where}: shape [${r.shape.join(', ')}] is too large`);
    if (bits % 8 !== 0) fail(`${where}: ${elements} elements of ${r.dtype} do not fill whole bytes`);
    const bytes = bits / 8;
    if (r.end - r.begin !== bytes) {
      fail(`${where}: ${span} hold ${r.end - r.begin} bytes but shape [${r.shape.join(', ')}] of ${r.dtype} needs ${bytes}`);
    }
    if (r.end > dataSize) {
      fail(`${where}: ${span} end past the ${dataSize}-byte data section: the file is truncated or the offsets are wrong`);
    }
    expected = r.end;
    previous = r.name;
  }
  if (expected !== dataSize) {
    fail(`tensors cover ${expected} bytes of the ${dataSize}-byte data section: ${dataSize - expected} bytes after the last tensor`);
  }

  const entries = new Map<string, Entry>();
  for (const r of raws) {
    const dtype = LOADED.get(r.dtype);
    if (dtype === undefined) {
      fail(`unsupported dtype ${r.dtype} for tensor ${JSON.stringify(r.name)}: dseek loads F32, F16 and BF16 safetensors (convert the checkpoint, e.g. FP8 → BF16)`);
    }
    entries.set(r.name, { dtype: dtype as DType, shape: r.shape, position: dataStart + r.begin, size: r.end - r.begin });
  }
  return entries;
}

/**
 * The first key that occurs twice at the top level of a JSON object text (already known to parse),
 * decoded so that "a" and "\u0061" count as the same key.
 */
function firstDuplicateKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

/** A set of open files and which tensor lives in which. */
class Source implements WeightSource {
  private readonly where = new Map<string, { file: SafetensorsFile; entry: Entry }>();
  constructor(
    readonly path: string,
    private readonly files: SafetensorsFile[],
    /** Only these names (a sharded index) or, when undefined, everything in the files. */
    wanted?: ReadonlyMap<string, SafetensorsFile>,
  ) {
    for (const file of files) {
      for (const [name, entry] of file.entries) {
        if (wanted === undefined || wanted.get(name) === file) this.where.set(name, { file, entry });
      }
    }
  }

  names(): string[] {
    return [...this.where.keys()];
  }
  has(name: string): boolean {
    return this.where.has(name);
  }
  describe(name: string): { dtype: DType; shape: number[] } | undefined {
    const hit = this.where.get(name);
    return hit && { dtype: hit.entry.dtype, shape: [...hit.entry.shape] };
  }
  get(name: string): Tensor {
    const hit = this.where.get(name);
    if (hit === undefined) throw new ModelFormatError(this.path, `no tensor named ${JSON.stringify(name)}`);
    return { dtype: hit.entry.dtype, shape: [...hit.entry.shape], data: hit.file.read(name, hit.entry) };
  }
  close(): void {
    for (const f of this.files) f.close();
  }
}

/**
 * Open safetensors weights: a `.safetensors` file, a `model.safetensors.index.json`, or a folder
 * holding either `model.safetensors.index.json` (sharded), `model.safetensors`, or exactly one
 * `*.safetensors`. Every header is read and validated now; tensor bytes are read on `get`.
 */
export function openSafetensors(path: string): WeightSource {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    throw new ModelFormatError(path, `no weights found: the path does not exist (expected a .safetensors file, or a folder with ${INDEX_FILE} or ${SINGLE_FILE})`);
  }
  if (!stat.isDirectory()) {
    if (path.endsWith('.index.json')) return openSharded(path, nodePath.dirname(path), path);
    const file = SafetensorsFile.open(path);
    return new Source(path, [file]);
  }
  const index = nodePath.join(path, INDEX_FILE);
  if (fs.existsSync(index)) return openSharded(path, path, index);
  const single = nodePath.join(path, SINGLE_FILE);
  if (fs.existsSync(single)) return new Source(path, [SafetensorsFile.open(single)]);
  const found = fs.readdirSync(path).filter((f) => f.endsWith('.safetensors')).sort();
  if (found.length === 1) return new Source(path, [SafetensorsFile.open(nodePath.join(path, found[0]!))]);
  if (found.length > 1) {
    throw new ModelFormatError(path, `found ${found.length} .safetensors files (${found.slice(0, 3).join(', ')}${found.length > 3 ? ', …' : ''}) but no ${INDEX_FILE} saying which tensor is in which`);
  }
  throw new ModelFormatError(path, `no weights found: expected ${INDEX_FILE} (sharded), ${SINGLE_FILE}, or one *.safetensors file in this folder`);
}

/** A sharded checkpoint: the index's `weight_map` maps each tensor name to a shard file in `folder`. */
function openSharded(path: string, folder: string, indexPath: string): WeightSource {
  const fail = (message: string): never => {
    throw new ModelFormatError(indexPath, message);
  };
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    fail(`cannot read the shard index: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObject(index) || !isObject(index['weight_map'])) fail('expected a JSON object with a "weight_map" object');
  const weightMap = (index as Record<string, Record<string, unknown>>)['weight_map']!;

  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    const where = `weight_map[${JSON.stringify(name)}]`;
    if (typeof shard !== 'string') fail(`${where} must be a shard file name, got ${JSON.stringify(shard)}`);
    const s = shard as string;
    // A shard must be a plain file in the same folder: the index must not reach elsewhere on disk.
    if (s === '' || s === '.' || s === '..' || s.includes('/') || s.includes('\\') || s.includes('\0')) {
      fail(`${where} = ${JSON.stringify(s)} is not a plain file name in the model folder`);
    }
    shardOf.set(name, s);
  }
  if (shardOf.size === 0) fail('weight_map lists no tensors');

  const files = new Map<string, SafetensorsFile>();
  try {
    for (const [name, shard] of shardOf) {
      if (files.has(shard)) continue;
      const shardPath = nodePath.join(folder, shard);
      if (!fs.existsSync(shardPath) || !fs.statSync(shardPath).isFile()) {
        fail(`shard ${JSON.stringify(shard)} (holding ${JSON.stringify(name)}) does not exist in ${folder}`);
      }
      files.set(shard, SafetensorsFile.open(shardPath));
    }
    const wanted = new Map<string, SafetensorsFile>();
    for (const [name, shard] of shardOf) {
      const file = files.get(shard)!;
      if (!file.entries.has(name)) fail(`tensor ${JSON.stringify(name)} is listed in shard ${JSON.stringify(shard)} but that file does not contain it`);
      wanted.set(name, file);
    }
    return new Source(path, [...files.values()], wanted);
  } catch (e) {
    for (const f of files.values()) f.close();
    throw e;
  }
}

/**
 * Write a safetensors file: tensors in the order given, dtype names F32/F16/BF16, the header padded
 * with spaces to a multiple of 8 bytes (as the reference writer does) so the data section starts
 * 8-byte aligned. Data is written tensor by tensor, never gathered into one buffer.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor> | Array<[string, Tensor]>,
  metadata?: Record<string, string>,
): void {
  const list = Array.isArray(tensors) ? tensors : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new InvalidInputError(`metadata.${k}`, 'safetensors metadata values must be strings');
    }
    header['__metadata__'] = metadata;
  }
  let offset = 0;
  for (const [name, t] of list) {
    if (name === '__metadata__') throw new InvalidInputError('tensors', '"__metadata__" is reserved and cannot name a tensor');
    if (Object.hasOwn(header, name)) throw new InvalidInputError('tensors', `tensor ${JSON.stringify(name)} is given twice`);
    if (!isFloatType(t.dtype)) {
      throw new InvalidInputError('tensors', `tensor ${JSON.stringify(name)} is ${t.dtype}: safetensors stores F32, F16 and BF16 only`);
    }
    const size = elementCount(t.shape) * bytesPerElement(t.dtype);
    if (t.data.byteLength !== size) {
      throw new TensorShapeError(name, `${t.data.byteLength} bytes of data but shape [${t.shape.join(', ')}] of ${t.dtype} needs ${size}`);
    }
    header[name] = { dtype: STORED_NAME[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json, 'utf8') % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(headerBytes.length));

  const fd = fs.openSync(path, 'w');
  try {
    writeFully(fd, lenBytes);
    writeFully(fd, headerBytes);
    for (const [, t] of list) writeFully(fd, t.data);
  } finally {
    fs.closeSync(fd);
  }
}

function writeFully(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, Math.min(data.length - done, READ_CHUNK));
  }
}
