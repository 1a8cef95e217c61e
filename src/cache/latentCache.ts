/**
 * The MLA latent cache of one sequence: per layer and token exactly kv_lora_rank +
 * qk_rope_head_dim values — the normalised compressed latent c_t and the rotated shared RoPE key
 * k_t^R (DeepSeek-V2 paper §2.1.3: (d_c + d_h^R)·l elements per token). Never expanded per-head
 * keys or values.
 *
 * Rows live in pages from a PagePool (f32 by default; f16 halves the memory; q8 — ggml's Q8_0
 * blocks, 34 bytes per 32 values — takes 53 % of f16; f64 for float64 reference runs). A
 * sequence can start from shared full pages of a common prefix (`adoptPrefix`); it only ever
 * writes past them, into pages of its own.
 */
import type { SharedKvRows } from '../kernels/backend.js';
import { f32ToF16, f16ToF32, type Vec } from '../kernels/tensor.js';
import { dequantizeQ8Row, quantizeQ8Row } from '../kernels/q8Row.js';
import { checkContext, PagePool, rowElements, type LatentCacheDType, type Page } from './pagePool.js';

export type { LatentCacheDType } from './pagePool.js';

export interface LatentCacheOptions {
  /** Layers (needed without a pool). */
  readonly layers?: number;
  /** Values per token and layer: kv_lora_rank + qk_rope_head_dim (needed without a pool). */
  readonly width?: number;
  /** The context window: positions beyond it are refused. */
  readonly maxTokens: number;
  readonly dtype?: LatentCacheDType;
  /** Tokens per page (default 64). */
  readonly pageTokens?: number;
  /** Share pages with other sequences through this pool (its layers, width, dtype win). */
  readonly pool?: PagePool;
}

export class LatentCache {
  readonly layers: number;
  readonly width: number;
  readonly maxTokens: number;
  readonly dtype: LatentCacheDType;
  readonly pool: PagePool;
  private readonly pages: Page[] = [];
  /** Tokens whose rows are complete in every layer. */
  private committed = 0;
  private released = false;

  constructor(options: LatentCacheOptions) {
    if (!options.pool && (options.layers === undefined || options.width === undefined)) {
      throw new RangeError('LatentCache needs a pool, or layers and width');
    }
    this.pool =
      options.pool ??
      new PagePool({
        layers: options.layers!,
        width: options.width!,
        pageTokens: options.pageTokens ?? 64,
        dtype: options.dtype ?? 'f32',
        maxPages: Infinity,
      });
    this.layers = this.pool.layers;
    this.width = this.pool.width;
    this.dtype = this.pool.dtype;
    this.maxTokens = options.maxTokens;
  }

  /** Number of cached tokens (= the position of the next token). */
  get length(): number {
    return this.committed;
  }

  get pageTokens(): number {
    return this.pool.pageTokens;
  }

  /** Bytes one token occupies across all layers. */
  get bytesPerToken(): number {
    return this.pool.bytesPerPage / this.pool.pageTokens;
  }

  /** Values held for the committed tokens: length × layers × width. */
  get valueCount(): number {
    return this.committed * this.layers * this.width;
  }

  /** The pages holding this sequence's rows, in order (shared prefix pages first). */
  get pageList(): readonly Page[] {
    return this.pages;
  }

  /**
   * Start an empty sequence from full pages of a shared prefix, taking over one reference to each
   * (as PrefixCache.lookup hands them out). The prefix covers pages.length × pageTokens tokens.
   */
  adoptPrefix(pages: readonly Page[]): void {
    if (this.committed !== 0 || this.pages.length !== 0) throw new RangeError('adoptPrefix needs an empty cache');
    checkContext(pages.length * this.pool.pageTokens, this.maxTokens);
    for (const p of pages) this.pages.push(p);
    this.committed = pages.length * this.pool.pageTokens;
  }

  /** Make room for `count` more tokens after the committed ones (throws past the context window or the budget). */
  reserve(count: number): void {
    if (this.released) throw new RangeError('latent cache: used after release');
    const needed = this.committed + count;
    checkContext(needed, this.maxTokens);
    const pagesNeeded = Math.ceil(needed / this.pool.pageTokens);
    while (this.pages.length < pagesNeeded) this.pages.push(this.pool.allocate());
  }

