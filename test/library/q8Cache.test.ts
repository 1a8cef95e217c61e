/**
 * loadModel({ cacheType: 'q8' }) as a user calls it: the engine runs on an 8-bit latent cache,
 * says so in info, /status and /metrics, serves repeated prefixes from it, and a cache type it
 * does not know is an InvalidInputError naming the ones it does.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { CACHE_TYPES, createHandler, InvalidInputError, loadModel, type Model } from 'dseek';

let model: Model;
before(async () => {
  model = await loadModel(undefined, { threads: 1, cacheType: 'q8' });
});
after(() => model.close());

test('a q8 cache: 86 bytes per row of 80 values (two 32-value blocks, one of 16), × 4 layers', () => {
  assert.deepEqual([...CACHE_TYPES], ['f16', 'f32', 'q8']);
  // 2 · ⌈80 / 32⌉ scale bytes + 80 int8 values per layer (f16 would be 160).
  assert.equal(model.info.cacheBytesPerToken, (2 * 3 + 80) * 4);
  assert.equal(model.stats().cacheBytesPerToken, 344);
  assert.equal(model.info.cacheType, 'q8');
});

test('q8: greedy answers repeat, the second from the prefix cache', async () => {
  // Past one 64-token page (only whole pages are shared), within the bundled model's 256.
  const prompt = 'In the beginning God created the heaven and the earth. And the earth was without form, and void. '.repeat(4);
  assert.ok(model.tokenize(prompt).length > 64);
  const first = await model.generate(prompt, { temperature: 0, maxTokens: 8 });
  const second = await model.generate(prompt, { temperature: 0, maxTokens: 8 });
  assert.ok(first.tokens.length > 0);
  assert.deepEqual(second.tokens, first.tokens);
  assert.ok(second.usage.promptCacheHitTokens > 0, `hit ${second.usage.promptCacheHitTokens}`);
});

test('q8: /status and /metrics report the type and its bytes per token', async () => {
  const handler = createHandler({ model, log: () => {} });
  const status = (await (await handler(new Request('http://x/status'))).json()) as { latent_cache: { bytes_per_token: number; type: string } };
  assert.equal(status.latent_cache.bytes_per_token, 344);
  assert.equal(status.latent_cache.type, 'q8');
  const metrics = await (await handler(new Request('http://x/metrics'))).text();
  assert.match(metrics, /^dseek_cache_bytes_per_token\{type="q8"\} 344$/m);
});

test('an unknown cacheType is an InvalidInputError naming f16, f32 and q8', async () => {
  await assert.rejects(
    loadModel(undefined, { cacheType: 'q4' as never }),
    (e: unknown) => e instanceof InvalidInputError && e.field === 'cacheType' && e.message === 'cacheType: must be f16, f32 or q8, got q4',
  );
});
