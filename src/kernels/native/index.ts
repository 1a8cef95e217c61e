/**
 * The native backend: C kernels (SIMD + thread pool) built by `npm install` through node-gyp.
 * It handles f32 activations; f64 reference runs, and anything the addon does not support, go to
 * the TypeScript reference kernels, which define the semantics both must share.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Backend, ExpertGroup, HeadGroup, PrepareOptions, PrepareReport, SharedKvRows, SwiGluTriple, Weight } from '../backend.js';
import { InvalidInputError } from '../../errors.js';
import { buildRepacked, openRepacked, repackKey, type PlannedTensor, type RepackAddon } from './repackCache.js';
import { referenceBackend } from '../reference/index.js';
import { elementCount, rowSlice, type Tensor, type Vec } from '../tensor.js';
import { GGML_TYPE_ID } from '../../formats/quant/index.js';

interface NativeAddon extends Omit<RepackAddon, 'mapRegions'> {
  mapRegions(path: string, offsets: Float64Array, sizes: Float64Array, populate: boolean): ArrayBuffer[];
  matmul(y: Float32Array, x: Float32Array, w: Uint8Array, wtype: number, rows: number, cols: number, tokens: number, transposed: number): void;
  rmsNorm(y: Float32Array, x: Float32Array, w: Uint8Array, wtype: number, dim: number, tokens: number, eps: number): void;
  siluMul(y: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  attention(out: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, dk: number, dv: number, queries: number, heads: number, ctx: Int32Array, scale: number): void;
  sharedKvAttention(out: Float32Array, qa: Float32Array, qb: Float32Array, segments: ReadonlyArray<Float32Array | Uint16Array | Uint8Array>, segmentPages: number, pageRows: number, width: number, va: number, queries: number, heads: number, ctx: Int32Array, scale: number, blockTable: Int32Array, queryPages: Int32Array): void;
  setThreads(n: number): void;
  readBandwidth(bytes: number, passes: number): number;
  mappedFileFaults(): number;
  info(): { simd: string; threads: number };
  levels(): Array<{ name: string; supported: boolean }>;
  setLevel(name: string): void;
  prefault(view: Uint8Array): void;
  poolStats(iterations: number): { jobs: number; overheadUs: number };
  expertGroup(matrices: Array<[Uint8Array, number, number, number, number]>, experts: number, shared: boolean): object | null;
  expertsForward(out: Float32Array, x: Float32Array, tokens: number, k: number, expertOf: Int32Array, weightOf: Float32Array, group: object): void;
  headGroup(matrices: Array<[Uint8Array, number, number, number, number]>): object | null;
  matmulHeads(y: Float32Array, x: Float32Array, tokens: number, xStride: number, group: object, shared: number): void;
  add(y: Float32Array, x: Float32Array, n: number): void;
  copyRows(
    dst: Float32Array, src: Float32Array, rows: number, width: number, dstStride: number, srcStride: number, repeat: number, repeatStride: number,
  ): void;
  matmulTransposedHeads(
    y: Float32Array, x: Float32Array, w: Uint8Array, wtype: number, heads: number, rows: number, cols: number, tokens: number, yStride: number,
  ): void;
  packedMatmul(y: Float32Array, x: Float32Array, w: Uint8Array, layout: number, wtype: number, rows: number, cols: number, tokens: number): void;
}

/** Instruction levels of the native kernels, best first, and whether this CPU has each. */
export function nativeLevels(): Array<{ name: string; supported: boolean }> {
  const n = loadAddon();
  return n ? n.levels() : [];
}

/** The default folder for repacked weights: $XDG_CACHE_HOME/dseek/repacked or ~/.cache/dseek/repacked. */
export function defaultRepackDir(): string {
  return join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'dseek', 'repacked');
}

/** Default cap of that folder: 64 GiB (a few quantised V2-Lite files, or one V2). */
export const DEFAULT_REPACK_CACHE_MIB = 65536;

/** GGML type numbers (ggml.h), which the addon uses for weight types. */
const WEIGHT_TYPE: Readonly<Record<string, number | undefined>> = GGML_TYPE_ID;

const ADDON_PATH = fileURLToPath(new URL('../../../../build/Release/dseek_native.node', import.meta.url));

let addon: NativeAddon | null | undefined;
let loadError = '';

function loadAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  try {
    if (!existsSync(ADDON_PATH)) throw new Error(`${ADDON_PATH} is missing (run \`npm run build:native\`)`);
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (err) {
    loadError = err instanceof Error ? err.message : String(err);
    addon = null;
  }
  return addon;
}

/** The addon's current instruction level (process-wide; each backend switches it back to its own). */
let activeLevel = '';

/** Buffers of file mappings (only their pages may be released: releasing heap memory would zero it). */
const mappedBuffers = new WeakSet<ArrayBufferLike>();

/** Why the native backend is unavailable ('' when it loaded). */
export function nativeLoadError(): string {
  loadAddon();
  return loadError;
}

/**
 * Map byte regions of a file read-only (one mmap shared by all of them, released when the last
 * view is garbage-collected): weights are used in place, loading costs no copy, and pages count
 * in RSS only once touched. Null when the addon is unavailable (callers then read the bytes).
 */
export function mapFileRegions(
  path: string,
  regions: ReadonlyArray<{ offset: number; size: number }>,
  populate = true,
): Uint8Array[] | null {
  const n = loadAddon();
  if (!n || process.env['DSEEK_NO_MMAP']) return null;
  return mapGrouped(n, path, regions, populate);
}

/** Largest span one ArrayBuffer covers (V8 refuses external buffers of 4 GiB and more). */
const SPAN_BYTES = 2 ** 31;

/**
 * Regions as views into a few spans of ≤ 2 GiB, each one external ArrayBuffer: V8 counts every
 * external buffer as it is made and starts a full GC for each jump in that count, so thousands of
 * per-tensor buffers cost over a hundred mark-compacts per load (measured: 118 with a repacked
 * V2-Lite, 1 s of a 4.5 s warm load), a few spans cost a few.
 */
function mapGrouped(
  n: NativeAddon,
  path: string,
  regions: ReadonlyArray<{ offset: number; size: number }>,
  populate: boolean,
): Uint8Array[] {
  const order = regions.map((_, i) => i).sort((a, b) => regions[a]!.offset - regions[b]!.offset);
  const spans: Array<{ offset: number; end: number; members: number[] }> = [];
  for (const i of order) {
    const r = regions[i]!;
    const last = spans.at(-1);
    // A view's offset in its span keeps the alignment its element type needs (8 covers every type).
    if (last && r.offset + r.size - last.offset <= SPAN_BYTES && (r.offset - last.offset) % 8 === 0) {
      last.end = Math.max(last.end, r.offset + r.size);
      last.members.push(i);
    } else {
      spans.push({ offset: r.offset, end: r.offset + r.size, members: [i] });
    }
  }
  const buffers = n.mapRegions(
    path,
    Float64Array.from(spans, (s) => s.offset),
    Float64Array.from(spans, (s) => s.end - s.offset),
    populate,
  );
  const views = new Array<Uint8Array>(regions.length);
  spans.forEach((s, k) => {
    const buffer = buffers[k]!;
    mappedBuffers.add(buffer);
    for (const i of s.members) views[i] = new Uint8Array(buffer, regions[i]!.offset - s.offset, regions[i]!.size);
  });
  return views;
}

/**
 * Reads of mapped file pages that faulted because the file shrank (turned into zeros by
 * guard.c instead of SIGBUS), since start; 0 without the addon (nothing is mapped then).
 */
export function mappedFileFaults(): number {
  return loadAddon()?.mappedFileFaults() ?? 0;
}

/**
 * Streaming-read memory bandwidth in bytes/s with `threads` threads (wide loads over a buffer far
 * larger than the caches), or null without the addon.
 */
export function measureReadBandwidth(threads: number, bytes = 1 << 30, passes = 4): number | null {
  const n = loadAddon();
  if (!n) return null;
  n.setThreads(threads);
  return n.readBandwidth(bytes, passes);
}

/**
 * The thread pool's bookkeeping: jobs handed to the workers so far, and (when `iterations` > 0)
 * the measured µs one empty job costs all threads (wake-up + barrier). Null without the addon.
 */
export function threadPoolStats(iterations = 0): { jobs: number; overheadUs: number } | null {
  const n = loadAddon();
  return n ? n.poolStats(iterations) : null;
}

/** The default thread count: one per core the process may use (the machines have no SMT siblings to skip). */
export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

