/**
 * Cache isolation: `prompt_cache_hit_tokens` must not tell one tenant what another sent. With two
 * API keys (default isolation `key`) a prompt cached under one key is a miss under the other and a
 * hit under its own; `cache_salt` partitions within a key; `user` isolation separates users of one
 * key; the context store (here a folder) keys pages by the salt too (a restart does not leak across tenants). A real
 * engine on the bundled model, behind the real server, called with the `openai` client.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadModel } from '../../src/model/load.js';
import { selectBackend } from '../../src/kernels/select.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { LocalEngine } from '../../src/engine/localEngine.js';
import { ContextCache } from '../../src/cache/contextCache.js';
import { FolderStore } from '../../src/cache/folderStore.js';
import { createServer, type CacheIsolation, type ServerOptions } from '../../src/server/index.js';
import { parseCacheIsolation } from '../../src/cli/serve.js';
import { InvalidInputError } from '../../src/errors.js';
import { repoRoot } from '../paths.js';

const loaded = loadModel(join(repoRoot, 'models', 'default'), { backend: selectBackend('auto', 1) });
const c = loaded.config;
const scratch = mkdtempSync(join(tmpdir(), 'dseek-isolation-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A prompt of several 8-token pages, so that a hit is visible. */
const PROMPT = 'And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness.';

async function withServer(
  options: { apiKey?: readonly string[]; cacheIsolation?: CacheIsolation; diskDir?: string },
  body: (url: string, client: (key?: string) => OpenAI) => Promise<void>,
): Promise<void> {
  const store = options.diskDir
    ? new ContextCache({ store: new FolderStore({ dir: options.diskDir, maxBytes: 1 << 30 }), fingerprint: 'test', layers: c.numHiddenLayers, width: c.kvLoraRank + c.qkRopeHeadDim, pageTokens: 8, dtype: 'f16' })
    : null;
  const engine = new LocalEngine(new Scheduler(loaded.model, loaded.tokenizer, { contextLength: 256, pageTokens: 8, contextCache: store }));
  const serverOptions: ServerOptions = {
    engine,
    tokenizer: loaded.tokenizer!,
    modelName: 'default',
    contextLength: 256,
    log: () => {},
    ...(options.apiKey ? { apiKey: options.apiKey } : {}),
    ...(options.cacheIsolation ? { cacheIsolation: options.cacheIsolation } : {}),
  };
  const server = createServer(serverOptions);
  const { url } = await server.listen(0, '127.0.0.1');
  try {
    await body(url, (key = 'unused') => new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0, timeout: 30_000 }));
  } finally {
    await server.close(1000);
    await engine.close(1000);
  }
}

async function hits(client: OpenAI, extra: Record<string, unknown> = {}): Promise<{ hit: number; total: number }> {
  const r = await client.completions.create({ model: 'default', prompt: PROMPT, max_tokens: 1, temperature: 0, ...extra });
  const u = r.usage as OpenAI.CompletionUsage & { prompt_cache_hit_tokens: number };
  return { hit: u.prompt_cache_hit_tokens, total: u.prompt_tokens };
}

test('two API keys: no hits across keys, hits within a key (default isolation with keys)', async () => {
  await withServer({ apiKey: ['key-a', 'key-b'] }, async (_url, client) => {
    const a = client('key-a');
    const b = client('key-b');
    assert.equal((await hits(a)).hit, 0, 'first sight');
    const again = await hits(a);
    assert.ok(again.hit >= 8 && again.hit < again.total, `a hit within key a (got ${again.hit} of ${again.total})`);
    assert.equal((await hits(b)).hit, 0, 'key b never hits key a’s pages');
    assert.ok((await hits(b)).hit >= 8, 'key b hits its own pages');
  });
});

test('cache_salt partitions within one key; the same salt hits', async () => {
  await withServer({ apiKey: ['key-a'] }, async (_url, client) => {
    const a = client('key-a');
    assert.equal((await hits(a, { cache_salt: 'salt-1' })).hit, 0);
    assert.equal((await hits(a, { cache_salt: 'salt-2' })).hit, 0, 'another salt misses');
    assert.equal((await hits(a)).hit, 0, 'no salt misses too');
    assert.ok((await hits(a, { cache_salt: 'salt-1' })).hit >= 8, 'the same salt hits');
  });
});

test('isolation user separates users of one key; none shares across keys', async () => {
  await withServer({ apiKey: ['k'], cacheIsolation: 'user' }, async (_url, client) => {
    const k = client('k');
    assert.equal((await hits(k, { user: 'alice' })).hit, 0);
    assert.equal((await hits(k, { user: 'bob' })).hit, 0, 'bob never hits alice’s pages');
    assert.ok((await hits(k, { user: 'alice' })).hit >= 8);
  });
  await withServer({ apiKey: ['key-a', 'key-b'], cacheIsolation: 'none' }, async (_url, client) => {
    assert.equal((await hits(client('key-a'))).hit, 0);
    assert.ok((await hits(client('key-b'))).hit >= 8, 'one pool: key b sees key a’s pages (the side channel isolation closes)');
  });
});

test('the folder context store is keyed by the salt: after a restart a key finds only its own pages', async () => {
  const dir = join(scratch, 'disk');
  await withServer({ apiKey: ['key-a', 'key-b'], diskDir: dir }, async (_url, client) => {
    assert.equal((await hits(client('key-a'))).hit, 0);
  });
  await withServer({ apiKey: ['key-a', 'key-b'], diskDir: dir }, async (_url, client) => {
    assert.equal((await hits(client('key-b'))).hit, 0, 'key b misses key a’s pages on disk');
    assert.ok((await hits(client('key-a'))).hit >= 8, 'key a reads its pages back from disk');
  });
});

test('bad cache_salt is a 400 naming the field; --cache-isolation key without keys is refused', async () => {
  await withServer({}, async (url) => {
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', cache_salt: '' }) });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: { param: string } }).error.param, 'cache_salt');
  });
  assert.equal(parseCacheIsolation(undefined, true), 'key');
  assert.equal(parseCacheIsolation(undefined, false), 'none');
  assert.throws(() => parseCacheIsolation('key', false), InvalidInputError);
  assert.throws(() => parseCacheIsolation('tenant', true), /none, key or user/);
});
