/**
 * `dseek bench`: prompt processing (pp) and generation (tg) speed measured the way llama-bench
 * measures them (random token ids; pp = one batch of P tokens from an empty context; tg = N
 * single-token steps, optionally after a D-token context), mean ± sd over repeats, plus load time,
 * peak RSS, latent-cache bytes per token, and the machine's streaming-read bandwidth with the decode
 * ceiling it implies for this model (bandwidth ÷ weight bytes read per token).
 */
import type { Command } from 'commander';
import { InvalidInputError } from '../errors.js';
import { loadModel } from '../model/load.js';
import { activeWeightBytes } from '../model/params.js';
import { selectBackend, type BackendChoice } from '../kernels/select.js';
import { defaultThreads, measureReadBandwidth, threadPoolStats } from '../kernels/native/index.js';
import type { DeepseekModel } from '../model/deepseek.js';
import type { LatentCache } from '../cache/latentCache.js';
import { parseInteger, repackFromFlags, resolveModelPath, type RepackFlags } from './args.js';
import { parseCacheType, rowBytes, type CacheType } from '../cache/pagePool.js';

interface BenchFlags extends RepackFlags {
  model?: string;
  prompt: string;
  gen: string;
  depth: string;
  repeats: string;
  threads?: string;
  backend: BackendChoice;
  cacheType: string;
  json?: boolean;
}

export interface BenchResult {
  model: string;
  backend: string;
  threads: number;
  pp_tokens: number;
  tg_tokens: number;
  depth: number;
  pp_tok_s: number;
  pp_tok_s_sd: number;
  tg_tok_s: number;
  tg_tok_s_sd: number;
  load_s: number;
  /** The instruction level of the native kernels ('' for the reference backend). */
  simd: string;
  /** How the weights reached the kernels' layout: repacked now (in memory or into the cache), mapped from the cache, or none. */
  repack_source: string;
  /** Seconds spent preparing weights inside load_s (repacking, or mapping and checking the cache). */
  repack_s: number;
  repacked_bytes: number;
  rss_mb: number;
  /** Thread-pool jobs per generated token, the µs one costs with no work, and their share of a decode step (%). */
  pool_jobs_per_token: number | null;
  pool_job_overhead_us: number | null;
  pool_overhead_pct_of_tg: number | null;
  cache_bytes_per_token: number;
  active_weight_bytes: number;
  bandwidth_gb_s: number | null;
  decode_ceiling_tok_s: number | null;
  tg_pct_of_ceiling: number | null;
}

function stats(xs: number[]): { mean: number; sd: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, sd };
}

function randomTokens(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % vocab;
  });
}

/** A cache holding `depth` tokens of context (prefilled in 512-token chunks, untimed), room for `count` more. */
function cacheAtDepth(model: DeepseekModel, depth: number, count: number, cacheType: CacheType, seed: number): LatentCache {
  const cache = model.createCache({ dtype: cacheType, maxTokens: Math.min(model.config.maxPositionEmbeddings, depth + count + 1) });
  const context = randomTokens(depth, model.config.vocabSize, seed + 1);
  for (let i = 0; i < depth; i += 512) model.forward(context.slice(i, i + 512), cache);
  return cache;
}

/** After `depth` tokens of context, time `count` prompt tokens as one chunk (llama-bench's pp at -d). */
function timePrompt(model: DeepseekModel, count: number, depth: number, cacheType: CacheType, seed: number): number {
  const cache = cacheAtDepth(model, depth, count, cacheType, seed);
  const tokens = randomTokens(count, model.config.vocabSize, seed);
  const t0 = performance.now();
  model.forward(tokens, cache);
  return count / ((performance.now() - t0) / 1000);
}

