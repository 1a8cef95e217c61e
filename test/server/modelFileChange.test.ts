/**
 * Model files that change under a running `dseek serve`: truncated, or overwritten in place with
 * zeros. The server stays alive, answers 503 `model_file_changed` naming the file and asking for
 * a restart, and /health turns unhealthy — never a SIGBUS (exit 135) and never text computed
 * from the wrong bytes.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, openSync, closeSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';
import { startServe, type ServerProcess } from '../serveProcess.js';

const scratch = mkdtempSync(join(tmpdir(), 'dseek-filechange-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A private copy of the bundled model, so that the test can damage it. */
function copyModel(name: string): { dir: string; weights: string } {
  const dir = join(scratch, name);
  mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(repoRoot, 'models', 'default', f), join(dir, f));
  return { dir, weights: join(dir, 'model.safetensors') };
}

async function complete(url: string, maxTokens = 4): Promise<{ status: number; body: { error?: { message: string; code: string; type: string } } }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'And God said', max_tokens: maxTokens, temperature: 0 }),
  });
  return { status: r.status, body: (await r.json()) as { error?: { message: string; code: string; type: string } } };
}

async function expectUnhealthy(server: ServerProcess, weights: string): Promise<void> {
  const r = await complete(server.url);
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.equal(r.body.error!.code, 'model_file_changed');
  assert.ok(r.body.error!.message.includes(weights), `the message names the file: ${r.body.error!.message}`);
  assert.match(r.body.error!.message, /restart/);
  // /health turns unhealthy within its 1 s check.
  let health: Response | null = null;
  for (let i = 0; i < 40; i++) {
    health = await fetch(`${server.url}/health`);
    if (health.status === 503) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(health!.status, 503);
  assert.ok(((await health!.json()) as { reason: string }).reason.includes(weights));
  assert.equal(server.proc.exitCode, null, 'the process is alive');
  assert.equal(server.proc.signalCode, null);
  assert.match(server.log(), /engine stopped: the model file .* restart the server/, 'the log says why');
}

test('truncating the served model file: 503 naming the file, /health unhealthy, the process alive', async () => {
  const { dir, weights } = copyModel('truncated');
  const server = await startServe(['--model', dir, '--no-disk-cache'], 60_000);
  try {
    assert.equal((await complete(server.url)).status, 200);
    truncateSync(weights, Math.floor(statSync(weights).size / 2));
    await expectUnhealthy(server, weights);
  } finally {
    await server.stop();
  }
});

test('truncating the file during a streamed generation: the stream ends (with the error event while it runs), the process lives', async (t) => {
  const { dir, weights } = copyModel('midstream');
  const server = await startServe(['--model', dir, '--no-disk-cache'], 60_000);
  try {
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'And God said', max_tokens: 200, temperature: 0, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // the stream has started
    truncateSync(weights, 4096);
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    // Either the generation finished before the next check, or it ended with the error event.
    const errored = text.includes('model_file_changed');
    t.diagnostic(errored ? 'the stream ended with the error event' : 'the generation finished before the next check');
    if (!errored) assert.match(text, /"finish_reason":"(stop|length)"/);
    assert.ok(text.endsWith('data: [DONE]\n\n'));
    await expectUnhealthy(server, weights);
  } finally {
    await server.stop();
  }
});

test('overwriting the model file in place with zeros (same size) is detected, not served as garbage', async () => {
  const { dir, weights } = copyModel('zeroed');
  const server = await startServe(['--model', dir, '--no-disk-cache'], 60_000);
  try {
    assert.equal((await complete(server.url)).status, 200);
    const size = statSync(weights).size;
    const fd = openSync(weights, 'r+');
    try {
      const zeros = Buffer.alloc(1 << 20);
      for (let at = 0; at < size; at += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, size - at), at);
    } finally {
      closeSync(fd);
    }
    await expectUnhealthy(server, weights);
  } finally {
    await server.stop();
  }
});
