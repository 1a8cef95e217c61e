/**
 * The engine's use of a context store, with stores that misbehave on purpose: pages are fetched
 * at admission while other sequences keep decoding, written behind through a bounded queue, and
 * every store fault (slow, hung, garbage) ends as a computed answer with a counter, never a stall.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { LocalEngine } from '../../src/engine/localEngine.js';
import { ContextCache, type ContextCacheOptions } from '../../src/cache/contextCache.js';
import type { ContextStore } from '../../src/cache/contextStore.js';
import type { EngineEvent } from '../../src/engine/types.js';
import { goldenRoot } from '../paths.js';

const lite = loadModel(join(goldenRoot, 'lite'));
const geometry = { fingerprint: 'lite', layers: 3, width: 40, pageTokens: 4, dtype: 'f16' as const };
const long = [0, 17, 42, 99, 7, 200, 5, 64, 33, 12, 250, 3, 77, 140, 9, 31, 55];
const short = [0, 5, 9];

/** A store in memory whose get and put can be held back or made to fail. */
class TestStore implements ContextStore {
  readonly kind = 'redis' as const;
  readonly location = 'test://store';
  readonly map = new Map<string, Uint8Array>();
  readonly deleted: string[] = [];
  getHook: ((keys: readonly string[]) => Promise<(Uint8Array | null)[]>) | null = null;
  putHook: ((key: string, bytes: Uint8Array) => Promise<void>) | null = null;
  get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return this.getHook ? this.getHook(keys) : Promise.resolve(keys.map((k) => this.map.get(k) ?? null));
  }
  put(key: string, bytes: Uint8Array): Promise<void> {
    if (this.putHook) return this.putHook(key, bytes);
    this.map.set(key, bytes);
    return Promise.resolve();
  }
  async delete(key: string): Promise<void> {
    this.deleted.push(key);
    this.map.delete(key);
  }
  usage(): null {
    return null;
  }
  async close(): Promise<void> {}
}

function engine(store: TestStore, logs: string[] = [], options: Partial<ContextCacheOptions> = {}, budgetPages?: number) {
  const cache = new ContextCache({ store, ...geometry, log: (l) => logs.push(l), ...options });
  const bytesPerPage = 3 * 4 * 40 * 2;
  const scheduler = new Scheduler(lite.model, lite.tokenizer, {
    contextLength: 64,
    pageTokens: 4,
    contextCache: cache,
    ...(budgetPages ? { cacheBudgetBytes: budgetPages * bytesPerPage } : {}),
  });
  return { engine: new LocalEngine(scheduler), scheduler, cache };
}

async function run(e: LocalEngine, prompt: number[], maxTokens = 4, onEvent?: (ev: EngineEvent) => void) {
  const tokens: number[] = [];
  for await (const ev of e.generate({ prompt, maxTokens, sampling: { temperature: 0 }, ignoreEos: true })) {
    onEvent?.(ev);
    if (ev.type === 'token') tokens.push(ev.token);
    if (ev.type === 'done') return { tokens, hit: ev.usage.promptCacheHitTokens };
  }
  throw new Error('no done');
}

/** The answer computed with no store at all. */
async function uncached(prompt: number[], maxTokens = 4) {
  return run(new LocalEngine(new Scheduler(lite.model, lite.tokenizer, { contextLength: 64, pageTokens: 4, prefixCache: false })), prompt, maxTokens);
}

test('pages written by one engine are fetched by another and give the same tokens as computing them', async () => {
  const store = new TestStore();
  const one = engine(store);
  const first = await run(one.engine, long);
  await one.scheduler.storeIdle();
  assert.equal(store.map.size >= 4, true, `pages written behind (${store.map.size})`);
  const two = engine(store);
  const second = await run(two.engine, long);
  assert.equal(second.hit, 16);
  assert.deepEqual(second.tokens, first.tokens);
  assert.deepEqual(second.tokens, (await uncached(long)).tokens);
  assert.equal(two.cache.stats().hitPages, 4);
});

test('a request waiting for its pages does not hold up the others: they decode to the end meanwhile', async () => {
  const store = new TestStore();
  const lookup = { issued: false, release: () => {} };
  store.getHook = (keys) =>
    new Promise((resolve) => {
      lookup.issued = true;
      lookup.release = () => resolve(keys.map(() => null));
    });
  const { engine: e } = engine(store, [], { fetchTimeoutMs: 60_000 });
  let longStarted = false;
  const waiting = run(e, long, 4, (ev) => {
    if (ev.type === 'started') longStarted = true;
  });
  const other = await run(e, short, 12);
  assert.equal(other.tokens.length, 12, 'the other request decoded all its tokens');
  assert.equal(longStarted, false, 'the long prompt is still waiting for the store');
  assert.ok(lookup.issued, 'its lookup was issued at admission');
  lookup.release();
  const r = await waiting;
  assert.equal(r.hit, 0);
  assert.deepEqual(r.tokens, (await uncached(long)).tokens);
});

