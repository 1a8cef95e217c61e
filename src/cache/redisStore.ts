/**
 * Context pages in Redis (or Valkey, or a Redis Cluster) through `@redis/client`, the core of
 * node-redis: the client Redis itself maintains, with TLS (`rediss://`), ACL users, RESP3,
 * Cluster and automatic reconnection, and no dependencies of its own. (ioredis is stable but
 * maintained on a best-effort basis and points new projects to node-redis.)
 *
 * Redis decides what to forget: run it with `maxmemory` and `maxmemory-policy allkeys-lru` (see
 * deploy/redis.conf); an optional TTL bounds how long a page lives. Keys are
 * `dseek:ctx:<model and geometry namespace>:<salted prefix hash>`; each page is read with its own
 * GET (issued together, so they are pipelined on one connection), which works unchanged on a
 * Cluster, where one MGET could not span hash slots.
 *
 * Commands fail at once while the connection is down (`disableOfflineQueue`) instead of queueing
 * megabytes of pages for later: the caller counts the failure and computes the prompt.
 */
import { createClient, createCluster, RESP_TYPES } from '@redis/client';
import type { ContextStore, ContextStoreSpec } from './contextStore.js';
import { redact } from './contextStore.js';

const KEY_PREFIX = 'dseek:ctx:';

/** The three commands used, as both the single-node and the cluster client offer them (bytes in, bytes out). */
interface RedisCommands {
  get(key: string): Promise<Buffer | null>;
  set(key: string, value: Buffer, options?: { expiration: { type: 'EX'; value: number } }): Promise<unknown>;
  del(key: string): Promise<number>;
  close(): Promise<void>;
}

/** Reconnect after 100 ms, doubling to at most 2 s: a restarted Redis is found again within seconds. */
const reconnectStrategy = (retries: number): number => Math.min(100 * 2 ** retries, 2000);

export class RedisStore implements ContextStore {
  readonly kind = 'redis' as const;
  readonly location: string;
  /** Settles true on the first connection, false if the client gave up (it retries otherwise). */
  private connected: Promise<boolean> = Promise.resolve(false);

  private constructor(
    private readonly client: RedisCommands,
    url: string,
    private readonly ttlSeconds: number,
  ) {
    this.location = redact(url);
  }

  /**
   * Connects in the background: a replica whose Redis is down at start still serves (uncached) and
   * picks the store up once it answers.
   */
  static open(spec: Extract<ContextStoreSpec, { kind: 'redis' }>, log: (line: string) => void): RedisStore {
    const url = new URL(spec.url);
    const socket = { connectTimeout: 2000, reconnectStrategy, ...(url.protocol === 'rediss:' ? { tls: true as const } : {}) };
    const typeMapping = { [RESP_TYPES.BLOB_STRING]: Buffer };
    let client: RedisCommands;
    let emitter: { on(event: 'error', listener: (err: Error) => void): unknown };
    let connect: () => Promise<unknown>;
    if (spec.cluster) {
      const cluster = createCluster({
        rootNodes: [{ url: `${url.protocol}//${url.host}` }],
        defaults: {
          socket,
          disableOfflineQueue: true,
          ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
          ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
        },
      }).withTypeMapping(typeMapping);
      client = cluster as unknown as RedisCommands;
      emitter = cluster;
      connect = () => cluster.connect();
    } else {
      const single = createClient({ url: spec.url, socket, disableOfflineQueue: true }).withTypeMapping(typeMapping);
      client = single as unknown as RedisCommands;
      emitter = single;
      connect = () => single.connect();
    }
    // Without a listener an 'error' event would end the engine thread. Errors surface through the
    // failing commands instead (counted, logged once per state change by ContextCache).
    emitter.on('error', () => {});
    const store = new RedisStore(client, spec.url, spec.ttlSeconds);
    store.connected = connect().then(
      () => true,
      (err: Error) => {
        log(`context store ${store.location}: could not connect: ${err.message}`);
        return false;
      },
    );
    return store;
  }

  /**
   * Wait (at most `ms`) for the first connection, so that a replica starting beside a running
   * Redis serves its first requests from it rather than calling the store down. False: not yet.
   */
  waitConnected(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([this.connected, new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]).finally(() => clearTimeout(timer));
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return Promise.all(keys.map((k) => this.client.get(KEY_PREFIX + k)));
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const value = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    await this.client.set(KEY_PREFIX + key, value, this.ttlSeconds > 0 ? { expiration: { type: 'EX', value: this.ttlSeconds } } : undefined);
  }

  async delete(key: string): Promise<void> {
    await this.client.del(KEY_PREFIX + key);
  }

  usage(): null {
    return null;
  }

  async close(): Promise<void> {
    try {
      await this.client.close();
    } catch {
      // already closed or never connected
    }
  }
}
