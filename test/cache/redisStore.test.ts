/**
 * RedisStore against a real redis-server (started here on a free loopback port): bytes round-trip,
 * the TTL is set, a Redis that is not there yet fails fast and is found once it starts, and a
 * Redis Cluster (one node owning every slot) works through the same interface.
 * Skipped, saying why, without redis-server.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@redis/client';
import { RedisStore } from '../../src/cache/redisStore.js';
import { parseContextStore } from '../../src/cache/contextStore.js';
import { freePort, redisServerPath, redisSkipReason, startRedis, type RedisServer } from '../redisServer.js';

const skip = redisSkipReason;
const cleanup: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});
const spec = (url: string, ttlSeconds = 0) => parseContextStore(url, { maxBytes: 0, ttlSeconds }) as Extract<ReturnType<typeof parseContextStore>, { kind: 'redis' }>;

test('--context-store parsing: redis, rediss, cluster, folders; bad values name the flag', () => {
  assert.deepEqual(parseContextStore('redis://u:p@h:6380/2', { maxBytes: 1, ttlSeconds: 60 }), { kind: 'redis', url: 'redis://u:p@h:6380/2', cluster: false, ttlSeconds: 60 });
  assert.equal((parseContextStore('rediss://h:6380', { maxBytes: 1, ttlSeconds: 0 }) as { url: string }).url, 'rediss://h:6380');
  assert.equal((parseContextStore('redis+cluster://h:7000', { maxBytes: 1, ttlSeconds: 0 }) as { cluster: boolean }).cluster, true);
  assert.deepEqual(parseContextStore('/var/cache/dseek', { maxBytes: 5, ttlSeconds: 0 }), { kind: 'folder', dir: '/var/cache/dseek', maxBytes: 5 });
  assert.throws(() => parseContextStore('memcached://h:11211', { maxBytes: 1, ttlSeconds: 0 }), /--context-store: unknown scheme/);
  assert.throws(() => parseContextStore('redis://h:6379/x', { maxBytes: 1, ttlSeconds: 0 }), /database "x" must be a number/);
  assert.throws(() => parseContextStore('redis://h', { maxBytes: 1, ttlSeconds: -1 }), /--context-store-ttl/);
});

test('bytes round-trip through Redis, with the TTL set; a missing key is null; the password never shows in the location', { skip }, async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const store = RedisStore.open(spec(redis.url, 120), () => {});
  cleanup.push(() => store.close());
  assert.equal(await store.waitConnected(5000), true);
  const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
  await store.put('ns:one', bytes);
  const [found, missing] = await store.get(['ns:one', 'ns:two']);
  assert.deepEqual(new Uint8Array(found!), bytes);
  assert.equal(missing, null);
  const client = createClient({ url: redis.url });
  await client.connect();
  const ttl = await client.ttl('dseek:ctx:ns:one');
  await client.close();
  assert.ok(ttl > 0 && ttl <= 120, `TTL ${ttl}`);
  await store.delete('ns:one');
  assert.deepEqual(await store.get(['ns:one']), [null]);
  const unreachable = RedisStore.open(spec('redis://user:secret@127.0.0.1:1'), () => {});
  assert.equal(unreachable.location, 'redis://user:***@127.0.0.1:1');
  await unreachable.close();
});

test('a Redis that is not running yet fails fast (no queueing), and is used once it starts', { skip }, async () => {
  const port = await freePort();
  const store = RedisStore.open(spec(`redis://127.0.0.1:${port}`), () => {});
  cleanup.push(() => store.close());
  const t0 = Date.now();
  await assert.rejects(store.get(['ns:x']));
  assert.ok(Date.now() - t0 < 1000, 'rejected at once while disconnected');
  const proc = spawn(redisServerPath!, ['--port', String(port), '--bind', '127.0.0.1', '--save', ''], { stdio: 'ignore' });
  cleanup.push(() => new Promise((r) => (proc.once('exit', () => r()), proc.kill())));
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      assert.deepEqual(await store.get(['ns:x']), [null]);
      break;
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
});

test('Redis Cluster: pages spread over hash slots are stored and read through redis+cluster://', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-cluster-'));
  const port = await freePort();
  const proc: ChildProcess = spawn(
    redisServerPath!,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--dir', dir],
    { stdio: 'ignore' },
  );
  cleanup.push(async () => {
    await new Promise<void>((r) => (proc.once('exit', () => r()), proc.kill()));
    rmSync(dir, { recursive: true, force: true });
  });
  // A one-node cluster: this node owns all 16,384 slots.
  const admin = createClient({ url: `redis://127.0.0.1:${port}` });
  for (let i = 0; ; i++) {
    try {
      await admin.connect();
      break;
    } catch (err) {
      if (i > 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await admin.sendCommand(['CLUSTER', 'ADDSLOTSRANGE', '0', '16383']);
  for (let i = 0; !/cluster_state:ok/.test(String(await admin.sendCommand(['CLUSTER', 'INFO']))); i++) {
    if (i > 100) throw new Error('the one-node cluster did not come up');
    await new Promise((r) => setTimeout(r, 100));
  }
  await admin.close();
  const store = RedisStore.open(spec(`redis+cluster://127.0.0.1:${port}`), () => {});
  cleanup.push(() => store.close());
  const keys = Array.from({ length: 8 }, (_, i) => `ns:page${i}`);
  let connected = false;
  for (let i = 0; !connected; i++) {
    try {
      await store.put(keys[0]!, Uint8Array.of(0));
      connected = true;
    } catch (err) {
      if (i > 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await Promise.all(keys.map((k, i) => store.put(k, Uint8Array.of(i, i + 1))));
  const got = await store.get([...keys, 'ns:absent']);
  assert.deepEqual(got.slice(0, 8).map((b) => [...b!]), keys.map((_, i) => [i, i + 1]));
  assert.equal(got[8], null);
});

test('rediss://: pages round-trip over TLS (a self-signed certificate trusted through NODE_EXTRA_CA_CERTS)', { skip: skip || (spawnSync('sh', ['-c', 'command -v openssl']).status !== 0 ? 'openssl is not installed' : false) }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-tls-'));
  cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const port = await freePort();
  const proc = spawn(
    redisServerPath!,
    ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--save', '', '--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', cert, '--tls-auth-clients', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  cleanup.push(() => new Promise((r) => (proc.once('exit', () => r()), proc.kill())));
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      if (/Ready to accept connections/.test(out)) resolve();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`redis-server with TLS exited with ${code}:\n${out}`)));
  });
  // The certificate must be trusted when the process starts, hence a child process.
  const script = `
    const { RedisStore } = await import(${JSON.stringify(new URL('../../src/cache/redisStore.js', import.meta.url).href)});
    const store = RedisStore.open({ kind: 'redis', url: 'rediss://127.0.0.1:${port}', cluster: false, ttlSeconds: 0 }, (l) => console.error(l));
    if (!(await store.waitConnected(5000))) throw new Error('no TLS connection');
    await store.put('ns:tls', Uint8Array.of(1, 2, 3));
    const [got] = await store.get(['ns:tls']);
    await store.close();
    console.log(JSON.stringify([...got]));`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: cert }, encoding: 'utf8', timeout: 30_000 });
  assert.equal(child.status, 0, child.stderr);
  assert.equal(child.stdout.trim(), '[1,2,3]');
});
