import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_REPLY } from './fakeEngine.js';
import { MODEL, post, startServer, tokenizerWithoutFim, v3Tokenizer, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.close());

test('completions: a text prompt is encoded with BOS and without parsing special tokens', async () => {
  const prompt = 'def add(a, b): <｜end▁of▁sentence｜>';
  const r = await s.client.completions.create({ model: MODEL, prompt, max_tokens: 50 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices[0]!.text, DEFAULT_REPLY);
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  const tok = v3Tokenizer();
  const sent = s.engine.requests.at(-1)!.prompt;
  assert.deepEqual(sent, tok.encode(prompt, { parseSpecial: false }));
  assert.equal(sent[0], tok.bosId);
  assert.ok(!sent.includes(tok.eosId!), 'untrusted text cannot inject the EOS token');
  assert.equal(r.usage!.prompt_tokens, sent.length);
});

test('completions: a token-id prompt is passed through unchanged', async () => {
  await s.client.completions.create({ model: MODEL, prompt: [0, 17, 42], max_tokens: 2 });
  assert.deepEqual(s.engine.requests.at(-1)!.prompt, [0, 17, 42]);
});

test('completions: suffix builds the fill-in-the-middle prompt from the V3 FIM tokens', async () => {
  const tok = v3Tokenizer();
  // V3 numbers them hole 128800, begin 128801, end 128802.
  const [begin, hole, end] = ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'].map((t) => tok.tokenId(t)!);
  assert.deepEqual([begin, hole, end], [128801, 128800, 128802]);
  await s.client.completions.create({ model: MODEL, prompt: 'def f(x):\n    ', suffix: '\n    return y', max_tokens: 4 });
  const plain = (t: string) => tok.encode(t, { addBos: false, parseSpecial: false });
  assert.deepEqual(s.engine.requests.at(-1)!.prompt, [tok.bosId, begin, ...plain('def f(x):\n    '), hole, ...plain('\n    return y'), end]);
});

test('completions: suffix on a tokenizer without FIM tokens is a 400 naming suffix', async () => {
  const noFim = await startServer({}, { tokenizer: tokenizerWithoutFim() });
  try {
    const r = await post(noFim.url, '/v1/completions', { model: MODEL, prompt: 'a', suffix: 'b' });
    assert.equal(r.status, 400);
    assert.equal(r.json.error!.param, 'suffix');
    assert.match(r.json.error!.message, /fim/);
    // Without suffix the same server works.
    assert.equal((await post(noFim.url, '/v1/completions', { model: MODEL, prompt: 'a', max_tokens: 2 })).status, 200);
  } finally {
    await noFim.close();
  }
});

test('completions: echo prepends the prompt', async () => {
  const r = await s.client.completions.create({ model: MODEL, prompt: 'Once upon a time', echo: true, max_tokens: 3 });
  assert.ok(r.choices[0]!.text.startsWith('Once upon a time'));
  assert.equal(r.choices[0]!.text, 'Once upon a time' + 'Hello! I');
});

test('completions: logprobs (integer) have the legacy shape with text offsets', async () => {
  const r = await s.client.completions.create({ model: MODEL, prompt: 'x', logprobs: 2, max_tokens: 4 });
  assert.equal(s.engine.requests.at(-1)!.topLogprobs, 2);
  const lp = r.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, 4);
  assert.deepEqual(lp.token_logprobs, [-0.25, -0.25, -0.25, -0.25]);
  assert.equal(lp.top_logprobs!.length, 4);
  assert.equal(Object.keys(lp.top_logprobs![0]!).length, 2);
  let offset = 0;
  lp.tokens!.forEach((t, i) => {
    assert.equal(lp.text_offset![i], offset);
    offset += t.length;
  });
  assert.equal(lp.tokens!.join(''), r.choices[0]!.text);
});

test('completions: streaming text chunks, n = 2, finish per choice, usage, [DONE]', async () => {
  const stream = await s.client.completions.create({ model: MODEL, prompt: 'x', stream: true, n: 2, seed: 5, stream_options: { include_usage: true } });
  const texts = ['', ''];
  const finishes = [0, 0];
  let usage: unknown = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    if (chunk.choices.length === 0) usage = chunk.usage;
    for (const c of chunk.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes[c.index]!++;
    }
  }
  assert.deepEqual(texts, [`Seed 5 says: ${DEFAULT_REPLY}`, `Seed 6 says: ${DEFAULT_REPLY}`]);
  assert.deepEqual(finishes, [1, 1]);
  assert.ok(usage);
});

test('completions: streaming with echo sends the prompt first', async () => {
  const stream = await s.client.completions.create({ model: MODEL, prompt: 'Echo me', echo: true, stream: true, max_tokens: 2 });
  const parts: string[] = [];
  for await (const chunk of stream) for (const c of chunk.choices) parts.push(c.text);
  assert.equal(parts[0], 'Echo me');
  assert.equal(parts.join(''), 'Echo meHello!');
});