function dims(w: Tensor): [number, number] {
  const rows = w.shape[0]!;
  return [rows, elementCount(w.shape) / rows];
}

const isF32 = (v: Vec): v is Float32Array => v instanceof Float32Array;

/** The native backend with `threads` threads, or null (with nativeLoadError()) if the addon is unavailable. */
export function createNativeBackend(threads = defaultThreads(), level?: string): Backend | null {
  const n = loadAddon();
  if (!n) return null;
  n.setThreads(threads);
  // DSEEK_SIMD forces a level (lower than the best, for comparisons and tests); DSEEK_NO_SIMD=1 means scalar.
  const wanted = level ?? (process.env['DSEEK_SIMD'] || (process.env['DSEEK_NO_SIMD'] ? 'scalar' : undefined));
  const levels = n.levels();
  if (wanted !== undefined) {
    const known = levels.find((l) => l.name === wanted);
    if (!known || !known.supported) {
      throw new InvalidInputError(
        'DSEEK_SIMD',
        `"${wanted}" is not a kernel level this CPU runs: choose one of ${levels.filter((l) => l.supported).map((l) => l.name).join(', ')}`,
      );
    }
    n.setLevel(wanted);
    activeLevel = wanted;
  } else {
    activeLevel = levels.find((l) => l.supported)!.name;
    n.setLevel(activeLevel);
  }
  const ref = referenceBackend;
  const info = n.info();
  const simd = info.simd;
  const owner = `native:${simd}`;
  // The addon's level is process-wide: a backend made for another level switches it back before its products.
  const useLevel = () => {
    if (activeLevel !== simd) {
      n.setLevel(simd);
      activeLevel = simd;
    }
  };

  const cacheAddon: RepackAddon = {
    repackPlan: (wtype, rows, cols) => n.repackPlan(wtype, rows, cols),
    repack: (src, dst, wtype, rows, cols) => n.repack(src, dst, wtype, rows, cols),
    hashBytes: (view) => n.hashBytes(view),
    mapRegions: (path, regions, populate) => mapGrouped(n, path, regions, populate),
    releasePages: (view) => {
      if (mappedBuffers.has(view.buffer)) n.releasePages(view);
    },
  };
  const prefault = (t: Tensor) => {
    if (mappedBuffers.has(t.data.buffer)) n.prefault(t.data);
  };

  const prepareAll = (tensors: readonly Tensor[], options: PrepareOptions = {}): { weights: Weight[]; report: PrepareReport } => {
    const started = performance.now();
    useLevel();
    for (const t of options.others ?? []) prefault(t);
    const planned: PlannedTensor[] = [];
    const index: number[] = [];
    if (options.repack !== false) {
      tensors.forEach((t, i) => {
        const wtype = WEIGHT_TYPE[t.dtype];
        if (wtype === undefined || t.shape.length < 2) return;
        const [rows, cols] = dims(t);
        const [layout, bytes] = n.repackPlan(wtype, rows, cols);
        if (layout === 0) return;
        planned.push({ tensor: t, wtype, rows, cols, layout, bytes });
        index.push(i);
      });
    }
    const weights: Weight[] = [...tensors];
    const repackedBytes = planned.reduce((s, p) => s + p.bytes, 0);
    const plannedSet = new Set(index);
    tensors.forEach((t, i) => {
      if (!plannedSet.has(i)) prefault(t);
    });
    if (planned.length === 0) {
      return { weights, report: { repacked: 0, repackedBytes: 0, source: 'none', seconds: 0, file: null } };
    }
    const notice = options.onNotice ?? ((m: string) => process.stderr.write(`${m}\n`));
    const progress = options.onProgress ?? (() => {});
    let views: Uint8Array[] | null = null;
    let source: PrepareReport['source'] = 'memory';
    let file: string | null = null;
    // Tiny models are repacked in memory: a cache file would cost more than it saves.
    if (options.cacheDir && repackedBytes >= 16 << 20) {
      const key = repackKey(cacheAddon, planned);
      // The key's samples touched each tensor at three places, and where the file is in the page
      // cache as large folios (Linux 6.x) each touch maps megabytes: 9.9 of a 10.4 GB Q4_K_M file
      // counted in RSS beside the repacked copy until the release below. A build reads them back.
      for (const p of planned) cacheAddon.releasePages(p.tensor.data);
      let hit = openRepacked(cacheAddon, options.cacheDir, key, planned, notice);
      if (hit) source = 'mapped';
      else {
        hit = buildRepacked(cacheAddon, options.cacheDir, key, simd, planned, (options.cacheMaxMiB ?? DEFAULT_REPACK_CACHE_MIB) * 2 ** 20, progress, notice);
        if (hit) source = 'built';
      }
      if (hit) {
        views = hit.views;
        file = hit.file;
      }
    }
    if (!views) {
      views = [];
      let done = 0;
      for (const p of planned) {
        const out = new Uint8Array(p.bytes);
        n.repack(p.tensor.data, out, p.wtype, p.rows, p.cols);
        views.push(out);
        done += p.bytes;
        progress(done, repackedBytes);
      }
    }
    planned.forEach((p, k) => {
      if (source !== 'built') cacheAddon.releasePages(p.tensor.data); // the original rows are not read again
      weights[index[k]!] = { ...p.tensor, packed: { owner, layout: p.layout, bytes: views![k]! } };
    });
    progress(repackedBytes, repackedBytes);
    const seconds = (performance.now() - started) / 1000;
    return { weights, report: { repacked: planned.length, repackedBytes, source, seconds, file } };
  };

  /** The native handle of a group, and the weights whose buffers it points into (kept alive with it). */
  interface NativeExpertGroup extends ExpertGroup {
    readonly handle: object;
    readonly weights: readonly Weight[];
  }
  const groups = new WeakSet<ExpertGroup>();

  /** The addon's descriptors of packed weights, or null when one is not packed here or has a plain tail. */
  const packedMatrices = (order: readonly Weight[]): Array<[Uint8Array, number, number, number, number]> | null => {
    const matrices: Array<[Uint8Array, number, number, number, number]> = [];
    for (const w of order) {
      const wtype = WEIGHT_TYPE[w.dtype];
      if (!w.packed || !w.packed.owner.startsWith('native:') || wtype === undefined) return null;
      const [rows, cols] = dims(w);
      if (rows % 8 !== 0) return null; // a plain tail: the composed path handles it
      matrices.push([w.packed.bytes, wtype, w.packed.layout, rows, cols]);
    }
    return matrices;
  };

  const prepareExperts = (experts: readonly SwiGluTriple[], shared: SwiGluTriple | null): ExpertGroup | null => {
    const order = [...experts.map((e) => e.gate), ...experts.map((e) => e.up), ...experts.map((e) => e.down)];
    if (shared) order.push(shared.gate, shared.up, shared.down);
    const matrices = packedMatrices(order);
    if (!matrices) return null;
    const handle = n.expertGroup(matrices, experts.length, shared !== null);
    if (!handle) return null;
    const group: NativeExpertGroup = { owner, handle, weights: order };
    groups.add(group);
    return group;
  };

  interface NativeHeadGroup extends HeadGroup {
    readonly handle: object;
    readonly weights: readonly Weight[];
    readonly heads: number;
    readonly rows: number;
    readonly cols: number;
  }
  const headGroups = new WeakSet<HeadGroup>();

  const prepareHeads = (weights: readonly Weight[]): HeadGroup | null => {
    const matrices = packedMatrices(weights);
    if (!matrices || matrices.length === 0) return null;
    const handle = n.headGroup(matrices);
    if (!handle) return null;
    const group: NativeHeadGroup = { owner, handle, weights, heads: weights.length, rows: matrices[0]![3], cols: matrices[0]![4] };
    headGroups.add(group);
    return group;
  };

  return {
    name: `native (${info.simd}, ${info.threads} thread${info.threads === 1 ? '' : 's'})`,

    prepareAll,
    prepareExperts,
    prepareHeads,

    matmulHeads(y, x, tokens, xStride, group, shared = false) {
      if (!headGroups.has(group) || !isF32(y) || !isF32(x)) {
        throw new InvalidInputError('matmulHeads', "needs a group from this backend's prepareHeads and f32 vectors");
      }
      useLevel();
      n.matmulHeads(y, x, tokens, xStride, (group as NativeHeadGroup).handle, shared ? 1 : 0);
    },

    expertsForward(out, x, tokens, k, expertOf, weightOf, group) {
      if (!groups.has(group) || !isF32(out) || !isF32(x)) {
        throw new InvalidInputError('expertsForward', 'needs a group from this backend\'s prepareExperts and f32 vectors');
      }
      useLevel();
      n.expertsForward(out, x, tokens, k, expertOf, weightOf, (group as NativeExpertGroup).handle);
    },

    matmul(y, x, w, tokens) {
      const wtype = WEIGHT_TYPE[w.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) return ref.matmul(y, x, w, tokens);
      const [rows, cols] = dims(w);
      const packed = (w as Weight).packed;
      if (packed && packed.owner.startsWith('native:')) {
        useLevel();
        n.packedMatmul(y, x, packed.bytes, packed.layout, wtype, rows, cols, tokens);
        return;
      }
      n.matmul(y, x, w.data, wtype, rows, cols, tokens, 0);
    },

    matmulTransposed(y, x, w, tokens) {
      const wtype = WEIGHT_TYPE[w.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) return ref.matmulTransposed(y, x, w, tokens);
      const [rows, cols] = dims(w);
      n.matmul(y, x, w.data, wtype, rows, cols, tokens, 1);
    },

    matmulTransposedHeads(y, x, w, heads, tokens, yStride) {
      const [allRows, cols] = dims(w);
      if (!Number.isInteger(heads) || heads < 1 || allRows % heads !== 0) {
        throw new InvalidInputError('matmulTransposedHeads', `${allRows} rows do not split into ${heads} heads`);
      }
      const rows = allRows / heads;
      const wtype = WEIGHT_TYPE[w.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) {
        // Per head through the reference, written at the stride.
        const one = new Float32Array(tokens * cols);
        for (let h = 0; h < heads; h++) {
          ref.matmulTransposed(one, x, rowSlice(w, h * rows, rows), tokens);
          for (let t = 0; t < tokens; t++) y.set(one.subarray(t * cols, (t + 1) * cols), (t * heads + h) * yStride);
        }
        return;
      }
      n.matmulTransposedHeads(y, x, w.data, wtype, heads, rows, cols, tokens, yStride);
    },

    rmsNorm(y, x, weight, eps, tokens) {
      const wtype = WEIGHT_TYPE[weight.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) return ref.rmsNorm(y, x, weight, eps, tokens);
      n.rmsNorm(y, x, weight.data, wtype, elementCount(weight.shape), tokens, eps);
    },

    ropeAdjacent: ref.ropeAdjacent,
    softmax: ref.softmax,
    topK: ref.topK,

    siluMul(y, gate, up, count) {
      if (!isF32(y) || !isF32(gate) || !isF32(up)) return ref.siluMul(y, gate, up, count);
      n.siluMul(y, gate, up, count);
    },

    add(y, x, count) {
      if (!isF32(y) || !isF32(x)) return ref.add(y, x, count);
      n.add(y, x, count);
    },

    copyRows(dst, src, rows, width, dstStride, srcStride, repeat = 1, repeatStride = 0) {
      if (!isF32(dst) || !isF32(src)) return ref.copyRows(dst, src, rows, width, dstStride, srcStride, repeat, repeatStride);
      n.copyRows(dst, src, rows, width, dstStride, srcStride, repeat, repeatStride);
    },

    attention(out, q, k, v, keyWidth, valueWidth, shape) {
      if (!isF32(out) || !isF32(q) || !isF32(k) || !isF32(v)) return ref.attention(out, q, k, v, keyWidth, valueWidth, shape);
      n.attention(out, q, k, v, keyWidth, valueWidth, shape.queries, shape.heads, shape.contextLengths, shape.scale);
    },

    sharedKvAttention(out, qa, qb, kv: SharedKvRows, valueWidth, shape) {
      if (!isF32(out) || !isF32(qa) || !isF32(qb) || kv.dtype === 'f64') {
        return ref.sharedKvAttention(out, qa, qb, kv, valueWidth, shape);
      }
      // f32, f16 bits or q8 bytes: the addon tells them apart by the segments' array type.
      const segments = kv.segments as ReadonlyArray<Float32Array | Uint16Array | Uint8Array>;
      n.sharedKvAttention(out, qa, qb, segments, kv.segmentPages, kv.pageRows, kv.width, valueWidth, shape.queries, shape.heads, shape.contextLengths, shape.scale, kv.blockTable, kv.queryPages);
    },
  };
}
