/** `dseek serve`: the OpenAI-compatible server over the worker-thread engine. */
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import { InvalidInputError } from '../errors.js';
import { loadModelTokenizer } from '../model/load.js';
import { createServer, DEEPSEEK_V2_LAUNCH_PRICES, loadModel, type PriceTable } from '../index.js';
import { DEFAULT_ALIASES, type CacheIsolation } from '../server/index.js';
import { defaultThreads } from '../kernels/native/index.js';
import type { BackendChoice } from '../kernels/select.js';
import { parseInteger, parseNumber, repackFromFlags, resolveModelPath, type RepackFlags } from './args.js';
import { parseCacheType } from '../cache/pagePool.js';

interface ServeFlags extends RepackFlags {
  model?: string;
  host: string;
  port: string;
  apiKey?: string;
  ctxSize?: string;
  parallel: string;
  queue: string;
  chunk: string;
  cacheType: string;
  cacheBudget?: string;
  pageTokens: string;
  prefixCache: boolean;
  diskCache: boolean;
  diskCacheDir?: string;
  diskCacheSize: string;
  contextStore?: string;
  contextStoreTtl: string;
  contextStoreTimeout: string;
  threads?: string;
  backend: BackendChoice;
  timeout: string;
  priceInputMiss?: string;
  priceInputHit?: string;
  priceOutput?: string;
  currency: string;
  open?: boolean;
  cacheIsolation?: string;
  alias: string[];
  defaultAliases: boolean;
  cors: string[];
  allowUnknownFields?: boolean;
  reasoningInline?: boolean;
  machineCostPerHour?: string;
}

/** Commander's accumulator for repeatable options. */
const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** Where context-cache units live unless --disk-cache-dir says otherwise. */
export function defaultDiskCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'dseek', 'context');
}

