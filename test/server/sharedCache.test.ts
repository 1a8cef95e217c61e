/**
 * Replicas sharing one context cache in Redis: real `dseek serve` processes (the CLI, the worker
 * engine) on one redis-server started here on a free loopback port, driven by the `openai` client.
 * Skipped, saying why, when redis-server is not installed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import OpenAI from 'openai';
import { createClient, RESP_TYPES } from '@redis/client';
import { textModel } from '../fixtures.js';
import { metric, startServe, type ServerProcess } from '../serveProcess.js';
import { redisSkipReason, startRedis, type RedisServer } from '../redisServer.js';

const skip = redisSkipReason;
const model = textModel();
const live: ServerProcess[] = [];
/** The model name each replica serves (its folder's name). */
const names = new WeakMap<ServerProcess, string>();
let redis: RedisServer | null = null;
const scratch = mkdtempSync(join(tmpdir(), 'dseek-shared-'));

before(async () => {
  if (!skip) redis = await startRedis();
});

after(async () => {
  await Promise.all(live.map((s) => s.stop()));
  await redis?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

// A lookup timeout well past a loaded CI's Redis round trips: a lookup that times out is a miss.
async function replica(modelPath = model): Promise<ServerProcess> {
  const s = await startServe(['--model', modelPath, '--page-tokens', '16', '--context-store', redis!.url, '--context-store-timeout', '5000'], 60_000);
  live.push(s);
  names.set(s, basename(modelPath));
  return s;
}

async function stop(s: ServerProcess): Promise<void> {
  await s.stop();
  live.splice(live.indexOf(s), 1);
}

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly hit: number;
  readonly promptTokens: number;
}

async function ask(s: ServerProcess, prompt: string, extra: Record<string, unknown> = {}): Promise<Answer> {
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  const { data, response } = await client.completions.create({ model: names.get(s)!, prompt, max_tokens: 6, temperature: 0, ...extra }).withResponse();
  const usage = data.usage as OpenAI.CompletionUsage & { prompt_cache_hit_tokens: number };
  return { status: response.status, text: data.choices[0]!.text, hit: usage.prompt_cache_hit_tokens, promptTokens: usage.prompt_tokens };
}

const sample = (name: string, labels = '') => `dseek_context_store_${name}{store="redis"${labels}}`;

/** Pages the replica has written to Redis so far (its /metrics). */
const writtenPages = (s: ServerProcess) => metric(s.url, sample('writes_total', ',result="written"'));

/**
 * Until `pages` more pages than `since` have reached Redis from the replica and none is pending.
 * Waiting for "nothing pending" alone raced: a reply can arrive before its pages are queued.
 */
async function written(s: ServerProcess, since: number, pages: number): Promise<void> {
  const until = Date.now() + 20_000;
  for (;;) {
    const done = (await writtenPages(s)) >= since + pages && (await metric(s.url, sample('pending_writes'))) === 0;
    if (done) return;
    if (Date.now() > until) throw new Error(`${pages} pages did not reach Redis:\n${s.log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Asks `s` for `p` and waits until its whole pages are in Redis. */
async function askAndWrite(s: ServerProcess, p: string): Promise<Answer> {
  const since = await writtenPages(s);
  const answer = await ask(s, p);
  await written(s, since, pagesOf(answer.promptTokens) / 16);
  return answer;
}

async function until(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A long prompt: many 16-token pages. Each test uses its own, so that hits come from Redis alone. */
const prompt = (topic: string) => `${topic}: the quick brown fox jumps over the lazy dog, and the dog sleeps on. `.repeat(10);
/** The whole pages of a prompt of n tokens that a hit can cover (one token is always computed). */
const pagesOf = (n: number) => Math.floor((n - 1) / 16) * 16;

let a: ServerProcess;
let b: ServerProcess;

test('a long prompt answered by replica A is a prompt_cache_hit_tokens hit on replica B, with the same output at temperature 0', { skip }, async () => {
  [a, b] = await Promise.all([replica(), replica()]);
  const p = prompt('two replicas');
  const first = await askAndWrite(a, p);
  assert.equal(first.hit, 0);
  const second = await ask(b, p);
  assert.equal(second.status, 200);
  assert.equal(second.hit, pagesOf(second.promptTokens), `B hits every whole page A computed (${second.hit} of ${second.promptTokens})`);
  assert.equal(second.text, first.text);
  assert.ok((await metric(b.url, sample('pages_total', ',result="hit"'))) > 0, 'B counts the pages it read from Redis');
  // Salted keys in Redis too: another cache_salt shares nothing.
  assert.equal((await ask(b, p, { cache_salt: 'another tenant' })).hit, 0);
});

test('a replica restarted against the same Redis still hits', { skip }, async () => {
  const p = prompt('restart');
  const first = await askAndWrite(a, p);
  await stop(b);
  b = await replica();
  const again = await ask(b, p);
  assert.equal(again.hit, pagesOf(again.promptTokens));
  assert.equal(again.text, first.text);
});

let copy: ServerProcess;

test('a model copied under another name hits the same pages (the fingerprint is of its content)', { skip }, async () => {
  const renamed = join(scratch, 'the-same-weights-elsewhere');
  cpSync(model, renamed, { recursive: true });
  const p = prompt('copied model');
  const first = await askAndWrite(a, p);
  copy = await replica(renamed);
  const r = await ask(copy, p);
  assert.equal(r.hit, pagesOf(r.promptTokens));
  assert.equal(r.text, first.text);
});

test('a page corrupted inside Redis is rejected (counted, logged) and recomputed, then rewritten', { skip }, async () => {
  const p = prompt('corrupt');
  const first = await askAndWrite(a, p);
  const client = createClient({ url: redis!.url }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  await client.connect();
  try {
    for (const key of await client.keys('dseek:ctx:*')) {
      const bytes = await client.get(key);
      if (!bytes) continue;
      bytes[bytes.length - 40] ^= 0x55;
      await client.set(key, bytes);
    }
  } finally {
    await client.close();
  }
  const since = await writtenPages(copy);
  const r = await ask(copy, p);
  assert.equal(r.status, 200);
  assert.equal(r.hit, 0, 'a corrupt page is never served');
  assert.equal(r.text, first.text);
  // The worker publishes its counters between steps, after the reply's last token: wait for them.
  await until('the refused pages in /metrics', async () => (await metric(copy.url, sample('pages_total', ',result="rejected"'))) > 0);
  await until('the refusal in the log', async () => /refused page .*checksum mismatch/.test(copy.log()));
  // The replica that recomputed them wrote them back: another replica hits.
  await written(copy, since, pagesOf(r.promptTokens) / 16);
  const again = await ask(b, p);
  assert.equal(again.hit, pagesOf(again.promptTokens));
});

test('Redis killed mid-test: requests still answer 200 (counted as misses, one log line); after it returns they hit again', { skip }, async () => {
  await redis!.kill();
  const down = await ask(b, prompt('while down'));
  assert.equal(down.status, 200);
  assert.equal(down.hit, 0);
  const downAgain = await ask(b, prompt('still down'));
  assert.equal(downAgain.status, 200);
  assert.equal(await metric(b.url, sample('up')), 0);
  assert.ok((await metric(b.url, sample('pages_total', ',result="miss"'))) > 0);
  assert.equal(b.log().match(/context store redis:\/\/\S+: unavailable/g)?.length, 1, `one line for the state change:\n${b.log()}`);

  await redis!.restart();
  // Both replicas reconnect and find the store again by themselves (a probe while down).
  await until('both replicas to see Redis again', async () => (await metric(a.url, sample('up'))) === 1 && (await metric(b.url, sample('up'))) === 1);
  assert.equal(b.log().match(/context store redis:\/\/\S+: reachable again/g)?.length, 1);
  const p = prompt('after the restart');
  const first = await askAndWrite(a, p);
  const hit = await ask(b, p);
  assert.equal(hit.hit, pagesOf(hit.promptTokens));
  assert.equal(hit.text, first.text);
  const health = await fetch(`${b.url}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { context_store: string }).context_store, 'up');
});
