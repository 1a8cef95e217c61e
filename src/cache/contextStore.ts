/**
 * Where context-cache pages live beyond one process's memory: a folder (folderStore.ts) or Redis
 * (redisStore.ts). A store only moves opaque bytes under string keys; framing and checking them
 * is pageCodec.ts, and deciding when to ask (never on the decode path) is contextCache.ts.
 *
 * Every method may reject (the store is down, slow, full): callers treat a rejection as a miss or
 * a dropped write, never as a request failure.
 */
import { InvalidInputError } from '../errors.js';

export interface ContextStore {
  /** For logs and metrics: `folder /path` or `redis://host:port/db` (never a password). */
  readonly location: string;
  readonly kind: 'folder' | 'redis';
  /** The bytes stored under each key, or null where there are none; one result per key, in order. */
  get(keys: readonly string[]): Promise<(Uint8Array | null)[]>;
  /** Store `bytes` under `key` (replacing what was there). */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** Forget `key` (a page that failed its checks, so that it is recomputed and rewritten). */
  delete(key: string): Promise<void>;
  /** What the store holds, where it can tell cheaply (a folder counts its files; Redis does not say). */
  usage(): { readonly bytes: number; readonly entries: number } | null;
  close(): Promise<void>;
}

/** Where `--context-store` (or loadModel's `contextStore`) points. */
export type ContextStoreSpec =
  | { readonly kind: 'folder'; readonly dir: string; /** Size cap in bytes (least recently used files go first). */ readonly maxBytes: number }
  | {
      readonly kind: 'redis';
      /** redis://[user:pass@]host:port[/db], rediss:// for TLS. */
      readonly url: string;
      /** Redis Cluster: the URL's host is one seed node; the client discovers the rest. */
      readonly cluster: boolean;
      /** Seconds a page lives in Redis (refreshed by nothing); 0: until Redis evicts it. */
      readonly ttlSeconds: number;
    };

/**
 * `--context-store`: `redis://…` / `rediss://…` (Redis or Valkey), `redis+cluster://…` /
 * `rediss+cluster://…` (Redis Cluster, any one node), or a folder path (`file:///path` or a plain
 * path). Throws InvalidInputError naming the flag for anything else.
 */
export function parseContextStore(value: string, options: { readonly maxBytes: number; readonly ttlSeconds: number; readonly field?: string }): ContextStoreSpec {
  const field = options.field ?? '--context-store';
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    if (value === '') throw new InvalidInputError(field, 'empty: give redis://host:port or a folder path');
    return { kind: 'folder', dir: value, maxBytes: options.maxBytes };
  }
  if (scheme === 'file') return { kind: 'folder', dir: decodeURIComponent(new URL(value).pathname), maxBytes: options.maxBytes };
  const cluster = scheme.endsWith('+cluster');
  const base = cluster ? scheme.slice(0, -'+cluster'.length) : scheme;
  if (base !== 'redis' && base !== 'rediss') {
    throw new InvalidInputError(field, `unknown scheme ${scheme}://: use redis://[user:pass@]host:port[/db], rediss:// for TLS, redis+cluster:// for Redis Cluster, or a folder path`);
  }
  let url: URL;
  try {
    url = new URL(`${base}${value.slice(scheme.length)}`);
  } catch {
    throw new InvalidInputError(field, `${redact(value)} is not a URL: use redis://[user:pass@]host:port[/db]`);
  }
  if (url.hostname === '') throw new InvalidInputError(field, `${redact(value)} names no host`);
  const db = url.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) throw new InvalidInputError(field, `database "${db}" must be a number (redis://host:port/0)`);
  if (cluster && db !== '' && db !== '0') throw new InvalidInputError(field, 'Redis Cluster has only database 0');
  if (!Number.isFinite(options.ttlSeconds) || options.ttlSeconds < 0) throw new InvalidInputError('--context-store-ttl', `must be ≥ 0 seconds, got ${options.ttlSeconds}`);
  return { kind: 'redis', url: url.toString(), cluster, ttlSeconds: Math.floor(options.ttlSeconds) };
}

/** A store URL for logs: the password replaced by `***`. */
export function redact(url: string): string {
  return url.replace(/^([a-z+]+:\/\/)([^@/]*):([^@/]*)@/i, (_, s: string, user: string) => `${s}${user}:***@`);
}
