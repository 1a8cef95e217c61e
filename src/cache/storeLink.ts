/**
 * Where ContextCache's store work runs. `InThreadLink` runs a ContextStore in the caller's thread
 * (tests with stores that misbehave on purpose). `ThreadLink` runs it in threads of its own
 * (storeThread.ts; one for lookups, one for writes), which is what the engine uses: framing and checking pages (a copy and a
 * SHA-256 of 2 MB each), the Redis client's socket work and the garbage of megabyte buffers all
 * happen there, so an engine step never waits for them. Pages live in SharedArrayBuffers
 * (pagePool.ts): handing one over is a message, not a copy; the page stays retained until the
 * store thread says it has copied the rows out.
 */
import { Worker } from 'node:worker_threads';
import type { ContextStore, ContextStoreSpec } from './contextStore.js';
import { decodePage, encodePage, type DecodeResult, type PageMeta } from './pageCodec.js';
import type { PageStorage } from './pagePool.js';

export type Geometry = Omit<PageMeta, 'key'>;

export interface PageLink {
  readonly kind: 'folder' | 'redis';
  readonly location: string;
  /**
   * The checked pages under `keys`, in order, up to the first that is missing (null) or refused
   * (`ok: false`, the last entry then). Rejects when the store fails.
   */
  fetch(keys: readonly string[], geometry: Geometry): Promise<(DecodeResult | null)[]>;
  /**
   * Store a page's rows under `key`. `copied` settles once the rows have been read (the page may be
   * reused from then on); `done` resolves with the bytes stored, or rejects when the store fails.
   */
  write(key: string, layers: readonly PageStorage[], geometry: Geometry): { readonly copied: Promise<void>; readonly done: Promise<number> };
  delete(key: string): void;
  /** Resolves when the store answers a read of `key` (whatever it holds). */
  probe(key: string): Promise<void>;
  usage(): { readonly bytes: number; readonly entries: number } | null;
  close(): Promise<void>;
}

/** Checks found pages in order: stops after the first missing or refused one. */
function checkRun(keys: readonly string[], found: readonly (Uint8Array | null)[], geometry: Geometry): (DecodeResult | null)[] {
  const out: (DecodeResult | null)[] = [];
  for (let i = 0; i < keys.length; i++) {
    const bytes = found[i];
    if (!bytes) {
      out.push(null);
      break;
    }
    const r = decodePage(bytes, { ...geometry, key: keys[i]! });
    out.push(r);
    if (!r.ok) break;
  }
  return out;
}

export class InThreadLink implements PageLink {
  constructor(private readonly store: ContextStore) {}
  get kind() {
    return this.store.kind;
  }
  get location() {
    return this.store.location;
  }
  async fetch(keys: readonly string[], geometry: Geometry): Promise<(DecodeResult | null)[]> {
    return checkRun(keys, await this.store.get(keys), geometry);
  }
  write(key: string, layers: readonly PageStorage[], geometry: Geometry) {
    const bytes = encodePage({ ...geometry, key }, layers);
    return { copied: Promise.resolve(), done: this.store.put(key, bytes).then(() => bytes.byteLength) };
  }
  delete(key: string): void {
    this.store.delete(key).catch(() => {});
  }
  async probe(key: string): Promise<void> {
    await this.store.get([key]);
  }
  usage() {
    return this.store.usage();
  }
  close(): Promise<void> {
    return this.store.close();
  }
}

/** Messages to the store thread. */
export type ToStoreThread =
  | { readonly type: 'fetch'; readonly id: number; readonly keys: readonly string[]; readonly geometry: Geometry }
  | { readonly type: 'write'; readonly id: number; readonly key: string; readonly layers: readonly PageStorage[]; readonly geometry: Geometry }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'probe'; readonly id: number; readonly key: string }
  | { readonly type: 'close' };

/** Messages from it. */
export type FromStoreThread =
  | { readonly type: 'ready'; readonly kind: 'folder' | 'redis'; readonly location: string; readonly connected: boolean }
  | { readonly type: 'fetched'; readonly id: number; readonly results: (DecodeResult | null)[] }
  | { readonly type: 'copied'; readonly id: number }
  | { readonly type: 'written'; readonly id: number; readonly bytes: number; readonly usage: { bytes: number; entries: number } | null }
  | { readonly type: 'failed'; readonly id: number; readonly message: string }
  | { readonly type: 'probed'; readonly id: number }
  | { readonly type: 'log'; readonly line: string }
  | { readonly type: 'closed' };

