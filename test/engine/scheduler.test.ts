/**
 * Continuous batching, the prefix cache, the disk cache and cancellation, on the golden models:
 * whatever the batching, each request gets exactly what it gets alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { Sampler } from '../../src/engine/sampler.js';
import { Scheduler, QueueFullError, type SchedulerOptions } from '../../src/engine/scheduler.js';
import { LocalEngine } from '../../src/engine/localEngine.js';
import { ContextCache } from '../../src/cache/contextCache.js';
import { FolderStore } from '../../src/cache/folderStore.js';
import type { EngineEvent, EngineRequest } from '../../src/engine/types.js';
import { goldenRoot } from '../paths.js';

const lite = loadModel(join(goldenRoot, 'lite'));

/**
 * The plain oracle the scheduler is held to: one sequence on its own cache, the whole prompt in
 * one forward pass, then one token per pass, sampled with the same sampler.
 */
function alone(m: LoadedModel, prompt: number[], maxTokens: number, seed?: number): number[] {
  const sampler = new Sampler(seed === undefined ? { temperature: 0 } : { temperature: 0.8, seed }, m.config.vocabSize);
  const cache = m.model.createCache({ maxTokens: 64 });
  const history = [...prompt];
  const out: number[] = [];
  let logits = m.model.forward(prompt, cache);
  for (;;) {
    const token = sampler.sample(logits, history);
    out.push(token);
    history.push(token);
    if (out.length >= maxTokens) return out;
    logits = m.model.forward([token], cache);
  }
}

async function collect(events: AsyncIterable<EngineEvent>): Promise<{ tokens: number[]; done: Extract<EngineEvent, { type: 'done' }>; all: EngineEvent[] }> {
  const tokens: number[] = [];
  const all: EngineEvent[] = [];
  for await (const e of events) {
    all.push(e);
    if (e.type === 'token') tokens.push(e.token);
    if (e.type === 'done') return { tokens, done: e, all };
  }
  throw new Error('stream ended without done');
}

function engineFor(m: LoadedModel, options: SchedulerOptions = {}): LocalEngine {
  return new LocalEngine(new Scheduler(m.model, m.tokenizer, { contextLength: 64, pageTokens: 4, ...options }));
}

const prompts = [
  [0, 17, 42, 99, 7, 200, 5, 64, 33, 12],
  [0, 5, 9],
  [0, 17, 42, 99, 7, 200, 5, 64, 33, 12, 250, 3, 77, 140, 9, 31, 55],
  [0, 1, 2, 3, 4, 5, 6, 7, 8],
  [0, 250],
];

test('concurrent requests (prompt chunks interleaved with decoding) equal separate runs', async () => {
  const engine = engineFor(lite, { chunkTokens: 5, maxSequences: 3, prefixCache: false });
  const req = (prompt: number[], seed?: number): EngineRequest => ({
    prompt,
    maxTokens: 9,
    sampling: seed === undefined ? { temperature: 0 } : { temperature: 0.8, seed },
    ignoreEos: true,
  });
  const results = await Promise.all(prompts.map((p, i) => collect(engine.generate(req(p, i % 2 ? 100 + i : undefined)))));
  results.forEach((r, i) => {
    assert.deepEqual(r.tokens, alone(lite, prompts[i]!, 9, i % 2 ? 100 + i : undefined), `request ${i}`);
    assert.equal(r.done.usage.promptTokens, prompts[i]!.length);
    assert.equal(r.done.usage.completionTokens, 9);
    assert.equal(r.done.finishReason, 'length');
  });
  assert.equal(engine.scheduler.pool.pagesInUse, 0, 'every page returned');
  // Two of the five had to wait for a slot.
  assert.ok(results.some((r) => r.all.some((e) => e.type === 'queued' && e.position > 0)));
});

test('a shared prompt prefix is reused from the prefix cache', async () => {
  const engine = engineFor(lite);
  const prompt = prompts[2]!;
  const first = await collect(engine.generate({ prompt, maxTokens: 5, sampling: { temperature: 0 }, ignoreEos: true }));
  assert.equal(first.done.usage.promptCacheHitTokens, 0);
  assert.equal(first.done.usage.promptCacheMissTokens, prompt.length);
  const second = await collect(engine.generate({ prompt, maxTokens: 5, sampling: { temperature: 0 }, ignoreEos: true }));
  // 17 tokens: four whole 4-token pages are reusable (one token is always recomputed for its logits).
  assert.equal(second.done.usage.promptCacheHitTokens, 16);
  assert.equal(second.done.usage.promptCacheHitTokens + second.done.usage.promptCacheMissTokens, prompt.length);
  assert.deepEqual(second.tokens, first.tokens);
  // A prompt that continues the first conversation reuses its output pages too.
  const next = [...prompt, ...first.tokens.slice(0, 4), 5, 6];
  const third = await collect(engine.generate({ prompt: next, maxTokens: 3, sampling: { temperature: 0 }, ignoreEos: true }));
  assert.equal(third.done.usage.promptCacheHitTokens, 20);
  assert.deepEqual(third.tokens, alone(lite, next, 3));
});