function timeGeneration(model: DeepseekModel, count: number, depth: number, cacheType: CacheType, seed: number): number {
  const cache = cacheAtDepth(model, depth, count, cacheType, seed);
  const tokens = randomTokens(count, model.config.vocabSize, seed);
  const t0 = performance.now();
  for (const t of tokens) model.forward([t], cache);
  return count / ((performance.now() - t0) / 1000);
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('prompt-processing and generation speed, load time, memory, bandwidth ceiling')
    .option('-m, --model <path>', 'model folder or .gguf file (default: the bundled model)')
    .option('-p, --prompt <n>', 'prompt tokens for pp (0: skip)', '512')
    .option('-n, --gen <n>', 'generated tokens for tg (0: skip)', '128')
    .option('-d, --depth <n>', 'context tokens before pp and tg (like llama-bench -d)', '0')
    .option('-r, --repeats <n>', 'repeats for mean ± sd', '3')
    .option('--threads <n>', `kernel threads (default: ${defaultThreads()})`)
    .option('--backend <name>', 'kernels: auto, native or reference', 'auto')
    .option('--cache-type <type>', 'latent cache storage: f16, f32 or q8 (8-bit blocks, 53 % of f16)', 'f16')
    .option('--no-repack', "keep weights in the file's rows (no kernel-owned layout)")
    .option('--repack-cache-size <MiB>', 'cap of the repacked-weights cache (~/.cache/dseek/repacked)')
    .option('--json', 'print one JSON object (pp_tok_s, tg_tok_s, load_s, rss_mb, …)')
    .action(async (flags: BenchFlags) => {
      const path = await resolveModelPath(flags.model);
      const threads = flags.threads !== undefined ? parseInteger('--threads', flags.threads, 1) : defaultThreads();
      const prompt = parseInteger('--prompt', flags.prompt);
      const gen = parseInteger('--gen', flags.gen);
      const depth = parseInteger('--depth', flags.depth);
      const repeats = parseInteger('--repeats', flags.repeats, 1);
      const cacheType = parseCacheType(flags.cacheType, '--cache-type');
      if (!['auto', 'native', 'reference'].includes(flags.backend)) throw new InvalidInputError('--backend', `must be auto, native or reference, got ${flags.backend}`);
      const backend = selectBackend(flags.backend, threads);

      const t0 = performance.now();
      const { model, config, prepared } = loadModel(path, { backend, ...repackFromFlags(flags) });
      const loadS = (performance.now() - t0) / 1000;
      const limit = config.maxPositionEmbeddings;
      if (prompt >= limit || depth + gen >= limit) {
        throw new InvalidInputError('--prompt', `the model's context is ${limit} tokens: lower -p, -n or -d`);
      }

      const progress = (s: string) => {
        if (!flags.json) process.stderr.write(`${s}\n`);
      };
      const pp: number[] = [];
      const tg: number[] = [];
      if (prompt > 0) {
        timePrompt(model, Math.min(prompt, 32), 0, cacheType, 99); // warm-up: page in the weights
        for (let r = 0; r < repeats; r++) {
          pp.push(timePrompt(model, prompt, depth, cacheType, r + 1));
          progress(`pp${prompt}${depth ? ` @ d${depth}` : ''} run ${r + 1}/${repeats}: ${pp[r]!.toFixed(2)} tok/s`);
        }
      }
      let jobsPerToken: number | null = null;
      if (gen > 0) {
        timeGeneration(model, Math.min(gen, 4), 0, cacheType, 98);
        // Jobs of one decode step at an empty context (counted around a short run of its own).
        const before = threadPoolStats()?.jobs;
        timeGeneration(model, 4, 0, cacheType, 97);
        const after = threadPoolStats()?.jobs;
        if (before !== undefined && after !== undefined) jobsPerToken = (after - before) / 4;
        for (let r = 0; r < repeats; r++) {
          tg.push(timeGeneration(model, gen, depth, cacheType, r + 11));
          progress(`tg${gen}${depth ? ` @ d${depth}` : ''} run ${r + 1}/${repeats}: ${tg[r]!.toFixed(2)} tok/s`);
        }
      }
      // Peak RSS of the model run, read before the bandwidth probe allocates its own buffer.
      const rssMb = process.resourceUsage().maxRSS / 1024;
      const poolUs = jobsPerToken !== null ? (threadPoolStats(2000)?.overheadUs ?? null) : null;
      const bandwidth = measureReadBandwidth(threads);
      const active = activeWeightBytes(config, model.weights);
      const ceiling = bandwidth ? bandwidth / active : null;
      const ppS = stats(pp.length ? pp : [0]);
      const tgS = stats(tg.length ? tg : [0]);
      const width = config.kvLoraRank + config.qkRopeHeadDim;
      const result: BenchResult = {
        model: path,
        backend: backend.name,
        threads,
        pp_tokens: prompt,
        tg_tokens: gen,
        depth,
        pp_tok_s: ppS.mean,
        pp_tok_s_sd: ppS.sd,
        tg_tok_s: tgS.mean,
        tg_tok_s_sd: tgS.sd,
        load_s: loadS,
        simd: /^native \(([^,]+),/.exec(backend.name)?.[1] ?? '',
        repack_source: prepared.source,
        repack_s: prepared.seconds,
        repacked_bytes: prepared.repackedBytes,
        rss_mb: rssMb,
        pool_jobs_per_token: jobsPerToken,
        pool_job_overhead_us: poolUs,
        pool_overhead_pct_of_tg: jobsPerToken !== null && poolUs !== null && tg.length ? (jobsPerToken * poolUs * 1e-6 * tgS.mean) * 100 : null,
        cache_bytes_per_token: config.numHiddenLayers * rowBytes(width, cacheType),
        active_weight_bytes: active,
        bandwidth_gb_s: bandwidth ? bandwidth / 1e9 : null,
        decode_ceiling_tok_s: ceiling,
        tg_pct_of_ceiling: ceiling && tg.length ? (100 * tgS.mean) / ceiling : null,
      };
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
        return;
      }
      const f = (x: number, d = 2) => x.toFixed(d);
      const rows = [
        ['model', path],
        ['kernels', `${backend.name}`],
        ...(prompt > 0 ? [[`pp${prompt}`, `${f(ppS.mean)} ± ${f(ppS.sd)} tok/s`]] : []),
        ...(gen > 0 ? [[`tg${gen}${depth ? ` @ d${depth}` : ''}`, `${f(tgS.mean)} ± ${f(tgS.sd)} tok/s`]] : []),
        ['load', `${f(loadS)} s`],
        ['repacked weights', prepared.source === 'none' ? 'none (rows as stored)' : `${f(prepared.repackedBytes / 1e9, 2)} GB ${prepared.source === 'mapped' ? 'mapped from' : prepared.source === 'built' ? 'repacked into' : 'repacked in memory'}${prepared.file ? ` ${prepared.file}` : ''} (${f(prepared.seconds)} s)`],
        ['peak RSS', `${f(result.rss_mb, 0)} MB`],
        ...(result.pool_jobs_per_token !== null && result.pool_job_overhead_us !== null
          ? [['thread pool', `${f(result.pool_jobs_per_token, 0)} jobs per token × ${f(result.pool_job_overhead_us)} µs = ${f(result.pool_overhead_pct_of_tg ?? 0, 1)} % of a decode step`]]
          : []),
        ['latent cache', `${result.cache_bytes_per_token} bytes/token (${cacheType})`],
        ['weights read per token', `${f(active / 1e9, 3)} GB`],
        ['read bandwidth', bandwidth ? `${f(bandwidth / 1e9)} GB/s (${threads} threads)` : 'n/a (no native addon)'],
        ['decode ceiling', ceiling ? `${f(ceiling)} tok/s; tg at ${f(result.tg_pct_of_ceiling ?? 0, 1)} %` : 'n/a'],
      ];
      const w = Math.max(...rows.map((r) => r[0]!.length));
      process.stdout.write(`${rows.map(([k, v]) => `${k!.padEnd(w)}  ${v}`).join('\n')}\n`);
    });
}
