/**
 * The native backend: C kernels (SIMD + thread pool) built by `npm install` through node-gyp.
 * It handles f32 activations; f64 reference runs, and anything the addon does not support, go to
 * the TypeScript reference kernels, which define the semantics both must share.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import type { Backend, SharedKvRows } from '../backend.js';
import { referenceBackend } from '../reference/index.js';
import { elementCount, type Tensor, type Vec } from '../tensor.js';
import { GGML_TYPE_ID } from '../../formats/quant/index.js';

interface NativeAddon {
  matmul(y: Float32Array, x: Float32Array, w: Uint8Array, wtype: number, rows: number, cols: number, tokens: number, transposed: number): void;
  rmsNorm(y: Float32Array, x: Float32Array, w: Uint8Array, wtype: number, dim: number, tokens: number, eps: number): void;
  siluMul(y: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  attention(out: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, dk: number, dv: number, queries: number, heads: number, ctx: Int32Array, scale: number): void;
  sharedKvAttention(out: Float32Array, qa: Float32Array, qb: Float32Array, pages: ReadonlyArray<Float32Array | Uint16Array>, pageRows: number, width: number, va: number, queries: number, heads: number, ctx: Int32Array, scale: number): void;
  setThreads(n: number): void;
  mapRegions(path: string, offsets: Float64Array, sizes: Float64Array): ArrayBuffer[];
  readBandwidth(bytes: number, passes: number): number;
  mappedFileFaults(): number;
  info(): { simd: string; threads: number };
}

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
export function mapFileRegions(path: string, regions: ReadonlyArray<{ offset: number; size: number }>): Uint8Array[] | null {
  const n = loadAddon();
  if (!n || process.env['DSEEK_NO_MMAP']) return null;
  const buffers = n.mapRegions(path, Float64Array.from(regions, (r) => r.offset), Float64Array.from(regions, (r) => r.size));
  return buffers.map((b) => new Uint8Array(b));
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
export function createNativeBackend(threads = defaultThreads()): Backend | null {
  const n = loadAddon();
  if (!n) return null;
  n.setThreads(threads);
  const ref = referenceBackend;
  const info = n.info();
  return {
    name: `native (${info.simd}, ${info.threads} thread${info.threads === 1 ? '' : 's'})`,

    matmul(y, x, w, tokens) {
      const wtype = WEIGHT_TYPE[w.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) return ref.matmul(y, x, w, tokens);
      const [rows, cols] = dims(w);
      n.matmul(y, x, w.data, wtype, rows, cols, tokens, 0);
    },

    matmulTransposed(y, x, w, tokens) {
      const wtype = WEIGHT_TYPE[w.dtype];
      if (wtype === undefined || !isF32(y) || !isF32(x)) return ref.matmulTransposed(y, x, w, tokens);
      const [rows, cols] = dims(w);
      n.matmul(y, x, w.data, wtype, rows, cols, tokens, 1);
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

    attention(out, q, k, v, keyWidth, valueWidth, shape) {
      if (!isF32(out) || !isF32(q) || !isF32(k) || !isF32(v)) return ref.attention(out, q, k, v, keyWidth, valueWidth, shape);
      n.attention(out, q, k, v, keyWidth, valueWidth, shape.queries, shape.heads, shape.contextLengths, shape.scale);
    },

    sharedKvAttention(out, qa, qb, kv: SharedKvRows, valueWidth, shape) {
      if (!isF32(out) || !isF32(qa) || !isF32(qb) || kv.dtype === 'f64') {
        return ref.sharedKvAttention(out, qa, qb, kv, valueWidth, shape);
      }
      const pages = kv.pages as ReadonlyArray<Float32Array | Uint16Array>;
      n.sharedKvAttention(out, qa, qb, pages, kv.pageRows, kv.width, valueWidth, shape.queries, shape.heads, shape.contextLengths, shape.scale);
    },
  };
}
