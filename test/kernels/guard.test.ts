/**
 * native/guard.c: a mapped file truncated underneath the process reads as zeros past its new end
 * (and the fault is counted) instead of killing the process with SIGBUS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapFileRegions, mappedFileFaults, nativeLoadError } from '../../src/kernels/native/index.js';

const unavailable = nativeLoadError() !== '' ? `the native addon is not built (${nativeLoadError()})` : process.env['DSEEK_NO_MMAP'] ? 'DSEEK_NO_MMAP is set' : false;

test('a mapped file truncated under a reader reads zeros past its new end and counts one fault, and the process lives', { skip: unavailable }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-guard-'));
  try {
    const file = join(dir, 'weights.bin');
    const size = 1 << 20;
    writeFileSync(file, Buffer.alloc(size, 7));
    const [view] = mapFileRegions(file, [{ offset: 0, size }])!;
    assert.equal(view![size - 1], 7);
    const before = mappedFileFaults();
    truncateSync(file, 4096);
    assert.equal(view![0], 7, 'bytes before the new end are still the file’s');
    let sum = 0;
    for (let i = 4096; i < size; i += 4096) sum += view![i]!;
    assert.equal(sum, 0, 'bytes past the new end read as zeros');
    assert.equal(mappedFileFaults(), before + 1, 'one fault: the rest of the mapping was replaced at once');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
