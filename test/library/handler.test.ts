/**
 * createHandler and createServer as a user mounts them, imported by the package name: the
 * web-standard handler inside a plain node:http server answers the official `openai` client
 * (plain and streamed), from the same engine as direct `model.chat` calls.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { createHandler, createServer, loadModel, type Model } from 'dseek';

let model: Model;
let server: Server;
let baseURL = '';

/** The bridge a plain node:http app needs: IncomingMessage → Request, Response → ServerResponse. */
function nodeListener(handler: (request: Request) => Promise<Response>) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const controller = new AbortController();
    // The client hung up before the answer was complete: the handler cancels the generation.
    res.on('close', () => res.writableFinished || controller.abort());
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers.set(k, v);
    const response = await handler(
      new Request(`http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`, {
        method: req.method ?? 'GET',
        headers,
        ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
        signal: controller.signal,
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (response.body) for await (const chunk of response.body) res.write(chunk);
    res.end();
  };
}

before(async () => {
  model = await loadModel(undefined, { threads: 1 });
  server = createHttpServer(nodeListener(createHandler({ model, basePath: '/api/llm', log: () => {} })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/llm/v1`;
});
after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await model.close();
});

test('createHandler answers the openai client inside a plain node:http server, with the text model.chat gives', async () => {
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
  const messages = [{ role: 'user' as const, content: 'Who made the heaven and the earth?' }];
  const r = await client.chat.completions.create({ model: model.name, messages, max_tokens: 10, temperature: 0 });
  const direct = await model.chat(messages, { maxTokens: 10, temperature: 0 });
  assert.equal(r.choices[0]!.message.content, direct.text);
  assert.equal(r.choices[0]!.finish_reason, direct.finishReason);
  const usage = r.usage as unknown as Record<string, number>;
  assert.equal(usage['prompt_tokens'], direct.usage.promptTokens);
  assert.equal(usage['prompt_cache_hit_tokens']! + usage['prompt_cache_miss_tokens']!, usage['prompt_tokens']);
});

test('createHandler streams server-sent events that the openai client reads to the end', async () => {
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
  const messages = [{ role: 'user' as const, content: 'What did Moses say?' }];
  const stream = await client.chat.completions.create({ model: model.name, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let completionTokens = 0;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
  }
  assert.equal(text, (await model.chat(messages, { maxTokens: 10, temperature: 0 })).text);
  assert.equal(completionTokens, 10);
});

test('createHandler: unknown routes are 404 and bad fields 400 in the OpenAI error shape; basePath is stripped', async () => {
  const models = (await (await fetch(`${baseURL}/models`)).json()) as { data: Array<{ id: string }> };
  assert.deepEqual(models.data.map((m) => m.id), [model.name, 'deepseek-chat', 'deepseek-reasoner'], 'the model, then DeepSeek’s names as aliases');
  const missing = await fetch(`${baseURL}/nothing`);
  assert.equal(missing.status, 404);
  const bad = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], temperature: 7 }),
  });
  assert.equal(bad.status, 400);
  const body = (await bad.json()) as { error: { param: string; type: string } };
  assert.equal(body.error.param, 'temperature');
  assert.equal(body.error.type, 'invalid_request_error');
});

test('createServer returns a node:http server that listens like any other and shuts down gracefully', async () => {
  const api = createServer({ model, log: () => {} });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 200);
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const r = await client.completions.create({ model: model.name, prompt: 'And God said', max_tokens: 4, temperature: 0 });
  assert.equal(r.choices[0]!.text, (await model.generate('And God said', { maxTokens: 4, temperature: 0 })).text);
  await api.shutdown(1000);
  assert.equal(api.listening, false);
});

test('a client that disconnects mid-stream cancels its generation through the handler', async () => {
  const controller = new AbortController();
  const res = await fetch(`${baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'And the LORD spake unto Moses', max_tokens: 200, stream: true }),
    signal: controller.signal,
  });
  const reader = res.body!.getReader();
  let seen = '';
  while (!seen.includes('"text"')) seen += new TextDecoder().decode((await reader.read()).value);
  controller.abort();
  const metricsUrl = `${baseURL.replace(/\/v1$/, '')}/metrics`;
  const cancelled = async () => /dseek_cancellations_total\{reason="client_disconnect"\} [1-9]/.test(await (await fetch(metricsUrl)).text());
  const until = Date.now() + 5000;
  while (!(await cancelled()) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  assert.ok(await cancelled(), 'the handler counted a client_disconnect cancellation');
  // The engine's stats arrive a step after the cancellation.
  while ((model.stats().running > 0 || model.stats().queued > 0) && Date.now() < until + 5000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(model.stats().running, 0);
});
