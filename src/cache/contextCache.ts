/**
 * The engine's side of a ContextStore: it names pages (model namespace + salted prefix hash),
 * frames and checks them (pageCodec.ts), and keeps all store I/O off the decode path.
 *
 * - Reads: the scheduler asks for a prompt's pages when it admits the request; the request waits
 *   in a fetching state while the other sequences keep stepping, until the pages arrive or
 *   `fetchTimeoutMs` passes; what did not arrive (or failed its checks) is computed.
 * - Writes: a page to store is retained (one pool reference) and queued; between engine steps it
 *   is copied out, its reference dropped, and written behind. The queue is bounded, and emptied
 *   when the latent cache needs the pages back: a write dropped is counted, never waited for.
 * - Faults: an error or a timeout marks the store down, with one log line; while down, lookups are
 *   skipped and writes dropped (counted), except one try every `retryMs`, whose success marks it
 *   up again (one more line). Nothing here ever fails a request.
 *
 * The bookkeeping here runs in the engine's thread, between steps (the scheduler loop yields to the
 * event loop after each one, localEngine.ts); the store itself, with the framing, the checksums and
 * the sockets, runs in a thread of its own (storeLink.ts), so an engine step never waits for it.
 */
import { createHash } from 'node:crypto';
import type { ContextStore } from './contextStore.js';
import type { PageMeta } from './pageCodec.js';
import type { LatentCacheDType, Page, PagePool } from './pagePool.js';
import { InThreadLink, type PageLink } from './storeLink.js';

export interface ContextCacheOptions {
  /** The store, run in this thread (tests), or `link`: the store in its own thread (ThreadLink). */
  readonly store?: ContextStore;
  readonly link?: PageLink;
  /** The model's content fingerprint (model/fingerprint.ts). */
  readonly fingerprint: string;
  readonly layers: number;
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
  /** How long an admitted request waits for its pages before computing them (default 2000 ms). */
  readonly fetchTimeoutMs?: number;
  /** Pages queued for writing at most (default: a quarter of the latent-cache pool). */
  readonly maxPendingWrites?: number;
  /** Writes in flight at once (default 2). */
  readonly writeConcurrency?: number;
  /** While the store is down, one try per this interval (default 2000 ms). */
  readonly retryMs?: number;
  readonly log?: (line: string) => void;
}

/** The store's share of the engine's stats (and of /metrics). */
export interface ContextStoreStats {
  readonly kind: 'folder' | 'redis';
  readonly location: string;
  /** false after an error or timeout, until the store answers again. */
  readonly up: boolean;
  /** Up/down transitions since start. */
  readonly stateChanges: number;
  /** Prompts whose pages were asked for, and those skipped because the store was down. */
  readonly lookups: number;
  readonly lookupsSkipped: number;
  /** Pages served from the store, pages asked for but missing, pages refused by their checks. */
  readonly hitPages: number;
  readonly missPages: number;
  readonly rejectedPages: number;
  /** Lookups that ran past the fetch timeout, and store operations that failed. */
  readonly timeouts: number;
  readonly errors: number;
  readonly writes: number;
  readonly writeBytes: number;
  /** Writes dropped: the queue was full, the pages were needed back, or the store was down. */
  readonly writesDropped: number;
  readonly pendingWrites: number;
  /**
   * Milliseconds the engine thread spent handing pages to the store: the only part of a write an
   * engine step can wait for (with the store in its own thread, the framing, hashing and I/O run
   * there).
   */
  readonly writeThreadMs: number;
  /** What a folder holds (Redis: null; see its INFO memory). */
  readonly bytes: number | null;
  readonly entries: number | null;
}

/** Pages that arrived, from the first key asked for: a contiguous run of checked payloads. */
export type FetchDone = (payloads: readonly Uint8Array[]) => void;

interface PendingWrite {
  readonly key: string;
  readonly page: Page;
  readonly pool: PagePool;
}

export class ContextCache {
  readonly fetchTimeoutMs: number;
  private readonly store: PageLink;
  private readonly meta: Omit<PageMeta, 'key'>;
  /** Model and geometry: pages of another model or page size live under other keys. */
  private readonly namespace: string;
  private readonly log: (line: string) => void;
  private readonly retryMs: number;
  private readonly writeConcurrency: number;
  private maxPending: number;
  private readonly pending: PendingWrite[] = [];
  private inFlight = 0;
  private pumpScheduled = false;
  private held = false;
  private idleWaiters: Array<() => void> = [];
  private up = true;
  private probe: NodeJS.Timeout | null = null;
  private closed = false;
  private retryAt = 0;
  private counts = { stateChanges: 0, lookups: 0, lookupsSkipped: 0, hitPages: 0, missPages: 0, rejectedPages: 0, timeouts: 0, errors: 0, writes: 0, writeBytes: 0, writesDropped: 0, writeThreadMs: 0 };

