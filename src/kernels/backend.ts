/**
 * The kernel interface. Kernels know nothing about models: they see vectors, weight tensors and
 * shapes. The plain TypeScript reference backend defines the semantics (it is the oracle); a
 * native backend must agree with it on random inputs.
 *
 * Conventions: activations are row-major `[rows][width]` in a Vec (f32, or f64 for a float64
 * reference run); weights are `Tensor`s in their stored type, shape [rows, cols], `y = W x`.
 * Accumulation is at least f32.
 */
import type { Tensor, Vec } from './tensor.js';

/**
 * A weight as a backend holds it: the tensor as stored, plus (when the backend made one) its own
 * copy in a kernel-owned layout. Callers pass Weights where a product takes a weight and never
 * look inside `packed`; `rowSlice` of a Weight gives a plain Tensor (the stored rows), so a
 * slice that should stay fast is prepared on its own.
 */
export interface Weight extends Tensor {
  readonly packed?: PackedWeight;
}

/** Opaque to everything but the backend that made it. */
export interface PackedWeight {
  /** The backend (and instruction level) whose kernels read this layout. */
  readonly owner: string;
  readonly layout: number;
  readonly bytes: Uint8Array;
}

/** A SwiGLU weight triple: y = down(silu(gate x) · up x). */
export interface SwiGluTriple {
  readonly gate: Weight;
  readonly up: Weight;
  readonly down: Weight;
}

/** Weight triples made ready for one fused call (opaque; from `prepareExperts`). */
export interface ExpertGroup {
  readonly owner: string;
}

/** Per-head weights made ready for one call over all heads (opaque; from `prepareHeads`). */
export interface HeadGroup {
  readonly owner: string;
}

/** How `prepareAll` may keep repacked weights between runs. */
export interface PrepareOptions {
  /** Folder for repacked copies (memory-mapped on later loads); null: repack in memory each time. */
  readonly cacheDir?: string | null;
  /** Most MiB the folder may hold; the least recently used files go first. */
  readonly cacheMaxMiB?: number;
  /** false: keep every weight in its stored layout (the row kernels). */
  readonly repack?: boolean;
  /** Progress of repacking: bytes done of bytes to do (called with done = total at the end). */
  readonly onProgress?: (done: number, total: number) => void;
  /** Tensors read as stored (embeddings, norms, transposed products): the backend may page them in now. */
  readonly others?: readonly Tensor[];
  /** One line for the user (a rebuilt cache, a cache that would not fit). */
  readonly onNotice?: (message: string) => void;
}

/** What preparing did: for `dseek bench` and the load line. */
export interface PrepareReport {
  readonly repacked: number;
  readonly repackedBytes: number;
  /** 'memory' (repacked now, kept in memory), 'built' (repacked now and cached), 'mapped' (from the cache), 'none'. */
  readonly source: 'memory' | 'built' | 'mapped' | 'none';
  readonly seconds: number;
  readonly file: string | null;
}

/**
 * Rows of key matrices whose first `valueWidth` columns double as the value (MQA with one shared
 * key/value head, which is what absorbed MLA reduces to), for a batch of queries that may belong
 * to different sequences, addressed as vLLM's paged attention does: by a block table into one slab.
 *
 * The slab is one layer of a page pool: `segments` of `segmentPages` pages each, a page holding
 * `pageRows` rows. Query t's key row j lies in page p = blockTable[queryPages[t] + ⌊j / pageRows⌋],
 * at row (p mod segmentPages) · pageRows + (j mod pageRows) of segment ⌊p / segmentPages⌋. Rows are
 * f32, f64 or f16 bits, `width` values each; or q8 (Uint8Array, ggml Q8_0 blocks, q8Row.ts),
 * q8RowBytes(width) bytes each, every value d · q of its 32-value block.
 */
export interface SharedKvRows {
  readonly dtype: 'f32' | 'f64' | 'f16' | 'q8';
  readonly segments: ReadonlyArray<Float32Array | Float64Array | Uint16Array | Uint8Array>;
  readonly segmentPages: number;
  readonly pageRows: number;
  /** Values per row (key width). */
  readonly width: number;
  /** Page ids, each sequence's pages in order. */
  readonly blockTable: Int32Array;
  /** Per query: where its sequence's pages start in blockTable. */
  readonly queryPages: Int32Array;
}

/**
 * The rows of one sequence whose pages are separate arrays (each a segment of one page), for all
 * `queries` of the sequence: the form a test or a caller without a page pool has.
 */
export function sequenceRows(
  dtype: SharedKvRows['dtype'],
  pages: SharedKvRows['segments'],
  pageRows: number,
  width: number,
  queries: number,
): SharedKvRows {
  return {
    dtype,
    segments: pages,
    segmentPages: 1,
    pageRows,
    width,
    blockTable: Int32Array.from(pages, (_, i) => i),
    queryPages: new Int32Array(queries),
  };
}

export interface AttentionShape {
  /** Query rows (tokens). */
  readonly queries: number;
  readonly heads: number;
  /** Query t attends to key rows [0, contextLengths[t]) — causal masking by length. */
  readonly contextLengths: Int32Array;
  /** Multiplier on every q·k logit. */
  readonly scale: number;
}

export interface Backend {
  readonly name: string;

  /**
   * The backend's own form of weights used in `matmul`, made once at load: the native backend
   * repacks block-quantised rows into interleaved row groups (cached on disk when `cacheDir` is
   * given), the reference backend returns the tensors unchanged. Same order as `tensors`.
   */
  prepareAll(tensors: readonly Tensor[], options?: PrepareOptions): { weights: Weight[]; report: PrepareReport };

