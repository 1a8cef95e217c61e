/** The model dseek ships converts to GGUF and computes the same there, tokenizer included. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToGguf } from '../../src/formats/convert.js';
import { loadModel } from '../../src/model/load.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { repoRoot } from '../paths.js';

const shipped = join(repoRoot, 'models', 'default');
const skip = existsSync(join(shipped, 'model.safetensors')) ? false : 'models/default is not there';

test('models/default → f32 GGUF: same logits, same tokenizer', { skip }, () => {
  const out = join(mkdtempSync(join(tmpdir(), 'dseek-shipped-')), 'default.gguf');
  convertToGguf(shipped, out, { type: 'f32' });
  const hf = loadModel(shipped, { backend: referenceBackend });
  const gguf = loadModel(out, { backend: referenceBackend });
  const text = 'In the beginning God created the heaven and the earth. 123 “quotes” — and ünïcode!';
  const ids = hf.tokenizer!.encode(text);
  assert.deepEqual(gguf.tokenizer!.encode(text), ids);
  assert.equal(gguf.tokenizer!.decode(ids), hf.tokenizer!.decode(ids));
  assert.equal(gguf.tokenizer!.chatTemplate, hf.tokenizer!.chatTemplate);
  const a = hf.model.forward(ids, hf.model.createCache(), { logits: 'all' });
  const b = gguf.model.forward(ids, gguf.model.createCache(), { logits: 'all' });
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  assert.ok(diff < 1e-5, `max |Δlogit| ${diff}`);
});
