import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderChat } from '../../src/tokenizer/chatTemplate.js';
import { DEFAULT_REPLY } from './fakeEngine.js';
import { MODEL, parseSse, post, startServer, v3Tokenizer, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startServer({ cachedTokens: 3 });
});
after(() => s.close());

const messages = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Say hello.' },
];

test('chat: non-streaming answer, prompt rendered with the template, usage with cache split and cost', async () => {
  const r = await s.client.chat.completions.create({ model: MODEL, messages, max_tokens: 100 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, MODEL);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0]!.message.role, 'assistant');
  assert.equal(r.choices[0]!.message.content, DEFAULT_REPLY);
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  assert.equal(r.choices[0]!.logprobs, null);

  const tok = v3Tokenizer();
  const expected = tok.encode(renderChat(tok.chatTemplate!, messages, { bosToken: '<｜begin▁of▁sentence｜>', eosToken: '<｜end▁of▁sentence｜>', addGenerationPrompt: true }));
  const sent = s.engine.requests.at(-1)!;
  assert.deepEqual(sent.prompt, expected);
  assert.equal(sent.prompt[0], tok.bosId);
  assert.equal(sent.prompt.filter((id) => id === tok.bosId).length, 1, 'exactly one BOS');
  assert.equal(sent.maxTokens, 100);

  const usage = r.usage as unknown as Record<string, unknown> & { cost: Record<string, unknown> };
  const completion = tok.encode(DEFAULT_REPLY, { addBos: false }).length;
  assert.equal(usage['prompt_tokens'], expected.length);
  assert.equal(usage['completion_tokens'], completion);
  assert.equal(usage['total_tokens'], expected.length + completion);
  assert.equal(usage['prompt_cache_hit_tokens'], 3);
  assert.equal(usage['prompt_cache_miss_tokens'], expected.length - 3);
  const cost = usage.cost;
  assert.equal(cost['currency'], 'USD');
  const near = (a: unknown, b: number) => assert.ok(Math.abs((a as number) - b) < 1e-12, `${a} ≈ ${b}`);
  near(cost['input_cache_hit'], (3 * 0.014) / 1e6);
  near(cost['input_cache_miss'], ((expected.length - 3) * 0.14) / 1e6);
  near(cost['output'], (completion * 0.28) / 1e6);
  near(cost['total'], (3 * 0.014 + (expected.length - 3) * 0.14 + completion * 0.28) / 1e6);
});

test('chat: default max_tokens is the rest of the context; sampling fields reach the engine', async () => {
  await s.client.chat.completions.create({
    model: MODEL,
    messages,
    temperature: 0.7,
    top_p: 0.9,
    frequency_penalty: 0.5,
    presence_penalty: -0.5,
    seed: 42,
    response_format: { type: 'json_object' },
    // Extensions the openai types do not know:
    ...({ top_k: 40, min_p: 0.05, repetition_penalty: 1.1 } as object),
  });
  const sent = s.engine.requests.at(-1)!;
  assert.equal(sent.maxTokens, 4096 - sent.prompt.length);
  assert.deepEqual(sent.sampling, { temperature: 0.7, topP: 0.9, frequencyPenalty: 0.5, presencePenalty: -0.5, topK: 40, minP: 0.05, repetitionPenalty: 1.1, seed: 42 });
  assert.equal(sent.jsonMode, true);
});

test('chat: content as an array of text parts is concatenated', async () => {
  await s.client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Say ' }, { type: 'text', text: 'hello.' }] }],
  });
  const viaParts = s.engine.requests.at(-1)!.prompt;
  await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }] });
  assert.deepEqual(s.engine.requests.at(-1)!.prompt, viaParts);
});

test('chat: stop strings are forwarded and cut the answer', async () => {
  const r = await s.client.chat.completions.create({ model: MODEL, messages, stop: ['fox', 'zebra'] });
  assert.deepEqual(s.engine.requests.at(-1)!.stop, ['fox', 'zebra']);
  assert.equal(r.choices[0]!.message.content, DEFAULT_REPLY.slice(0, DEFAULT_REPLY.indexOf('fox')));
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  await s.client.chat.completions.create({ model: MODEL, messages, stop: 'dog' });
  assert.deepEqual(s.engine.requests.at(-1)!.stop, ['dog']);
});

test('chat: max_tokens reached → finish_reason length', async () => {
  const r = await s.client.chat.completions.create({ model: MODEL, messages, max_completion_tokens: 3 });
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.equal(r.usage!.completion_tokens, 3);
});

test('chat: n > 1 runs n engine requests with seed, seed+1, …; the prompt is billed once', async () => {
  const before = s.engine.requests.length;
  const r = await s.client.chat.completions.create({ model: MODEL, messages, n: 3, seed: 7 });
  const sent = s.engine.requests.slice(before);
  assert.deepEqual(sent.map((q) => q.sampling.seed), [7, 8, 9]);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(r.choices.map((c) => c.message.content), [7, 8, 9].map((seed) => `Seed ${seed} says: ${DEFAULT_REPLY}`));
  const perChoice = v3Tokenizer().encode(`Seed 7 says: ${DEFAULT_REPLY}`, { addBos: false }).length;
  assert.equal(r.usage!.prompt_tokens, sent[0]!.prompt.length);
  assert.equal(r.usage!.completion_tokens, 3 * perChoice);
});

