/**
 * What the server adds for the chat page: opt-in routing counts and timings on responses
 * (whole and streamed), GET /v1/status with the MLA saving, and the page's static files served
 * safely. The engine is the server tests' fake, taught to report routing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine, EngineEvent, EngineRequest, EngineStats } from '../../src/engine/types.js';
import { createServer, type DseekServer, type ModelFacts, type RoutingBody, type StatusBody, type Timings } from '../../src/server/index.js';
import { PAGE_CSP } from '../../src/server/routes/static.js';
import { FakeEngine } from '../server/fakeEngine.js';
import { parseSse, post, v3Tokenizer } from '../server/helpers.js';

const COUNTS = [
  [3, 0, 1, 0],
  [1, 1, 1, 1],
];

/** The fake engine plus routing counts on `done` (when asked) and a cache that holds something. */
class RoutingEngine implements Engine {
  readonly inner = new FakeEngine(v3Tokenizer(), { cachedTokens: 5 });
  readonly requests: EngineRequest[] = [];
  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    this.requests.push(request);
    const events = this.inner.generate(request, signal);
    return (async function* () {
      for await (const e of events) {
        yield e.type === 'done' && request.routing ? { ...e, routing: { layers: [1, 2], experts: 4, sharedExperts: 2, counts: COUNTS } } : e;
      }
    })();
  }
  stats(): EngineStats {
    return {
      ...this.inner.stats(),
      cacheBytesInUse: 6400,
      cacheBytesBudget: 64_000,
      cacheBytesPerToken: 100,
      cachedTokens: 64,
      sharedPages: 2,
      prefixCacheTokens: 48,
      diskCacheBytes: 1000,
      diskCacheFiles: 3,
      diskCacheHits: 1,
      diskCacheMisses: 3,
      contextStore: null,
      promptCacheHitTokens: 10,
      promptCacheMissTokens: 30,
      mhaBytesPerToken: 1600,
      gqaBytesPerToken: 800,
      engineFaults: 0,
      unhealthy: null,
    };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const MODEL: ModelFacts = {
  modelType: 'deepseek_v2',
  layers: 3,
  moeLayers: [1, 2],
  routedExperts: 4,
  sharedExperts: 2,
  expertsPerToken: 2,
  hiddenSize: 64,
  vocabSize: 129280,
  attentionHeads: 16,
  kvLoraRank: 32,
  qLoraRank: null,
  qkNopeHeadDim: 16,
  qkRopeHeadDim: 8,
  vHeadDim: 16,
  maxPositionEmbeddings: 4096,
};

let engine: RoutingEngine;
let server: DseekServer;
let url: string;
let web: string;
let outside: string;

before(async () => {
  web = mkdtempSync(join(tmpdir(), 'dseek-web-root-'));
  writeFileSync(join(web, 'index.html'), '<!doctype html><title>page</title>');
  writeFileSync(join(web, 'app.js'), 'export {};');
  writeFileSync(join(web, 'style.css'), 'body{}');
  writeFileSync(join(web, 'notes.md'), '# not served: unknown type');
  writeFileSync(join(web, '.secret.js'), 'secret');
  mkdirSync(join(web, 'sub'));
  writeFileSync(join(web, 'sub', 'deep.js'), 'export const deep = 1;');
  outside = mkdtempSync(join(tmpdir(), 'dseek-outside-'));
  writeFileSync(join(outside, 'leak.js'), 'leaked');
  symlinkSync(join(outside, 'leak.js'), join(web, 'link.js'));
  engine = new RoutingEngine();
  server = createServer({ engine, tokenizer: v3Tokenizer(), modelName: 'm', contextLength: 4096, log: () => {}, webRoot: web, model: MODEL, backend: 'reference' });
  url = (await server.listen(0, '127.0.0.1')).url;
});

after(async () => {
  await server.close(1000);
  for (const dir of [web, outside]) rmSync(dir, { recursive: true, force: true });
});

const chat = (extra: Record<string, unknown> = {}) => ({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, ...extra });

test('"dseek": {"routing": true} reaches the engine and returns summed routing counts with timings', async () => {
  const r = await post(url, '/v1/chat/completions', chat({ dseek: { routing: true }, n: 2 }));
  assert.equal(r.status, 200);
  assert.equal(engine.requests.at(-1)!.routing, true);
  const routing = r.json['routing'] as RoutingBody;
  assert.deepEqual(routing.layers, [1, 2]);
  assert.equal(routing.routed_experts, 4);
  assert.equal(routing.shared_experts, 2);
  assert.equal(routing.experts_per_token, 2);
  assert.deepEqual(routing.counts, COUNTS.map((row) => row.map((c) => 2 * c)), 'two choices, summed');
  assert.equal(routing.tokens, 4);
  const t = r.json['timings'] as Timings;
  const usage = r.json['usage'] as { prompt_tokens: number; completion_tokens: number; prompt_cache_hit_tokens: number };
  assert.equal(t.prompt_tokens, usage.prompt_tokens);
  assert.equal(t.completion_tokens, usage.completion_tokens);
  assert.equal(t.prompt_cache_hit_tokens, usage.prompt_cache_hit_tokens);
  assert.equal(t.prompt_cache_hit_tokens, Math.min(5, usage.prompt_tokens));
  assert.ok(t.time_to_first_token_s !== null && t.time_to_first_token_s >= 0);
  assert.ok(t.tokens_per_second === null || t.tokens_per_second > 0);
  assert.ok(t.total_s >= t.time_to_first_token_s!);
});

test('without the opt-in there is no routing (and the engine is not asked), but timings are there', async () => {
  const r = await post(url, '/v1/chat/completions', chat());
  assert.equal(engine.requests.at(-1)!.routing, undefined);
  assert.equal('routing' in r.json, false);
  assert.equal(typeof (r.json['timings'] as Timings).completion_tokens, 'number');
  const bad = await post(url, '/v1/chat/completions', chat({ dseek: { routing: 'yes' } }));
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error!.param, 'dseek.routing');
  const worse = await post(url, '/v1/completions', { prompt: 'x', dseek: true });
  assert.equal(worse.status, 400);
  assert.equal(worse.json.error!.param, 'dseek');
});

