/** `dseek train` refuses bad input with a one-line error naming the flag. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';

const dir = mkdtempSync(join(tmpdir(), 'dseek-train-flags-'));
const data = join(dir, 'data.txt');
writeFileSync(data, 'In the beginning.\n\nAnd the earth.\n');

for (const [args, pattern] of [
  [['--data', join(dir, 'missing.txt')], /--data: .*missing\.txt is not a readable file/],
  [['--data', dir], /--data: .*is not a readable file/],
  [['--data', data, '--val', join(dir, 'nope.txt')], /--val:/],
  [['--data', data, '--dtype', 'q4_0'], /--dtype/],
  [['--data', data, '--steps', '-3'], /--steps/],
] as const) {
  test(`dseek train ${args.slice(-2).join(' ')}: one-line error`, () => {
    const r = spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'train', '--out', join(dir, 'run'), ...args], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, pattern);
  });
}
