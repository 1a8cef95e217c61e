/**
 * The deploy/ recipe as an operator runs it: deploy/replicas.sh starts Redis, two replicas and
 * Debian's nginx in front; requests through nginx are served by both replicas, and a prompt one
 * replica computed is a cache hit on the other; each replica's /metrics shows the shared cache.
 * Skipped, saying why, without redis-server or nginx.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { textModel } from '../fixtures.js';
import { repoRoot } from '../paths.js';
import { metric } from '../serveProcess.js';
import { freePort, redisSkipReason } from '../redisServer.js';

const nginx = spawnSync('sh', ['-c', 'command -v nginx || test -x /usr/sbin/nginx && echo /usr/sbin/nginx'], { encoding: 'utf8' }).stdout.trim();
const skip = redisSkipReason || (nginx === '' ? 'nginx is not installed (apt-get install nginx-light; .ci/run does)' : false);
const script = join(repoRoot, 'deploy', 'replicas.sh');
const run = mkdtempSync(join(tmpdir(), 'dseek-deploy-'));
const env = { ...process.env, PATH: `${process.env['PATH']}:/usr/sbin` };

after(() => {
  if (!skip) spawnSync(script, ['stop', '--dir', run], { env, stdio: 'inherit' });
  rmSync(run, { recursive: true, force: true });
});

test('deploy/replicas.sh: two replicas behind nginx share one Redis; a prompt computed by one is a hit on the other', { skip, timeout: 240_000 }, async () => {
  const [port, p1, p2, redisPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const model = textModel();
  const start = spawnSync(
    script,
    ['start', '--dir', run, '--port', String(port), '--replica-ports', `${p1},${p2}`, '--redis-port', String(redisPort), '--', '--model', model, '--page-tokens', '16', '--threads', '1'],
    { env, encoding: 'utf8', timeout: 180_000 },
  );
  assert.equal(start.status, 0, `${start.stdout}\n${start.stderr}`);
  assert.match(start.stdout, /2 replicas .* behind nginx/);
  const url = `http://127.0.0.1:${port}`;
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { context_store: string }).context_store, 'up');

  const replicas = [`http://127.0.0.1:${p1}`, `http://127.0.0.1:${p2}`];
  const sum = async (sample: string) => (await Promise.all(replicas.map((r) => metric(r, sample)))).reduce((a, b) => a + b, 0);
  const prompt = 'Behind the balancer, every replica reads the same cache. '.repeat(8);
  const ask = async () => {
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: basename(model), prompt, max_tokens: 4, temperature: 0 }),
    });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { choices: { text: string }[]; usage: { prompt_cache_hit_tokens: number } };
    return { text: body.choices[0]!.text, hit: body.usage.prompt_cache_hit_tokens };
  };
  const first = await ask();
  assert.equal(first.hit, 0);
  const deadline = Date.now() + 20_000;
  while (!((await sum('dseek_context_store_writes_total{store="redis",result="written"}')) > 0 && (await sum('dseek_context_store_pending_writes{store="redis"}')) === 0)) {
    if (Date.now() > deadline) throw new Error('the first answer’s pages never reached Redis');
    await new Promise((r) => setTimeout(r, 100));
  }
  // least_conn with both idle alternates: the next request may land on either replica; whichever
  // it is, the pages are a hit (from memory on the first, from Redis on the other). Ask until
  // both replicas have served one.
  for (let i = 0; i < 6 && (await Promise.all(replicas.map((r) => metric(r, 'dseek_prompt_tokens_total')))).some((n) => n === 0); i++) {
    const again = await ask();
    assert.ok(again.hit > 0);
    assert.equal(again.text, first.text);
  }
  const served = await Promise.all(replicas.map((r) => metric(r, 'dseek_prompt_tokens_total')));
  assert.ok(served.every((n) => n > 0), `both replicas served requests: ${served}`);
  assert.ok((await sum('dseek_context_store_pages_total{store="redis",result="hit"}')) > 0, 'a replica read the other’s pages from Redis');
  for (const r of replicas) assert.equal(await metric(r, 'dseek_context_store_up{store="redis"}'), 1);
});
