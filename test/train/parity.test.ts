/**
 * The training forward pass computes the inference function: after a few training steps, the
 * checkpoint exported from the trainer's parameters gives, under `loadModel` + `DeepseekModel`,
 * the logits the trainer computes (prefill in the expanded MLA form, and token by token in the
 * absorbed form through the latent cache), within 1e-4.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { loadModel } from '../../src/model/load.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { train } from '../../src/train/trainer.js';
import { exportModel } from '../../src/train/export.js';
import { TrainableModel } from '../../src/train/network.js';
import { Scratch, jsMatMul } from '../../src/train/ops.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { readFileSync } from 'node:fs';
import { tempDir, tinySettings, writeCorpus } from './helpers.js';

for (const qLoraRank of [null, 6]) {
  test(`trained checkpoint (q_lora_rank ${qLoraRank}) gives the trainer's logits under loadModel + DeepseekModel.forward`, () => {
    const dir = tempDir('parity');
    try {
      const corpus = writeCorpus(dir);
      const settings = tinySettings({ steps: 4, evalEvery: 0, checkpointEvery: 0 });
      const result = train({
        settings: { ...settings, shape: { ...settings.shape, qLoraRank } },
        dataPath: corpus,
        outDir: join(dir, 'run'),
        log: () => {},
        threads: 1,
      });
      assert.equal(result.step, 4);
      const modelDir = join(dir, 'model');
      exportModel(modelDir, result.settings.shape, result.params, result.biases, {
        dtype: 'f32',
        tokenizer: {
          tokenizer: JSON.parse(readFileSync(join(result.tokenizerDir, 'tokenizer.json'), 'utf8')) as object,
          tokenizerConfig: JSON.parse(readFileSync(join(result.tokenizerDir, 'tokenizer_config.json'), 'utf8')) as object,
        },
      });
      const tokenizer = loadTokenizer(modelDir)!;
      const tokens = tokenizer.encode('And the lord said unto moses that they went up.').slice(0, result.settings.shape.context);
      const T = tokens.length;
      const V = result.config.vocabSize;
      const trainer = new TrainableModel(result.config, result.params, result.params.like('f32'), result.biases, { mm: jsMatMul, scratch: new Scratch('f32'), precision: 'f32' }, T);
      const expected = new Float32Array(T * V);
      trainer.run(Int32Array.from(tokens), 1, T, { logitsOut: expected });

      for (const backend of [undefined, referenceBackend]) {
        const loaded = loadModel(modelDir, backend ? { backend } : {});
        const all = loaded.model.forward(tokens, loaded.model.createCache(), { logits: 'all' });
        let maxDiff = 0;
        for (let i = 0; i < T * V; i++) maxDiff = Math.max(maxDiff, Math.abs(all[i]! - expected[i]!));
        assert.ok(maxDiff < 1e-4, `prefill logits differ by ${maxDiff} (${loaded.model.backend.name})`);

        // Token by token: the absorbed form reading the latent cache.
        const cache = loaded.model.createCache();
        maxDiff = 0;
        for (let t = 0; t < T; t++) {
          const row = loaded.model.forward([tokens[t]!], cache, { logits: 'last', attention: 'absorbed' });
          for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(row[v]! - expected[t * V + v]!));
        }
        assert.ok(maxDiff < 1e-4, `decode logits differ by ${maxDiff} (${loaded.model.backend.name})`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
