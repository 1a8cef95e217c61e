/**
 * --machine-cost-per-hour on a real `dseek serve` (bundled model): every usage.cost reports the
 * request's share of the engine's measured forward-pass time at that price, and /metrics the
 * machine cost per million tokens the server achieved.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { metric, startServe, type ServerProcess } from '../serveProcess.js';

let serve: ServerProcess;
const dir = mkdtempSync(join(tmpdir(), 'dseek-machine-'));
before(async () => {
  serve = await startServe(['--machine-cost-per-hour', '3.6', '--no-disk-cache', '--disk-cache-dir', dir], 60_000);
});
after(async () => {
  await serve.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface MachineCost {
  total: number;
  machine: number;
  machine_seconds: number;
}

test('usage.cost.machine is the request’s busy seconds at the hourly price; longer answers use more; /metrics reports cost per million tokens', async () => {
  const client = new OpenAI({ baseURL: `${serve.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const short = await client.chat.completions.create({ model: 'deepseek-chat', messages: [{ role: 'user', content: 'And God said' }], max_tokens: 2, seed: 1 });
  const long = await client.chat.completions.create({ model: 'deepseek-chat', messages: [{ role: 'user', content: 'And God said' }], max_tokens: 40, seed: 1, temperature: 0 });
  const a = (short.usage as unknown as { cost: MachineCost }).cost;
  const b = (long.usage as unknown as { cost: MachineCost }).cost;
  for (const c of [a, b]) {
    assert.ok(c.machine_seconds > 0, JSON.stringify(c));
    assert.ok(Math.abs(c.machine - (c.machine_seconds * 3.6) / 3600) < 1e-9, JSON.stringify(c));
    assert.ok(c.total > 0, 'the price table is still reported');
  }
  if (long.usage!.completion_tokens > short.usage!.completion_tokens * 4) assert.ok(b.machine_seconds > a.machine_seconds, `${a.machine_seconds} < ${b.machine_seconds}`);
  const perMillion = await metric(serve.url, 'dseek_machine_cost_per_million_tokens{currency="USD"}');
  assert.ok(perMillion > 0, String(perMillion));
  assert.ok((await metric(serve.url, 'dseek_machine_busy_seconds_total')) >= a.machine_seconds + b.machine_seconds - 1e-5);
});
