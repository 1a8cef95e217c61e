import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL, post, startServer, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.close());

const msgs = [{ role: 'user', content: 'hi' }];
const chat = (extra: Record<string, unknown>) => ({ model: MODEL, messages: msgs, ...extra });
const completion = (extra: Record<string, unknown>) => ({ model: MODEL, prompt: 'hi', ...extra });
const omit = (o: Record<string, unknown>, key: string) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== key));

interface Case {
  name: string;
  path?: string;
  body: unknown;
  status?: number;
  /** null: a body-level error with no field. */
  param: string | null;
  code?: string;
}

const C = '/v1/completions';
const cases: Case[] = [
  { name: 'messages missing', body: omit(chat({}), 'messages'), param: 'messages' },
  { name: 'messages empty', body: chat({ messages: [] }), param: 'messages' },
  { name: 'messages a string', body: chat({ messages: 'hi' }), param: 'messages' },
  { name: 'message not an object', body: chat({ messages: ['hi'] }), param: 'messages[0]' },
  { name: 'bad role', body: chat({ messages: [{ role: 'robot', content: 'hi' }] }), param: 'messages[0].role' },
  { name: 'role missing', body: chat({ messages: [{ content: 'hi' }] }), param: 'messages[0].role' },
  { name: 'content a number', body: chat({ messages: [{ role: 'user', content: 5 }] }), param: 'messages[0].content' },
  { name: 'image content part', body: chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), param: 'messages[0].content' },
  { name: 'second message bad', body: chat({ messages: [...msgs, { role: 'user' }] }), param: 'messages[1].content' },
  { name: 'model not a string', body: chat({ model: 7 }), param: 'model' },
  { name: 'unknown model', body: chat({ model: 'gpt-4' }), status: 404, param: 'model', code: 'model_not_found' },
  { name: 'max_tokens negative', body: chat({ max_tokens: -1 }), param: 'max_tokens' },
  { name: 'max_tokens zero', body: chat({ max_tokens: 0 }), param: 'max_tokens' },
  { name: 'max_tokens fractional', body: chat({ max_tokens: 1.5 }), param: 'max_tokens' },
  { name: 'max_tokens a string', body: chat({ max_tokens: '10' }), param: 'max_tokens' },
  { name: 'max_tokens huge', body: chat({ max_tokens: 1e9 }), param: 'max_tokens', code: 'context_length_exceeded' },
  { name: 'max_completion_tokens zero', body: chat({ max_completion_tokens: 0 }), param: 'max_completion_tokens' },
  { name: 'prompt longer than the context', body: chat({ messages: [{ role: 'user', content: 'word '.repeat(5000) }] }), param: 'messages', code: 'context_length_exceeded' },
  { name: 'temperature 3', body: chat({ temperature: 3 }), param: 'temperature' },
  { name: 'temperature a string', body: chat({ temperature: 'hot' }), param: 'temperature' },
  { name: 'top_p negative', body: chat({ top_p: -0.1 }), param: 'top_p' },
  { name: 'top_p 1.5', body: chat({ top_p: 1.5 }), param: 'top_p' },
  { name: 'top_k negative', body: chat({ top_k: -1 }), param: 'top_k' },
  { name: 'top_k fractional', body: chat({ top_k: 2.5 }), param: 'top_k' },
  { name: 'min_p 2', body: chat({ min_p: 2 }), param: 'min_p' },
  { name: 'frequency_penalty 3', body: chat({ frequency_penalty: 3 }), param: 'frequency_penalty' },
  { name: 'presence_penalty -2.5', body: chat({ presence_penalty: -2.5 }), param: 'presence_penalty' },
  { name: 'repetition_penalty 0', body: chat({ repetition_penalty: 0 }), param: 'repetition_penalty' },
  { name: 'seed fractional', body: chat({ seed: 1.5 }), param: 'seed' },
  { name: 'stop with 17 entries', body: chat({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), param: 'stop' },
  { name: 'stop empty string', body: chat({ stop: [''] }), param: 'stop' },
  { name: 'stop a number', body: chat({ stop: 5 }), param: 'stop' },
  { name: 'n 0', body: chat({ n: 0 }), param: 'n' },
  { name: 'n 17', body: chat({ n: 17 }), param: 'n' },
  { name: 'stream not a boolean', body: chat({ stream: 'yes' }), param: 'stream' },
  { name: 'stream_options without stream', body: chat({ stream_options: { include_usage: true } }), param: 'stream_options' },
  { name: 'include_usage not a boolean', body: chat({ stream: true, stream_options: { include_usage: 'yes' } }), param: 'stream_options.include_usage' },
  { name: 'logprobs not a boolean', body: chat({ logprobs: 'true' }), param: 'logprobs' },
  { name: 'top_logprobs 21', body: chat({ logprobs: true, top_logprobs: 21 }), param: 'top_logprobs' },
  { name: 'top_logprobs without logprobs', body: chat({ top_logprobs: 2 }), param: 'top_logprobs' },
  { name: 'response_format json_schema without json_schema', body: chat({ response_format: { type: 'json_schema' } }), param: 'response_format.json_schema' },
  { name: 'response_format an unknown type', body: chat({ response_format: { type: 'yaml' } }), param: 'response_format.type' },
  { name: 'an unknown field', body: chat({ functions: [] }), param: 'functions', code: 'unknown_parameter' },
  { name: 'an unknown message field', body: chat({ messages: [{ role: 'user', content: 'hi', audio: {} }] }), param: 'messages[0].audio', code: 'unknown_parameter' },
  { name: 'logit_bias out of range', body: chat({ logit_bias: { '5': 101 } }), param: 'logit_bias.5' },
  { name: 'logit_bias key not an id', body: chat({ logit_bias: { abc: 1 } }), param: 'logit_bias.abc' },
  { name: 'logit_bias id past the vocabulary', body: chat({ logit_bias: { '99999999': 1 } }), param: 'logit_bias.99999999' },
  { name: 'tool_choice required without tools', body: chat({ tool_choice: 'required' }), param: 'tool_choice' },
  { name: 'prefix on a user message', body: chat({ messages: [{ role: 'user', content: 'hi', prefix: true }] }), param: 'messages[0].prefix' },
  { name: 'response_format a string', body: chat({ response_format: 'json' }), param: 'response_format' },
  { name: 'user not a string', body: chat({ user: 5 }), param: 'user' },
  { name: 'body not JSON', body: '{"model": ', param: null, code: 'invalid_json' },
  { name: 'body empty', body: '', param: null, code: 'invalid_json' },
  { name: 'body a JSON array', body: [1, 2], param: null },
  { name: 'completions: prompt missing', path: C, body: omit(completion({}), 'prompt'), param: 'prompt' },
  { name: 'completions: strings mixed with ids', path: C, body: completion({ prompt: ['a', 5] }), param: 'prompt' },
  { name: 'completions: 17 prompts', path: C, body: completion({ prompt: Array.from({ length: 17 }, () => 'a') }), param: 'prompt' },
  { name: 'completions: 4 prompts × n 5', path: C, body: completion({ prompt: ['a', 'b', 'c', 'd'], n: 5 }), param: 'prompt' },
  { name: 'completions: empty token array', path: C, body: completion({ prompt: [] }), param: 'prompt' },
  { name: 'completions: negative token id', path: C, body: completion({ prompt: [-1] }), param: 'prompt' },
  { name: 'completions: token id past the vocabulary', path: C, body: completion({ prompt: [999999] }), param: 'prompt' },
  { name: 'completions: logprobs 6', path: C, body: completion({ logprobs: 6 }), param: 'logprobs' },
  { name: 'completions: logprobs a boolean', path: C, body: completion({ logprobs: true }), param: 'logprobs' },
  { name: 'completions: echo not a boolean', path: C, body: completion({ echo: 'yes' }), param: 'echo' },
  { name: 'completions: echo with logprobs', path: C, body: completion({ echo: true, logprobs: 1 }), param: 'echo' },
  { name: 'completions: suffix a number', path: C, body: completion({ suffix: 5 }), param: 'suffix' },
  { name: 'completions: suffix with token ids', path: C, body: completion({ prompt: [1, 2], suffix: 'x' }), param: 'suffix' },
  { name: 'completions: max_tokens beyond the context', path: C, body: completion({ max_tokens: 4096 }), param: 'max_tokens', code: 'context_length_exceeded' },
  { name: 'completions: temperature negative', path: C, body: completion({ temperature: -0.1 }), param: 'temperature' },
];

