/**
 * Serving benchmark: aggregate decode throughput of the continuous-batching engine at 1, 4 and 16
 * concurrent streams (each: a 128-token prompt, 64 generated tokens, as llama.cpp's
 * batched-bench anchor in the serving issue), and time to first token for an uncached vs a cached
 * (prefix-cache hit) long prompt. Runs the engine in-process, on the given model.
 *
 *   npm run bench:serving -- --model M [--streams 1,4,16] [--prompt 128] [--gen 64] [--threads N]
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model/load.js';
import { selectBackend } from '../src/kernels/select.js';
import { defaultThreads } from '../src/kernels/native/index.js';
import { Scheduler } from '../src/engine/scheduler.js';
import { LocalEngine } from '../src/engine/localEngine.js';
import type { EngineEvent } from '../src/engine/types.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    streams: { type: 'string', default: '1,4,16' },
    prompt: { type: 'string', default: '128' },
    gen: { type: 'string', default: '64' },
    threads: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const path = values.model ?? fileURLToPath(new URL('../../models/default', import.meta.url));
const threads = values.threads ? Number(values.threads) : defaultThreads();
const promptLen = Number(values.prompt);
const gen = Number(values.gen);
const { model, tokenizer, config } = loadModel(path, { backend: selectBackend('auto', threads) });
const vocab = tokenizer ? Math.min(tokenizer.vocabSize, config.vocabSize) : config.vocabSize;
let seed = 12345;
const randomPrompt = (n: number) =>
  Array.from({ length: n }, () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % (vocab - 2)) + 2);

/** Collects a request's token arrival times. */
async function drain(events: AsyncIterable<EngineEvent>): Promise<{ ttft: number; tokens: number; times: number[] }> {
  const times: number[] = [];
  for await (const e of events) {
    if (e.type === 'token') times.push(performance.now());
    if (e.type === 'done') return { ttft: e.timeToFirstTokenS, tokens: times.length, times };
  }
  return { ttft: NaN, tokens: times.length, times };
}

const results: Record<string, number> = {};
for (const streams of values.streams.split(',').map(Number)) {
  const engine = new LocalEngine(new Scheduler(model, tokenizer, { maxSequences: streams, contextLength: promptLen + gen + 1, prefixCache: false }));
  const t0 = performance.now();
  const runs = await Promise.all(
    Array.from({ length: streams }, () => drain(engine.generate({ prompt: randomPrompt(promptLen), maxTokens: gen, sampling: { temperature: 0 }, ignoreEos: true }))),
  );
  const seconds = (performance.now() - t0) / 1000;
  const tokens = runs.reduce((n, r) => n + r.tokens, 0);
  // Decode throughput as llama.cpp's batched-bench reports it (S_TG): tokens generated while every
  // stream is decoding, over that window (from the last stream's first token to the last token).
  const from = Math.max(...runs.map((r) => r.times[0]!));
  const to = Math.max(...runs.map((r) => r.times[r.times.length - 1]!));
  const decoded = runs.reduce((n, r) => n + r.times.filter((t) => t > from).length, 0);
  const decodeRate = decoded / ((to - from) / 1000);
  results[`aggregate_tok_s_${streams}`] = tokens / seconds;
  results[`decode_tok_s_${streams}`] = decodeRate;
  console.log(
    `${String(streams).padStart(2)} streams: decode ${decodeRate.toFixed(2)} tok/s aggregate; ` +
      `end to end ${tokens} tokens in ${seconds.toFixed(2)} s = ${(tokens / seconds).toFixed(2)} tok/s incl. prefill (prompt ${promptLen}, gen ${gen})`,
  );
  await engine.close();
}

// Time to first token: the same long prompt twice through the prefix cache.
const long = randomPrompt(Math.min(4 * promptLen, config.maxPositionEmbeddings - 8));
const engine = new LocalEngine(new Scheduler(model, tokenizer, { maxSequences: 1, contextLength: long.length + 4, pageTokens: 16 }));
const cold = await drain(engine.generate({ prompt: long, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
const warm = await drain(engine.generate({ prompt: long, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
results['ttft_uncached_s'] = cold.ttft;
results['ttft_cached_s'] = warm.ttft;
console.log(`time to first token, ${long.length}-token prompt: uncached ${(cold.ttft * 1000).toFixed(1)} ms, cached ${(warm.ttft * 1000).toFixed(1)} ms`);
if (values.json) console.log(JSON.stringify({ model: path, threads, ...results }));
