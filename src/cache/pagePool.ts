/**
 * Fixed-size pages of latent rows with reference counts. A page holds `pageTokens` consecutive
 * tokens of one sequence for every layer (kv_lora_rank + qk_rope_head_dim values per token and
 * layer). Sequences that share a prefix share its full pages; the pool bounds the memory.
 */
import { ContextLengthExceededError, DseekError, InvalidInputError } from '../errors.js';
import { q8RowBytes } from '../kernels/q8Row.js';

/**
 * How latent rows are stored: f32, f16 (IEEE half bits), f64 (float64 reference runs) or q8 —
 * ggml's Q8_0 blocks (kernels/q8Row.ts): per 32 values one f16 scale and 32 int8, 34 bytes.
 */
export type LatentCacheDType = 'f32' | 'f16' | 'f64' | 'q8';
/** The storage a user may choose (f64 follows from a float64 run, never from a flag). */
export const CACHE_TYPES = ['f16', 'f32', 'q8'] as const;
export type CacheType = (typeof CACHE_TYPES)[number];
/** q8 rows are bytes (blocks of an f16 scale and int8 values); the float types one element per value. */
export type PageStorage = Float32Array | Float64Array | Uint16Array | Uint8Array;

/** A cache type from a flag or an option, or a one-line InvalidInputError naming the allowed values. */
export function parseCacheType(value: unknown, field: string): CacheType {
  if (typeof value === 'string' && (CACHE_TYPES as readonly string[]).includes(value)) return value as CacheType;
  throw new InvalidInputError(field, `must be ${CACHE_TYPES.slice(0, -1).join(', ')} or ${CACHE_TYPES[CACHE_TYPES.length - 1]}, got ${String(value)}`);
}

/**
 * Bytes of one stored row of `width` values. For q8, ⌈width/32⌉ blocks; a width that is not a
 * multiple of 32 ends in a short block (its f16 scale and width mod 32 int8 values), so the row
 * is 2·⌈width/32⌉ + width bytes: 612 for V2's 576.
 */
export function rowBytes(width: number, dtype: LatentCacheDType): number {
  if (dtype === 'q8') return q8RowBytes(width);
  return width * (dtype === 'f16' ? 2 : dtype === 'f32' ? 4 : 8);
}

/** Elements of a page's per-layer storage array: values for the float types, bytes for q8. */
export function rowElements(width: number, dtype: LatentCacheDType): number {
  return dtype === 'q8' ? rowBytes(width, dtype) : width;
}

export interface Page {
  readonly id: number;
  /** One array per layer, pageTokens rows (width values each; rowBytes(width, 'q8') bytes each for q8). */
  readonly layers: readonly PageStorage[];
  /** Holders: sequences using it and the prefix tree. Returned to the pool at 0. */
  refs: number;
}

/** Thrown when the pool has no free page and nothing can be evicted. */
export class CacheFullError extends DseekError {
  constructor(budgetBytes: number) {
    super('cache_full', `the latent cache budget (${budgetBytes} bytes) is in use: wait for running requests or raise the cache budget`);
  }
}

export interface PagePoolOptions {
  readonly layers: number;
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
  /** Upper bound on pages alive at once (the memory budget); Infinity for none. */
  readonly maxPages: number;
}

/** The typed array each storage type is read through. */
const STORAGE: Readonly<Record<LatentCacheDType, new (buffer: SharedArrayBuffer) => PageStorage>> = {
  f16: Uint16Array,
  f32: Float32Array,
  f64: Float64Array,
  q8: Uint8Array,
};

/** A slab segment's bytes per layer stay at or under this (a bounded pool of up to 1 GiB per layer is one segment). */
const MAX_SEGMENT_BYTES = 2 ** 30;
/** Pages per segment of an unbounded pool. */
const UNBOUNDED_SEGMENT_PAGES = 256;

