import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL, parseSse, post, startServer } from './helpers.js';

const messages = [{ role: 'user' as const, content: 'Talk.' }];
const longReply = () => 'word '.repeat(300);

/** Rejects if `p` takes longer than `ms`: a missed abort must fail the test, not hang it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref())]);
}

async function metric(url: string, line: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = line.exec(text);
  return m ? Number(m[1]) : NaN;
}

test('a client that breaks out of a stream aborts its engine request at once', async () => {
  const s = await startServer({ tokenDelayMs: 10, reply: longReply });
  try {
    const stream = await s.client.chat.completions.create({ model: MODEL, messages, stream: true });
    let chunks = 0;
    for await (const _ of stream) if (++chunks === 3) break;
    await within(s.engine.waitForAborts(1), 2000, 'the engine to see the abort');
    assert.equal(s.engine.aborted.length, 1);
    await within((async () => {
      while ((await metric(s.url, /dseek_cancellations_total\{reason="client_disconnect"\} (\d+)/)) !== 1) await new Promise((r) => setTimeout(r, 10));
    })(), 2000, 'the cancellation metric');
    // Still serving.
    s.engine.options = {};
    assert.equal((await s.client.chat.completions.create({ model: MODEL, messages, max_tokens: 2 })).choices.length, 1);
  } finally {
    await s.close();
  }
});

test('a non-streaming client that hangs up aborts all n engine requests', async () => {
  const s = await startServer({ tokenDelayMs: 10, reply: longReply });
  try {
    const ac = new AbortController();
    const pending = fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages, n: 2 }),
      signal: ac.signal,
    }).catch(() => null);
    await new Promise((r) => setTimeout(r, 80));
    ac.abort();
    await pending;
    await within(s.engine.waitForAborts(2), 2000, 'both engine requests to abort');
  } finally {
    await s.close();
  }
});

test('while queued, a stream sends keep-alive comments, then the answer', async () => {
  const s = await startServer({ queueMs: 250 }, { keepAliveMs: 40 });
  try {
    const r = await post(s.url, '/v1/chat/completions', { model: MODEL, messages, stream: true, max_tokens: 3 });
    const { data, comments } = parseSse(r.text);
    assert.ok(comments.filter((c) => c === 'keep-alive').length >= 3, `comments: ${comments.join(',')}`);
    assert.equal(data.at(-1), '[DONE]');
    // Comments come before the content, not during it.
    const firstContent = r.text.indexOf('"content":"Hello');
    assert.ok(r.text.lastIndexOf(': keep-alive') < firstContent);
  } finally {
    await s.close();
  }
});

test('timeout: what was generated is returned with finish_reason length; nothing yet → 408', async () => {
  const s = await startServer({ tokenDelayMs: 20, reply: longReply }, { requestTimeoutMs: 200 });
  try {
    const r = await s.client.chat.completions.create({ model: MODEL, messages });
    assert.equal(r.choices[0]!.finish_reason, 'length');
    assert.ok(r.choices[0]!.message.content!.startsWith('word word'));
    assert.ok(r.usage!.completion_tokens > 0 && r.usage!.completion_tokens < 300);

    const stream = await s.client.chat.completions.create({ model: MODEL, messages, stream: true });
    const finishes: string[] = [];
    for await (const chunk of stream) for (const c of chunk.choices) if (c.finish_reason) finishes.push(c.finish_reason);
    assert.deepEqual(finishes, ['length']);

    s.engine.options = { queueMs: 2000 };
    await assert.rejects(s.client.chat.completions.create({ model: MODEL, messages }), (e: unknown) => e instanceof OpenAI.APIError && e.status === 408);
    assert.ok((await metric(s.url, /dseek_cancellations_total\{reason="timeout"\} (\d+)/)) >= 3);
    await within(s.engine.waitForAborts(3), 2000, 'the engine to see the timeouts');
  } finally {
    await s.close();
  }
});

test('graceful shutdown: in-flight requests finish before the deadline; new connections are refused', async () => {
  const s = await startServer({ tokenDelayMs: 15 });
  const started = s.client.chat.completions.create({ model: MODEL, messages });
  await new Promise((r) => setTimeout(r, 50));
  const closed = s.server.close(5000);
  const r = await started;
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  await within(closed, 3000, 'close()');
  assert.equal(s.engine.aborted.length, 0);
  await assert.rejects(fetch(`${s.url}/health`));
});

test('graceful shutdown: past the deadline in-flight requests are aborted and end cleanly', async () => {
  const s = await startServer({ tokenDelayMs: 20, reply: longReply });
  const stream = await s.client.chat.completions.create({ model: MODEL, messages, stream: true });
  const finishes: string[] = [];
  const reading = (async () => {
    for await (const chunk of stream) for (const c of chunk.choices) if (c.finish_reason) finishes.push(c.finish_reason);
  })();
  await new Promise((r) => setTimeout(r, 60));
  await within(s.server.close(100), 3000, 'close()');
  await within(reading, 1000, 'the stream to end');
  assert.deepEqual(finishes, ['length']);
  assert.equal(s.engine.aborted.length, 1);
});