interface Waiter {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** What a store thread is for: it sets the thread's priority (storeThread.ts). */
export type StoreThreadRole = 'reads' | 'writes';

/** One store thread and its requests in flight. */
class StoreThread {
  private readonly waiters = new Map<number, Waiter>();
  private readonly copiedWaiters = new Map<number, () => void>();
  lastUsage: { bytes: number; entries: number } | null = null;
  dead: Error | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly worker: Worker,
    log: (line: string) => void,
  ) {
    worker.on('message', (m: FromStoreThread) => {
      if (m.type === 'log') log(m.line);
      else if (m.type === 'copied') {
        this.copiedWaiters.get(m.id)?.();
        this.copiedWaiters.delete(m.id);
      } else if (m.type === 'fetched' || m.type === 'written' || m.type === 'probed' || m.type === 'failed') {
        const w = this.waiters.get(m.id);
        this.waiters.delete(m.id);
        if (!w) return;
        if (m.type === 'failed') {
          this.copiedWaiters.get(m.id)?.();
          this.copiedWaiters.delete(m.id);
          w.reject(new Error(m.message));
        } else if (m.type === 'fetched') w.resolve(m.results);
        else if (m.type === 'written') {
          this.lastUsage = m.usage;
          w.resolve(m.bytes);
        } else w.resolve(undefined);
      }
    });
    worker.on('error', (err: unknown) => {
      // A bug in the store thread: from now on every request fails at once (a miss, a dropped
      // write), never waiting for a thread that is gone.
      log(`context store thread failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      this.dead = new Error(`the context store thread failed: ${err instanceof Error ? err.message : String(err)}`);
      this.failAll(this.dead);
    });
    worker.on('exit', () => {
      this.dead ??= new Error('the context store thread ended');
      this.failAll(this.dead);
    });
    // Idle, this thread must not keep the process alive on its own; while a request is out, it
    // must (the engine may be waiting for nothing else). See request().
    worker.unref();
  }

  /** Starts the thread and opens the store there; resolves with its 'ready' message. */
  static start(spec: ContextStoreSpec, role: StoreThreadRole, log: (line: string) => void): Promise<{ thread: StoreThread; ready: Extract<FromStoreThread, { type: 'ready' }> }> {
    const worker = new Worker(new URL('./storeThread.js', import.meta.url), { workerData: { spec, role } satisfies StoreThreadData });
    return new Promise((resolve, reject) => {
      const onMessage = (m: FromStoreThread) => {
        if (m.type === 'log') log(m.line);
        if (m.type !== 'ready') return;
        worker.off('message', onMessage);
        worker.off('error', reject);
        resolve({ thread: new StoreThread(worker, log), ready: m });
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
  }

  private failAll(err: Error): void {
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
    for (const c of this.copiedWaiters.values()) c();
    this.copiedWaiters.clear();
  }

  request<T>(id: number, message: ToStoreThread): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.waiters.size === 0) this.worker.ref();
    const settled = () => {
      if (this.waiters.size === 0) this.worker.unref();
    };
    return new Promise<T>((resolve, reject) => {
      this.waiters.set(id, {
        resolve: (v) => {
          resolve(v as T);
          settled();
        },
        reject: (e) => {
          reject(e);
          settled();
        },
      });
      this.worker.postMessage(message);
    });
  }

  /** Resolves when the rows of request `id` have been copied out (see ThreadLink.write). */
  copiedOf(id: number): Promise<void> {
    return new Promise<void>((r) => this.copiedWaiters.set(id, r));
  }

  post(message: ToStoreThread): void {
    if (!this.dead) this.worker.postMessage(message);
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => void this.worker.terminate().then(() => resolve()), 3000);
      this.worker.on('message', (m: FromStoreThread) => {
        if (m.type !== 'closed') return;
        clearTimeout(timer);
        void this.worker.terminate().then(() => resolve());
      });
      this.worker.postMessage({ type: 'close' } satisfies ToStoreThread);
    });
    return this.closing;
  }
}

/** What storeThread.ts is started with. */
export interface StoreThreadData {
  readonly spec: ContextStoreSpec;
  readonly role: StoreThreadRole;
}

/**
 * The store in two threads of its own, each with its own connection (or folder handle), as two
 * processes would share it: one for lookups, at the engine's priority, since a request waits for
 * them (and they save a prefill); one for writes behind, at the lowest priority, since nothing
 * waits for them and, on a machine whose cores decode, they must never take a core's time from a
 * step (storeThread.ts).
 */
export class ThreadLink implements PageLink {
  readonly kind: 'folder' | 'redis';
  readonly location: string;
  private nextId = 1;

  private constructor(
    private readonly reads: StoreThread,
    private readonly writes: StoreThread,
    ready: Extract<FromStoreThread, { type: 'ready' }>,
  ) {
    this.kind = ready.kind;
    this.location = ready.location;
  }

  /**
   * Start the store threads and open the store there. Resolves once it is open: for Redis, when
   * connected or after 2 s (then it connects in the background and the engine serves uncached).
   */
  static async start(spec: ContextStoreSpec, log: (line: string) => void): Promise<{ link: ThreadLink; connected: boolean }> {
    const [reads, writes] = await Promise.all([StoreThread.start(spec, 'reads', log), StoreThread.start(spec, 'writes', log)]);
    return { link: new ThreadLink(reads.thread, writes.thread, reads.ready), connected: reads.ready.connected };
  }

  fetch(keys: readonly string[], geometry: Geometry): Promise<(DecodeResult | null)[]> {
    const id = this.nextId++;
    return this.reads.request(id, { type: 'fetch', id, keys, geometry });
  }

  write(key: string, layers: readonly PageStorage[], geometry: Geometry) {
    const id = this.nextId++;
    // Rows in SharedArrayBuffers cross by reference: they are read until the thread says 'copied'.
    // Others are copied by postMessage itself, so the page is free at once.
    const shared = !this.writes.dead && layers.every((l) => l.buffer instanceof SharedArrayBuffer);
    const copied = shared ? this.writes.copiedOf(id) : Promise.resolve();
    const done = this.writes.request<number>(id, { type: 'write', id, key, layers, geometry });
    return { copied, done };
  }

  delete(key: string): void {
    this.writes.post({ type: 'delete', key });
  }

  probe(key: string): Promise<void> {
    const id = this.nextId++;
    return this.reads.request(id, { type: 'probe', id, key });
  }

  usage() {
    return this.writes.lastUsage;
  }

  async close(): Promise<void> {
    await Promise.all([this.reads.close(), this.writes.close()]);
  }
}