  /**
   * Write the row for token position `pos` in `layer` from src[srcOffset, srcOffset + width).
   * The position must be reserved and past the committed tokens; it becomes visible to readers
   * of the layer at once but counts in `length` only after `commit`. A q8 cache quantises the row
   * here (kernels/q8Row.ts), the only place a row is quantised.
   */
  writeRow(layer: number, pos: number, src: Vec, srcOffset: number): void {
    const P = this.pool.pageTokens;
    const page = this.pages[Math.floor(pos / P)];
    if (!page || pos < this.committed) throw new RangeError(`latent cache: position ${pos} is not writable`);
    if (page.refs > 1) throw new RangeError(`latent cache: page ${page.id} is shared and read-only`);
    const dst = page.layers[layer]!;
    const o = (pos % P) * rowElements(this.width, this.dtype);
    if (this.dtype === 'q8') {
      quantizeQ8Row(src, srcOffset, this.width, dst as Uint8Array, o);
    } else if (this.dtype === 'f16') {
      for (let i = 0; i < this.width; i++) dst[o + i] = f32ToF16(src[srcOffset + i]!);
    } else {
      for (let i = 0; i < this.width; i++) dst[o + i] = src[srcOffset + i]!;
    }
  }

  /** Mark `count` more tokens complete in every layer. */
  commit(count: number): void {
    if (this.committed + count > this.pages.length * this.pool.pageTokens) {
      throw new RangeError('latent cache: commit past reserved space');
    }
    this.committed += count;
  }

  /** Drop tokens after the first `length`, releasing pages no longer needed. */
  truncate(length: number): void {
    if (length < 0 || length > this.committed) throw new RangeError(`latent cache: cannot truncate to ${length}`);
    this.committed = length;
    const keep = Math.ceil(length / this.pool.pageTokens);
    while (this.pages.length > keep) this.pool.release(this.pages.pop()!);
    const last = this.pages[this.pages.length - 1];
    if (last && last.refs > 1 && length % this.pool.pageTokens !== 0) {
      // A shared page cut mid-way would be written next: keep a private copy instead.
      const copy = this.pool.allocate();
      last.layers.forEach((l, i) => copy.layers[i]!.set(l as never));
      this.pool.release(last);
      this.pages[this.pages.length - 1] = copy;
    }
  }

  /** Give every page back to the pool; the cache cannot be used afterwards. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const p of this.pages) this.pool.release(p);
    this.pages.length = 0;
    this.committed = 0;
  }

  /** The rows of one layer (reserved positions included) for `queries` queries of this sequence, as the attention kernels read them. */
  rows(layer: number, queries = 1): SharedKvRows {
    return batchRows(this.pool, layer, [{ cache: this, queries }]);
  }

  /** Copy `count` rows from position `start` of a layer into dst as numbers (for the expanded attention form). */
  readRows(layer: number, start: number, count: number, dst: Vec): void {
    const P = this.pool.pageTokens;
    const w = this.width;
    const stride = rowElements(w, this.dtype);
    for (let j = 0; j < count; j++) {
      const pos = start + j;
      const src = this.pages[Math.floor(pos / P)]!.layers[layer]!;
      const o = (pos % P) * stride;
      if (this.dtype === 'q8') dequantizeQ8Row(src as Uint8Array, o, w, dst, j * w);
      else if (this.dtype === 'f16') for (let i = 0; i < w; i++) dst[j * w + i] = f16ToF32(src[o + i]!);
      else for (let i = 0; i < w; i++) dst[j * w + i] = src[o + i]!;
    }
  }
}

/** A run of queries of one sequence in a batch that attends over its cache. */
export interface BatchPart {
  readonly cache: LatentCache;
  readonly queries: number;
}

/**
 * The rows of one layer for a batch of sequences that share `pool`, the parts' queries in order:
 * one block table (each part's page ids) into the pool's slab, so one attention call serves them all.
 */
export function batchRows(pool: PagePool, layer: number, parts: readonly BatchPart[]): SharedKvRows {
  let pages = 0;
  let queries = 0;
  for (const part of parts) {
    if (part.cache.pool !== pool) throw new RangeError('batchRows: every sequence must use the same page pool');
    pages += part.cache.pageList.length;
    queries += part.queries;
  }
  const blockTable = new Int32Array(pages);
  const queryPages = new Int32Array(queries);
  let p = 0;
  let q = 0;
  for (const part of parts) {
    queryPages.fill(p, q, q + part.queries);
    q += part.queries;
    for (const page of part.cache.pageList) blockTable[p++] = page.id;
  }
  return { dtype: pool.dtype, width: pool.width, pageRows: pool.pageTokens, segments: pool.slab(layer), segmentPages: pool.segmentPages, blockTable, queryPages };
}