test('chat: logprobs and top_logprobs have the OpenAI shape', async () => {
  const r = await s.client.chat.completions.create({ model: MODEL, messages, logprobs: true, top_logprobs: 2, max_tokens: 4 });
  assert.equal(s.engine.requests.at(-1)!.topLogprobs, 2);
  const content = r.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 4);
  for (const entry of content) {
    assert.equal(typeof entry.token, 'string');
    assert.equal(entry.logprob, -0.25);
    assert.ok(Array.isArray(entry.bytes));
    assert.equal(entry.top_logprobs.length, 2);
    assert.deepEqual(Object.keys(entry.top_logprobs[0]!).sort(), ['bytes', 'logprob', 'token']);
  }
  assert.equal(content.map((e) => e.token).join(''), r.choices[0]!.message.content);

  await s.client.chat.completions.create({ model: MODEL, messages, logprobs: true });
  assert.equal(s.engine.requests.at(-1)!.topLogprobs, 0, 'logprobs alone asks for the chosen token only');
});

test('chat: streaming — role first, content deltas, one finish per choice, usage chunk, [DONE]', async () => {
  const stream = await s.client.chat.completions.create({ model: MODEL, messages, stream: true, stream_options: { include_usage: true }, n: 2, seed: 1 });
  const texts = ['', ''];
  const roles = [0, 0];
  const finishes: (string | null)[][] = [[], []];
  let usage: unknown = null;
  let afterUsage = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (usage) afterUsage++;
    if (chunk.choices.length === 0) {
      usage = chunk.usage;
      continue;
    }
    for (const c of chunk.choices) {
      if (c.delta.role) {
        assert.equal(texts[c.index], '', 'the role comes before any content');
        roles[c.index]!++;
      }
      texts[c.index] += c.delta.content ?? '';
      if (c.finish_reason) finishes[c.index]!.push(c.finish_reason);
    }
  }
  assert.deepEqual(roles, [1, 1]);
  assert.deepEqual(texts, [`Seed 1 says: ${DEFAULT_REPLY}`, `Seed 2 says: ${DEFAULT_REPLY}`]);
  assert.deepEqual(finishes, [['stop'], ['stop']]);
  assert.ok(usage, 'a usage chunk was sent');
  assert.equal(afterUsage, 0, 'usage is the last chunk');
  const u = usage as Record<string, unknown>;
  assert.equal((u['prompt_cache_hit_tokens'] as number) + (u['prompt_cache_miss_tokens'] as number), u['prompt_tokens']);
  assert.ok(u['cost']);
});

test('chat: streaming raw SSE ends with data: [DONE]; no usage chunk unless asked', async () => {
  const r = await post(s.url, '/v1/chat/completions', { model: MODEL, messages, stream: true, max_tokens: 5 });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type')!, /^text\/event-stream/);
  const { data } = parseSse(r.text);
  assert.equal(data.at(-1), '[DONE]');
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as { choices: unknown[]; usage?: unknown });
  assert.ok(chunks.every((c) => c.choices.length === 1 && !('usage' in c)));
});

test('chat: streaming logprobs ride on the content chunks', async () => {
  const stream = await s.client.chat.completions.create({ model: MODEL, messages, stream: true, logprobs: true, top_logprobs: 1, max_tokens: 3 });
  let n = 0;
  for await (const chunk of stream) n += chunk.choices[0]?.logprobs?.content?.length ?? 0;
  assert.equal(n, 3);
});

test('GET /v1/models lists the served model, then its aliases; /health answers', async () => {
  const models = await s.client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL, 'deepseek-chat', 'deepseek-reasoner']);
  const health = await fetch(`${s.url}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { status: string }).status, 'ok');
});

test('GET / is a JSON 404 while there is no chat page', async () => {
  const w = await startServer({}, { webRoot: mkdtempSync(join(tmpdir(), 'dseek-no-web-')) });
  try {
    const r = await fetch(`${w.url}/`);
    assert.equal(r.status, 404);
    assert.ok(((await r.json()) as { error: { message: string } }).error.message);
  } finally {
    await w.close();
  }
});

test('GET / serves web/index.html as text/html once it exists', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-web-'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>chat</title>');
  const w = await startServer({}, { webRoot: dir });
  try {
    const r = await fetch(`${w.url}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type')!, /^text\/html/);
    assert.equal(await r.text(), '<!doctype html><title>chat</title>');
  } finally {
    await w.close();
  }
});

test('GET /metrics: Prometheus text with requests, tokens, cache, queue, latency and cost', async () => {
  const r = await fetch(`${s.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type')!, /^text\/plain/);
  const text = await r.text();
  assert.match(text, /dseek_http_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+/);
  assert.match(text, /dseek_prompt_tokens_total [1-9]\d*/);
  assert.match(text, /dseek_completion_tokens_total [1-9]\d*/);
  assert.match(text, /dseek_prompt_cache_hit_tokens_total [1-9]\d*/);
  assert.match(text, /dseek_prompt_cache_miss_tokens_total [1-9]\d*/);
  assert.match(text, /dseek_queue_depth 0/);
  assert.match(text, /dseek_running_sequences 0/);
  assert.match(text, /dseek_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]\d*/);
  assert.match(text, /dseek_request_duration_seconds_count\{route="\/v1\/chat\/completions"\} [1-9]\d*/);
  assert.match(text, /dseek_cancellations_total\{reason="client_disconnect"\} \d+/);
  const cost = /dseek_cost_total\{currency="USD"\} (\S+)/.exec(text);
  assert.ok(cost && Number(cost[1]) > 0);
  // Every non-comment line is `name{labels} value`.
  for (const line of text.trim().split('\n')) {
    if (!line.startsWith('#')) assert.match(line, /^[a-z_]+(\{[^}]*\})? -?[\d.e+-]+$/, line);
  }
});
