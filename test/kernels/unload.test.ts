/**
 * native/addon.c: when the last Node environment that loaded the addon exits (a model run in a
 * worker thread alone, as `dseek chat` and the server do), Node unmaps the shared object. Its pool
 * threads and its SIGBUS handler are that object's code, so they must be stopped first: a pool
 * thread still spinning on unmapped code killed the process with SIGSEGV, about one exit in 12
 * under load (found on an AMD EPYC Zen 4, `dseek chat` in `npm test`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeLoadError } from '../../src/kernels/native/index.js';

const unavailable = nativeLoadError() !== '' ? `the native addon is not built (${nativeLoadError()})` : false;

test('workers that run the native pool and map a file, then exit, leave the process alive (20 workers, exit code 0)', { skip: unavailable }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-unload-'));
  try {
    const file = join(dir, 'weights.bin');
    writeFileSync(file, Buffer.alloc(1 << 16, 1));
    const index = new URL('../../src/kernels/native/index.js', import.meta.url).href;
    const worker = join(dir, 'worker.mjs');
    writeFileSync(
      worker,
      `import { createNativeBackend, mapFileRegions } from '${index}';
const nb = createNativeBackend(2);
const rows = 512, cols = 256, w = new Float32Array(rows * cols).fill(0.5);
const y = new Float32Array(rows * 4);
nb.matmul(y, new Float32Array(cols * 4).fill(1), { dtype: 'f32', shape: [rows, cols], data: new Uint8Array(w.buffer) }, 4);
if (y[0] !== 128) throw new Error('wrong product ' + y[0]);
mapFileRegions(${JSON.stringify(file)}, [{ offset: 0, size: 1 << 16 }]);
`,
    );
    // The main thread never loads the addon: each worker is its only environment, so each exit unloads it.
    const script = join(dir, 'workers.mjs');
    writeFileSync(
      script,
      `import { Worker } from 'node:worker_threads';
for (let i = 0; i < 20; i++) {
  await new Promise((resolve, reject) => {
    const w = new Worker(${JSON.stringify(worker)});
    w.on('error', reject);
    w.on('exit', resolve);
  });
}
await new Promise((r) => setTimeout(r, 200));
console.log('alive');
`,
    );
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(run.signal, null, `killed by ${run.signal}\n${run.stderr}`);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'alive');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
