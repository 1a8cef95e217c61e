/**
 * The Anthropic Messages API (/v1/messages, /anthropic/v1/messages) driven by the official
 * @anthropic-ai/sdk against the fake engine: text, system, stop sequences, the event stream in
 * Anthropic's order, tool_use and tool_result blocks, cache-read usage, errors in Anthropic's shape.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { MODEL, post, startServer, v3Tokenizer, type TestServer } from './helpers.js';

let reply = 'In the beginning.';
let s: TestServer;
let client: Anthropic;
before(async () => {
  s = await startServer({ cachedTokens: 4, reply: () => reply }, { apiKey: 'secret' });
  client = new Anthropic({ baseURL: s.url, apiKey: 'secret', maxRetries: 0 });
});
after(() => s.close());

const weather = { name: 'get_weather', description: 'Weather in a city', input_schema: { type: 'object' as const, properties: { city: { type: 'string' } }, required: ['city'] } };

test('a text message: system and messages through the template, usage with cache reads, stop sequences reach the engine; x-api-key authenticates', async () => {
  reply = 'In the beginning.';
  const m = await client.messages.create({ model: 'deepseek-chat', max_tokens: 50, system: 'Be brief.', stop_sequences: ['END'], messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.model, 'deepseek-chat');
  assert.deepEqual(m.content, [{ type: 'text', text: 'In the beginning.' }]);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.cache_read_input_tokens, 4);
  const sent = s.engine.requests.at(-1)!;
  assert.equal(m.usage.input_tokens, sent.prompt.length - 4, 'input_tokens excludes cache reads, as Anthropic counts');
  assert.deepEqual(sent.stop, ['END']);
  assert.equal(sent.maxTokens, 50);
  assert.match(v3Tokenizer().decode(sent.prompt), /Be brief\..*<｜User｜>Hi<｜Assistant｜>$/s);
});

test('streaming: message_start, content_block_start, text deltas, content_block_stop, message_delta, message_stop, in that order', async () => {
  reply = 'And God said.';
  const stream = await client.messages.create({ model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: 'Hi' }], stream: true });
  const types: string[] = [];
  let text = '';
  for await (const e of stream) {
    types.push(e.type);
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
  }
  assert.equal(text, 'And God said.');
  const order = types.filter((t, i) => t !== types[i - 1]);
  assert.deepEqual(order, ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
  const final = await client.messages.stream({ model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: 'Hi' }] }).finalMessage();
  assert.equal(final.content[0]!.type === 'text' && final.content[0]!.text, 'And God said.');
  assert.equal(final.usage.output_tokens > 0, true);
});

test('tools: tool_choice any is a constrained tool_use block; streamed, its input arrives as input_json_delta; a tool_result goes back', async () => {
  reply = '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}';
  const m = await client.messages.create({ model: MODEL, max_tokens: 100, tools: [weather], tool_choice: { type: 'any' }, messages: [{ role: 'user', content: 'Weather?' }] });
  assert.ok(s.engine.requests.at(-1)!.jsonSchema, 'constrained');
  assert.equal(m.stop_reason, 'tool_use');
  const use = m.content[0]!;
  assert.ok(use.type === 'tool_use');
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Paris' });
  assert.match(use.id, /^toolu_/);
  const streamed = await client.messages.stream({ model: MODEL, max_tokens: 100, tools: [weather], tool_choice: { type: 'tool', name: 'get_weather' }, messages: [{ role: 'user', content: 'Weather?' }] }).finalMessage();
  const block = streamed.content[0]!;
  assert.ok(block.type === 'tool_use' && (block.input as { city: string }).city === 'Paris', JSON.stringify(streamed));
  assert.equal(streamed.stop_reason, 'tool_use');
  reply = 'It is warm.';
  const answer = await client.messages.create({
    model: MODEL,
    max_tokens: 50,
    tools: [weather],
    messages: [
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: [{ type: 'tool_use', id: use.id, name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '25 C' }] },
    ],
  });
  assert.deepEqual(answer.content, [{ type: 'text', text: 'It is warm.' }]);
  const prompt = v3Tokenizer().decode(s.engine.requests.at(-1)!.prompt);
  assert.match(prompt, /<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n\{"city":"Paris"\}/);
  assert.match(prompt, /<｜tool▁output▁begin｜>25 C<｜tool▁output▁end｜>/);
});

test('count_tokens gives the prompt length the Messages API would send', async () => {
  const counted = await client.messages.countTokens({ model: MODEL, system: 'Be brief.', messages: [{ role: 'user', content: 'Hi' }] });
  reply = 'ok';
  await client.messages.create({ model: MODEL, max_tokens: 5, system: 'Be brief.', messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(counted.input_tokens, s.engine.requests.at(-1)!.prompt.length);
});

test('OpenAI endpoints dseek does not serve say so: 404 unsupported_endpoint naming the alternative', async () => {
  const r = await post(s.url, '/v1/responses', { model: MODEL, input: 'hi' }, { authorization: 'Bearer secret' });
  assert.equal(r.status, 404);
  assert.equal(r.json.error!.code, 'unsupported_endpoint');
  assert.match(r.json.error!.message, /responses is not supported.*\/v1\/chat\/completions/);
});

test('errors come in Anthropic’s shape, at /v1/messages and /anthropic/v1/messages', async () => {
  await assert.rejects(client.messages.create({ model: 'claude-x', max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] }), (e: unknown) => e instanceof Anthropic.NotFoundError);
  const bad = await post(s.url, '/anthropic/v1/messages', { model: MODEL, messages: [{ role: 'user', content: 'Hi' }] }, { 'x-api-key': 'secret' });
  assert.equal(bad.status, 400);
  assert.deepEqual(Object.keys(bad.json), ['type', 'error']);
  assert.equal((bad.json as unknown as { error: { type: string; message: string } }).error.type, 'invalid_request_error');
  assert.match((bad.json as unknown as { error: { message: string } }).error.message, /max_tokens/);
  const unauthorised = await post(s.url, '/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(unauthorised.status, 401);
  assert.equal((unauthorised.json as unknown as { error: { type: string } }).error.type, 'authentication_error');
  const unknown = await post(s.url, '/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], thinking: { type: 'enabled' } }, { 'x-api-key': 'secret' });
  assert.equal(unknown.status, 400);
  assert.match((unknown.json as unknown as { error: { message: string } }).error.message, /thinking/);
});
