/**
 * Faults are faults: a kernel that throws inside a step fails the requests of that step with a
 * 500 `internal_error` (an error event before `[DONE]` when streaming), the step loop recovers,
 * /metrics counts the fault and the next request is answered normally. A real model (the bundled
 * one) on a backend whose matmul can be made to throw, behind the real server and the `openai`
 * client.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadModel } from '../../src/model/load.js';
import { selectBackend } from '../../src/kernels/select.js';
import type { Backend } from '../../src/kernels/backend.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { LocalEngine } from '../../src/engine/localEngine.js';
import { createServer, type DseekServer } from '../../src/server/index.js';
import { repoRoot } from '../paths.js';

/** Calls to matmul left before it throws; -1: never. */
let failIn = -1;
const inner = selectBackend('auto', 1);
const faulty: Backend = {
  ...inner,
  name: `faulty ${inner.name}`,
  matmul(y, x, w, tokens) {
    if (failIn >= 0 && failIn-- === 0) throw new Error('injected kernel fault');
    inner.matmul(y, x, w, tokens);
  },
};

const loaded = loadModel(join(repoRoot, 'models', 'default'), { backend: faulty });
const logs: string[] = [];
const scheduler = new Scheduler(loaded.model, loaded.tokenizer, { contextLength: 256, log: (l) => logs.push(l) });
const engine = new LocalEngine(scheduler);
let server: DseekServer;
let client: OpenAI;
let url: string;

before(async () => {
  server = createServer({ engine, tokenizer: loaded.tokenizer!, modelName: 'default', contextLength: 256, log: (l) => logs.push(l) });
  url = (await server.listen(0, '127.0.0.1')).url;
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
});
after(async () => {
  await server.close(1000);
  await engine.close(1000);
});

const ask = { model: 'default', prompt: 'And God said', max_tokens: 4, temperature: 0 } as const;

async function faultsMetric(): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^dseek_engine_faults_total (\d+)$/m.exec(text)?.[1] ?? NaN);
}

test('an injected kernel fault reaches the openai client as InternalServerError (500 internal_error), and the next request works', async () => {
  const before = await faultsMetric();
  failIn = 3;
  const err = await client.completions.create(ask).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(err instanceof OpenAI.InternalServerError, `expected InternalServerError, got ${String(err)}`);
  assert.equal(err.status, 500);
  assert.equal(err.code, 'internal_error');
  assert.doesNotMatch(err.message, /injected kernel fault/, 'the detail stays in the log');
  assert.ok(logs.some((l) => l.includes('injected kernel fault')), 'the stack is logged');
  assert.equal(await faultsMetric(), before + 1);
  // The loop recovered: the same request now succeeds, and its pages were not poisoned.
  failIn = -1;
  const ok = await client.completions.create(ask);
  assert.equal(ok.choices[0]!.finish_reason, 'length');
  assert.equal(ok.usage!.completion_tokens, 4);
  assert.equal(engine.stats().running, 0);
});

test('a fault mid-stream arrives as an error event before [DONE], and the openai stream throws it', async () => {
  // Raw SSE first: the error event, then [DONE].
  failIn = 40;
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...ask, max_tokens: 64, stream: true }),
  });
  assert.equal(res.status, 200);
  const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const error = JSON.parse(events.at(-2)!) as { error: { code: string; type: string } };
  assert.equal(error.error.code, 'internal_error');
  assert.equal(error.error.type, 'server_error');
  assert.ok(!events.some((e) => e.includes('"finish_reason":"length"')), 'a fault never looks like a short answer');

  failIn = 40;
  const stream = await client.completions.create({ ...ask, max_tokens: 64, stream: true });
  await assert.rejects(async () => {
    for await (const _ of stream);
  }, (e: unknown) => e instanceof OpenAI.APIError && /engine failed/.test(e.message));
  failIn = -1;
  const ok = await client.completions.create(ask);
  assert.equal(ok.usage!.completion_tokens, 4);
});

test('concurrent requests hit by a fault fail with 500, none hangs, and the next request completes', async () => {
  failIn = 2;
  const [a, b] = await Promise.allSettled([client.completions.create(ask), client.completions.create({ ...ask, prompt: 'In the beginning' })]);
  // Both may have shared the failing step; at least one failed and nothing hangs.
  assert.ok([a, b].some((r) => r.status === 'rejected'));
  for (const r of [a, b]) if (r.status === 'rejected') assert.ok(r.reason instanceof OpenAI.InternalServerError);
  failIn = -1;
  assert.equal((await client.completions.create(ask)).usage!.completion_tokens, 4);
});
