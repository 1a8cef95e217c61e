/**
 * The model fingerprint names a model by its content: the same bytes under another folder or file
 * name give the same fingerprint; a changed weight, a changed config value or another model do not.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync, openSync, writeSync, closeSync, readSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelFingerprint } from '../../src/model/fingerprint.js';
import { goldenRoot, repoRoot } from '../paths.js';

const scratch = mkdtempSync(join(tmpdir(), 'dseek-fingerprint-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const bundled = join(repoRoot, 'models', 'default');

test('a copy of the model under another folder name has the same fingerprint; another model does not', () => {
  const copy = join(scratch, 'renamed-copy');
  cpSync(bundled, copy, { recursive: true });
  assert.equal(modelFingerprint(copy), modelFingerprint(bundled));
  assert.match(modelFingerprint(bundled), /^[0-9a-f]{64}$/);
  assert.notEqual(modelFingerprint(join(goldenRoot, 'lite')), modelFingerprint(bundled));
});

test('the config counts by value: reformatting config.json keeps the fingerprint, changing a value does not', () => {
  const copy = join(scratch, 'config-edit');
  cpSync(bundled, copy, { recursive: true });
  const config = JSON.parse(readFileSync(join(copy, 'config.json'), 'utf8')) as Record<string, unknown>;
  const reordered = Object.fromEntries(Object.entries(config).reverse());
  writeFileSync(join(copy, 'config.json'), JSON.stringify(reordered, null, 4));
  assert.equal(modelFingerprint(copy), modelFingerprint(bundled));
  writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, rms_norm_eps: 1e-3 }));
  assert.notEqual(modelFingerprint(copy), modelFingerprint(bundled));
});

test('a weight byte changed in a sampled block (here the file’s last 4 KiB) changes the fingerprint', () => {
  const copy = join(scratch, 'weights-edit');
  cpSync(bundled, copy, { recursive: true });
  const file = join(copy, 'model.safetensors');
  const at = statSync(file).size - 100;
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0]! ^= 0xff;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
  assert.notEqual(modelFingerprint(copy), modelFingerprint(bundled));
});

test('a .gguf file copied under another name has the same fingerprint', () => {
  // Any file stands for a GGUF here: only its bytes are hashed, never its name.
  const a = join(scratch, 'model-a.gguf');
  const b = join(scratch, 'model-b-renamed.gguf');
  writeFileSync(a, readFileSync(join(bundled, 'model.safetensors')));
  cpSync(a, b);
  assert.equal(modelFingerprint(a), modelFingerprint(b));
});
