/**
 * A batched forward pass (several sequences, mixed prompt chunks and decode steps) must give each
 * sequence exactly what it gets alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { createNativeBackend } from '../../src/kernels/native/index.js';
import { goldenRoot } from '../paths.js';
import { LatentCache } from '../../src/cache/latentCache.js';
import { PagePool } from '../../src/cache/pagePool.js';
import type { Backend } from '../../src/kernels/backend.js';

const backends = [referenceBackend, createNativeBackend(2)].filter((b) => b !== null);

for (const backend of backends) {
  for (const name of ['lite', 'v3']) {
    test(`${name} on ${backend.name}: batched sequences equal separate runs`, () => {
      const { model, config } = loadModel(join(goldenRoot, name), { backend });
      const V = config.vocabSize;
      const prompts = [
        [0, 17, 42, 99, 7, 200],
        [0, 5],
        [0, 9, 9, 31, 55, 2, 101, 88, 3],
      ];
      // Alone: prefill each prompt, then two decode steps with fixed tokens.
      const alone = prompts.map((p) => {
        const cache = model.createCache();
        const rows = [Float64Array.from(model.forward(p, cache, { logits: 'all' }))];
        for (const next of [11, 182]) rows.push(Float64Array.from(model.forward([next], cache)));
        return rows;
      });
      // Together: the first two prefill while the third prefills in two chunks, then all decode.
      const caches = prompts.map(() => model.createCache());
      const first = model.forwardBatch([
        { tokens: prompts[0]!, cache: caches[0]!, logits: 'all' },
        { tokens: prompts[1]!, cache: caches[1]!, logits: 'all' },
        { tokens: prompts[2]!.slice(0, 4), cache: caches[2]! },
      ]);
      const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
        let d = 0;
        for (let i = 0; i < b.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
        assert.ok(d < 1e-5, `${what}: ${d}`);
      };
      close(first.subarray(0, 6 * V), alone[0]![0]!, 'prompt 0');
      close(first.subarray(6 * V, 8 * V), alone[1]![0]!, 'prompt 1');
      const rest = model.forwardBatch([
        { tokens: [11], cache: caches[0]! },
        { tokens: prompts[2]!.slice(4), cache: caches[2]!, logits: 'all' },
        { tokens: [11], cache: caches[1]! },
      ]);
      close(rest.subarray(0, V), alone[0]![1]!, 'decode 0');
      close(rest.subarray(V, 6 * V), alone[2]![0]!.subarray(4 * V), 'prompt 2, second chunk');
      close(rest.subarray(6 * V, 7 * V), alone[1]![1]!, 'decode 1');
      const decode = model.forwardBatch(caches.map((cache, i) => ({ tokens: [i === 2 ? 11 : 182], cache })));
      close(decode.subarray(0, V), alone[0]![2]!, 'step 2, sequence 0');
      close(decode.subarray(V, 2 * V), alone[1]![2]!, 'step 2, sequence 1');
      close(decode.subarray(2 * V, 3 * V), alone[2]![1]!, 'step 1, sequence 2');
    });
  }
}

test('a batch rejects a sequence given twice and empty items', () => {
  const { model } = loadModel(join(goldenRoot, 'lite'), { backend: referenceBackend });
  const cache = model.createCache();
  assert.throws(() => model.forwardBatch([{ tokens: [1], cache }, { tokens: [2], cache }]), /twice/);
  assert.throws(() => model.forwardBatch([]), /empty/);
  assert.throws(() => model.forwardBatch([{ tokens: [], cache }]), /empty/);
});

for (const backend of backends) {
  test(`lite on ${backend.name}: a decode batch of sequences on one page pool makes one latent attention call per layer, each sequence as alone`, () => {
    const { model, config } = loadModel(join(goldenRoot, 'lite'), { backend });
    const V = config.vocabSize;
    const prompts = [[0, 17, 42, 99, 7, 200], [0, 5], [0, 9, 9, 31, 55, 2, 101, 88, 3]];
    const alone = prompts.map((p) => {
      const cache = model.createCache();
      model.forward(p, cache);
      return Float64Array.from(model.forward([11], cache));
    });
    // Caches on one pool, as the scheduler makes them; pages of 4 tokens, so the longest prompt spans three.
    const pool = new PagePool({ layers: config.numHiddenLayers, width: config.kvLoraRank + config.qkRopeHeadDim, pageTokens: 4, dtype: model.precision === 'f64' ? 'f64' : 'f32', maxPages: 32 });
    const caches = prompts.map(() => new LatentCache({ pool, maxTokens: 64 }));
    prompts.forEach((p, i) => model.forward(p, caches[i]!));
    let calls = 0;
    const counted: Backend = { ...backend, sharedKvAttention: (...args) => (calls++, backend.sharedKvAttention(...args)) };
    const { model: countedModel } = loadModel(join(goldenRoot, 'lite'), { backend: counted });
    const decode = countedModel.forwardBatch(caches.map((cache) => ({ tokens: [11], cache })));
    assert.equal(calls, config.numHiddenLayers, 'one call per layer for the three sequences');
    alone.forEach((row, i) => {
      let d = 0;
      for (let j = 0; j < V; j++) d = Math.max(d, Math.abs(decode[i * V + j]! - row[j]!));
      assert.ok(d < 1e-5, `sequence ${i}: ${d}`);
    });
  });
}