test('a store that does not answer in time: the request is computed, the timeout counted, one log line, later lookups skipped', async () => {
  const store = new TestStore();
  store.getHook = () => new Promise(() => {}); // hung
  const logs: string[] = [];
  const { engine: e, cache } = engine(store, logs, { fetchTimeoutMs: 50, retryMs: 60_000 });
  const r = await run(e, long);
  assert.deepEqual(r.tokens, (await uncached(long)).tokens);
  const again = await run(e, [...long].reverse());
  assert.equal(again.hit, 0);
  const s = cache.stats();
  assert.equal(s.timeouts, 1);
  assert.equal(s.up, false);
  assert.equal(s.lookupsSkipped, 1, 'while down, lookups are not even tried');
  assert.equal(logs.filter((l) => /unavailable/.test(l)).length, 1, logs.join('\n'));
});

test('a store that fails is marked down and, once it answers a probe, up again (one line each)', async () => {
  const store = new TestStore();
  let failing = true;
  store.getHook = (keys) => (failing ? Promise.reject(new Error('ECONNREFUSED')) : Promise.resolve(keys.map(() => null)));
  const logs: string[] = [];
  const { engine: e, cache } = engine(store, logs, { retryMs: 50 });
  const r = await run(e, long);
  assert.deepEqual(r.tokens, (await uncached(long)).tokens);
  assert.equal(cache.stats().up, false);
  assert.equal(cache.stats().errors >= 1, true);
  failing = false;
  const until = Date.now() + 5000;
  while (!cache.stats().up && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
  assert.equal(cache.stats().up, true, 'the probe found it again');
  assert.deepEqual(logs.map((l) => (/unavailable/.test(l) ? 'down' : /reachable again/.test(l) ? 'up' : l)), ['down', 'up']);
});

test('garbage from the store is refused, counted, deleted and never served', async () => {
  const store = new TestStore();
  store.getHook = (keys) => Promise.resolve(keys.map(() => new TextEncoder().encode('not a page at all, but under the right key: '.repeat(3))));
  const logs: string[] = [];
  const { engine: e, cache } = engine(store, logs);
  const r = await run(e, long);
  assert.equal(r.hit, 0);
  assert.deepEqual(r.tokens, (await uncached(long)).tokens);
  assert.equal(cache.stats().rejectedPages, 1);
  assert.equal(store.deleted.length, 1);
  assert.ok(logs.some((l) => /refused page .*magic/.test(l)), logs.join('\n'));
});

test('writes are queued and bounded: with the store hung, a full queue drops writes (counted) and generation never waits', async () => {
  const store = new TestStore();
  store.putHook = () => new Promise(() => {}); // every write hangs
  const { engine: e, cache } = engine(store, [], { maxPendingWrites: 1, writeConcurrency: 1 });
  const r = await run(e, long, 12);
  assert.equal(r.tokens.length, 12);
  const s = cache.stats();
  assert.ok(s.writesDropped >= 2, `dropped ${s.writesDropped}`);
  assert.ok(s.pendingWrites <= 2, `bounded: ${s.pendingWrites} queued or in flight`);
});

test('under memory pressure, queued writes give their pages back (dropped, counted) instead of failing a request', async () => {
  const store = new TestStore();
  store.putHook = () => new Promise(() => {});
  // A pool of 17 pages: one full-context sequence (16 pages) and one more.
  const { engine: e, cache } = engine(store, [], { writeConcurrency: 1, maxPendingWrites: 16 }, 17);
  await run(e, long, 4);
  const queued = cache.stats().pendingWrites;
  assert.ok(queued > 1, `writes are queued (${queued})`);
  // A prompt that needs nearly the whole pool: the queue's pages are wanted back.
  const big = Array.from({ length: 60 }, (_, i) => (i * 37 + 11) % 250);
  const r = await run(e, big, 2);
  assert.equal(r.tokens.length, 2);
  assert.ok(cache.stats().writesDropped > 0, 'queued writes were dropped to make room');
});

test('a request cancelled while it waits for its pages ends cancelled, holds no pages, and the late answer is ignored', async () => {
  const store = new TestStore();
  const lookup = { release: () => {} };
  store.getHook = (keys) => new Promise((resolve) => (lookup.release = () => resolve(keys.map(() => null))));
  const { engine: e, scheduler } = engine(store, [], { fetchTimeoutMs: 60_000 });
  const controller = new AbortController();
  const events: EngineEvent['type'][] = [];
  const stream = e.generate({ prompt: long, maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true }, controller.signal);
  const consumed = (async () => {
    let reason = '';
    for await (const ev of stream) {
      events.push(ev.type);
      if (ev.type === 'done') reason = ev.finishReason;
    }
    return reason;
  })();
  await new Promise((r) => setTimeout(r, 20));
  controller.abort();
  assert.equal(await consumed, 'cancelled');
  assert.ok(!events.includes('started'), 'it never started');
  lookup.release();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(scheduler.pool.pagesInUse, 0);
  assert.equal(scheduler.hasWork(), false);
  // The engine goes on serving.
  assert.deepEqual((await run(e, short, 3)).tokens, (await uncached(short, 3)).tokens);
});
