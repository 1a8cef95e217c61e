/**
 * Requests built to hurt the server: values nested thousands deep (400, not a 500 from the error
 * preview), a chunked body far past the 4 MB cap (413 without reading the rest), and a message
 * of megabytes (refused as too long before any tokenising, which runs on the HTTP event loop).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { preview } from '../../src/server/schemas.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { post, startServer, v3Tokenizer } from './helpers.js';

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);

test('values nested 6,000 deep in messages, content, prompt and stop are 400s naming the field', async () => {
  const s = await startServer();
  try {
    const cases: Array<[string, string, string]> = [
      ['/v1/chat/completions', `{"messages":${deep(6000)}}`, 'messages[0]'],
      ['/v1/chat/completions', `{"messages":[{"role":"user","content":${deep(6000)}}]}`, 'messages[0].content'],
      ['/v1/completions', `{"prompt":${deep(6000)}}`, 'prompt'],
      ['/v1/completions', `{"prompt":"x","stop":${deep(6000)}}`, 'stop'],
      ['/v1/chat/completions', `{"messages":[{"role":"user","content":"x"}],"stop":${deep(6000)}}`, 'stop'],
    ];
    for (const [path, body, param] of cases) {
      const r = await post(s.url, path, body);
      assert.equal(r.status, 400, `${path} ${param}: ${r.text.slice(0, 200)}`);
      assert.equal(r.json.error!.param, param);
      assert.ok(r.json.error!.message.length < 400, 'the preview is bounded');
    }
    assert.ok(!s.logs.some((l) => l.includes('RangeError')), s.logs.join('\n'));
  } finally {
    await s.close();
  }
});

test('the error preview stays short for deep, wide and long values', () => {
  const nested: unknown[] = [];
  let at = nested;
  for (let i = 0; i < 100_000; i++) at.push((at = []));
  for (const v of [nested, new Array(1_000_000).fill(1), 'x'.repeat(5_000_000), { a: { b: [1, 'two', null] } }]) {
    assert.ok(preview(v).length <= 60);
  }
  assert.equal(preview({ a: { b: [1, 'two', null] } }), '{"a":{"b":[1,"two",null]}}');
});

test('a chunked body past the 4 MB cap gets its 413 without the server reading the rest', async () => {
  const s = await startServer();
  try {
    const { port } = new URL(s.url);
    const total = 512 * 1024 * 1024; // what the client means to send
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => {}); // the server hangs up after its 413
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      req.write('{"prompt":"');
      pump();
      setTimeout(() => reject(new Error(`no answer after ${sent} bytes`)), 20_000).unref();
    });
    assert.equal(status, 413);
    assert.ok(sent < 64 * 1024 * 1024, `the server answered after the client had sent ${sent} bytes`);
  } finally {
    await s.close();
  }
});

test('a 3.9 MB message is refused as too long before it is templated or tokenised', async () => {
  const real = v3Tokenizer();
  let encodes = 0;
  const counting = new Proxy(real, {
    get(target, key, receiver) {
      if (key === 'encode') {
        return (...args: Parameters<Tokenizer['encode']>) => {
          encodes++;
          return target.encode(...args);
        };
      }
      return Reflect.get(target, key, receiver) as unknown;
    },
  });
  const s = await startServer({}, { tokenizer: counting });
  try {
    await post(s.url, '/v1/chat/completions', { messages: [{ role: 'user', content: 'warm up' }], max_tokens: 1 });
    encodes = 0;
    const text = 'lorem ipsum dolor sit amet '.repeat(150_000);
    for (const [path, body] of [
      ['/v1/chat/completions', { messages: [{ role: 'user', content: text }] }],
      ['/v1/completions', { prompt: text }],
    ] as const) {
      const started = performance.now();
      const r = await post(s.url, path, body);
      assert.equal(r.status, 400, r.text.slice(0, 300));
      assert.equal(r.json.error!.code, 'context_length_exceeded');
      assert.match(r.json.error!.message, /bytes, so at least \d+ tokens/);
      assert.ok(performance.now() - started < 2000);
    }
    assert.equal(encodes, 0, 'nothing was tokenised');
    // Text that may fit is still tokenised and served.
    assert.equal((await post(s.url, '/v1/completions', { prompt: 'lorem ipsum '.repeat(100), max_tokens: 1 })).status, 200);
    assert.ok(encodes > 0);
  } finally {
    await s.close();
  }
});
