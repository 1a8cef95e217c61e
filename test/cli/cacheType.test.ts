/**
 * `--cache-type q8` from the command line: generate and logits on a golden model through the
 * 8-bit latent cache, inspect's bytes per token, and one line naming f16, f32 and q8 for an
 * unknown type on every command that takes the flag.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { goldenRoot, repoRoot } from '../paths.js';
import { startServe } from '../serveProcess.js';

const bin = join(repoRoot, 'bin', 'dseek.js');
const lite = join(goldenRoot, 'lite');
const golden = JSON.parse(readFileSync(join(lite, 'golden.json'), 'utf8')) as {
  prompt_tokens: number[][];
  logits_f64: number[][][];
  greedy_prompt_tokens: number[];
  greedy_tokens: number[];
};

function dseek(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 120_000, input: '' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('dseek generate --cache-type q8 reproduces the lite greedy tokens', () => {
  const r = dseek(
    'generate', '--model', lite, '--cache-type', 'q8', '--tokens', golden.greedy_prompt_tokens.join(','),
    '--max-tokens', String(golden.greedy_tokens.length), '--temperature', '0', '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { tokens: number[] }).tokens, golden.greedy_tokens);
});

test('dseek logits --cache-type q8 stays within 2e-2 of the reference (q8 rows read back in the prompt chunk)', () => {
  const tokens = golden.prompt_tokens[0]!;
  const q8 = dseek('logits', '--model', lite, '--cache-type', 'q8', '--tokens', tokens.join(','));
  const f32 = dseek('logits', '--model', lite, '--tokens', tokens.join(','));
  assert.equal(q8.code, 0, q8.stderr);
  const a = (JSON.parse(q8.stdout) as { logits: number[][] }).logits;
  const b = (JSON.parse(f32.stdout) as { logits: number[][] }).logits;
  let max = 0;
  let moved = 0;
  a.forEach((row, t) => row.forEach((v, i) => {
    max = Math.max(max, Math.abs(v - golden.logits_f64[0]![t]![i]!));
    moved = Math.max(moved, Math.abs(v - b[t]![i]!));
  }));
  assert.ok(max < 2e-2, `max |q8 − reference| ${max}`);
  assert.ok(moved > 1e-4, 'the flag reached the cache');
});

test('dseek inspect reports the latent cache bytes per token for f16, f32 and q8', () => {
  const r = dseek('inspect', join(repoRoot, 'test/data/deepseek-v2-lite/config.json'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /latent cache by --cache-type: f16 31,104, f32 62,208, q8 16,524 bytes/);
});

test('dseek serve --cache-type q8: the banner gives the bytes per token and the type', async () => {
  const server = await startServe(['--cache-type', 'q8', '--no-disk-cache'], 60_000);
  try {
    // The bundled model: 4 layers of 80 values, each row 2 · 3 scale bytes + 80.
    assert.match(server.log(), /latent cache: \d+ tokens \([\d.]+ MiB at 344 bytes per token, q8\)/);
  } finally {
    await server.stop();
  }
});

for (const command of [['run', 'hello'], ['chat'], ['generate', '--tokens', '1,2'], ['logits', '--tokens', '1,2'], ['serve', '--port', '0'], ['bench', '-p', '1', '-n', '1']]) {
  test(`dseek ${command[0]} --cache-type q4 is one line naming f16, f32 and q8`, () => {
    const r = dseek(...command, '--cache-type', 'q4');
    assert.notEqual(r.code, 0);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line expected, got:\n${r.stderr}`);
    assert.equal(lines[0], 'dseek: --cache-type: must be f16, f32 or q8, got q4');
  });
}
