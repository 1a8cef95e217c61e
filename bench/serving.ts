/**
 * Serving benchmark: aggregate decode throughput of the continuous-batching engine at 1, 4 and 16
 * concurrent streams (each: a 128-token prompt, 64 generated tokens, as llama.cpp's
 * batched-bench anchor in the serving issue), and time to first token for an uncached vs a cached
 * (prefix-cache hit) long prompt. Runs the engine in-process, on the given model.
 *
 *   npm run bench:serving -- --model M [--streams 1,4,16] [--prompt 128] [--gen 64] [--threads N]
 *                            [--context-store redis://host:port | DIR] [--long 4096] [--during 4]
 *                            [--cached-prefix 3584]
 *
 * With --cached-prefix C: time to first token of a --long-token prompt uncached, then of another
 * prompt that shares its first C tokens (a prefix-cache hit of those, the rest computed).
 *
 * With --context-store, two more figures, with two engines on one model standing for replicas A
 * and B (each with its own connection to the store, as two processes would have):
 * - time to first token on B for a --long-token prompt that A computed (B's memory is empty: the
 *   pages come from the store), against A's uncached time;
 * - decode throughput of --during other streams on A while a long conversation's pages are being
 *   written behind, against the same streams right after the writes are done (the write-behind
 *   must not slow them beyond noise).
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model/load.js';
import { selectBackend } from '../src/kernels/select.js';
import { defaultThreads } from '../src/kernels/native/index.js';
import { Scheduler } from '../src/engine/scheduler.js';
import { LocalEngine } from '../src/engine/localEngine.js';
import type { EngineEvent } from '../src/engine/types.js';
import { parseContextStore } from '../src/cache/contextStore.js';
import { ContextCache } from '../src/cache/contextCache.js';
import { ThreadLink } from '../src/cache/storeLink.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { createClient } from '@redis/client';
import { readFileSync, readdirSync } from 'node:fs';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    streams: { type: 'string', default: '1,4,16' },
    prompt: { type: 'string', default: '128' },
    gen: { type: 'string', default: '64' },
    threads: { type: 'string' },
    json: { type: 'boolean', default: false },
    'context-store': { type: 'string' },
    long: { type: 'string', default: '4096' },
    during: { type: 'string', default: '4' },
    'cached-prefix': { type: 'string' },
  },
});
const path = values.model ?? fileURLToPath(new URL('../../models/default', import.meta.url));
const threads = values.threads ? Number(values.threads) : defaultThreads();
const promptLen = Number(values.prompt);
const gen = Number(values.gen);
const { model, tokenizer, config } = loadModel(path, { backend: selectBackend('auto', threads) });
const vocab = tokenizer ? Math.min(tokenizer.vocabSize, config.vocabSize) : config.vocabSize;
const longTokens = Math.min(Number(values.long), config.maxPositionEmbeddings - 8);
const cachedPrefix = values['cached-prefix'] === undefined ? undefined : Number(values['cached-prefix']);
if (cachedPrefix !== undefined && (!Number.isInteger(cachedPrefix) || cachedPrefix < 1 || cachedPrefix >= longTokens)) {
  console.error(`bench:serving: --cached-prefix must be a whole number of tokens from 1 to ${longTokens - 1} (below --long ${longTokens}), got ${values['cached-prefix']}`);
  process.exit(2);
}
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
for (const streams of values.streams.split(',').filter((x) => x !== '').map(Number)) {
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

if (cachedPrefix !== undefined) await partialHitBench(cachedPrefix);
if (values['context-store'] !== undefined) await contextStoreBench(values['context-store']);
if (values.json) console.log(JSON.stringify({ model: path, threads, ...results }));
process.exit(0);

/**
 * Time to first token of a --long-token prompt uncached, then of a second prompt whose first
 * `cached` tokens are the first one's (served from the prefix cache; the rest computed). The
 * ratio is at most long / (long − cached): the uncached prompt computes the same last tokens and
 * more, and a token late in a prompt costs at least as much as an early one.
 */
