/**
 * The `dseek` command end to end, as a user runs it: golden parity through `logits` and
 * `generate`, and a one-line error with a non-zero exit for each kind of bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goldenModels, goldenRoot, repoRoot } from '../paths.js';

const bin = join(repoRoot, 'bin', 'dseek.js');

function dseek(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts a failed run whose stderr is one line matching `pattern`. */
function assertOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0, 'exit code');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${r.stderr}`);
  assert.match(lines[0]!, pattern);
}

interface Golden {
  prompt_tokens: number[][];
  logits_f64: number[][][];
  greedy_prompt_tokens: number[];
  greedy_tokens: number[];
}

for (const name of goldenModels) {
  const dir = join(goldenRoot, name);
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;

  test(`dseek logits matches ${name}/golden.json within 1e-4`, () => {
    for (const [p, tokens] of golden.prompt_tokens.entries()) {
      const r = dseek('logits', '--model', dir, '--tokens', tokens.join(','));
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { tokens: number[]; logits: number[][] };
      assert.deepEqual(out.tokens, tokens);
      assert.equal(out.logits.length, tokens.length);
      let max = 0;
      out.logits.forEach((row, t) => row.forEach((v, i) => (max = Math.max(max, Math.abs(v - golden.logits_f64[p]![t]![i]!)))));
      assert.ok(max < 1e-4, `prompt ${p}: max |diff| ${max}`);
    }
  });

  test(`dseek generate --temperature 0 reproduces ${name} greedy_tokens`, () => {
    const r = dseek(
      'generate', '--model', dir, '--tokens', golden.greedy_prompt_tokens.join(','),
      '--max-tokens', String(golden.greedy_tokens.length), '--temperature', '0', '--json',
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_tokens: number[]; tokens: number[]; text: string };
    assert.deepEqual(out.prompt_tokens, golden.greedy_prompt_tokens);
    assert.deepEqual(out.tokens, golden.greedy_tokens);
  });
}

test('dseek logits --f64 is a float64 run', () => {
  const dir = join(goldenRoot, 'lite');
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
  const r = dseek('logits', '--model', dir, '--tokens', golden.prompt_tokens[1]!.join(','), '--f64');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { logits: number[][] };
  let max = 0;
  out.logits.forEach((row, t) => row.forEach((v, i) => (max = Math.max(max, Math.abs(v - golden.logits_f64[1]![t]![i]!)))));
  assert.ok(max < 2e-6, `max |diff| ${max}`);
});

test('dseek inspect on a V2-Lite config.json', () => {
  const r = dseek('inspect', join(repoRoot, 'test/data/deepseek-v2-lite/config.json'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /15\.7 B total/);
  assert.match(r.stdout, /2\.4\d? B activated/);
  assert.match(r.stdout, /31,104 bytes/);
  assert.match(r.stdout, /276,480 bytes/);
});

/** A scratch copy of the lite golden model that a test may break. */
function brokenModel(mutate: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-cli-'));
  copyFileSync(join(goldenRoot, 'lite', 'config.json'), join(dir, 'config.json'));
  copyFileSync(join(goldenRoot, 'lite', 'model.safetensors'), join(dir, 'model.safetensors'));
  mutate(dir);
  return dir;
}

function patchConfig(dir: string, patch: Record<string, unknown>): void {
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), ...patch }));
}

/** Rewrite the safetensors header with `edit` applied to the parsed JSON (same data section). */
function patchHeader(dir: string, edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): void {
  const file = join(dir, 'model.safetensors');
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  edit(header);
  let text = JSON.stringify(header);
  while (text.length % 8) text += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  writeFileSync(file, Buffer.concat([len, Buffer.from(text), bytes.subarray(8 + n)]));
}

const tokens = ['--tokens', '0,5,9'];
const badInputs: Array<[string, () => string[], RegExp]> = [
  ['empty config.json', () => ['logits', '--model', brokenModel((d) => writeFileSync(join(d, 'config.json'), '')), ...tokens], /config\.json.*not valid JSON/],
  ['no config.json at all', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dseek-cli-'));
    return ['logits', '--model', dir, ...tokens];
  }, /no config\.json/],
  ['missing weights', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dseek-cli-'));
    copyFileSync(join(goldenRoot, 'lite', 'config.json'), join(dir, 'config.json'));
    return ['logits', '--model', dir, ...tokens];
  }, /safetensors/],
  ['truncated safetensors', () => ['logits', '--model', brokenModel((d) => {
    const f = join(d, 'model.safetensors');
    const b = readFileSync(f);
    writeFileSync(f, b.subarray(0, b.length - 100));
  }), ...tokens], /model\.safetensors/],
  ['header lying about its length', () => ['logits', '--model', brokenModel((d) => {
    const f = join(d, 'model.safetensors');
    const b = readFileSync(f);
    b.writeBigUInt64LE(BigInt(b.length), 0);
    writeFileSync(f, b);
  }), ...tokens], /header/i],
  ['overlapping offsets', () => ['logits', '--model', brokenModel((d) => patchHeader(d, (h) => {
    const names = Object.keys(h).filter((k) => k !== '__metadata__');
    const a = h[names[0]!]!;
    const b = h[names[1]!]!;
    b.data_offsets = [a.data_offsets[0]!, a.data_offsets[0]! + (b.data_offsets[1]! - b.data_offsets[0]!)];
  })), ...tokens], /overlap|gap|offset/i],
  ['tensor of the wrong shape', () => ['logits', '--model', brokenModel((d) => patchConfig(d, { intermediate_size: 95 })), ...tokens], /model\.layers\.0\.mlp\.gate_proj\.weight.*shape/],
  ['unsupported dtype', () => ['logits', '--model', brokenModel((d) => patchHeader(d, (h) => {
    h['model.norm.weight']!.dtype = 'I32';
  })), ...tokens], /unsupported dtype I32/],
  ['unsupported model_type', () => ['logits', '--model', brokenModel((d) => patchConfig(d, { model_type: 'llama' })), ...tokens], /model_type.*llama/],
  ['token id ≥ vocab_size', () => ['logits', '--model', join(goldenRoot, 'lite'), '--tokens', '0,256'], /token id 256.*vocabulary/],
  ['token id that is not a number', () => ['generate', '--model', join(goldenRoot, 'lite'), '--tokens', '0,x'], /--tokens.*"x"/],
  ['empty token list', () => ['logits', '--model', join(goldenRoot, 'lite'), '--tokens', ''], /--tokens.*empty/],
  ['empty prompt', () => ['run', '--model', join(goldenRoot, 'lite'), ''], /prompt.*empty/],
  ['text prompt without a tokenizer', () => ['run', '--model', join(goldenRoot, 'lite'), 'hello'], /tokenizer\.json/],
  ['prompt longer than the context', () => ['generate', '--model', join(goldenRoot, 'lite'), '--tokens', Array(65).fill(3).join(',')], /context/],
  ['bad sampling value', () => ['generate', '--model', join(goldenRoot, 'lite'), ...tokens, '--top-p', '1.5'], /topP|top-p/],
  ['negative max tokens', () => ['generate', '--model', join(goldenRoot, 'lite'), ...tokens, '--max-tokens', '-3'], /--max-tokens/],
  ['unknown model path', () => ['logits', '--model', '/no/such/model', ...tokens], /no such file/],
  ['unknown command', () => ['frobnicate'], /unknown command/],
];

for (const [label, args, pattern] of badInputs) {
  test(`bad input: ${label}`, () => assertOneLineError(dseek(...args()), pattern));
}

