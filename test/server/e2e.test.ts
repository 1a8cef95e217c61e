/**
 * The real thing: `dseek serve` as a user starts it (the CLI, the worker-thread engine, the
 * model) on 127.0.0.1, driven by the official openai client.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import OpenAI from 'openai';
import { textModel } from '../fixtures.js';
import { repoRoot } from '../paths.js';
import { startServe, type ServerProcess } from '../serveProcess.js';

interface Running extends ServerProcess {
  client: OpenAI;
}

const model = textModel();
const modelName = basename(model);
const diskDir = mkdtempSync(join(tmpdir(), 'dseek-e2e-disk-'));
const live: Running[] = [];

async function serve(extra: string[] = []): Promise<Running> {
  const server = await startServe(['--model', model, '--page-tokens', '16', '--disk-cache-dir', diskDir, ...extra], 20_000);
  const running: Running = {
    ...server,
    client: new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 }),
  };
  live.push(running);
  return running;
}

after(async () => {
  await Promise.all(live.map((r) => r.stop()));
});

const longPrompt = 'The quick brown fox jumps over the lazy dog. '.repeat(12);

test('chat: streamed text equals the non-streamed text at temperature 0; usage and cost are reported', async () => {
  const s = await serve();
  const messages = [{ role: 'user' as const, content: 'Tell me about caches.' }];
  const plain = await s.client.chat.completions.create({ model: modelName, messages, max_tokens: 12, temperature: 0 });
  const text = plain.choices[0]!.message.content ?? '';
  assert.equal(plain.usage!.completion_tokens, 12);
  const usage = plain.usage as unknown as Record<string, number>;
  assert.equal(usage['prompt_cache_hit_tokens']! + usage['prompt_cache_miss_tokens']!, plain.usage!.prompt_tokens);
  assert.ok((plain.usage as unknown as { cost: { total: number } }).cost.total > 0);

  const stream = await s.client.chat.completions.create({ model: modelName, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let streamed = '';
  let finishes = 0;
  let sawUsage = false;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      streamed += c.delta.content ?? '';
      if (c.finish_reason) finishes++;
    }
    if (chunk.usage) sawUsage = true;
  }
  assert.equal(streamed, text);
  assert.equal(finishes, 1);
  assert.ok(sawUsage);
});

test('the same long prompt twice: the second hits the prefix cache; seeds reproduce; n > 1; JSON mode; logprobs', async () => {
  const s = await serve();
  const ask = () => s.client.completions.create({ model: modelName, prompt: longPrompt, max_tokens: 4, temperature: 0 });
  const first = await ask();
  const second = await ask();
  const hit = (r: { usage?: unknown }) => (r.usage as Record<string, number>)['prompt_cache_hit_tokens']!;
  assert.equal(hit(first), 0);
  assert.ok(hit(second) > 0, `second request: ${JSON.stringify(second.usage)}`);
  assert.equal(second.choices[0]!.text, first.choices[0]!.text);

  const seeded = () => s.client.chat.completions.create({ model: modelName, messages: [{ role: 'user', content: 'Pick words' }], max_tokens: 8, temperature: 1, seed: 42, n: 2 });
  const a = await seeded();
  const b = await seeded();
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));

  const json = await s.client.chat.completions.create({
    model: modelName,
    messages: [{ role: 'user', content: 'Reply in JSON' }],
    max_tokens: 40,
    temperature: 0.7,
    seed: 3,
    response_format: { type: 'json_object' },
  });
  const out = json.choices[0]!.message.content ?? '';
  if (json.choices[0]!.finish_reason === 'stop') assert.doesNotThrow(() => JSON.parse(out), out);
  else assert.ok(out.startsWith('{'), out); // cut off by max_tokens: still a JSON prefix

  const lp = await s.client.chat.completions.create({ model: modelName, messages: [{ role: 'user', content: 'x' }], max_tokens: 3, logprobs: true, top_logprobs: 2 });
  const content = lp.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 3);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(t.top_logprobs[0]!.logprob >= t.top_logprobs[1]!.logprob);
  }
});

test('fill-in-the-middle, stop strings and a client that breaks out of a stream', async () => {
  const s = await serve();
  const fim = await s.client.completions.create({ model: modelName, prompt: 'def add(a, b):\n    ', suffix: '\n    return c', max_tokens: 4, temperature: 0 });
  assert.equal(fim.choices.length, 1);

  const stream = await s.client.chat.completions.create({ model: modelName, messages: [{ role: 'user', content: 'Go on forever' }], max_tokens: 400, stream: true, temperature: 1 });
  let chunks = 0;
  for await (const _ of stream) {
    if (++chunks === 3) break;
  }
  // The server notices the disconnect and cancels the generation.
  let cancelled = 0;
  for (let i = 0; i < 50 && cancelled === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    cancelled = Number(/dseek_cancellations_total\{reason="client_disconnect"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  }
  assert.equal(cancelled, 1);
  const health = await fetch(`${s.url}/health`);
  assert.equal(health.status, 200);
});

test('after a restart the disk cache still hits; a corrupted cache file is ignored and reported', async () => {
  const ask = (r: Running) => r.client.completions.create({ model: modelName, prompt: 'Pack my box with five dozen liquor jugs. '.repeat(12), max_tokens: 3, temperature: 0 });
  const hit = (r: { usage?: unknown }) => (r.usage as Record<string, number>)['prompt_cache_hit_tokens']!;
  const one = await serve();
  const cold = await ask(one);
  assert.equal(hit(cold), 0);
  await one.stop();
  const two = await serve();
  const warm = await ask(two);
  assert.ok(hit(warm) > 0, 'disk cache hit after restart');
  assert.equal(warm.choices[0]!.text, cold.choices[0]!.text);
  await two.stop();
  // Flip a byte in every stored unit: the next server must not use them.
  for (const f of readdirSync(diskDir).filter((name) => name.endsWith('.dskc'))) {
    const bytes = readFileSync(join(diskDir, f));
    bytes[bytes.length - 40] ^= 0x55;
    writeFileSync(join(diskDir, f), bytes);
  }
  const three = await serve();
  const after = await ask(three);
  assert.equal(hit(after), 0);
  assert.equal(after.choices[0]!.text, cold.choices[0]!.text);
  assert.match(three.log(), /context store folder .*refused page .*checksum/);
});

test('serve refuses bad flags with a one-line error', async () => {
  const r = spawn(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'serve', '--model', model, '--port', '99999'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  r.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const code = await new Promise<number | null>((resolve) => r.on('exit', resolve));
  assert.notEqual(code, 0);
  assert.match(err.trim(), /^dseek: --port/);
});