async function partialHitBench(cached: number): Promise<void> {
  const n = longTokens;
  const engine = new LocalEngine(new Scheduler(model, tokenizer, { maxSequences: 1, contextLength: n + 4, pageTokens: 16 }));
  const first = randomPrompt(n);
  const second = [...first.slice(0, cached), ...randomPrompt(n - cached)];
  const cold = await drain(engine.generate({ prompt: first, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
  const partial = await drain(engine.generate({ prompt: second, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
  await engine.close();
  results['partial_ttft_uncached_s'] = cold.ttft;
  results['partial_ttft_cached_s'] = partial.ttft;
  console.log(
    `time to first token, ${n}-token prompt: uncached ${cold.ttft.toFixed(2)} s; another sharing its first ${cached} tokens ` +
      `(cached) ${partial.ttft.toFixed(2)} s: ${(cold.ttft / partial.ttft).toFixed(2)}× (at most ${(n / (n - cached)).toFixed(2)}×)`,
  );
}

async function contextStoreBench(where: string): Promise<void> {
  const spec = parseContextStore(where, { maxBytes: 64 * 2 ** 30, ttlSeconds: 0 });
  const pageTokens = 64;
  const fingerprint = modelFingerprint(path);
  const replica = async () => {
    // As the engine thread of `dseek serve` runs it: the store in a thread of its own.
    const { link, connected } = await ThreadLink.start(spec, (l) => console.log(`  [${l}]`));
    if (!connected) throw new Error(`${link.location} does not answer`);
    const cache = new ContextCache({
      link,
      maxPendingWrites: 100_000,
      fingerprint,
      layers: config.numHiddenLayers,
      width: config.kvLoraRank + config.qkRopeHeadDim,
      pageTokens,
      dtype: 'f16',
      fetchTimeoutMs: 30_000,
      log: (l) => console.log(`  [${l}]`),
    });
    const n = Math.min(Number(values.long), config.maxPositionEmbeddings - 8);
    const scheduler = new Scheduler(model, tokenizer, { maxSequences: Number(values.during) + 1, contextLength: n + gen + 8, pageTokens, contextCache: cache });
    return { engine: new LocalEngine(scheduler), scheduler, cache, n };
  };
  const a = await replica();
  const b = await replica();
  // Prompts of their own: a store kept from an earlier run must not make A's first answer a hit.
  seed = (Date.now() ^ process.pid) >>> 0;
  const long = randomPrompt(a.n);
  const onA = await drain(a.engine.generate({ prompt: long, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
  const written = performance.now();
  await a.scheduler.storeIdle();
  const writeS = (performance.now() - written) / 1000;
  const onB = await drain(b.engine.generate({ prompt: long, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
  const sa = a.cache.stats();
  const sb = b.cache.stats();
  results['store_ttft_uncached_s'] = onA.ttft;
  results['store_ttft_replica_b_s'] = onB.ttft;
  console.log(
    `context store ${sa.location}: ${long.length}-token prompt, time to first token on replica A (uncached) ${(onA.ttft * 1000).toFixed(1)} ms, ` +
      `on replica B (${sb.hitPages} pages from the store) ${(onB.ttft * 1000).toFixed(1)} ms; A wrote ${sa.writes} pages (${(sa.writeBytes / 2 ** 20).toFixed(1)} MiB) in ${writeS.toFixed(2)} s after answering`,
  );

  // Other streams decoding while a long conversation's pages are written behind: the
  // conversation is answered with the store's writes held back, then K streams start decoding;
  // their rate is measured before, while and after the held writes go out.
  const others = Number(values.during);
  a.cache.holdWrites(true);
  await drain(a.engine.generate({ prompt: randomPrompt(a.n), maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true }));
  const queued = a.cache.stats().pendingWrites;
  const times: number[][] = Array.from({ length: others }, () => []);
  const streams = times.map(async (t) => {
    for await (const e of a.engine.generate({ prompt: randomPrompt(promptLen), maxTokens: 100_000, sampling: { temperature: 0 }, ignoreEos: true })) {
      if (e.type === 'token') t.push(performance.now());
    }
  });
  const stepsOf = () => Math.min(...times.map((t) => t.length));
  const untilSteps = async (n: number) => {
    while (stepsOf() < n && a.scheduler.hasWork()) await new Promise((r) => setTimeout(r, 1));
  };
  await untilSteps(4);
  // Windows of several seconds each: a decode step of a real model is tens of milliseconds, and
  // a shared machine's rate wanders by a few percent over a second.
  const t0 = performance.now();
  await untilSteps(stepsOf() + 60);
  const t1 = performance.now();
  const cpu0 = await cpuSeconds(spec);
  a.cache.holdWrites(false);
  await a.scheduler.storeIdle();
  const t2 = performance.now();
  const cpu1 = await cpuSeconds(spec);
  await untilSteps(stepsOf() + Math.max(60, Math.ceil(((t2 - t1) / (t1 - t0)) * 60)));
  const t3 = performance.now();
  a.scheduler.cancelAll();
  await Promise.all(streams);
  const rate = (from: number, to: number) => {
    const n = times.reduce((k, t) => k + t.filter((x) => x > from && x <= to).length, 0);
    return { n, perS: n / ((to - from) / 1000) };
  };
  // Decoding slows as the streams' contexts grow: the windows before and after bracket the one
  // during the writes, so their mean is what it would have been without them.
  const [before, during, after] = [rate(t0, t1), rate(t1, t2), rate(t2, t3)];
  const expected = (before.perS + after.perS) / 2;
  results['store_decode_tok_s_before_writes'] = before.perS;
  results['store_decode_tok_s_during_writes'] = during.perS;
  results['store_decode_tok_s_after_writes'] = after.perS;
  console.log(
    `${others} other streams decoding: ${before.perS.toFixed(2)} tok/s before, ${during.perS.toFixed(2)} tok/s while ${queued} pages of a ${a.n}-token conversation were written ` +
      `(${((t2 - t1) / 1000).toFixed(2)} s, ${during.n} tokens), ${after.perS.toFixed(2)} tok/s after: ${(((during.perS - expected) / expected) * 100).toFixed(1)} % against the mean of before and after` +
      (during.n < 2 * others ? ' (the writes took less than two steps: nothing to compare)' : ''),
  );
  // Where the writes' CPU time went: the store's writing thread (at nice 19, storeThread.ts) and, for a Redis on this machine, the server itself, which competes with decoding at its own
  // priority (on a host of its own it would not).
  const busy = (k: keyof CpuSeconds) => (cpu1[k] !== null && cpu0[k] !== null ? cpu1[k]! - cpu0[k]! : null);
  const share = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)} s (${((x / ((t2 - t1) / 1000) / cpuCount()) * 100).toFixed(1)} % of the machine)`);
  console.log(`CPU time during the writes: the store's writing thread ${share(busy('writeThread'))}, the Redis server ${share(busy('redis'))}`);
  results['store_write_thread_cpu_s_during_writes'] = busy('writeThread') ?? NaN;
  results['redis_cpu_s_during_writes'] = busy('redis') ?? NaN;
  const st = a.cache.stats();
  results['store_write_thread_ms_per_page'] = st.writeThreadMs / Math.max(1, st.writes);
  console.log(`engine-thread time per page written: ${(st.writeThreadMs / Math.max(1, st.writes)).toFixed(3)} ms (copy out + hand to the client; hashing and I/O run elsewhere), over ${st.writes} pages`);
  await a.engine.close();
  await b.engine.close();
}

interface CpuSeconds {
  /** CPU seconds of the context store's writing thread (Linux /proc), or null. */
  readonly writeThread: number | null;
  /** CPU seconds of the Redis server so far (INFO cpu), or null (a folder store, or no answer). */
  readonly redis: number | null;
}

function cpuCount(): number {
  return Math.max(1, readdirSync('/sys/devices/system/cpu').filter((d) => /^cpu\d+$/.test(d)).length);
}

/** CPU seconds of this process's threads at nice 19: the context store's writing thread. */
function writeThreadSeconds(): number | null {
  try {
    const ticks = 100; // USER_HZ, fixed at 100 on Linux
    let sum = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const nice = Number(fields[16]);
      if (nice === 19) sum += (Number(fields[11]) + Number(fields[12])) / ticks;
    }
    return sum;
  } catch {
    return null;
  }
}

async function cpuSeconds(spec: ReturnType<typeof parseContextStore>): Promise<CpuSeconds> {
  let redis: number | null = null;
  if (spec.kind === 'redis' && !spec.cluster) {
    const client = createClient({ url: spec.url });
    client.on('error', () => {});
    try {
      await client.connect();
      const info = await client.info('cpu');
      const get = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
      const total = get('used_cpu_user') + get('used_cpu_sys');
      redis = Number.isFinite(total) ? total : null;
    } catch {
      redis = null;
    } finally {
      await client.close().catch(() => {});
    }
  }
  return { writeThread: writeThreadSeconds(), redis };
}
