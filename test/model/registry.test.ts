/** The one registry of supported model types: the config reader, the GGUF reader and inspect all name it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/model/config.js';
import { GGUF_ARCHITECTURE, SUPPORTED_MODEL_TYPES, supportedModelType } from '../../src/model/registry.js';
import { formatInspectReport, inspectModel } from '../../src/cli/inspect.js';
import { UnsupportedConfigError } from '../../src/errors.js';
import { repoRoot } from '../paths.js';

const lite = JSON.parse(readFileSync(join(repoRoot, 'test/data/deepseek-v2-lite/config.json'), 'utf8')) as Record<string, unknown>;

test('every registered model_type parses to its family', () => {
  for (const t of SUPPORTED_MODEL_TYPES) assert.equal(parseConfig({ ...lite, model_type: t.modelType }).family, t.family);
});

test('an unsupported model_type is refused with a message naming every supported type and the GGUF architecture', () => {
  assert.throws(
    () => parseConfig({ ...lite, model_type: 'llama' }),
    (e: unknown) => {
      assert.ok(e instanceof UnsupportedConfigError);
      for (const t of SUPPORTED_MODEL_TYPES) assert.ok(e.message.includes(t.modelType), t.modelType);
      assert.ok(e.message.includes(GGUF_ARCHITECTURE));
      return true;
    },
  );
  assert.equal(supportedModelType('llama'), undefined);
});

test('dseek inspect names the registry entry: family and the models it covers', () => {
  const text = formatInspectReport(inspectModel(join(repoRoot, 'test/data/deepseek-v2-lite/config.json')));
  assert.match(text, /architecture: deepseek_v2 \(DeepSeek-V2 family: DeepSeek-V2, V2-Lite, V2\.5, Coder-V2\)/);
});
