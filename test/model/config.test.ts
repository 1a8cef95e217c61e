import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig, isMoeLayer } from '../../src/model/config.js';
import { ropeParams, yarnMscale } from '../../src/model/rope.js';
import { UnsupportedConfigError } from '../../src/errors.js';
import { repoRoot, goldenRoot } from '../paths.js';

const liteJson = JSON.parse(readFileSync(join(repoRoot, 'test/data/deepseek-v2-lite/config.json'), 'utf8')) as Record<string, unknown>;

test('V2-Lite config normalises with every docs/SPEC.md §1 field', () => {
  const c = parseConfig(liteJson);
  assert.equal(c.family, 'deepseek_v2');
  assert.equal(c.qLoraRank, null);
  assert.equal(c.kvLoraRank, 512);
  assert.equal(c.topkMethod, 'greedy');
  assert.equal(c.nRoutedExperts, 64);
  assert.equal(c.numExpertsPerTok, 6);
  assert.deepEqual(c.eosTokenIds, [100001]);
  assert.equal(c.ropeScaling?.factor, 40);
  assert.equal(c.ropeScaling?.mscaleAllDim, 0.707);
  assert.equal(isMoeLayer(c, 0), false);
  assert.equal(isMoeLayer(c, 1), true);
});

test('YaRN constants match docs/SPEC.md §11', () => {
  const c = parseConfig(liteJson);
  const rope = ropeParams(c);
  assert.ok(Math.abs(yarnMscale(40, 0.707) - 1.2608038) < 1e-7);
  assert.ok(Math.abs(yarnMscale(40, 1.0) - 1.3688879) < 1e-7);
  assert.ok(Math.abs(rope.softmaxScale - 0.1147214) < 1e-7);
  assert.equal(rope.magnitude, 1);
  // Pairs 0..10 keep the base frequency, pairs ≥ 23 are divided by 40 (low = 10, high = 23).
  for (let i = 0; i < 32; i++) {
    const base = 1 / 10000 ** ((2 * i) / 64);
    if (i <= 10) assert.ok(Math.abs(rope.invFreq[i]! - base) < 1e-15, `pair ${i}`);
    if (i >= 23) assert.ok(Math.abs(rope.invFreq[i]! - base / 40) < 1e-15, `pair ${i}`);
    if (i > 10 && i < 23) assert.ok(rope.invFreq[i]! < base && rope.invFreq[i]! > base / 40, `pair ${i}`);
  }
  // No rope_scaling: plain 1/sqrt(192).
  const plain = ropeParams(parseConfig({ ...liteJson, rope_scaling: null }));
  assert.ok(Math.abs(plain.softmaxScale - 0.0721688) < 1e-7);
});

test('spellings and variants the checkpoints use', () => {
  assert.equal(parseConfig({ ...liteJson, topk_method: 'gready' }).topkMethod, 'greedy');
  assert.equal(parseConfig({ ...liteJson, topk_method: undefined }).topkMethod, 'greedy');
  assert.deepEqual(parseConfig({ ...liteJson, eos_token_id: [1, 2] }).eosTokenIds, [1, 2]);
  assert.equal(parseConfig({ ...liteJson, n_routed_experts: null }).nRoutedExperts, 0);
  assert.equal(parseConfig({ ...liteJson, model_type: 'kimi_k2' }).family, 'deepseek_v3');
  const v3 = parseConfig(JSON.parse(readFileSync(join(goldenRoot, 'v3/config.json'), 'utf8')));
  assert.equal(v3.family, 'deepseek_v3');
  assert.equal(v3.topkMethod, 'noaux_tc');
  assert.equal(v3.scoringFunc, 'sigmoid');
  // MTP layers are not part of the main model.
  assert.equal(parseConfig({ ...liteJson, num_nextn_predict_layers: 1 }).numHiddenLayers, 27);
});

test('unsupported values name the field and the value', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ model_type: 'llama' }, 'model_type'],
    [{ topk_method: 'random' }, 'topk_method'],
    [{ scoring_func: 'tanh' }, 'scoring_func'],
    [{ hidden_act: 'gelu' }, 'hidden_act'],
    [{ rope_scaling: { type: 'linear', factor: 2 } }, 'rope_scaling.type'],
    [{ rope_scaling: { type: 'yarn' } }, 'rope_scaling.factor'],
    [{ hidden_size: 0 }, 'hidden_size'],
    [{ num_hidden_layers: 2.5 }, 'num_hidden_layers'],
    [{ vocab_size: '102400' }, 'vocab_size'],
    [{ n_group: 3 }, 'n_group'],
    [{ qk_rope_head_dim: 63 }, 'qk_rope_head_dim'],
    [{ num_experts_per_tok: 65 }, 'num_experts_per_tok'],
    [{ eos_token_id: 'x' }, 'eos_token_id'],
  ];
  for (const [patch, field] of cases) {
    assert.throws(
      () => parseConfig({ ...liteJson, ...patch }),
      (e: unknown) => e instanceof UnsupportedConfigError && e.field === field && e.message.includes(field),
      field,
    );
  }
});
