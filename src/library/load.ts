/**
 * `loadModel`: resolve the source (download a hub id), read its config and tokenizer here, then
 * start the engine worker, which maps the weights and runs the scheduler. The synchronous loader
 * of model/load.ts runs inside that worker; this wraps it so callers get a promise, progress and
 * cancellation.
 */
import { basename } from 'node:path';
import { AbortError, InvalidInputError } from '../errors.js';
import { WorkerEngine } from '../engine/workerEngine.js';
import { loadModelTokenizer } from '../model/load.js';
import { countParameters } from '../model/params.js';
import { defaultThreads } from '../kernels/native/index.js';
import { DEEPSEEK_V2_LAUNCH_PRICES, type PriceTable } from '../server/prices.js';
import { Model } from './model.js';
import { reviveError } from './errors.js';
import { readModelConfig, resolveModelSource } from './source.js';
import { parseContextStore, type ContextStoreSpec } from '../cache/contextStore.js';
import { parseCacheType, type CacheType } from '../cache/pagePool.js';

/** Progress of a load, phase by phase. */
export type LoadProgress =
  /** A hub id's files coming down (once; later loads read the cache). `totalBytes` is 0 when unknown. */
  | { readonly phase: 'download'; readonly file: string; readonly bytes: number; readonly totalBytes: number }
  /** Mapping the weights and preparing them for the kernels, in the engine thread: `done` of `total` steps. */
  | { readonly phase: 'load'; readonly done: number; readonly total: number }
  /** Weights being repacked into the kernels' own layout (first load of a file; later loads map the cache): bytes. */
  | { readonly phase: 'repack'; readonly done: number; readonly total: number }
  /** The engine is running: calls can be made. */
  | { readonly phase: 'ready' };

export interface LoadModelOptions {
  /** Kernel threads (default: the machine's cores). */
  readonly threads?: number;
  /** Tokens per sequence, prompt + answer (default min(4096, the model's)). */
  readonly contextSize?: number;
  /**
   * Latent-cache storage (default f16; f32 doubles the memory, for exactness studies; q8 stores
   * ggml Q8_0 blocks, 34 bytes per 32 values: 53 % of f16, 16,524 bytes per token for V2-Lite).
   */
  readonly cacheType?: CacheType;
  /** `auto` (native kernels if built, else the TypeScript reference), `native` (fail without them) or `reference`. */
  readonly backend?: 'auto' | 'native' | 'reference';
  /** Cancels the download or load: loadModel rejects with an AbortError and the engine thread stops. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: LoadProgress) => void;
  /** Sequences decoded at once (default 16); more calls wait in the queue. */
  readonly parallel?: number;
  /** Calls that may wait for a slot before new ones fail with QueueFullError (default 64). */
  readonly maxQueue?: number;
  /** Prompt tokens processed per engine step, across sequences (default 256). */
  readonly chunkTokens?: number;
  /** Tokens per cache page, the prefix-cache unit (default 64). */
  readonly pageTokens?: number;
  /** Latent-cache memory budget in bytes (default: every parallel sequence at full context, twice). */
  readonly cacheBudgetBytes?: number;
  /** Reuse prompt prefixes across calls (default true). */
  readonly prefixCache?: boolean;
  /** Keep prefix pages on disk here too, so a restart still hits (default: no disk cache). Shorthand for a folder `contextStore`. */
  readonly diskCacheDir?: string;
  /** Size cap of the folder store in bytes (default 4 GiB). */
  readonly diskCacheMaxBytes?: number;
  /**
   * Where prefix pages are shared beyond this process: `redis://[user:pass@]host:port[/db]`
   * (`rediss://` for TLS, `redis+cluster://` for Redis Cluster; Valkey too) or a folder path.
   * Replicas pointed at one store hit each other's pages. Overrides `diskCacheDir`.
   */
  readonly contextStore?: string;
  /** Seconds a page lives in Redis (default 0: until Redis's own eviction takes it). */
  readonly contextStoreTtlSeconds?: number;
  /** How long a request waits for its pages from the store before computing them (default 2000 ms). */
  readonly contextStoreTimeoutMs?: number;
  /** Prices `usage.cost` is computed at (default DeepSeek-V2's launch prices). */
  readonly prices?: PriceTable;
  /**
   * Repack block-quantised weights into the kernels' interleaved layout (default true): done once
   * per file and kept in ~/.cache/dseek/repacked (or $DSEEK_REPACK_DIR), mapped on later loads.
   */
  readonly repack?: boolean;
  /** Size cap of that cache in MiB (default 65,536; least recently used files go first). */
  readonly repackCacheMiB?: number;
  /** Engine log lines (preemptions, disk-cache problems). Default: dropped. */
  readonly log?: (line: string) => void;
}