  constructor(o: ContextCacheOptions) {
    if (o.link) this.store = o.link;
    else if (o.store) this.store = new InThreadLink(o.store);
    else throw new TypeError('ContextCache needs a store or a link');
    this.meta = { fingerprint: o.fingerprint, layers: o.layers, width: o.width, pageTokens: o.pageTokens, dtype: o.dtype };
    this.namespace = createHash('sha256').update(`dseek context v2\0${o.fingerprint}\0${o.layers}\0${o.width}\0${o.pageTokens}\0${o.dtype}`).digest('hex').slice(0, 24);
    this.fetchTimeoutMs = o.fetchTimeoutMs ?? 2000;
    this.retryMs = o.retryMs ?? 2000;
    this.writeConcurrency = o.writeConcurrency ?? 2;
    this.maxPending = o.maxPendingWrites ?? 0;
    this.log = o.log ?? (() => {});
  }

  get location(): string {
    return this.store.location;
  }

  /** Called by the scheduler with its pool: sizes the write queue unless the options did. */
  attach(pool: PagePool): void {
    // Pages are checked against this.meta and copied byte for byte into the pool's pages: a pool of
    // another type (q8 rows under an f16 header) or shape would be filled with misread rows.
    const m = this.meta;
    if (pool.dtype !== m.dtype || pool.layers !== m.layers || pool.width !== m.width || pool.pageTokens !== m.pageTokens) {
      throw new RangeError(
        `context cache for ${m.dtype} pages of ${m.layers}×${m.pageTokens}×${m.width} attached to a pool of ${pool.dtype} pages of ${pool.layers}×${pool.pageTokens}×${pool.width}`,
      );
    }
    if (this.maxPending === 0) this.maxPending = Math.max(1, Math.floor(pool.maxPages / 4));
  }

  private key(prefixHash: string): string {
    return `${this.namespace}:${prefixHash}`;
  }

  /** Whether a lookup or write may go to the store now (up, or down but due for a retry). */
  private reachable(): boolean {
    return this.up || Date.now() >= this.retryAt;
  }

  private markDown(reason: string): void {
    this.retryAt = Date.now() + this.retryMs;
    if (!this.up) return;
    this.up = false;
    this.counts.stateChanges++;
    this.log(`context store ${this.store.location}: unavailable (${reason}); prompts are computed as uncached and pages not written until it answers (retrying every ${this.retryMs / 1000} s)`);
    this.scheduleProbe();
  }

  /**
   * While down, ask the store for one key that is never written, every `retryMs`, whether or not
   * requests come: the first answer marks it up (the client reconnects by itself meanwhile).
   */
  private scheduleProbe(): void {
    if (this.probe || this.closed) return;
    this.probe = setTimeout(() => {
      this.probe = null;
      if (this.up || this.closed) return;
      this.store.probe(`${this.namespace}:probe`).then(
        () => this.markUp(),
        () => {
          this.retryAt = Date.now() + this.retryMs;
          this.scheduleProbe();
        },
      );
    }, this.retryMs);
    this.probe.unref();
  }

  private markUp(): void {
    if (this.up) return;
    this.up = true;
    this.counts.stateChanges++;
    this.log(`context store ${this.store.location}: reachable again; serving and writing pages`);
  }

  /**
   * Ask for the pages under `prefixHashes` (consecutive pages of one prompt). `done` is called
   * exactly once, asynchronously, with the checked payloads of the longest run from the first
   * hash — possibly none (missing, refused, the store down, the timeout passed).
   */
  fetch(prefixHashes: readonly string[], done: FetchDone): void {
    if (prefixHashes.length === 0 || !this.reachable()) {
      if (prefixHashes.length > 0) this.counts.lookupsSkipped++;
      this.counts.missPages += prefixHashes.length;
      queueMicrotask(() => done([]));
      return;
    }
    this.counts.lookups++;
    let settled = false;
    const settle = (payloads: readonly Uint8Array[]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.counts.hitPages += payloads.length;
      this.counts.missPages += prefixHashes.length - payloads.length;
      done(payloads);
    };
    const timer = setTimeout(() => {
      if (settled) return;
      this.counts.timeouts++;
      this.markDown(`a lookup took longer than ${this.fetchTimeoutMs} ms`);
      settle([]);
    }, this.fetchTimeoutMs);
    const keys = prefixHashes.map((h) => this.key(h));
    this.store.fetch(keys, this.meta).then(
      (checked) => {
        if (settled) return;
        this.markUp();
        // Only a run from the first page is usable: a page is worth nothing without its prefix.
        const payloads: Uint8Array[] = [];
        for (let i = 0; i < checked.length; i++) {
          const r = checked[i];
          if (!r) break;
          if (!r.ok) {
            this.counts.rejectedPages++;
            this.log(`context store ${this.store.location}: refused page ${keys[i]!.slice(-12)}: ${r.problem}; it is recomputed and rewritten`);
            this.store.delete(keys[i]!);
            break;
          }
          payloads.push(r.payload);
        }
        settle(payloads);
      },
      (err: unknown) => {
        if (settled) return;
        this.counts.errors++;
        this.markDown(err instanceof Error ? err.message : String(err));
        settle([]);
      },
    );
  }

