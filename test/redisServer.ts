/**
 * A throwaway redis-server (Debian's package; `.ci/run` installs it) for the shared-cache tests:
 * on loopback, on a free port chosen at start (never a fixed one), without persistence, with the
 * eviction policy deploy/redis.conf recommends. Tests skip with `redisSkipReason` when it is missing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

function findRedisServer(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = r.stdout.trim();
  return r.status === 0 && path !== '' ? path : null;
}

export const redisServerPath = findRedisServer();
/** Why the Redis tests cannot run here, or false when they can (node:test's `skip` option). */
export const redisSkipReason: string | false = redisServerPath ? false : 'redis-server is not installed (apt-get install redis-server; .ci/run does)';

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** Kill it (SIGKILL: as a crash looks to its clients). */
  kill(): Promise<void>;
  /** Start it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function launch(port: number): Promise<ChildProcess> {
  const proc = spawn(
    redisServerPath!,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory', '256mb', '--maxmemory-policy', 'allkeys-lru', '--protected-mode', 'yes'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start on port ${port}:\n${out}`)), 10_000);
    const onData = (b: Buffer) => {
      out += b.toString();
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}:\n${out}`));
    });
  });
  proc.stdout!.resume();
  proc.stderr!.resume();
  return proc;
}

function exited(proc: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill(signal);
  });
}

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  let proc = await launch(port);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: () => exited(proc, 'SIGKILL'),
    restart: async () => {
      await exited(proc, 'SIGKILL');
      proc = await launch(port);
    },
    stop: () => exited(proc, 'SIGTERM'),
  };
}
