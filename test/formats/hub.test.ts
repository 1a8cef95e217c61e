/**
 * Hub ids as --model, against a local stand-in for the hub on 127.0.0.1 (HF_ENDPOINT): the files
 * are downloaded once into the cache, resumed after an interruption, and used offline afterwards.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goldenRoot, repoRoot } from '../paths.js';
import { isHubId, resolveHubModel, HubDownloadError } from '../../src/formats/hub.js';

const source = join(goldenRoot, 'lite');
let requests: string[] = [];
let cutAfter = -1; // when ≥ 0, the next weights download stops after this many bytes

/** The stand-in hub. Every request gets an answer: a fault in the stub is a 500, never a hung client. */
const server: Server = createServer((req, res) => {
  try {
    serveHub(req, res);
  } catch (err) {
    res.statusCode = 500;
    res.end(`stub hub failed: ${err instanceof Error ? err.message : String(err)}`);
  }
});

function serveHub(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? '';
  requests.push(`${req.method} ${url} ${req.headers.range ?? ''}`);
  if (url === '/api/models/tiny/lite') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ siblings: [...readdirSync(source), 'README.md'].map((rfilename) => ({ rfilename })) }));
    return;
  }
  const m = /^\/tiny\/lite\/resolve\/main\/(.+)$/.exec(url);
  if (!m || m[1] === 'README.md') {
    res.statusCode = 404;
    res.end('not found');
    return;
  }
  const bytes = readFileSync(join(source, decodeURIComponent(m[1]!)));
  const range = /bytes=(\d+)-/.exec(req.headers.range ?? '');
  const from = range ? Number(range[1]) : 0;
  res.statusCode = range ? 206 : 200;
  res.setHeader('content-length', String(bytes.length - from));
  if (cutAfter >= 0 && m[1] === 'model.safetensors') {
    const n = cutAfter;
    cutAfter = -1;
    res.write(bytes.subarray(from, from + n), () => res.destroy());
    return;
  }
  res.end(bytes.subarray(from));
}
const endpoint = await new Promise<string>((resolve) =>
  server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as { port: number }).port}`)),
);
after(() => server.close());

test('hub ids are told apart from paths', () => {
  assert.equal(isHubId('deepseek-ai/DeepSeek-V2-Lite-Chat'), true);
  assert.equal(isHubId('./model'), false);
  assert.equal(isHubId('a/b/c'), false);
  assert.equal(isHubId('../x'), false);
});

test('a broken download resumes with a Range request; the cached model is used without the network', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'dseek-hub-'));
  cutAfter = 1000;
  await assert.rejects(resolveHubModel('tiny/lite', { endpoint, cacheDir }), HubDownloadError);
  requests = [];
  const dir = await resolveHubModel('tiny/lite', { endpoint, cacheDir });
  assert.ok(requests.some((r) => r.includes('model.safetensors bytes=1000-')), requests.join('\n'));
  assert.deepEqual(readFileSync(join(dir, 'model.safetensors')), readFileSync(join(source, 'model.safetensors')));
  requests = [];
  assert.equal(await resolveHubModel('tiny/lite', { endpoint: 'http://127.0.0.1:9', cacheDir }), dir);
  assert.equal(requests.length, 0);
});

test('dseek logits --model org/name downloads once and matches the local model', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'dseek-hub-xdg-'));
  const env = { ...process.env, HF_ENDPOINT: endpoint, XDG_CACHE_HOME: cache };
  const run = (model: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'logits', '--model', model, '--tokens', '0,5,9'], { env });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      p.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  const hub = await run('tiny/lite');
  assert.equal(hub.code, 0, hub.stderr);
  const local = spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'logits', '--model', source, '--tokens', '0,5,9'], { encoding: 'utf8' });
  assert.equal(hub.stdout, local.stdout);
  const missing = await run('tiny/nothing');
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr.trim(), /^dseek: could not download tiny\/nothing: .*404/);
});

test('a repository without config and safetensors is refused with a hint', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'dseek-hub-'));
  const empty = mkdtempSync(join(tmpdir(), 'dseek-hub-src-'));
  mkdirSync(join(empty, 'x'), { recursive: true });
  writeFileSync(join(empty, 'x', 'a.gguf'), '');
  const s2 = createServer((_req, res) => res.end(JSON.stringify({ siblings: [{ rfilename: 'model-Q4_K_M.gguf' }] })));
  const ep = await new Promise<string>((resolve) => s2.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s2.address() as { port: number }).port}`)));
  await assert.rejects(resolveHubModel('some/gguf-only', { endpoint: ep, cacheDir }), /GGUF repository/);
  s2.close();
});