test('cancelling frees the sequence at once; the queue is bounded', async () => {
  const engine = engineFor(lite, { maxQueue: 1, maxSequences: 1, prefixCache: false });
  const controller = new AbortController();
  const long = engine.generate({ prompt: prompts[0]!, maxTokens: 50, sampling: { temperature: 0 }, ignoreEos: true }, controller.signal);
  const waiting = engine.generate({ prompt: prompts[1]!, maxTokens: 2, sampling: { temperature: 0 }, ignoreEos: true });
  const refused = engine.generate({ prompt: prompts[1]!, maxTokens: 2, sampling: { temperature: 0 } });
  await assert.rejects(collect(refused), QueueFullError);
  let seen = 0;
  const longResult = (async () => {
    for await (const e of long) {
      if (e.type === 'token' && ++seen === 3) controller.abort();
      if (e.type === 'done') return e;
    }
    return null;
  })();
  const done = await longResult;
  assert.equal(done?.finishReason, 'cancelled');
  assert.ok(seen >= 3 && seen < 50);
  const w = await collect(waiting);
  assert.equal(w.tokens.length, 2);
  assert.equal(engine.scheduler.pool.pagesInUse, 0);
});

test('a small cache budget preempts and resumes sequences without changing their output', async () => {
  // Budget: exactly one full-context sequence (16 pages of 4 tokens).
  const bytesPerPage = lite.config.numHiddenLayers * 4 * (lite.config.kvLoraRank + lite.config.qkRopeHeadDim) * 2;
  const engine = engineFor(lite, { cacheBudgetBytes: 16 * bytesPerPage, prefixCache: false, maxSequences: 4 });
  const results = await Promise.all(
    prompts.slice(0, 4).map((p) => collect(engine.generate({ prompt: p, maxTokens: 30, sampling: { temperature: 0 }, ignoreEos: true }))),
  );
  results.forEach((r, i) => assert.deepEqual(r.tokens, alone(lite, prompts[i]!, 30), `request ${i}`));
});

test('the folder context store survives a restart and ignores corrupt or foreign files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-disk-'));
  const logs: string[] = [];
  const disk = (fingerprint = 'lite-model') =>
    new ContextCache({ store: new FolderStore({ dir, maxBytes: 1 << 30 }), fingerprint, layers: 3, width: 40, pageTokens: 4, dtype: 'f16', log: (l) => logs.push(l) });
  const prompt = prompts[2]!;
  const run = async (d: ContextCache) => {
    const engine = engineFor(lite, { contextCache: d });
    const r = await collect(engine.generate({ prompt, maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true }));
    await engine.close(); // writes behind, then closes the store
    return r;
  };
  const first = await run(disk());
  assert.equal(first.done.usage.promptCacheHitTokens, 0);
  assert.ok(readdirSync(dir).length >= 4, 'units written');
  // A new engine (a restart): the prefix comes from disk.
  const second = await run(disk());
  assert.equal(second.done.usage.promptCacheHitTokens, 16);
  assert.deepEqual(second.tokens, first.tokens);
  // Another model's engine must not use them.
  const foreign = await run(disk('another-model'));
  assert.equal(foreign.done.usage.promptCacheHitTokens, 0);
  // Corrupt every file: they are reported, removed and recomputed.
  for (const f of readdirSync(dir)) {
    const bytes = readFileSync(join(dir, f));
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(join(dir, f), bytes);
  }
  const third = await run(disk());
  assert.equal(third.done.usage.promptCacheHitTokens, 0);
  assert.deepEqual(third.tokens, first.tokens);
  assert.ok(logs.some((l) => /checksum/.test(l)), logs.join('\n'));
});

test('requests that can never run are refused with the reason', () => {
  const scheduler = new Scheduler(lite.model, null, { contextLength: 16, pageTokens: 4 });
  const sink = () => {};
  assert.throws(() => scheduler.submit({ prompt: Array(16).fill(3), maxTokens: 1, sampling: {} }, sink), /context/);
  assert.throws(() => scheduler.submit({ prompt: [], maxTokens: 1, sampling: {} }, sink), /empty/);
  assert.throws(() => scheduler.submit({ prompt: [999], maxTokens: 1, sampling: {} }, sink), /vocabulary/);
  assert.throws(() => scheduler.submit({ prompt: [1], maxTokens: 0, sampling: {} }, sink), /max_tokens/);
  assert.throws(() => scheduler.submit({ prompt: [1], maxTokens: 1, sampling: { temperature: -1 } }, sink), /temperature/);
});

test('routing counts cover each generated token once per MoE layer; stats report the cache', async () => {
  const engine = engineFor(lite);
  const r = await collect(engine.generate({ prompt: prompts[0]!, maxTokens: 6, sampling: { temperature: 0 }, ignoreEos: true, routing: true }));
  const routing = r.done.routing!;
  assert.deepEqual(routing.layers, [1, 2]);
  assert.equal(routing.experts, 8);
  assert.equal(routing.sharedExperts, 2);
  // The first answer token comes from the prompt pass; the other 5 are routed as inputs, top-2 each.
  for (const row of routing.counts) assert.equal(row.reduce((a, b) => a + b, 0), 5 * 2);
  const stats = engine.stats();
  assert.equal(stats.promptCacheMissTokens, prompts[0]!.length);
  assert.ok(stats.prefixCacheTokens > 0);
  assert.ok(stats.mhaBytesPerToken > stats.cacheBytesPerToken);
});
