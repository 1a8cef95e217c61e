/**
 * `dseek serve` says at start what its cache flags turned off, and refuses isolation flags that
 * cannot work.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';
import { startServe } from '../serveProcess.js';

test('--no-prefix-cache: the banner says the prefix cache and with it the disk cache are off', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-flags-'));
  const server = await startServe(['--no-prefix-cache', '--disk-cache-dir', dir], 60_000);
  try {
    const log = server.log();
    assert.match(log, /prefix cache: off \(--no-prefix-cache\)/);
    assert.match(log, /context store: off \(--no-prefix-cache turns it off too/);
    assert.ok(!log.includes(dir), 'the banner does not print a folder that is never used');
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with two API keys the banner reports isolation key; --cache-isolation key without keys exits with a one-line cause', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-flags-'));
  const server = await startServe(['--api-key', 'a,b', '--disk-cache-dir', dir], 60_000);
  try {
    assert.match(server.log(), /prefix cache: on, isolation key/);
    assert.match(server.log(), /API keys: 2/);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const env = { ...process.env };
  delete env['DSEEK_API_KEY'];
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'serve', '--cache-isolation', 'key', '--port', '0'], { encoding: 'utf8', env, timeout: 60_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.trim(), /^dseek: --cache-isolation: key needs --api-key/);
});