test('streamed: the last chunk carries timings and routing (the usage chunk, or else the finish chunk)', async () => {
  for (const includeUsage of [true, false]) {
    const r = await post(url, '/v1/chat/completions', chat({ stream: true, dseek: { routing: true }, ...(includeUsage && { stream_options: { include_usage: true } }) }));
    const data = parseSse(r.text).data;
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as Record<string, unknown>);
    const last = chunks.at(-1)!;
    const withExtras = chunks.filter((c) => 'timings' in c);
    assert.equal(withExtras.length, 1, 'only the last chunk has them');
    assert.equal(withExtras[0], last);
    assert.deepEqual((last['routing'] as RoutingBody).counts, COUNTS);
    if (includeUsage) assert.deepEqual(last['choices'], []);
    else assert.equal((last['choices'] as { finish_reason: string }[])[0]!.finish_reason, 'length');
  }
  // Text completions too.
  const r = await post(url, '/v1/completions', { prompt: 'hello', max_tokens: 3, stream: true, dseek: { routing: true } });
  const chunks = parseSse(r.text).data.slice(0, -1).map((d) => JSON.parse(d) as Record<string, unknown>);
  assert.ok('routing' in chunks.at(-1)! && 'timings' in chunks.at(-1)!);
});

test('GET /v1/status: model facts, caches, and the MLA saving on the cached tokens', async () => {
  const res = await fetch(`${url}/v1/status`);
  assert.equal(res.status, 200);
  const s = (await res.json()) as StatusBody;
  assert.equal(s.object, 'dseek.status');
  assert.equal(s.model.id, 'm');
  assert.equal(s.model.context_length, 4096);
  assert.equal(s.model.backend, 'reference');
  assert.deepEqual(s.model.moe_layers, [1, 2]);
  assert.equal(s.model.kv_lora_rank, 32);
  assert.equal(s.latent_cache.bytes_in_use, 6400);
  assert.equal(s.latent_cache.budget_tokens, 640);
  assert.equal(s.latent_cache.shared_pages, 2);
  assert.equal(s.disk_cache.hit_rate, 0.25);
  assert.equal(s.prompt_cache.hit_rate, 0.25);
  assert.deepEqual(s.mla.bytes, { mla: 6400, mha: 102_400, gqa: 51_200 });
  assert.equal(s.mla.mha_ratio, 16);
  assert.equal(s.mla.gqa_ratio, 8);
  assert.equal(s.mla.gqa_kv_heads, 8);
  assert.equal(s.mla.equivalent_gqa_kv_heads, 1);
  assert.ok(s.totals.completion_requests >= 1);
  assert.equal(s.prices.currency, 'USD');
});

