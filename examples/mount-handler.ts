// The OpenAI-compatible API inside an app you already have. createHandler gives a web-standard
// (Request) => Promise<Response>: hono mounts it as `app.all('/llm/*', (c) => handler(c.req.raw))`,
// a Next.js route handler as `export const POST = handler`. Below, a plain node:http server.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHandler, loadModel } from 'dseek';

const model = await loadModel();
const handler = createHandler({ model, basePath: '/llm' });

async function app(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!req.url?.startsWith('/llm/')) {
    res.end('the rest of your app\n');
    return;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) if (typeof value === 'string') headers.set(name, value);
  const aborted = new AbortController();
  res.on('close', () => res.writableFinished || aborted.abort()); // a client that leaves cancels its generation
  const response = await handler(
    new Request(`http://localhost${req.url}`, { method: req.method ?? 'GET', headers, signal: aborted.signal, ...(chunks.length ? { body: Buffer.concat(chunks) } : {}) }),
  );
  res.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) for await (const chunk of response.body) res.write(chunk);
  res.end();
}

const server = createServer((req, res) => void app(req, res));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/llm/v1`;
// Any OpenAI client works against it; plain fetch here to keep the example dependency-free.
const answer = await fetch(`${base}/chat/completions`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ messages: [{ role: 'user', content: 'What is love?' }], max_tokens: 16, temperature: 0 }),
});
const body = (await answer.json()) as { choices: Array<{ message: { content: string } }>; usage: { prompt_cache_hit_tokens: number } };
console.log(`${answer.status}: ${body.choices[0]?.message.content}`);
server.close();
await model.close();