  /** y[t·R + r] = Σ_c W[r, c] · x[t·C + c] for t < tokens, where W is [R, C]. */
  matmul(y: Vec, x: Vec, w: Weight, tokens: number): void;

  /**
   * Optional fused path for a group of SwiGLU triples (mixture-of-experts layers): null when this
   * backend has none for these weights (types, layouts, shapes); callers then compose matmuls.
   */
  prepareExperts?(experts: readonly SwiGluTriple[], shared: SwiGluTriple | null): ExpertGroup | null;

  /**
   * out[t] = Σ_{i<k} weightOf[t·k+i] · triple_e(x_t), e = expertOf[t·k+i], plus shared(x_t) when the
   * group has one — the same as composing matmul and siluMul per triple, up to float summation
   * order. x and out are [tokens][d] f32.
   */
  expertsForward?(out: Vec, x: Vec, tokens: number, k: number, expertOf: Int32Array, weightOf: Float32Array, group: ExpertGroup): void;

  /**
   * Optional: the weights W_0 … W_{H−1} (one type and shape [R, C], from prepareAll) made ready
   * for `matmulHeads`; null when this backend has no such path for them.
   */
  prepareHeads?(weights: readonly Weight[]): HeadGroup | null;

  /**
   * y[(t·H + h)·R + r] = Σ_c W_h[r, c] · x[(t·H + h)·xStride + c] for t < tokens, h < H: one
   * product per head, every head in one call (absorbed MLA's W^UK and W^UV). With `shared`,
   * every head reads token t's one row x[t·xStride + c] (prefill decompressing a latent row into
   * every head's values). Equal to `matmul` of each head's gathered rows.
   */
  matmulHeads?(y: Vec, x: Vec, tokens: number, xStride: number, group: HeadGroup, shared?: boolean): void;

  /** y[t·C + c] = Σ_r W[r, c] · x[t·R + r] for t < tokens (the product with Wᵀ). */
  matmulTransposed(y: Vec, x: Vec, w: Tensor, tokens: number): void;

  /**
   * Optional: y[(t·H + h)·yStride + c] = Σ_r W_h[r, c] · x[t·R + r] for t < tokens, h < H, where
   * W_h is rows [h·R, (h+1)·R) of w ([H·R, C]): `matmulTransposed` of every head's rows over the
   * same tokens, each written at a stride (prefill decompressing latent rows into every head's
   * keys through a transposed W^UK). Equal to `matmulTransposed` per head.
   */
  matmulTransposedHeads?(y: Vec, x: Vec, w: Tensor, heads: number, tokens: number, yStride: number): void;

  /** y[t·D + i] = x[t·D + i] / sqrt(mean_i(x²) + eps) · weight[i], D = weight length. y may alias x. */
  rmsNorm(y: Vec, x: Vec, weight: Tensor, eps: number, tokens: number): void;

  /**
   * Rotate adjacent pairs (2i, 2i+1) of the `2·invFreq.length` values at `offset` in each of `rows`
   * rows of `stride` values, by angle position·invFreq[i], cos and sin multiplied by `magnitude`.
   * Row r uses positions[floor(r / rowsPerPosition)].
   */
  ropeAdjacent(
    x: Vec,
    rows: number,
    stride: number,
    offset: number,
    positions: Int32Array,
    rowsPerPosition: number,
    invFreq: Float64Array,
    magnitude: number,
  ): void;

  /** In-place softmax of x[offset, offset + n), computed stably (max subtracted). */
  softmax(x: Vec, offset: number, n: number): void;

  /** y[i] = silu(gate[i]) · up[i] for i < n. y may alias gate. */
  siluMul(y: Vec, gate: Vec, up: Vec, n: number): void;

  /** y[i] = y[i] + x[i] for i < n (the residual stream). */
  add(y: Vec, x: Vec, n: number): void;

  /**
   * dst[r·dstStride + j·repeatStride + i] = src[r·srcStride + i] for r < rows, j < repeat, i <
   * width: parts of rows gathered or scattered, each row placed `repeat` times (a latent row's
   * parts; a key's RoPE part, shared by all heads, into every head's key). dst and src do not overlap.
   */
  copyRows(dst: Vec, src: Vec, rows: number, width: number, dstStride: number, srcStride: number, repeat?: number, repeatStride?: number): void;

  /**
   * Multi-head attention: q [T][H][Dk], k [N][H][Dk], v [N][H][Dv] → out [T][H][Dv], where query t
   * sees key rows [0, contextLengths[t]). Softmax in at least f32.
   */
  attention(out: Vec, q: Vec, k: Vec, v: Vec, keyWidth: number, valueWidth: number, shape: AttentionShape): void;

  /**
   * Attention with one key/value head shared by all query heads, keys stored as rows
   * [a (valueWidth) | b (width − valueWidth)]: for query t and head h,
   * logit_j = scale · (qa[t,h]·a_j + qb[t,h]·b_j), out[t,h] = Σ_j softmax(logit)_j · a_j.
   * qa [T][H][valueWidth], qb [T][H][width − valueWidth], out [T][H][valueWidth]. Query t reads
   * its own sequence's rows j < contextLengths[t] through kv's block table, so one call serves
   * every sequence of a batch.
   */
  sharedKvAttention(out: Vec, qa: Vec, qb: Vec, kv: SharedKvRows, valueWidth: number, shape: AttentionShape): void;

  /**
   * Indices of the k largest of x[offset, offset + n) into idx[idxOffset…], largest first, ties to
   * the lower index. Entries equal to -Infinity are never chosen while finite ones remain.
   */
  topK(idx: Int32Array, idxOffset: number, x: Vec, offset: number, n: number, k: number): void;
}
