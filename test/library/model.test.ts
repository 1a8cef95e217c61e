/**
 * The public API as a user calls it: everything is imported from the package by its name
 * (`'dseek'`, resolved through package.json `exports`), never by relative path, and runs on the
 * bundled model in the engine worker thread.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortError,
  ContextLengthExceededError,
  InvalidInputError,
  loadModel,
  ModelClosedError,
  ModelFormatError,
  SUPPORTED_MODEL_TYPES,
  UnsupportedConfigError,
  type ChatMessage,
  type GenerationResult,
  type LoadProgress,
  type Model,
} from 'dseek';
import { goldenRoot } from '../paths.js';

let model: Model;
before(async () => {
  model = await loadModel(undefined, { threads: 1 });
});
after(() => model.close());

const question = (q: string): ChatMessage[] => [{ role: 'user', content: q }];
const greedy = { temperature: 0, maxTokens: 12 } as const;

test('a streamed chat yields the same text, tokens and finish reason as the same chat not streamed (temperature 0)', async () => {
  const messages = question('Who made the heaven and the earth?');
  const whole = await model.chat(messages, greedy);
  const stream = model.chat(messages, { ...greedy, stream: true });
  let text = '';
  const tokens: number[] = [];
  for await (const delta of stream) {
    text += delta.text;
    tokens.push(...delta.tokens);
  }
  const result = await stream.result;
  assert.equal(text, whole.text);
  assert.deepEqual(tokens, whole.tokens);
  assert.equal(result.text, whole.text);
  assert.equal(result.finishReason, whole.finishReason);
  assert.equal(whole.tokens.length, 12);
  assert.equal(whole.finishReason, 'length');
});

test('a streamed generate equals the non-streamed one, and logprobs arrive with each delta when asked', async () => {
  const options = { temperature: 0, maxTokens: 8, logprobs: true, topLogprobs: 2 } as const;
  const whole = await model.generate('And God said', options);
  const deltas = [];
  for await (const d of model.generate('And God said', { ...options, stream: true })) deltas.push(d);
  assert.equal(deltas.map((d) => d.text).join(''), whole.text);
  assert.deepEqual(deltas.flatMap((d) => d.tokens), whole.tokens);
  assert.equal(whole.logprobs?.length, 8);
  whole.logprobs!.forEach((lp, i) => {
    assert.equal(lp.chosen.token, whole.tokens[i]);
    assert.equal(lp.top.length, 2);
    // Greedy: the chosen token is the most likely one.
    assert.equal(lp.top[0]!.token, lp.chosen.token);
  });
});

test('8 concurrent chat calls finish with the same texts as 8 sequential ones', async () => {
  const questions = ['Who is the LORD?', 'What did Moses say?', 'Where is Israel?', 'Why did they weep?', 'When shall the end come?', 'Who begat Isaac?', 'What is love?', 'How long, O LORD?'];
  const sequential: GenerationResult[] = [];
  for (const q of questions) sequential.push(await model.chat(question(q), greedy));
  const concurrent = await Promise.all(questions.map((q) => model.chat(question(q), greedy)));
  assert.deepEqual(concurrent.map((r) => r.text), sequential.map((r) => r.text));
  assert.deepEqual(concurrent.map((r) => r.tokens), sequential.map((r) => r.tokens));
});

test('usage reports prompt and completion tokens, the cache split and the cost at DeepSeek-V2 launch prices', async () => {
  const r = await model.generate('In the beginning', { temperature: 0, maxTokens: 5 });
  const u = r.usage;
  assert.equal(u.promptTokens, model.tokenize('In the beginning').length);
  assert.equal(u.completionTokens, 5);
  assert.equal(u.totalTokens, u.promptTokens + 5);
  assert.equal(u.promptCacheHitTokens + u.promptCacheMissTokens, u.promptTokens);
  assert.equal(u.cost.currency, 'USD');
  const expected = (u.promptCacheMissTokens * 0.14 + u.promptCacheHitTokens * 0.014 + 5 * 0.28) / 1e6;
  assert.ok(Math.abs(u.cost.total - expected) < 1e-12, `${u.cost.total} vs ${expected}`);
});

test('a conversation continued turn by turn is served from the prefix cache, not re-encoded', async () => {
  const messages: ChatMessage[] = [{ role: 'system', content: 'Thou art a scribe of the book of Genesis, and thou answerest in the words of the King James Bible.' }];
  messages.push({ role: 'user', content: 'Tell me of the creation of the heaven and the earth, and of the light.' });
  const first = await model.chat(messages, { temperature: 0, maxTokens: 48 });
  messages.push({ role: 'assistant', content: first.text.trimStart() }, { role: 'user', content: 'And then?' });
  const second = await model.chat(messages, { temperature: 0, maxTokens: 4 });
  // Whole 64-token pages of the first turn (prompt and answer) come back from the cache.
  assert.ok(second.usage.promptCacheHitTokens >= 64, `hits ${second.usage.promptCacheHitTokens} of ${second.usage.promptTokens}`);
});

test('an aborted call rejects with an AbortError and frees its cache pages', async () => {
  const own = await loadModel(undefined, { threads: 1, prefixCache: false });
  try {
    const controller = new AbortController();
    const stream = own.generate('And the LORD spake unto Moses, saying', { maxTokens: 200, ignoreEos: true, stream: true, signal: controller.signal });
    await assert.rejects(
      (async () => {
        for await (const delta of stream) if (delta.tokens.length > 0) controller.abort();
      })(),
      (err: unknown) => err instanceof AbortError && err.name === 'AbortError',
    );
    await assert.rejects(stream.result, AbortError);
    // The engine's stats arrive after the cancellation; give them a moment.
    const until = Date.now() + 5000;
    while ((own.stats().cacheBytesInUse > 0 || own.stats().running > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.equal(own.stats().running, 0);
    assert.equal(own.stats().cacheBytesInUse, 0);

    // Not streamed, and a signal that is already aborted.
    const late = new AbortController();
    const pending = own.generate('And God said', { maxTokens: 200, ignoreEos: true, signal: late.signal });
    setTimeout(() => late.abort(), 50);
    await assert.rejects(pending, AbortError);
    await assert.rejects(own.chat(question('Hi'), { signal: AbortSignal.abort() }), AbortError);
  } finally {
    await own.close();
  }
});

test('breaking out of a stream cancels the call', async () => {
  const stream = model.generate('And the LORD said', { maxTokens: 200, ignoreEos: true, stream: true });
  for await (const _ of stream) break;
  await assert.rejects(stream.result, AbortError);
});

test('tokenize and detokenize round-trip; info names the config, parameters, cache bytes per token and kernels', () => {
  const ids = model.tokenize('In the beginning God created the heaven and the earth.');
  assert.ok(ids.every((id) => Number.isInteger(id)));
  assert.match(model.detokenize(ids), /In the beginning God created the heaven and the earth\./);
  const info = model.info;
  assert.equal(info.config.modelType, 'deepseek_v3');
  assert.ok(info.parameters.total > 8e6 && info.parameters.activated < info.parameters.total);
  // f16 latent cache: (kv_lora_rank 64 + rope dim 16) × 4 layers × 2 bytes.
  assert.equal(info.cacheBytesPerToken, 80 * 4 * 2);
  assert.equal(info.contextSize, 256);
  assert.match(info.kernels, /native|reference/);
  assert.ok(info.hasTokenizer && info.hasChatTemplate);
});

test('bad options throw InvalidInputError naming the field; a prompt that fills the context throws ContextLengthExceededError', async () => {
  await assert.rejects(model.generate('x', { topP: 1.5 }), (e: unknown) => e instanceof InvalidInputError && e.field === 'topP');
  await assert.rejects(model.generate('x', { maxTokens: 0 }), (e: unknown) => e instanceof InvalidInputError && e.field === 'maxTokens');
  await assert.rejects(model.generate('x', { topLogprobs: 21 }), (e: unknown) => e instanceof InvalidInputError && e.field === 'topLogprobs');
  await assert.rejects(model.generate(''), (e: unknown) => e instanceof InvalidInputError && e.field === 'prompt');
  await assert.rejects(model.chat([]), (e: unknown) => e instanceof InvalidInputError && e.field === 'messages');
  await assert.rejects(model.generate(new Array<number>(256).fill(5)), ContextLengthExceededError);
});

test('load errors are typed: a missing path, an unsupported model_type (naming the registry), broken weights found in the engine thread', async () => {
  await assert.rejects(loadModel('/no/such/model'), (e: unknown) => e instanceof ModelFormatError && /no such file/.test(e.message));
  const dir = mkdtempSync(join(tmpdir(), 'dseek-lib-'));
  copyFileSync(join(goldenRoot, 'lite', 'config.json'), join(dir, 'config.json'));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'llama' }));
  await assert.rejects(loadModel(dir), (e: unknown) => {
    assert.ok(e instanceof UnsupportedConfigError);
    for (const t of SUPPORTED_MODEL_TYPES) assert.match(e.message, new RegExp(t.modelType));
    return true;
  });
  // config.json is fine, the weights are missing: the engine thread finds out, the class survives.
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  await assert.rejects(loadModel(dir), (e: unknown) => e instanceof ModelFormatError && /safetensors/.test(e.message));
  await assert.rejects(loadModel(undefined, { signal: AbortSignal.abort() }), AbortError);
});

test('a model without a tokenizer generates from token ids; text calls say a tokenizer is needed', async () => {
  const progress: LoadProgress[] = [];
  const lite = await loadModel(join(goldenRoot, 'lite'), { onProgress: (p) => progress.push(p), cacheType: 'f32' });
  try {
    assert.deepEqual(progress.map((p) => p.phase), ['load', 'load', 'ready']);
    const golden = JSON.parse(readFileSync(join(goldenRoot, 'lite', 'golden.json'), 'utf8')) as { greedy_prompt_tokens: number[]; greedy_tokens: number[] };
    const r = await lite.generate(golden.greedy_prompt_tokens, { temperature: 0, maxTokens: golden.greedy_tokens.length, ignoreEos: true });
    assert.deepEqual(r.tokens, golden.greedy_tokens);
    await assert.rejects(lite.generate('hello'), (e: unknown) => e instanceof InvalidInputError && /tokenizer/.test(e.message));
  } finally {
    await lite.close();
  }
  await assert.rejects(lite.generate([1, 2]), ModelClosedError);
});

test('with diskCacheDir, a prompt cached by one load is a cache hit after a reload', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-lib-disk-'));
  const prompt = 'And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness. And God called the light Day, and the darkness he called Night. And the evening and the morning were the first day. And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from the waters.';
  const first = await loadModel(undefined, { threads: 1, diskCacheDir: dir });
  const cold = await first.generate(prompt, { maxTokens: 2, temperature: 0 }).finally(() => first.close());
  assert.equal(cold.usage.promptCacheHitTokens, 0);
  const second = await loadModel(undefined, { threads: 1, diskCacheDir: dir });
  const warm = await second.generate(prompt, { maxTokens: 2, temperature: 0 }).finally(() => second.close());
  assert.ok(warm.usage.promptCacheHitTokens >= 64, `hits ${warm.usage.promptCacheHitTokens} of ${warm.usage.promptTokens}`);
  assert.deepEqual(warm.tokens, cold.tokens);
});
