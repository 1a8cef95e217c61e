/**
 * Levels this machine cannot run natively are still checked: the ARM64 NEON level is
 * cross-compiled with the kernels and test/kernels/levels/levelCheck.c, and run under qemu-user,
 * where every packed product must agree with the scalar level on awkward shapes. (Levels the CPU
 * has are checked against the TypeScript reference in repack.test.ts.) Skips, with the packages to
 * install, when the cross compiler or qemu is missing; .ci/run installs them.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { arch, tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';

const temporary: string[] = [];
after(() => temporary.forEach((d) => rmSync(d, { recursive: true, force: true })));
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const native = join(repoRoot, 'src/kernels/native');
const common = ['repack.c', 'quant.c', 'threadpool.c', 'arch/scalar.c'].map((f) => join(native, f));

const crossSkip =
  arch() === 'arm64'
    ? 'this is an ARM64 machine: repack.test.ts checks the NEON level natively'
    : !has('aarch64-linux-gnu-gcc') || !has('qemu-aarch64')
      ? 'needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)'
      : false;

test('NEON (ARM64 dot-product) packed products agree with the scalar level, under qemu', { skip: crossSkip, timeout: 180_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-neon-'));
  temporary.push(dir);
  const neonObject = join(dir, 'neon.o');
  // The level's file is built with its own flags, as binding.gyp builds it.
  const cc1 = spawnSync('aarch64-linux-gnu-gcc', ['-O2', '-std=gnu11', '-march=armv8.2-a+dotprod', '-c', '-o', neonObject, join(native, 'arch/arm/neon.c')], { encoding: 'utf8' });
  assert.equal(cc1.status, 0, cc1.stderr);
  const exe = join(dir, 'levelcheck');
  const cc2 = spawnSync('aarch64-linux-gnu-gcc', ['-O2', '-std=gnu11', '-static', '-o', exe, join(repoRoot, 'test/kernels/levels/levelCheck.c'), ...common, neonObject, '-lpthread', '-lm'], { encoding: 'utf8' });
  assert.equal(cc2.status, 0, cc2.stderr);
  const run = spawnSync('qemu-aarch64', ['-cpu', 'max', exe, 'neon'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  assert.match(run.stdout, /^neon: (\d+) products agree with the scalar level/);
  assert.ok(Number(/(\d+) products/.exec(run.stdout)![1]) >= 40, run.stdout);
});

test('x86-64 levels agree with the scalar level in the standalone check too (the same program the NEON check runs)', { skip: arch() !== 'x64' ? 'not an x86-64 machine' : !has('gcc') ? 'needs gcc' : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-x86-'));
  temporary.push(dir);
  const flags: Record<string, string[]> = {
    avx2: ['-mavx2', '-mfma', '-mf16c'],
    avx512: ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx512vnni'],
    amx: ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx512vnni', '-mamx-tile', '-mamx-int8'],
  };
  const objects = Object.entries(flags).map(([level, f]) => {
    const out = join(dir, `${level}.o`);
    const cc = spawnSync('gcc', ['-O2', '-std=gnu11', ...f, '-c', '-o', out, join(native, `arch/x86/${level}.c`)], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    return out;
  });
  const exe = join(dir, 'levelcheck');
  const cc = spawnSync('gcc', ['-O2', '-std=gnu11', '-o', exe, join(repoRoot, 'test/kernels/levels/levelCheck.c'), ...common, ...objects, '-lpthread', '-lm'], { encoding: 'utf8' });
  assert.equal(cc.status, 0, cc.stderr);
  for (const level of ['avx2', 'avx512', 'amx']) {
    const run = spawnSync(exe, [level], { encoding: 'utf8', timeout: 60_000 });
    if (run.status === 2) continue; // this CPU lacks the level (the program says so)
    assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
    assert.match(run.stdout, new RegExp(`^${level}: \\d+ products agree`));
  }
});
