/**
 * DeepSeek's and OpenAI's surface beyond the basics: model aliases, routes without /v1 and under
 * /beta, OpenAI's cached_tokens, the developer role, several prompts per completion request,
 * GET /v1/models/{id}, logit_bias, top_p 0, CORS, and unknown fields answered with a 400.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { renderChat } from '../../src/tokenizer/chatTemplate.js';
import { MODEL, post, startServer, v3Tokenizer, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startServer({ cachedTokens: 3 }, { corsOrigins: ['https://app.example'] });
});
after(() => s.close());

const hi = [{ role: 'user' as const, content: 'hi' }];

test('model deepseek-chat and deepseek-reasoner are accepted by default, in any case, and echoed as listed', async () => {
  for (const name of ['deepseek-chat', 'deepseek-reasoner', 'DeepSeek-Chat']) {
    const r = await s.client.chat.completions.create({ model: name, messages: hi });
    assert.equal(r.model, name.toLowerCase());
  }
  const list = await s.client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [MODEL, 'deepseek-chat', 'deepseek-reasoner']);
  const one = await s.client.models.retrieve('deepseek-chat');
  assert.equal(one.id, 'deepseek-chat');
  await assert.rejects(s.client.models.retrieve('gpt-4'), (e: unknown) => e instanceof OpenAI.NotFoundError && /does not exist/.test(e.message));
});

test('aliases: [] accepts only the model name; --alias adds names', async () => {
  const strict = await startServer({}, { aliases: [] });
  try {
    await assert.rejects(strict.client.chat.completions.create({ model: 'deepseek-chat', messages: hi }), (e: unknown) => e instanceof OpenAI.NotFoundError);
  } finally {
    await strict.close();
  }
  const extra = await startServer({}, { aliases: ['my-llm'] });
  try {
    const r = await extra.client.chat.completions.create({ model: 'my-llm', messages: hi });
    assert.equal(r.model, 'my-llm');
  } finally {
    await extra.close();
  }
});

test('a client with base URL without /v1 (DeepSeek’s documented one) reaches every route', async () => {
  const bare = new OpenAI({ baseURL: s.url, apiKey: 'unused', maxRetries: 0 });
  const chat = await bare.chat.completions.create({ model: 'deepseek-chat', messages: hi });
  assert.equal(chat.object, 'chat.completion');
  const completion = await bare.completions.create({ model: 'deepseek-chat', prompt: 'In the beginning' });
  assert.equal(completion.object, 'text_completion');
  const models = await bare.models.list();
  assert.ok(models.data.length >= 1);
  const beta = new OpenAI({ baseURL: `${s.url}/beta`, apiKey: 'unused', maxRetries: 0 });
  assert.equal((await beta.completions.create({ model: 'deepseek-chat', prompt: 'def f(', suffix: '    return 1' })).object, 'text_completion');
  assert.equal((await beta.chat.completions.create({ model: 'deepseek-chat', messages: hi })).object, 'chat.completion');
});

test('usage reports cache hits as DeepSeek’s prompt_cache_hit_tokens and as OpenAI’s prompt_tokens_details.cached_tokens', async () => {
  const r = await s.client.chat.completions.create({ model: MODEL, messages: hi });
  const usage = r.usage as unknown as Record<string, unknown>;
  assert.equal(usage['prompt_cache_hit_tokens'], 3);
  assert.equal(r.usage!.prompt_tokens_details!.cached_tokens, 3);
  assert.equal(r.usage!.completion_tokens_details!.reasoning_tokens, 0);
});

test('the developer role is rendered as a system message', async () => {
  await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'developer', content: 'Be terse.' }, ...hi] });
  const tok = v3Tokenizer();
  const expected = tok.encode(renderChat(tok.chatTemplate!, [{ role: 'system', content: 'Be terse.' }, ...hi], { bosToken: '<｜begin▁of▁sentence｜>', eosToken: '<｜end▁of▁sentence｜>', addGenerationPrompt: true }));
  assert.deepEqual(s.engine.requests.at(-1)!.prompt, expected);
});

test('completions with an array of prompts: n choices per prompt in prompt order, usage sums the prompts', async () => {
  const tok = v3Tokenizer();
  const prompts = ['In the beginning', 'And the LORD said'];
  const before = s.engine.requests.length;
  const r = await s.client.completions.create({ model: MODEL, prompt: prompts, n: 2, seed: 1, echo: true });
  assert.equal(r.choices.length, 4);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  const sent = s.engine.requests.slice(before);
  const ids = prompts.map((p) => tok.encode(p, { parseSpecial: false }));
  assert.deepEqual(sent.map((q) => q.prompt), [ids[0], ids[0], ids[1], ids[1]]);
  assert.ok(r.choices[2]!.text.startsWith(prompts[1]!), 'echo per prompt');
  assert.equal(r.usage!.prompt_tokens, ids[0]!.length + ids[1]!.length);
  assert.equal((r.usage as unknown as Record<string, number>)['prompt_cache_hit_tokens'], 6);
  const idArrays = await s.client.completions.create({ model: MODEL, prompt: [[1, 2, 3], [4, 5]] });
  assert.equal(idArrays.choices.length, 2);
});

test('logit_bias reaches the sampler as [id, bias] pairs; top_p 0 decodes greedily', async () => {
  await s.client.chat.completions.create({ model: MODEL, messages: hi, logit_bias: { '17': -100, '42': 5 } });
  assert.deepEqual(s.engine.requests.at(-1)!.sampling.logitBias, [[17, -100], [42, 5]]);
  await s.client.chat.completions.create({ model: MODEL, messages: hi, top_p: 0, temperature: 1 });
  const sampling = s.engine.requests.at(-1)!.sampling;
  assert.equal(sampling.temperature, 0);
  assert.equal(sampling.topP, undefined);
});

test('CORS: a preflight from an allowed origin gets 204 with the methods and headers; responses carry the origin', async () => {
  const pre = await fetch(`${s.url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), 'https://app.example');
  assert.match(pre.headers.get('access-control-allow-methods')!, /POST/);
  assert.equal(pre.headers.get('access-control-allow-headers'), 'authorization, content-type');
  const r = await post(s.url, '/v1/chat/completions', { messages: hi }, { origin: 'https://app.example' });
  assert.equal(r.headers.get('access-control-allow-origin'), 'https://app.example');
  const error = await post(s.url, '/v1/chat/completions', { messages: 'x' }, { origin: 'https://app.example' });
  assert.equal(error.status, 400);
  assert.equal(error.headers.get('access-control-allow-origin'), 'https://app.example', 'errors are readable by the page too');
  const other = await post(s.url, '/v1/chat/completions', { messages: hi }, { origin: 'https://evil.example' });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});

test('unknown fields: 400 naming the field by default, ignored with allowUnknownFields', async () => {
  const r = await post(s.url, '/v1/chat/completions', { messages: hi, reasoning_effort: 'high' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error!.param, 'reasoning_effort');
  assert.match(r.json.error!.message, /Unrecognized request argument supplied: reasoning_effort.*--allow-unknown-fields/);
  const lenient = await startServer({}, { allowUnknownFields: true });
  try {
    const ok = await post(lenient.url, '/v1/chat/completions', { messages: hi, reasoning_effort: 'high' });
    assert.equal(ok.status, 200);
  } finally {
    await lenient.close();
  }
});

test('an API key guards the routes without /v1 too; /health stays open', async () => {
  const guarded = await startServer({}, { apiKey: 'k' });
  try {
    assert.equal((await post(guarded.url, '/chat/completions', { messages: hi })).status, 401);
    assert.equal((await post(guarded.url, '/chat/completions', { messages: hi }, { authorization: 'Bearer k' })).status, 200);
    assert.equal((await fetch(`${guarded.url}/models`)).status, 401);
    assert.equal((await fetch(`${guarded.url}/v1/models/deepseek-chat`)).status, 401);
    assert.equal((await fetch(`${guarded.url}/health`)).status, 200);
  } finally {
    await guarded.close();
  }
});