const MB = 1024 * 1024;

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('OpenAI-compatible HTTP server with continuous batching and context caching')
    .option('-m, --model <path>', 'model folder or .gguf file (default: the bundled model)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', '8080')
    .option('--api-key <keys>', 'require `Authorization: Bearer <key>` on /v1/* and /metrics; several keys separated by commas (default: $DSEEK_API_KEY)')
    .option('--cache-isolation <mode>', 'who shares prefix-cache pages: none, key (per API key) or user (per key and `user` field); default key with --api-key, else none')
    .option('-c, --ctx-size <n>', 'context window per sequence (default: min(4096, the model’s))')
    .option('--parallel <n>', 'sequences decoded at once', '16')
    .option('--queue <n>', 'requests that may wait for a slot before 429', '64')
    .option('--chunk <n>', 'prompt tokens processed per step (long prompts are split)', '256')
    .option('--cache-type <type>', 'latent cache storage: f16, f32 or q8 (8-bit blocks, 53 % of f16)', 'f16')
    .option('--cache-budget <MB>', 'latent cache memory budget in MiB (default: 2 × parallel × context)')
    .option('--page-tokens <n>', 'tokens per cache page and context-cache unit', '64')
    .option('--no-prefix-cache', 'do not reuse prompt prefixes in memory')
    .option('--no-disk-cache', 'do not keep prefixes on disk')
    .option('--disk-cache-dir <dir>', 'where prefix units are stored on disk', defaultDiskCacheDir())
    .option('--disk-cache-size <MB>', 'disk cache size cap in MiB', '4096')
    .option('--context-store <url>', 'share prefix pages with other replicas: redis://[user:pass@]host:port[/db], rediss:// (TLS), redis+cluster://, or a folder (replaces the disk cache)')
    .option('--context-store-ttl <s>', 'seconds a page lives in Redis (0: until Redis evicts it)', '0')
    .option('--context-store-timeout <ms>', 'how long a request waits for its pages from the store before computing them', '2000')
    .option('--no-repack', "keep weights in the file's rows (no kernel-owned layout)")
    .option('--repack-cache-size <MiB>', 'cap of the repacked-weights cache (~/.cache/dseek/repacked)')
    .option('--threads <n>', `kernel threads (default: ${defaultThreads()})`)
    .option('--backend <name>', 'kernels: auto, native or reference', 'auto')
    .option('--timeout <s>', 'per-request timeout in seconds', '600')
    .option('--price-input-miss <p>', `price per 1M prompt tokens on a cache miss (default ${DEEPSEEK_V2_LAUNCH_PRICES.inputCacheMissPerMillion})`)
    .option('--price-input-hit <p>', `price per 1M prompt tokens on a cache hit (default ${DEEPSEEK_V2_LAUNCH_PRICES.inputCacheHitPerMillion})`)
    .option('--price-output <p>', `price per 1M generated tokens (default ${DEEPSEEK_V2_LAUNCH_PRICES.outputPerMillion})`)
    .option('--currency <code>', 'currency of the prices', DEEPSEEK_V2_LAUNCH_PRICES.currency)
    .option('--open', 'open the chat page in the default browser')
    .option('--alias <name>', 'another name clients may send as `model` (repeatable; deepseek-chat and deepseek-reasoner are accepted unless --no-default-aliases)', collect, [])
    .option('--no-default-aliases', 'do not accept deepseek-chat and deepseek-reasoner as the model name')
    .option('--cors <origin>', 'let browser pages from this origin call the API (repeatable; * for any)', collect, [])
    .option('--allow-unknown-fields', 'ignore request fields the API does not know instead of answering 400')
    .option('--reasoning-inline', "keep a thinking model's reasoning in content instead of reasoning_content")
    .option('--machine-cost-per-hour <price>', "what the machine costs per hour (in --currency): usage.cost adds each request's share of the measured engine time")
    .action(async (flags: ServeFlags) => {
      const modelPath = resolve(await resolveModelPath(flags.model));
      if (!['auto', 'native', 'reference'].includes(flags.backend)) {
        throw new InvalidInputError('--backend', `must be auto, native or reference, got ${flags.backend}`);
      }
      const cacheType = parseCacheType(flags.cacheType, '--cache-type');
      const apiKeys = parseApiKeys(flags.apiKey ?? process.env['DSEEK_API_KEY']);
      const cacheIsolation = parseCacheIsolation(flags.cacheIsolation, apiKeys.length > 0);
      const port = parseInteger('--port', flags.port);
      if (port > 65535) throw new InvalidInputError('--port', `must be ≤ 65535, got ${port}`);
      if (!loadModelTokenizer(modelPath)) throw new InvalidInputError('--model', `${modelPath} has no tokenizer: the server needs one to read text`);
      const prices: PriceTable = {
        currency: flags.currency,
        inputCacheMissPerMillion: flags.priceInputMiss !== undefined ? parseNumber('--price-input-miss', flags.priceInputMiss) : DEEPSEEK_V2_LAUNCH_PRICES.inputCacheMissPerMillion,
        inputCacheHitPerMillion: flags.priceInputHit !== undefined ? parseNumber('--price-input-hit', flags.priceInputHit) : DEEPSEEK_V2_LAUNCH_PRICES.inputCacheHitPerMillion,
        outputPerMillion: flags.priceOutput !== undefined ? parseNumber('--price-output', flags.priceOutput) : DEEPSEEK_V2_LAUNCH_PRICES.outputPerMillion,
      };
      const log = (line: string) => process.stderr.write(`${line}\n`);
      // The same loadModel and createServer a library user calls.
      const model = await loadModel(modelPath, {
        backend: flags.backend,
        threads: flags.threads !== undefined ? parseInteger('--threads', flags.threads, 1) : defaultThreads(),
        ...(flags.ctxSize !== undefined ? { contextSize: parseInteger('--ctx-size', flags.ctxSize, 2) } : {}),
        cacheType,
        parallel: parseInteger('--parallel', flags.parallel, 1),
        maxQueue: parseInteger('--queue', flags.queue, 0),
        chunkTokens: parseInteger('--chunk', flags.chunk, 1),
        pageTokens: parseInteger('--page-tokens', flags.pageTokens, 1),
        ...(flags.cacheBudget !== undefined ? { cacheBudgetBytes: parseNumber('--cache-budget', flags.cacheBudget) * MB } : {}),
        prefixCache: flags.prefixCache,
        // The disk cache is reached through the prefix tree: without one it would never be read.
        ...(flags.prefixCache && flags.contextStore !== undefined
          ? {
              contextStore: /^[a-z][a-z0-9+.-]*:\/\//i.test(flags.contextStore) ? flags.contextStore : resolve(flags.contextStore),
              contextStoreTtlSeconds: parseNumber('--context-store-ttl', flags.contextStoreTtl),
            }
          : flags.diskCache && flags.prefixCache
            ? { diskCacheDir: resolve(flags.diskCacheDir ?? defaultDiskCacheDir()) }
            : {}),
        contextStoreTimeoutMs: parseNumber('--context-store-timeout', flags.contextStoreTimeout),
        diskCacheMaxBytes: parseNumber('--disk-cache-size', flags.diskCacheSize) * MB,
        prices,
        ...repackFromFlags(flags),
        log,
      });
      const server = createServer({
        model,
        ...(apiKeys.length > 0 ? { apiKey: apiKeys } : {}),
        cacheIsolation,
        aliases: [...(flags.defaultAliases ? DEFAULT_ALIASES : []), ...flags.alias],
        ...(flags.cors.length > 0 ? { corsOrigins: flags.cors } : {}),
        allowUnknownFields: flags.allowUnknownFields === true,
        reasoningInline: flags.reasoningInline === true,
        ...(flags.machineCostPerHour !== undefined ? { machineCostPerHour: parseNumber('--machine-cost-per-hour', flags.machineCostPerHour) } : {}),
        requestTimeoutMs: parseNumber('--timeout', flags.timeout) * 1000,
        log,
      });
      await new Promise<void>((done, fail) => {
        server.once('error', fail);
        server.listen(port, flags.host, () => {
          server.off('error', fail);
          done();
        });
      });
      const { address, port: bound } = server.address() as AddressInfo;
      const url = `http://${address.includes(':') ? `[${address}]` : address}:${bound}`;
      const info = model.info;
      const budget = model.stats().cacheBytesBudget;
      const budgetTokens = Math.floor(budget / info.cacheBytesPerToken);
      log(`dseek serving ${modelPath}`);
      log(`  kernels: ${info.kernels}`);
      log(`  context: ${info.contextSize} tokens per sequence, ${flags.parallel} in parallel`);
      log(`  latent cache: ${budgetTokens} tokens (${(budget / MB).toFixed(1)} MiB at ${info.cacheBytesPerToken} bytes per token, ${cacheType})`);
      log(`  prefix cache: ${flags.prefixCache ? `on, isolation ${cacheIsolation}${cacheIsolation === 'none' ? ' (one pool: a cache hit tells a caller that someone sent that prefix)' : ''}` : 'off (--no-prefix-cache)'}`);
      log(
        `  context store: ${info.contextStore ?? (!flags.prefixCache ? 'off (--no-prefix-cache turns it off too: it is read through the prefix tree)' : 'off (--no-disk-cache)')}` +
          (info.contextStore?.startsWith('folder') === false ? ` (timeout ${flags.contextStoreTimeout} ms${Number(flags.contextStoreTtl) > 0 ? `, TTL ${flags.contextStoreTtl} s` : ''})` : ''),
      );
      if (apiKeys.length > 0) log(`  API keys: ${apiKeys.length}`);
      log(`  model names: ${[basename(modelPath), ...(flags.defaultAliases ? DEFAULT_ALIASES : []), ...flags.alias].join(', ')}`);
      if (flags.cors.length > 0) log(`  CORS: ${flags.cors.join(', ')}`);
      log(`  listening on ${url}  (chat page: ${url}/, API: ${url}/v1)`);
      if (flags.open) openBrowser(url);

      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log(`${signal}: finishing in-flight requests (up to 10 s)…`);
        void server
          .shutdown(10_000)
          .then(() => model.close(1000))
          .then(() => process.exit(0));
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}

/** `--api-key a,b` (or $DSEEK_API_KEY): the accepted keys, none when unset. */
export function parseApiKeys(value: string | undefined): string[] {
  if (value === undefined || value === '') return [];
  const keys = value.split(',').map((k) => k.trim());
  if (keys.some((k) => k === '')) throw new InvalidInputError('--api-key', 'an empty key in the list: separate non-empty keys with commas');
  return keys;
}

export function parseCacheIsolation(value: string | undefined, haveKeys: boolean): CacheIsolation {
  if (value === undefined) return haveKeys ? 'key' : 'none';
  if (value !== 'none' && value !== 'key' && value !== 'user') throw new InvalidInputError('--cache-isolation', `must be none, key or user, got ${value}`);
  if (value === 'key' && !haveKeys) throw new InvalidInputError('--cache-isolation', 'key needs --api-key (or $DSEEK_API_KEY): without keys every caller is the same tenant');
  return value;
}

function openBrowser(url: string): void {
  const command = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'cmd' : 'xdg-open';
  const args = process.platform === 'win32' ? ['/c', 'start', '', url] : [url];
  try {
    const child = spawn(command, args, { stdio: 'ignore', detached: true });
    child.on('error', () => process.stderr.write(`could not open a browser: visit ${url}\n`));
    child.unref();
  } catch {
    process.stderr.write(`could not open a browser: visit ${url}\n`);
  }
}
