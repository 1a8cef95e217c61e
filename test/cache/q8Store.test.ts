/**
 * q8 latent pages (--cache-type q8) in the prefix cache and the context store: a q8 engine hits
 * its own prefixes and the pages another q8 engine left in a folder store; an f16 engine on the
 * same folder misses them, and a q8 page handed back under an f16 key is refused, never served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { LocalEngine } from '../../src/engine/localEngine.js';
import { ContextCache } from '../../src/cache/contextCache.js';
import type { ContextStore } from '../../src/cache/contextStore.js';
import { FolderStore } from '../../src/cache/folderStore.js';
import { encodePage } from '../../src/cache/pageCodec.js';
import { PagePool } from '../../src/cache/pagePool.js';
import { goldenRoot } from '../paths.js';

const lite = loadModel(join(goldenRoot, 'lite'));
const long = [0, 17, 42, 99, 7, 200, 5, 64, 33, 12, 250, 3, 77, 140, 9, 31, 55];
const geometry = { fingerprint: 'lite', layers: 3, width: 40, pageTokens: 4 };

function scheduler(cacheType: 'q8' | 'f16', options: { store?: ContextStore; logs?: string[]; prefixCache?: boolean } = {}) {
  const contextCache = options.store
    ? new ContextCache({ store: options.store, ...geometry, dtype: cacheType, log: (l) => options.logs?.push(l) })
    : undefined;
  const s = new Scheduler(lite.model, lite.tokenizer, {
    contextLength: 64,
    pageTokens: 4,
    cacheType,
    ...(options.prefixCache === false ? { prefixCache: false } : {}),
    ...(contextCache ? { contextCache } : {}),
  });
  return { scheduler: s, engine: new LocalEngine(s), contextCache };
}

async function run(e: LocalEngine, prompt: number[], maxTokens = 4) {
  const tokens: number[] = [];
  for await (const ev of e.generate({ prompt, maxTokens, sampling: { temperature: 0 }, ignoreEos: true })) {
    if (ev.type === 'token') tokens.push(ev.token);
    if (ev.type === 'done') return { tokens, hit: ev.usage.promptCacheHitTokens };
  }
  throw new Error('no done');
}

test('q8 pages: the prefix cache hits and gives the tokens of computing the prompt again', async () => {
  const { engine, scheduler: s } = scheduler('q8');
  assert.equal(s.pool.dtype, 'q8');
  assert.equal(s.stats().cacheBytesPerToken, 3 * 44, 'three layers of 44-byte rows (a 32-value block and an 8-value one)');
  assert.equal(s.stats().cacheType, 'q8');
  const first = await run(engine, long);
  assert.equal(first.hit, 0);
  const second = await run(engine, long);
  assert.equal(second.hit, 16, 'four whole 4-token pages of the 17-token prompt');
  assert.deepEqual(second.tokens, first.tokens);
  const plain = await run(scheduler('q8', { prefixCache: false }).engine, long);
  assert.deepEqual(second.tokens, plain.tokens);
});

test('q8 pages in a folder store: another q8 engine hits them; an f16 engine on the same folder misses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-q8-store-'));
  const stores: FolderStore[] = [];
  const folder = () => {
    stores.push(new FolderStore({ dir, maxBytes: 1 << 24 }));
    return stores[stores.length - 1]!;
  };
  const engines: Scheduler[] = [];
  try {
    const one = scheduler('q8', { store: folder() });
    const first = await run(one.engine, long);
    await one.scheduler.storeIdle();
    const two = scheduler('q8', { store: folder() });
    const second = await run(two.engine, long);
    assert.equal(second.hit, 16);
    assert.deepEqual(second.tokens, first.tokens);
    assert.equal(two.contextCache!.stats().hitPages, 4);
    const f16 = scheduler('f16', { store: folder() });
    engines.push(one.scheduler, two.scheduler, f16.scheduler);
    const third = await run(f16.engine, long);
    assert.equal(third.hit, 0, 'no q8 page reaches an f16 cache');
    assert.equal(f16.contextCache!.stats().hitPages, 0);
    assert.ok(f16.contextCache!.stats().missPages >= 4, 'it asked under its own (f16) keys and found nothing');
    assert.deepEqual(third.tokens, (await run(scheduler('f16', { prefixCache: false }).engine, long)).tokens);
  } finally {
    for (const e of engines) await e.storeIdle();
    for (const store of stores) await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a q8 page a store hands back under an f16 cache’s own key is refused, counted and not served', async () => {
  // A store that answers every key with a well-formed q8 page carrying that very key: only the
  // page's type tells it apart.
  const q8Pool = new PagePool({ ...geometry, dtype: 'q8', maxPages: 1 });
  const q8Rows = q8Pool.allocate().layers;
  const asked: string[] = [];
  const store: ContextStore = {
    kind: 'redis',
    location: 'test://forger',
    get: (keys) => {
      asked.push(...keys);
      return Promise.resolve(keys.map((key) => encodePage({ ...geometry, key, dtype: 'q8' }, q8Rows)));
    },
    put: () => Promise.resolve(),
    delete: () => Promise.resolve(),
    usage: () => null,
    close: () => Promise.resolve(),
  };
  const logs: string[] = [];
  const f16 = scheduler('f16', { store, logs });
  const result = await run(f16.engine, long);
  assert.ok(asked.length > 0, 'the store was asked');
  assert.equal(result.hit, 0);
  assert.equal(f16.contextCache!.stats().rejectedPages, 1, 'the first page is refused and the run stops there');
  assert.match(logs.join('\n'), /page geometry differs \(layers, width, page tokens or type\)/);
  assert.deepEqual(result.tokens, (await run(scheduler('f16', { prefixCache: false }).engine, long)).tokens);
});

test('a context cache for f16 pages cannot be attached to a q8 pool', () => {
  const contextCache = new ContextCache({ store: { kind: 'redis', location: 'x', get: async () => [], put: async () => {}, delete: async () => {}, usage: () => null, close: async () => {} }, ...geometry, dtype: 'f16' });
  assert.throws(
    () => new Scheduler(lite.model, lite.tokenizer, { contextLength: 64, pageTokens: 4, cacheType: 'q8', contextCache }),
    /context cache for f16 pages .* attached to a pool of q8 pages/,
  );
});
