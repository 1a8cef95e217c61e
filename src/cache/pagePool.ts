/**
 * Fixed-size pages of latent rows with reference counts. A page holds `pageTokens` consecutive
 * tokens of one sequence for every layer (kv_lora_rank + qk_rope_head_dim values per token and
 * layer). Sequences that share a prefix share its full pages; the pool bounds the memory.
 */
import { ContextLengthExceededError, DseekError } from '../errors.js';

export type LatentCacheDType = 'f32' | 'f16' | 'f64';
export type PageStorage = Float32Array | Float64Array | Uint16Array;

export interface Page {
  readonly id: number;
  /** One array per layer, pageTokens × width values. */
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

export class PagePool {
  readonly layers: number;
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
  readonly maxPages: number;
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
  }

  get bytesPerPage(): number {
    const bytes = this.dtype === 'f16' ? 2 : this.dtype === 'f32' ? 4 : 8;
    return this.layers * this.pageTokens * this.width * bytes;
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
      const n = this.pageTokens * this.width;
      // SharedArrayBuffers, so that the context store's thread can read a page to write it without
      // a copy in the engine's thread (storeLink.ts). Nothing else changes: one thread writes them.
      const bytes = this.dtype === 'f16' ? 2 : this.dtype === 'f32' ? 4 : 8;
      const layers = Array.from({ length: this.layers }, () => {
        const buffer = new SharedArrayBuffer(n * bytes);
        return this.dtype === 'f16' ? new Uint16Array(buffer) : this.dtype === 'f32' ? new Float32Array(buffer) : new Float64Array(buffer);
      });
      page = { id: this.nextId++, layers, refs: 0 };
    }
    page.refs = 1;
    this.live++;
    this.held.add(page);
    return page;
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
