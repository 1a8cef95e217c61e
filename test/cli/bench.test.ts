/** `dseek random-model` and `dseek bench` as the contracts in DESIGN.md describe them. */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goldenRoot, repoRoot } from '../paths.js';
import { nativeLevels, nativeLoadError } from '../../src/kernels/native/index.js';

const repackDir = mkdtempSync(join(tmpdir(), 'dseek-repacked-'));
const temporary: string[] = [repackDir];
// The random model and its repacked copy are gigabytes: never leave them behind.
after(() => temporary.forEach((d) => rmSync(d, { recursive: true, force: true })));
const dseek = (...args: string[]) =>
  spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, DSEEK_REPACK_DIR: repackDir },
  });

test('random-model writes a GGUF that inspect, logits and bench accept; bench --json has the contract keys', () => {
  const work = mkdtempSync(join(tmpdir(), 'dseek-bench-'));
  temporary.push(work);
  const out = join(work, 'moon.gguf');
  const made = dseek('random-model', '--like', 'moonlight', '--type', 'q8_0', '--layers', '2', out);
  assert.equal(made.status, 0, made.stderr);
  const inspect = dseek('inspect', out);
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.match(inspect.stdout, /layers 2, hidden 2048/);
  assert.match(inspect.stdout, /q8_0/);
  const bench = dseek('bench', '--model', out, '-p', '8', '-n', '4', '-r', '1', '--json');
  assert.equal(bench.status, 0, bench.stderr);
  const r = JSON.parse(bench.stdout) as Record<string, unknown>;
  for (const key of ['pp_tok_s', 'tg_tok_s', 'load_s', 'rss_mb']) assert.equal(typeof r[key], 'number', key);
  assert.ok((r['pp_tok_s'] as number) > 0 && (r['tg_tok_s'] as number) > 0);
  assert.equal(r['cache_bytes_per_token'], 2 * 576 * 2);
  assert.equal(typeof r['simd'], 'string');
  if (r['simd']) {
    // native kernels: the q8_0 weights were repacked into the (empty) cache folder on this first load …
    assert.equal(r['repack_source'], 'built', bench.stderr);
    assert.ok((r['repacked_bytes'] as number) > 100e6);
    const again = JSON.parse(dseek('bench', '--model', out, '-p', '8', '-n', '0', '-r', '1', '--json').stdout) as Record<string, unknown>;
    // … and mapped from it on the next,
    assert.equal(again['repack_source'], 'mapped');
    // a corrupt cache file is detected by its checksums and rebuilt, never used,
    const [file] = readdirSync(repackDir).filter((f) => f.endsWith('.dsrp'));
    const path = join(repackDir, file!);
    const fd = openSync(path, 'r+');
    const at = Math.floor(statSync(path).size / 2);
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    // A file an older dseek wrote (format version 1) is deleted when a new file is built.
    const json = Buffer.from(JSON.stringify({ version: 1, level: 'avx2', key: 'old', entries: [] }));
    const head = Buffer.alloc(12);
    head.write('DSEEKRP1', 0, 'latin1');
    head.writeUInt32LE(json.byteLength, 8);
    writeFileSync(join(repackDir, 'old.avx2.dsrp'), Buffer.concat([head, json, Buffer.alloc(8192)]));
    const rebuilt = dseek('bench', '--model', out, '-p', '8', '-n', '0', '-r', '1', '--json');
    assert.equal((JSON.parse(rebuilt.stdout) as Record<string, unknown>)['repack_source'], 'built');
    assert.match(rebuilt.stderr, /corrupt .*checksum.*rebuilding/);
    assert.deepEqual(readdirSync(repackDir).filter((f) => f.startsWith('old.')), [], 'the old-version file is gone');
    // and --no-repack keeps the rows.
    const rows = JSON.parse(dseek('bench', '--model', out, '-p', '8', '-n', '0', '-r', '1', '--no-repack', '--json').stdout) as Record<string, unknown>;
    assert.equal(rows['repack_source'], 'none');
  }
});

test('DSEEK_SIMD naming a level this CPU cannot run is a one-line error naming the ones it can', { skip: nativeLevels().length === 0 ? `native addon unavailable: ${nativeLoadError()}` : false }, () => {
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'bench', '--model', join(goldenRoot, 'lite'), '-p', '4', '-n', '2', '--backend', 'native'], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, DSEEK_SIMD: 'sse9' },
  });
  assert.notEqual(r.status, 0);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /DSEEK_SIMD.*"sse9".*choose one of .*scalar/);
});

test('random-model and bench refuse bad flags with one line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-bench-'));
  temporary.push(dir);
  for (const [args, pattern] of [
    [['random-model', '--like', 'gpt5', join(dir, 'x.gguf')], /--like.*gpt5/],
    [['random-model', '--like', 'v2-lite', '--type', 'q3_xs', join(dir, 'x.gguf')], /--type/],
    [['random-model', '--like', 'v2-lite', '--layers', '0', join(dir, 'x.gguf')], /--layers/],
    [['bench', '--model', join(goldenRoot, 'lite'), '-p', '100'], /context/],
    [['bench', '--model', join(goldenRoot, 'lite'), '-p', '4', '-n', '2', '--repack-cache-size', '0'], /--repack-cache-size.*≥ 1/],
    [['bench', '--model', join(goldenRoot, 'lite'), '-p', '4', '-n', '2', '--repack-cache-size', 'lots'], /--repack-cache-size.*not an integer/],
  ] as const) {
    const r = dseek(...args);
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, pattern);
  }
});

const serving = (...args: string[]) =>
  spawnSync(process.execPath, [join(repoRoot, 'dist/bench/serving.js'), '--streams', '1', '--prompt', '8', '--gen', '2', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });

test('bench:serving --cached-prefix times a prompt against one sharing its first C tokens; a C outside 1 … long−1 or not whole exits 2 naming the flag', () => {
  const ok = serving('--long', '64', '--cached-prefix', '48');
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /64-token prompt: uncached [\d.]+ s; another sharing its first 48 tokens \(cached\) [\d.]+ s: [\d.]+× \(at most 4\.00×\)/);
  for (const bad of ['0', '64', '100', '12.5', 'many']) {
    const r = serving('--long', '64', '--cached-prefix', bad);
    assert.equal(r.status, 2, `--cached-prefix ${bad}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`--cached-prefix must be a whole number of tokens from 1 to 63 \\(below --long 64\\), got ${bad.replace('.', '\\.')}`));
    assert.equal(r.stdout, '', 'nothing measured before the flag is checked');
  }
});
