/**
 * The golden models through the q8 latent cache (--cache-type q8): logits against the f16 cache
 * under the same expert routing, and greedy decoding against the reference's greedy tokens.
 *
 * Measured (reference and native backends, prefill and one token at a time, every golden prompt
 * and the greedy continuation): with the routing held to the f16 run's, q8 logits differ from f16
 * by at most 1.10e-2 (lite), 1.40e-2 (full), 1.48e-2 (v3) absolute in prefill, and in decode, where
 * the queries are rounded to 8 bits too, 1.23e-2, 1.47e-2, 1.33e-2; the bound below is 2e-2.
 * Without holding it, a top-k expert choice near a tie can flip and move one position's logits by
 * up to 0.39 (full, prompt 0 position 9) — as f16 against f32 already does at v3 position 2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.js';
import type { Vec } from '../../src/kernels/tensor.js';
import { goldenModels, goldenRoot } from '../paths.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { createNativeBackend } from '../../src/kernels/native/index.js';
import type { Backend } from '../../src/kernels/backend.js';

const backends: Backend[] = [referenceBackend];
const native = createNativeBackend(2);
if (native) backends.push(native);

/** Max |q8 − f16| logit under the same routing: measured 1.48e-2 at most (see above). */
const Q8_LOGIT_BOUND = 2e-2;

interface Golden {
  prompt_tokens: number[][];
  greedy_prompt_tokens: number[];
  greedy_tokens: number[];
}

function argmax(x: Vec): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

function maxAbsDiff(a: Vec, b: Vec): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

for (const name of goldenModels) {
  const dir = join(goldenRoot, name);
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
  const sequences = [...golden.prompt_tokens, [...golden.greedy_prompt_tokens, ...golden.greedy_tokens]];

  for (const backend of backends) {
    test(`${name} on ${backend.name}: q8-cache logits within ${Q8_LOGIT_BOUND} of the f16 cache's (same routing; prefill and decode)`, () => {
      const { model } = loadModel(dir, { backend });
      let prefill = 0;
      let decode = 0;
      for (const tokens of sequences) {
        // One prompt chunk (expanded attention over rows read back from the cache).
        const experts = new Map<number, Int32Array>();
        const f16 = model.forward(tokens, model.createCache({ dtype: 'f16' }), { logits: 'all', onRouting: (l, r) => experts.set(l, r.experts.slice()) }).slice();
        const q8 = model.forward(tokens, model.createCache({ dtype: 'q8' }), { logits: 'all', forceExperts: (l) => experts.get(l) });
        prefill = Math.max(prefill, maxAbsDiff(q8, f16));
        // One token at a time (absorbed attention: the shared-KV kernel on the q8 pages).
        const c16 = model.createCache({ dtype: 'f16' });
        const c8 = model.createCache({ dtype: 'q8' });
        for (const t of tokens) {
          const step = new Map<number, Int32Array>();
          const a = model.forward([t], c16, { onRouting: (l, r) => step.set(l, r.experts.slice()) }).slice();
          const b = model.forward([t], c8, { forceExperts: (l) => step.get(l) });
          decode = Math.max(decode, maxAbsDiff(b, a));
        }
      }
      assert.ok(prefill <= Q8_LOGIT_BOUND, `prefill: max |q8 − f16| ${prefill}`);
      assert.ok(decode <= Q8_LOGIT_BOUND, `decode: max |q8 − f16| ${decode}`);
      assert.ok(prefill > 0 && decode > 0, 'q8 really stores 8 bits');
    });

    test(`${name} on ${backend.name}: greedy decoding through the q8 cache reproduces the reference`, () => {
      const { model } = loadModel(dir, { backend });
      // Teacher-forced, with each step's routing held to the f16 cache's: every choice is the
      // reference's, the near-ties included (full's first token has a float64 margin of 0.0041).
      const c16 = model.createCache({ dtype: 'f16' });
      const c8 = model.createCache({ dtype: 'q8' });
      let experts = new Map<number, Int32Array>();
      model.forward(golden.greedy_prompt_tokens, c16, { onRouting: (l, r) => experts.set(l, r.experts.slice()) });
      let logits = model.forward(golden.greedy_prompt_tokens, c8, { forceExperts: (l) => experts.get(l) });
      golden.greedy_tokens.forEach((expected, i) => {
        assert.equal(argmax(logits), expected, `step ${i}`);
        const step = new Map<number, Int32Array>();
        model.forward([expected], c16, { onRouting: (l, r) => step.set(l, r.experts.slice()) });
        experts = step;
        logits = model.forward([expected], c8, { forceExperts: (l) => experts.get(l) });
      });
      // Free-running, the routers deciding: the reference's tokens exactly, as with the f16 cache.
      // Not for full: its group-limited router (16 experts, ×16 scaling) sits near a tie at prompt
      // position 9 and steps 19 and 22, where the q8 error picks another expert (measured), and
      // that changes the first and the 23rd greedy token.
      if (name === 'full') return;
      const free = model.createCache({ dtype: 'q8' });
      logits = model.forward(golden.greedy_prompt_tokens, free);
      const generated: number[] = [];
      for (let i = 0; i < golden.greedy_tokens.length; i++) {
        generated.push(argmax(logits));
        logits = model.forward([generated[i]!], free);
      }
      assert.deepEqual(generated, golden.greedy_tokens);
    });
  }
}