export class PagePool {
  readonly layers: number;
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
  readonly maxPages: number;
  /**
   * Pages per slab segment. Page `id` lives in segment ⌊id / segmentPages⌋ of every layer's slab,
   * at page (id mod segmentPages) of it, so the attention kernels find a row from a page id alone.
   * A bounded pool (the server's) is one segment: one slab per layer, as vLLM's block tables index.
   */
  readonly segmentPages: number;
  /** [layer][segment]: the storage of `segmentPages` pages each, in SharedArrayBuffers. */
  private readonly slabs: PageStorage[][];
  private readonly free: Page[] = [];
  private readonly held = new Set<Page>();
  private nextId = 0;
  private live = 0;
  /** Asked for a page when none is free: may release pages (the prefix cache evicts). */
  reclaim: ((needed: number) => void) | null = null;

  constructor(o: PagePoolOptions) {
    this.layers = o.layers;
    this.width = o.width;
    this.pageTokens = o.pageTokens;
    this.dtype = o.dtype;
    this.maxPages = o.maxPages;
    const layerPageBytes = this.pageTokens * rowBytes(this.width, this.dtype);
    const cap = Math.max(1, Math.floor(MAX_SEGMENT_BYTES / layerPageBytes));
    this.segmentPages = Math.max(1, Math.min(cap, Number.isFinite(o.maxPages) ? o.maxPages : UNBOUNDED_SEGMENT_PAGES));
    this.slabs = Array.from({ length: this.layers }, () => []);
  }

  /**
   * One layer's slab: its segments in order (page p at rows [(p mod segmentPages)·pageTokens, …) of
   * segment ⌊p / segmentPages⌋). The array grows as segments are added and is never replaced.
   */
  slab(layer: number): readonly PageStorage[] {
    const s = this.slabs[layer];
    if (!s) throw new RangeError(`page pool: no layer ${layer}`);
    return s;
  }

  get bytesPerPage(): number {
    return this.layers * this.pageTokens * rowBytes(this.width, this.dtype);
  }

  /** Pages currently held by someone. */
  get pagesInUse(): number {
    return this.live;
  }

  /** Pages with more than one holder: prefixes shared between sequences or kept by the prefix tree. */
  get sharedPages(): number {
    let n = 0;
    for (const p of this.held) if (p.refs > 1) n++;
    return n;
  }

  get bytesInUse(): number {
    return this.live * this.bytesPerPage;
  }

  /** A page with refs = 1 (contents unspecified). Throws CacheFullError past the budget. */
  allocate(): Page {
    if (this.free.length === 0 && this.live >= this.maxPages) this.reclaim?.(1);
    let page = this.free.pop();
    if (!page) {
      if (this.live >= this.maxPages) throw new CacheFullError(this.maxPages * this.bytesPerPage);
      const id = this.nextId++;
      const segment = Math.floor(id / this.segmentPages);
      if (id % this.segmentPages === 0) this.addSegment(); // ids are handed out in order: a segment's first page opens it
      const rows = rowElements(this.width, this.dtype) * this.pageTokens;
      const at = (id % this.segmentPages) * rows;
      page = { id, layers: this.slabs.map((s) => s[segment]!.subarray(at, at + rows)), refs: 0 };
    }
    page.refs = 1;
    this.live++;
    this.held.add(page);
    return page;
  }

  /**
   * Storage for `segmentPages` more pages in every layer. SharedArrayBuffers, so that the context
   * store's thread can read a page to write it without a copy in the engine's thread
   * (storeLink.ts); one thread writes them. The OS maps their zero pages lazily: a bounded
   * pool's slab costs memory only for the pages that are written.
   */
  private addSegment(): void {
    const bytes = this.segmentPages * this.pageTokens * rowBytes(this.width, this.dtype);
    const Storage = STORAGE[this.dtype];
    for (const slab of this.slabs) slab.push(new Storage(new SharedArrayBuffer(bytes)));
  }

  retain(page: Page): void {
    page.refs++;
  }

  release(page: Page): void {
    if (page.refs <= 0) throw new RangeError(`page ${page.id} released more often than retained`);
    if (--page.refs === 0) {
      this.live--;
      this.held.delete(page);
      this.free.push(page);
    }
  }
}

/** Turns a token count past a pool's reach into the user-facing error. */
export function checkContext(needed: number, maxTokens: number): void {
  if (needed > maxTokens) throw new ContextLengthExceededError(needed, maxTokens);
}
