/**
 * loadModel with a hub id, against a local stand-in for the hub (HF_ENDPOINT on 127.0.0.1):
 * download progress reaches onProgress, and an aborted download rejects with an AbortError.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AbortError, loadModel, type LoadProgress } from 'dseek';
import { goldenRoot } from '../paths.js';

const source = join(goldenRoot, 'lite');
/** When true, weight downloads send a first chunk and then stall (to abort mid-download). */
let stall = false;
const server = createServer((req, res) => {
  const url = req.url ?? '';
  if (url.startsWith('/api/models/')) {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ siblings: readdirSync(source).map((rfilename) => ({ rfilename })) }));
    return;
  }
  const m = /^\/tiny\/[^/]+\/resolve\/main\/(.+)$/.exec(url);
  if (!m) {
    res.statusCode = 404;
    res.end('not found');
    return;
  }
  const bytes = readFileSync(join(source, decodeURIComponent(m[1]!)));
  res.setHeader('content-length', String(bytes.length));
  if (stall && m[1] === 'model.safetensors') res.write(bytes.subarray(0, 1000));
  else res.end(bytes);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
process.env['HF_ENDPOINT'] = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
process.env['XDG_CACHE_HOME'] = mkdtempSync(join(tmpdir(), 'dseek-lib-hub-'));
after(() => {
  server.closeAllConnections();
  server.close();
});

test('loadModel of a hub id downloads it with progress per file, then loads and generates', async () => {
  const progress: LoadProgress[] = [];
  const model = await loadModel('tiny/lite', { onProgress: (p) => progress.push(p) });
  try {
    const downloads = progress.filter((p) => p.phase === 'download');
    const weights = downloads.filter((p) => p.file === 'model.safetensors');
    assert.ok(weights.length > 0, 'progress for the weights');
    const last = weights.at(-1)!;
    assert.equal(last.bytes, last.totalBytes);
    assert.deepEqual(progress.slice(-3).map((p) => p.phase), ['load', 'load', 'ready']);
    const r = await model.generate([0, 17, 42], { maxTokens: 3, temperature: 0 });
    assert.equal(r.tokens.length, 3);
  } finally {
    await model.close();
  }
});

test('aborting a download rejects loadModel with an AbortError', async () => {
  stall = true;
  const controller = new AbortController();
  const pending = loadModel('tiny/other', {
    signal: controller.signal,
    onProgress: (p) => p.phase === 'download' && p.file === 'model.safetensors' && controller.abort(),
  });
  await assert.rejects(pending, AbortError);
});