test(`${cases.length} malformed requests each get the right 4xx naming the field`, async () => {
  assert.ok(cases.length >= 30);
  for (const c of cases) {
    const r = await post(s.url, c.path ?? '/v1/chat/completions', c.body);
    const where = `${c.name}: ${r.text}`;
    assert.equal(r.status, c.status ?? 400, where);
    const e = r.json.error!;
    assert.ok(e, where);
    assert.equal(e.param, c.param, where);
    assert.equal(e.type, 'invalid_request_error', where);
    if (c.code) assert.equal(e.code, c.code, where);
    assert.ok(e.message.length > 10, where);
    if (c.param) assert.ok(e.message.includes(c.param.split('.').at(-1)!.replace(/\[\d+\]$/, '')), `message names the field: ${where}`);
  }
  // The server is unharmed: a normal request still works, and nothing was logged as internal.
  const ok = await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(ok.choices[0]!.finish_reason, 'stop');
  assert.ok(!s.logs.some((l) => l.includes('internal error')), s.logs.join('\n'));
});

test('messages say what is allowed', async () => {
  const r = await post(s.url, '/v1/chat/completions', chat({ temperature: 3 }));
  assert.equal(r.json.error!.message, 'temperature must be a number from 0 to 2 (got 3)');
  const role = await post(s.url, '/v1/chat/completions', chat({ messages: [{ role: 'robot', content: 'x' }] }));
  assert.match(role.json.error!.message, /^messages\[0\]\.role must be one of "system", "developer", "user", "assistant", "tool" \(got "robot"\)$/);
});

