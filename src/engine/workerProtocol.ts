/** Messages between the engine worker thread and its host (structured-clone data only). */
import type { BackendChoice } from '../kernels/select.js';
import type { ContextStoreSpec } from '../cache/contextStore.js';
import type { SchedulerOptions } from './scheduler.js';
import type { EngineEvent, EngineRequest, EngineStats } from './types.js';

/** The scheduler's options that can cross a thread boundary (no disk cache object, no callbacks). */
export type WorkerSchedulerOptions = Omit<SchedulerOptions, 'contextCache' | 'log'>;

export interface WorkerInit {
  readonly modelPath: string;
  readonly backend: BackendChoice;
  readonly threads: number;
  readonly scheduler: WorkerSchedulerOptions;
  /** Where pages go beyond memory (a folder or Redis); null: nowhere. */
  readonly contextStore: ContextStoreSpec | null;
  /** How long an admitted request waits for its pages from the store (ms). */
  readonly contextStoreTimeoutMs?: number;
  /** false: keep weights in the file's rows (no repacking for the kernels). */
  readonly repack?: boolean;
  /** Size cap of the repacked-weights cache in MiB. */
  readonly repackCacheMiB?: number;
}

export interface EngineInfo {
  readonly backend: string;
  readonly contextLength: number;
  readonly cacheBytesBudget: number;
  readonly cacheBytesPerToken: number;
  /** The folder store's folder, or null (no store, or Redis). */
  readonly diskCacheDir: string | null;
  /** The context store for logs (`folder /path`, `redis://host:port/0`), or null. */
  readonly contextStore: string | null;
}

export interface SerializedError {
  readonly name: string;
  readonly code: string;
  readonly message: string;
  /** The error's own plain fields (`field`, `file`, `limit`, …), so the host can rebuild its class. */
  readonly fields?: Readonly<Record<string, string | number | boolean | null>>;
}

/** An error as it crosses the thread boundary: name, code, message and its plain own fields. */
export function serializeError(err: unknown): SerializedError {
  const e: Error & { code?: unknown } = err instanceof Error ? err : new Error(String(err));
  const fields: Record<string, string | number | boolean | null> = {};
  for (const [key, value] of Object.entries(e)) {
    if (key === 'code' || key === 'name' || key === 'message') continue;
    if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) fields[key] = value as string | number | boolean | null;
  }
  return { name: e.name, code: typeof e.code === 'string' ? e.code : 'internal', message: e.message, fields };
}

export type ToWorker =
  | { readonly type: 'submit'; readonly id: number; readonly request: EngineRequest }
  | { readonly type: 'cancel'; readonly id: number }
  | { readonly type: 'close'; readonly deadlineMs: number };

export type FromWorker =
  | { readonly type: 'ready'; readonly info: EngineInfo; readonly stats: EngineStats }
  | { readonly type: 'fatal'; readonly error: SerializedError }
  | { readonly type: 'event'; readonly id: number; readonly event: EngineEvent }
  | { readonly type: 'error'; readonly id: number; readonly error: SerializedError }
  | { readonly type: 'stats'; readonly stats: EngineStats }
  | { readonly type: 'log'; readonly line: string }
  /** Repacking weights for the kernels during the load: bytes done of total. */
  | { readonly type: 'progress'; readonly phase: 'repack'; readonly done: number; readonly total: number }
  | { readonly type: 'closed' };