  /** Copy a fetched payload into a pool page, layer by layer. */
  static fill(page: Page, payload: Uint8Array): void {
    let at = 0;
    for (const layer of page.layers) {
      const n = layer.byteLength;
      new Uint8Array(layer.buffer, layer.byteOffset, n).set(payload.subarray(at, at + n));
      at += n;
    }
  }

  /**
   * Queue `page` (full, immutable from now on) for the store under `prefixHash`. Retains it until
   * it is copied out; drops the write (counted) when the queue is full or the store is down.
   */
  write(prefixHash: string, page: Page, pool: PagePool): void {
    if (!this.reachable() || this.pending.length >= this.maxPending) {
      this.counts.writesDropped++;
      return;
    }
    pool.retain(page);
    this.pending.push({ key: this.key(prefixHash), page, pool });
    this.schedulePump();
  }

  /** The latent cache needs its pages: drop every queued write (counted). Returns how many. */
  shed(): number {
    const dropped = this.pending.splice(0);
    for (const w of dropped) w.pool.release(w.page);
    this.counts.writesDropped += dropped.length;
    if (dropped.length > 0) this.resolveIdle();
    return dropped.length;
  }

  // Writes start from a fresh event-loop turn, never inside the engine step that queued them.
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /**
   * Keep queued writes queued (true) or let them go (false): lets a benchmark line a burst of
   * writes up with other streams' decoding. Not needed in serving.
   */
  holdWrites(held: boolean): void {
    this.held = held;
    if (!held) this.schedulePump();
  }

  private pump(): void {
    if (this.held) return;
    while (this.inFlight < this.writeConcurrency && this.pending.length > 0) {
      const w = this.pending.shift()!;
      if (!this.reachable()) {
        w.pool.release(w.page);
        this.counts.writesDropped++;
        continue;
      }
      this.inFlight++;
      const t0 = performance.now();
      const { copied, done } = this.store.write(w.key, w.page.layers, this.meta);
      this.counts.writeThreadMs += performance.now() - t0;
      // The page goes back to the pool once its rows have been read (at once in this thread).
      void copied.finally(() => w.pool.release(w.page));
      done
        .then((bytes) => {
          this.counts.writes++;
          this.counts.writeBytes += bytes;
          this.markUp();
        })
        .catch((err: unknown) => {
          this.counts.errors++;
          this.counts.writesDropped++;
          this.markDown(err instanceof Error ? err.message : String(err));
        })
        .finally(() => {
          this.inFlight--;
          if (this.pending.length > 0) this.schedulePump();
          else this.resolveIdle();
        });
      // One page per event-loop turn: a step waits for at most one hand-over.
      if (this.pending.length > 0) {
        this.schedulePump();
        return;
      }
    }
  }

  private resolveIdle(): void {
    if (this.pending.length > 0 || this.inFlight > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once every queued write has been written or dropped. */
  idle(): Promise<void> {
    if (this.pending.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stats(): ContextStoreStats {
    const usage = this.store.usage();
    return {
      kind: this.store.kind,
      location: this.store.location,
      up: this.up,
      ...this.counts,
      pendingWrites: this.pending.length + this.inFlight,
      bytes: usage ? usage.bytes : null,
      entries: usage ? usage.entries : null,
    };
  }

  /** Finish queued writes (up to `deadlineMs`), then close the store. */
  async close(deadlineMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timer = setTimeout(r, deadlineMs)))]);
    clearTimeout(timer);
    this.shed();
    this.closed = true;
    if (this.probe) clearTimeout(this.probe);
    await this.store.close();
  }
}