const GiB = 2 ** 30;

/**
 * Loads a model: a Hugging Face folder, a `.gguf` file, a hub id such as
 * `deepseek-ai/DeepSeek-V2-Lite-Chat` (downloaded once into the cache), or the bundled model when
 * `source` is omitted. Rejects with ModelFormatError, UnsupportedConfigError, TensorShapeError,
 * HubDownloadError, InvalidInputError (a bad option) or AbortError.
 */
export async function loadModel(source?: string, options: LoadModelOptions = {}): Promise<Model> {
  const { signal, onProgress } = options;
  try {
    signal?.throwIfAborted();
    const path = await resolveModelSource(source, {
      ...(signal ? { signal } : {}),
      ...(onProgress ? { onDownload: (file: string, bytes: number, totalBytes: number) => onProgress({ phase: 'download', file, bytes, totalBytes }) } : {}),
    });
    signal?.throwIfAborted();
    const config = readModelConfig(path);
    const tokenizer = loadModelTokenizer(path);
    const backend = options.backend ?? 'auto';
    if (!['auto', 'native', 'reference'].includes(backend)) throw new InvalidInputError('backend', `must be auto, native or reference, got ${String(backend)}`);
    const cacheType = parseCacheType(options.cacheType ?? 'f16', 'cacheType');
    const contextSize = Math.min(options.contextSize ?? 4096, config.maxPositionEmbeddings);
    if (!Number.isSafeInteger(contextSize) || contextSize < 2) throw new InvalidInputError('contextSize', `must be an integer ≥ 2, got ${String(options.contextSize)}`);
    const maxBytes = options.diskCacheMaxBytes ?? 4 * GiB;
    const contextStore: ContextStoreSpec | null =
      options.contextStore !== undefined
        ? parseContextStore(options.contextStore, { maxBytes, ttlSeconds: options.contextStoreTtlSeconds ?? 0, field: 'contextStore' })
        : options.diskCacheDir !== undefined
          ? { kind: 'folder', dir: options.diskCacheDir, maxBytes }
          : null;
    if (options.contextStoreTimeoutMs !== undefined && !(options.contextStoreTimeoutMs >= 0)) {
      throw new InvalidInputError('contextStoreTimeoutMs', `must be ≥ 0 ms, got ${String(options.contextStoreTimeoutMs)}`);
    }
    onProgress?.({ phase: 'load', done: 0, total: 1 });
    const engine = await WorkerEngine.start(
      {
        modelPath: path,
        backend,
        threads: options.threads ?? defaultThreads(),
        scheduler: {
          contextLength: contextSize,
          cacheType,
          ...(options.parallel !== undefined ? { maxSequences: options.parallel } : {}),
          ...(options.maxQueue !== undefined ? { maxQueue: options.maxQueue } : {}),
          ...(options.chunkTokens !== undefined ? { chunkTokens: options.chunkTokens } : {}),
          ...(options.pageTokens !== undefined ? { pageTokens: options.pageTokens } : {}),
          ...(options.cacheBudgetBytes !== undefined ? { cacheBudgetBytes: options.cacheBudgetBytes } : {}),
          ...(options.prefixCache !== undefined ? { prefixCache: options.prefixCache } : {}),
        },
        contextStore,
        ...(options.contextStoreTimeoutMs !== undefined ? { contextStoreTimeoutMs: options.contextStoreTimeoutMs } : {}),
        ...(options.repack !== undefined ? { repack: options.repack } : {}),
        ...(options.repackCacheMiB !== undefined ? { repackCacheMiB: options.repackCacheMiB } : {}),
      },
      options.log ?? (() => {}),
      signal,
      onProgress ? (done, total) => onProgress({ phase: 'repack', done, total }) : undefined,
    );
    onProgress?.({ phase: 'load', done: 1, total: 1 });
    const model = new Model({
      engine,
      tokenizer,
      contextSize: engine.info.contextLength,
      prices: options.prices ?? DEEPSEEK_V2_LAUNCH_PRICES,
      name: basename(path).replace(/\.gguf$/, ''),
      info: {
        path,
        config,
        parameters: countParameters(config),
        cacheBytesPerToken: engine.info.cacheBytesPerToken,
        cacheType,
        contextSize: engine.info.contextLength,
        kernels: engine.info.backend,
        hasTokenizer: tokenizer !== null,
        hasChatTemplate: tokenizer?.chatTemplate != null,
        diskCacheDir: engine.info.diskCacheDir,
        contextStore: engine.info.contextStore,
      },
    });
    onProgress?.({ phase: 'ready' });
    return model;
  } catch (err) {
    if (signal?.aborted && !(err instanceof AbortError)) throw new AbortError('loadModel', signal.reason);
    throw reviveError(err);
  }
}