test('GET /v1/status compares with GQA at the model’s own head count when it has fewer than 8', async () => {
  const few = createServer({ engine, tokenizer: v3Tokenizer(), modelName: 'm', contextLength: 4096, log: () => {}, webRoot: web, model: { ...MODEL, attentionHeads: 4 } });
  const { url: u } = await few.listen(0, '127.0.0.1');
  try {
    const s = (await (await fetch(`${u}/v1/status`)).json()) as StatusBody;
    assert.equal(s.mla.gqa_kv_heads, 4);
    assert.equal(s.mla.bytes_per_token.gqa, 400);
  } finally {
    await few.close(1000);
  }
});

test('GET /v1/status needs the API key like the rest of /v1', async () => {
  const locked = createServer({ engine, tokenizer: v3Tokenizer(), modelName: 'm', contextLength: 4096, log: () => {}, webRoot: web, apiKey: 'k' });
  const { url: u } = await locked.listen(0, '127.0.0.1');
  try {
    assert.equal((await fetch(`${u}/v1/status`)).status, 401);
    const ok = await fetch(`${u}/v1/status`, { headers: { authorization: 'Bearer k' } });
    assert.equal(ok.status, 200);
    const s = (await ok.json()) as StatusBody;
    assert.equal(s.model.layers, null, 'no model facts were given');
    // The page itself stays open: it asks for the key.
    assert.equal((await fetch(`${u}/`)).status, 200);
  } finally {
    await locked.close(1000);
  }
});

test('static files: types, security headers, HEAD, and nothing outside the web root', async () => {
  const page = await fetch(`${url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type')!, /^text\/html; charset=utf-8$/);
  assert.equal(page.headers.get('content-security-policy'), PAGE_CSP);
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  for (const [path, type] of [
    ['/app.js', 'text/javascript; charset=utf-8'],
    ['/style.css', 'text/css; charset=utf-8'],
    ['/sub/deep.js', 'text/javascript; charset=utf-8'],
    ['/index.html', 'text/html; charset=utf-8'],
  ] as const) {
    const r = await fetch(`${url}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get('content-type'), type, path);
  }
  const head = await fetch(`${url}/app.js`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');

  // Raw request targets, so that nothing normalises them on the way.
  const raw = (path: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${url}/`, { path, method: 'GET' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
  for (const path of [
    '/../package.json',
    '/..%2f..%2fpackage.json',
    '/%2e%2e/%2e%2e/package.json',
    '/sub/..%5c..%5cpackage.json',
    '/%2e%2e%5cpackage.json',
    '/.secret.js',
    '/sub/%2e%2e/.secret.js',
    '/notes.md',
    '/link.js',
    '/sub',
    '/sub/',
    '/app.js%00.html',
    '/%E0%A4%A',
    '/nothing.js',
  ]) {
    assert.equal(await raw(path), 404, path);
  }
  assert.equal((await fetch(`${url}/app.js`, { method: 'POST' })).status, 404);
  assert.equal((await fetch(`${url}/`, { method: 'POST' })).status, 405);
  assert.equal((await fetch(`${url}/v1/app.js`)).status, 404, 'the API namespace never serves files');
});
