/**
 * Training runs: the loss falls, runs are deterministic for a fixed seed (the same loss curve and
 * the same weights twice), a run stopped between checkpoints resumes from the last one and ends
 * exactly where an uninterrupted run ends, and a `dseek train` process killed with SIGKILL does too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { train, type TrainOptions } from '../../src/train/trainer.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { tempDir, tinySettings, writeCorpus } from './helpers.js';

const quiet = { log: () => {}, threads: 1 } as const;

test('loss falls, and two runs with one seed give the same loss curve and weights; another seed differs', () => {
  const dir = tempDir('determinism');
  try {
    const corpus = writeCorpus(dir);
    const settings = tinySettings({ steps: 12, evalEvery: 6 });
    const run = (name: string, seed: number) => train({ ...quiet, settings: { ...settings, seed }, dataPath: corpus, outDir: join(dir, name) });
    const a = run('a', 5);
    const b = run('b', 5);
    const c = run('c', 6);
    assert.deepEqual(a.history.map((r) => r.loss), b.history.map((r) => r.loss));
    assert.deepEqual(a.evals, b.evals);
    assert.deepEqual(Array.from(a.params.flat), Array.from(b.params.flat));
    assert.deepEqual(a.biases, b.biases);
    assert.notDeepEqual(a.history.map((r) => r.loss), c.history.map((r) => r.loss));
    const first = a.history[0]!.loss;
    const last = a.history[a.history.length - 1]!.loss;
    assert.ok(last < first - 0.5, `loss ${first} → ${last}`);
    assert.equal(a.evals.length, 2);
    // Balancing moved the router biases.
    assert.ok(a.biases.some((bias) => bias !== null && bias.some((v) => v !== 0)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a run stopped after step 5 (last checkpoint at step 4) resumes and ends identical to an uninterrupted run', () => {
  const dir = tempDir('resume');
  try {
    const corpus = writeCorpus(dir);
    const settings = tinySettings({ steps: 8, checkpointEvery: 4, evalEvery: 4 });
    const opts: TrainOptions = { ...quiet, settings, dataPath: corpus, outDir: join(dir, 'straight') };
    const straight = train(opts);
    // Interrupted: stop after 5 steps without a final save, as a killed process would.
    const cut = join(dir, 'cut');
    const partial = train({ ...opts, outDir: cut, stopAfter: 5, saveOnStop: false });
    assert.equal(partial.step, 5);
    assert.equal(partial.finished, false);
    assert.equal(loadCheckpoint(cut).meta.step, 4);
    const resumed = train({ ...opts, outDir: cut, resume: true });
    assert.equal(resumed.step, 8);
    assert.deepEqual(resumed.history.map((r) => r.loss), straight.history.map((r) => r.loss));
    assert.deepEqual(resumed.evals, straight.evals);
    assert.deepEqual(Array.from(resumed.params.flat), Array.from(straight.params.flat));
    assert.deepEqual(resumed.biases, straight.biases);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('`dseek train` killed with SIGKILL resumes from its last checkpoint and matches an uninterrupted run', async () => {
  const dir = tempDir('kill');
  try {
    const corpus = writeCorpus(dir, 60);
    const cli = fileURLToPath(new URL('./trainCli.js', import.meta.url));
    const flags = [
      '--data', corpus, '--vocab-size', '300', '--hidden', '32', '--layers', '2', '--heads', '2', '--kv-lora-rank', '16',
      '--nope-dim', '8', '--rope-dim', '8', '--v-dim', '8', '--intermediate', '48', '--moe-intermediate', '16',
      '--experts', '4', '--top-k', '2', '--context', '32', '--batch', '4', '--steps', '60', '--checkpoint-every', '5',
      '--eval-every', '0', '--threads', '1', '--seed', '9', '--lr', '0.005', '--warmup', '5',
    ];
    const out = join(dir, 'killed');
    const child = spawn(process.execPath, [cli, 'train', ...flags, '--out', out], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    // Kill as soon as the first checkpoint exists.
    for (let i = 0; i < 3000 && !existsSync(join(out, 'checkpoint.json')); i++) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    const killedAt = loadCheckpoint(out).meta.step;
    assert.ok(killedAt >= 5 && killedAt < 60, `checkpoint at step ${killedAt}`);

    const run = (args: string[]) =>
      new Promise<number | null>((resolve) => spawn(process.execPath, [cli, 'train', ...flags, ...args], { stdio: 'ignore' }).on('exit', resolve));
    assert.equal(await run(['--out', out, '--resume']), 0);
    assert.equal(await run(['--out', join(dir, 'straight')]), 0);
    const resumed = loadCheckpoint(out);
    const straight = loadCheckpoint(join(dir, 'straight'));
    assert.equal(resumed.meta.step, 60);
    assert.deepEqual(resumed.meta.history.map((r) => r.loss), straight.meta.history.map((r) => r.loss));
    assert.deepEqual(Array.from(resumed.params), Array.from(straight.params));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