test('transport errors: wrong content type, oversized body, wrong method, unknown path', async () => {
  const typed = await post(s.url, '/v1/chat/completions', JSON.stringify(chat({})), { 'content-type': 'text/plain' });
  assert.equal(typed.status, 400);
  assert.match(typed.json.error!.message, /application\/json/);

  const big = await post(s.url, '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'x'.repeat(5 * 1024 * 1024) }] }));
  assert.equal(big.status, 413);
  assert.equal(big.json.error!.type, 'invalid_request_error');

  const get = await fetch(`${s.url}/v1/chat/completions`);
  assert.equal(get.status, 405);
  assert.equal(get.headers.get('allow'), 'POST');

  const missing = await fetch(`${s.url}/v1/nothing`);
  assert.equal(missing.status, 404);
  assert.ok(((await missing.json()) as { error: unknown }).error);

  assert.equal((await s.client.models.list()).data[0]!.id, MODEL, 'still serving');
});

test('the openai client maps errors to its classes: BadRequestError (with param), NotFoundError', async () => {
  await assert.rejects(
    s.client.chat.completions.create({ model: MODEL, messages: [] }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'messages' && e.status === 400,
  );
  await assert.rejects(
    s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], top_logprobs: 3 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'top_logprobs',
  );
  await assert.rejects(
    s.client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
  );
});

test('API key: /v1 and /metrics need it (AuthenticationError), /health stays open', async () => {
  const k = await startServer({}, { apiKey: 'sekret' });
  try {
    const good = await k.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 1 });
    assert.equal(good.choices.length, 1);
    const wrong = new OpenAI({ baseURL: `${k.url}/v1`, apiKey: 'guess', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
    assert.equal((await fetch(`${k.url}/v1/models`)).status, 401);
    assert.equal((await fetch(`${k.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${k.url}/metrics`, { headers: { authorization: 'Bearer sekret' } })).status, 200);
    assert.equal((await fetch(`${k.url}/health`)).status, 200);
  } finally {
    await k.close();
  }
});

test('engine queue full → 429 with retry-after (RateLimitError)', async () => {
  const q = await startServer({ refuseWith: 'queue_full' });
  try {
    await assert.rejects(
      q.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], stream: true }),
      (e: unknown) => e instanceof OpenAI.RateLimitError && e.headers?.['retry-after'] === '1',
    );
    const raw = await post(q.url, '/v1/completions', completion({}));
    assert.equal(raw.status, 429);
    assert.equal(raw.json.error!.code, 'queue_full');
    q.engine.options = {};
    assert.equal((await post(q.url, '/v1/completions', completion({ max_tokens: 1 }))).status, 200);
  } finally {
    await q.close();
  }
});

test('engine errors are mapped by code (the worker re-creates them without their classes): never a 5xx for input', async () => {
  const q = await startServer({ refuseWith: 'context_length_exceeded' });
  try {
    const r = await post(q.url, '/v1/completions', completion({}));
    assert.equal(r.status, 400);
    assert.equal(r.json.error!.code, 'context_length_exceeded');
    q.engine.options = { refuseWith: 'invalid_input' };
    assert.equal((await post(q.url, '/v1/completions', completion({}))).status, 400);
  } finally {
    await q.close();
  }
});

test('maxQueue: the server refuses with 429 once the engine queue holds that many', async () => {
  const q = await startServer({ queueMs: 300 }, { maxQueue: 1 });
  try {
    const first = q.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 1 });
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(
      q.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
      (e: unknown) => e instanceof OpenAI.RateLimitError,
    );
    assert.equal((await first).choices.length, 1);
  } finally {
    await q.close();
  }
});

test('an engine failure is a generic 500 (InternalServerError) with the detail only in the log', async () => {
  const f = await startServer({ failAfterTokens: 2 });
  try {
    await assert.rejects(
      f.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
      (e: unknown) => e instanceof OpenAI.InternalServerError && !e.message.includes('simulated'),
    );
    assert.ok(f.logs.some((l) => l.includes('simulated internal failure')));
    // Mid-stream the status is already 200: the error arrives as an event and the client throws it.
    const stream = await f.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], stream: true });
    await assert.rejects(async () => {
      for await (const _ of stream);
    }, (e: unknown) => e instanceof OpenAI.APIError && /internal server error/.test(e.message));
  } finally {
    await f.close();
  }
});
