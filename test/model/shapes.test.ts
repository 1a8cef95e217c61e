/**
 * Exactness on shapes the golden fixtures do not cover: tiny random checkpoints with awkward
 * dimensions and every router/RoPE/config variant, compared against an independent naive float64
 * implementation (naiveReference.ts, written from docs/SPEC.md in the original remote code's style).
 * The naive reference is itself first checked against the golden fixtures.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { createNativeBackend } from '../../src/kernels/native/index.js';
import type { Backend } from '../../src/kernels/backend.js';
import { naiveLogits, naiveSoftmaxScale, readWeightsF64, type RouteTrace } from './naiveReference.js';
import { writeRandomModel } from './randomModel.js';
import { goldenRoot } from '../paths.js';

type Vec = Float32Array | Float64Array;

/** The reference kernels always, the native ones when the addon is built. */
const backends: Backend[] = [referenceBackend];
const native = createNativeBackend(2);
if (native) backends.push(native);

const scratch = mkdtempSync(join(tmpdir(), 'dseek-shapes-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** max |a − b| over rows [0, rows) of b starting at row `fromRow`; a holds `rows` rows. */
function maxAbsDiff(a: Vec, b: Float64Array, vocab: number, fromRow: number, rows: number): number {
  assert.equal(a.length, rows * vocab, `expected ${rows}×${vocab} logits, got ${a.length}`);
  let max = 0;
  for (let i = 0; i < rows * vocab; i++) {
    const d = Math.abs(a[i]! - b[fromRow * vocab + i]!);
    if (!(d <= max)) max = d; // NaN propagates
  }
  return max;
}

function maxAbs(x: Float64Array): number {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  return m;
}

/** The worst position and its error, for failure messages. */
function worstPosition(a: Vec, b: Float64Array, vocab: number): string {
  let worst = -1;
  let max = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= max)) {
      max = d;
      worst = i;
    }
  }
  return `worst at position ${Math.floor(worst / vocab)} vocab ${worst % vocab}: got ${a[worst]} want ${b[worst]}`;
}

function tokensFor(seed: number, vocab: number, n: number): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s % vocab);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// 1. the naive reference against the golden fixtures

interface Golden {
  prompt_tokens: number[][];
  logits_f64: number[][][];
  softmax_scale: number;
}

for (const name of ['lite', 'full', 'v3'] as const) {
  test(`naive reference reproduces golden ${name} within 2e-6`, (t) => {
    const dir = join(goldenRoot, name);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
    const weights = readWeightsF64(dir);
    assert.ok(Math.abs(naiveSoftmaxScale(config) - golden.softmax_scale) < 1e-12);
    let worst = 0;
    golden.prompt_tokens.forEach((tokens, p) => {
      const got = naiveLogits(config, weights, tokens);
      const want = Float64Array.from(golden.logits_f64[p]!.flat());
      const diff = maxAbsDiff(got, want, config['vocab_size'] as number, 0, tokens.length);
      worst = Math.max(worst, diff);
      assert.ok(diff < 2e-6, `prompt ${p}: max |diff| ${diff}`);
    });
    t.diagnostic(`${golden.prompt_tokens.length} prompts, max |diff| ${worst.toExponential(2)}`);
  });
}

// ------------------------------------------------------------------------------------------------
// 2. awkward shapes: the project's model against the naive reference

interface Case {
  name: string;
  overrides: Record<string, unknown>;
  seed: number;
  mtpLayer?: boolean;
  /** weight dtypes to also write and check (f32 is always checked). */
  dtypes?: Array<'f16' | 'bf16'>;
  tokens?: number;
  /** assert that some choices depend on masking dropped groups with −∞ rather than 0 */
  expectMaskMatters?: boolean;
}

const yarn48 = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'yarn',
  factor: 4,
  original_max_position_embeddings: 8,
  ...extra,
});

const cases: Case[] = [
  {
    // V2-Lite-like: q_proj, greedy top-2 of 6, one shared expert, plain RoPE
    name: 'lite-odd greedy',
    overrides: {},
    seed: 1,
    dtypes: ['bf16'],
  },
  {
    // V2-like: q_lora, group_limited_greedy 12 experts in 4 groups keep 2 top-3, ×16, MoE on even
    // layers only (moe_layer_freq 2, first_k_dense_replace 0), YaRN with mscale ≠ mscale_all_dim
    name: 'v2 groups yarn freq2',
    overrides: {
      q_lora_rank: 12,
      num_hidden_layers: 4,
      first_k_dense_replace: 0,
      moe_layer_freq: 2,
      n_routed_experts: 12,
      n_group: 4,
      topk_group: 2,
      num_experts_per_tok: 3,
      topk_method: 'group_limited_greedy',
      routed_scaling_factor: 16.0,
      n_shared_experts: 2,
      rope_scaling: yarn48({ beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 1.0 }),
    },
    seed: 13, // a seed where max vs top-2-sum group scores pick different experts for some tokens
    dtypes: ['bf16', 'f16'],
  },
  {
    // V3-like: sigmoid noaux_tc, 12 experts in 3 groups keep 2 top-4, normalise AND ×2.5, eps 1e-5
    // (latent norms keep 1e-6), tied embeddings, eos list, YaRN with only factor/original given
    // (defaults: mscale 1, mscale_all_dim 0 → cos/sin ×1.1386, softmax scale unchanged), MTP layer
    name: 'v3 noaux tied mtp',
    overrides: {
      model_type: 'deepseek_v3',
      q_lora_rank: 12,
      num_hidden_layers: 3,
      first_k_dense_replace: 1,
      n_routed_experts: 12,
      n_group: 3,
      topk_group: 2,
      num_experts_per_tok: 4,
      topk_method: 'noaux_tc',
      scoring_func: 'sigmoid',
      norm_topk_prob: true,
      routed_scaling_factor: 2.5,
      n_shared_experts: 1,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      eos_token_id: [1, 2],
      rope_scaling: yarn48(),
    },
    seed: 3,
    mtpLayer: true,
    dtypes: ['f16'],
  },
  {
    // no experts at all: every layer dense; YaRN (newer `rope_type` key) with mscale = mscale_all_dim
    name: 'all dense yarn',
    overrides: {
      n_routed_experts: null,
      n_shared_experts: null,
      moe_intermediate_size: null,
      num_experts_per_tok: null,
      q_lora_rank: 12,
      num_hidden_layers: 2,
      rope_theta: 50000,
      rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 8, mscale: 0.707, mscale_all_dim: 0.707 },
    },
    seed: 4,
  },
  {
    // V2 code with norm_topk_prob true: normalise and do NOT scale; no shared experts; one layer,
    // all MoE; rms_norm_eps 1e-5; the original config default's "gready" spelling
    name: 'v2 norm-not-scale single layer',
    overrides: {
      topk_method: 'gready',
      num_hidden_layers: 1,
      first_k_dense_replace: 0,
      n_shared_experts: 0,
      norm_topk_prob: true,
      routed_scaling_factor: 3.0,
      num_experts_per_tok: 3,
      rms_norm_eps: 1e-5,
    },
    seed: 5,
  },
  {
    // V3 code without normalisation (scale only); two leading dense layers; one group; custom
    // YaRN betas and mscales; theta 500; q_proj
    name: 'v3 first-dense-2 scale-only',
    overrides: {
      model_type: 'deepseek_v3',
      num_hidden_layers: 4,
      first_k_dense_replace: 2,
      n_routed_experts: 6,
      n_group: 1,
      topk_group: 1,
      num_experts_per_tok: 2,
      topk_method: 'noaux_tc',
      scoring_func: 'sigmoid',
      norm_topk_prob: false,
      routed_scaling_factor: 2.5,
      n_shared_experts: 2,
      rope_theta: 500,
      rope_scaling: yarn48({ beta_fast: 4, beta_slow: 2, mscale: 1.0, mscale_all_dim: 0.5 }),
    },
    seed: 6,
  },
  {
    // V3 keeping one group of 4 and choosing all 4: biased scores below 0 exist in the kept group,
    // so a 0-filled mask (as HF3 does) would pick experts from dropped groups; −∞ must not
    name: 'v3 keep-one-group neg-bias',
    overrides: {
      model_type: 'deepseek_v3',
      q_lora_rank: 12,
      num_hidden_layers: 2,
      first_k_dense_replace: 0,
      n_routed_experts: 12,
      n_group: 3,
      topk_group: 1,
      num_experts_per_tok: 4,
      topk_method: 'noaux_tc',
      scoring_func: 'sigmoid',
      norm_topk_prob: true,
      routed_scaling_factor: 1.5,
      n_shared_experts: 1,
    },
    seed: 8,
    expectMaskMatters: true,
  },
  {
    // V2 top-1 with norm_topk_prob true: the original code only normalises when k > 1, so it scales;
    // topk_method absent (→ plain top-k)
    name: 'v2 top-1 norm flag',
    overrides: {
      topk_method: undefined,
      num_hidden_layers: 2,
      first_k_dense_replace: 0,
      num_experts_per_tok: 1,
      norm_topk_prob: true,
      routed_scaling_factor: 2.0,
      rope_scaling: yarn48({ mscale: 1.0, mscale_all_dim: 1.0 }),
    },
    seed: 7,
  },
];

const T = 20;

for (const c of cases) {
  const dir = join(scratch, c.name.replace(/[^a-z0-9]+/gi, '-'));
  interface Prepared {
    config: Record<string, unknown>;
    tokens: number[];
    want: Float64Array;
    vocab: number;
    scale: number;
    /** naive router decisions: layer → token → route */
    routes: Map<number, RouteTrace[]>;
  }
  let prepared: Prepared | undefined;
  const prepare = (): Prepared => {
    if (prepared === undefined) {
      const config = writeRandomModel(dir, c.overrides, { seed: c.seed, mtpLayer: c.mtpLayer ?? false });
      const vocab = config['vocab_size'] as number;
      const tokens = tokensFor(c.seed * 7919, vocab, c.tokens ?? T);
      const routes = new Map<number, RouteTrace[]>();
      const want = naiveLogits(config, readWeightsF64(dir), tokens, (l, t, r) => {
        if (!routes.has(l)) routes.set(l, []);
        routes.get(l)![t] = r;
      });
      prepared = { config, tokens, want, vocab, scale: maxAbs(want), routes };
    }
    return prepared;
  };

  for (const backend of backends) {
    test(`${c.name} on ${backend.name}: routers pick the naive reference's experts and weights; the case exercises its router`, (t) => {
      const { config, tokens, routes } = prepare();
      const { model } = loadModel(dir, { precision: 'f64', backend });
      const seen = new Map<number, { tokens: number; k: number; experts: Int32Array; weights: Float64Array }>();
      model.forward(tokens, model.createCache(), {
        onRouting: (l, r) => seen.set(l, { tokens: r.tokens, k: r.k, experts: Int32Array.from(r.experts), weights: Float64Array.from(r.weights) }),
      });
      assert.deepEqual([...seen.keys()].sort(), [...routes.keys()].sort(), 'MoE layers');
      const sameSet = (a: number[], b: number[]): boolean => [...a].sort().join() === [...b].sort().join();
      let differsUngrouped = 0;
      let differsGroupRule = 0;
      let differsUnbiased = 0;
      let differsZeroMask = 0;
      const distinct = new Set<string>();
      for (const [l, perToken] of routes) {
        const r = seen.get(l)!;
        assert.equal(r.tokens, tokens.length);
        perToken.forEach((want, tok) => {
          const got = new Map<number, number>();
          for (let i = 0; i < r.k; i++) got.set(r.experts[tok * r.k + i]!, r.weights[tok * r.k + i]!);
          assert.deepEqual([...got.keys()].sort(), [...want.experts].sort(), `layer ${l} token ${tok} experts`);
          want.experts.forEach((e, i) => {
            const w = want.weights[i]!;
            assert.ok(Math.abs(got.get(e)! - w) <= 1e-12 * Math.max(1, Math.abs(w)), `layer ${l} token ${tok} expert ${e}: weight ${got.get(e)} want ${w}`);
          });
          distinct.add([...want.experts].sort().join());
          if (!sameSet(want.experts, want.alternatives.ungrouped)) differsUngrouped++;
          if (want.alternatives.otherGroupRule && !sameSet(want.experts, want.alternatives.otherGroupRule)) differsGroupRule++;
          if (want.alternatives.unbiased && !sameSet(want.experts, want.alternatives.unbiased)) differsUnbiased++;
          if (want.alternatives.zeroMasked && !sameSet(want.experts, want.alternatives.zeroMasked)) differsZeroMask++;
        });
      }
      const decisions = [...routes.values()].reduce((n, r) => n + r.length, 0);
      t.diagnostic(`${decisions} routing decisions, ${distinct.size} distinct expert sets; differ if ungrouped ${differsUngrouped}, with the other group rule ${differsGroupRule}, unbiased ${differsUnbiased}, with 0 instead of −∞ masks ${differsZeroMask}`);
      if (decisions > 0) assert.ok(distinct.size > 2, 'routing should vary between tokens');
      const method = config['topk_method'];
      const grouped = (method === 'group_limited_greedy' || method === 'noaux_tc') && (config['topk_group'] as number) < (config['n_group'] as number);
      if (grouped) {
        assert.ok(differsUngrouped > 0, 'group limiting should change some choices');
        assert.ok(differsGroupRule > 0, 'the group score rule (max vs top-2 sum) should change some choices');
      }
      if (method === 'noaux_tc') assert.ok(differsUnbiased > 0, 'e_score_correction_bias should change some choices');
      if (c.expectMaskMatters) assert.ok(differsZeroMask > 0, 'masking dropped groups with 0 instead of −∞ should change some choices');
    });

    test(`${c.name} on ${backend.name}: f64 full-sequence logits match the naive reference (auto/expanded/absorbed)`, (t) => {
      const { tokens, want, vocab, scale } = prepare();
      assert.ok(scale > 0.5 && scale < 100, `logit scale ${scale} should be O(1)`);
      const { model } = loadModel(dir, { precision: 'f64', backend });
      const observed: string[] = [];
      for (const attention of ['auto', 'expanded', 'absorbed'] as const) {
        const got = Float64Array.from(model.forward(tokens, model.createCache(), { logits: 'all', attention }));
        const diff = maxAbsDiff(got, want, vocab, 0, tokens.length);
        observed.push(`${attention} ${(diff / scale).toExponential(1)}`);
        assert.ok(diff <= 1e-9 * scale, `${attention}: max |diff| ${diff} (max |logit| ${scale}); ${worstPosition(got, want, vocab)}`);
      }
      t.diagnostic(`max |logit| ${scale.toFixed(2)}; max |diff| / max |logit|: ${observed.join(', ')}`);
    });

    test(`${c.name} on ${backend.name}: f64 token-by-token decode and chunked prefill match every position`, (t) => {
      const { tokens, want, vocab, scale } = prepare();
      const { model } = loadModel(dir, { precision: 'f64', backend });
      let worst = 0;
      for (const attention of ['auto', 'expanded', 'absorbed'] as const) {
        const cache = model.createCache();
        tokens.forEach((token, pos) => {
          const got = model.forward([token], cache, { attention });
          const diff = maxAbsDiff(got, want, vocab, pos, 1);
          worst = Math.max(worst, diff);
          assert.ok(diff <= 1e-9 * scale, `${attention} decode position ${pos}: max |diff| ${diff}`);
        });
      }
      // prefill in uneven chunks through one cache, all rows returned
      const cache = model.createCache();
      let at = 0;
      for (const n of [7, 1, 5, tokens.length - 13]) {
        const got = model.forward(tokens.slice(at, at + n), cache, { logits: 'all' });
        const diff = maxAbsDiff(got, want, vocab, at, n);
        worst = Math.max(worst, diff);
        assert.ok(diff <= 1e-9 * scale, `chunk at ${at} (+${n}): max |diff| ${diff}`);
        at += n;
      }
      t.diagnostic(`worst max |diff| / max |logit| over decode and chunks: ${(worst / scale).toExponential(1)}`);
    });

    test(`${c.name} on ${backend.name}: f32 logits within 1e-4 (prefill, decode)`, (t) => {
      const { tokens, want, vocab } = prepare();
      const { model } = loadModel(dir, { precision: 'f32', backend });
      const observed: string[] = [];
      for (const attention of ['expanded', 'absorbed'] as const) {
        const got = Float32Array.from(model.forward(tokens, model.createCache(), { logits: 'all', attention }));
        const diff = maxAbsDiff(got, want, vocab, 0, tokens.length);
        observed.push(`${attention} ${diff.toExponential(1)}`);
        assert.ok(diff < 1e-4, `${attention}: max |diff| ${diff}; ${worstPosition(got, want, vocab)}`);
      }
      const cache = model.createCache();
      let worst = 0;
      tokens.forEach((token, pos) => {
        const diff = maxAbsDiff(model.forward([token], cache), want, vocab, pos, 1);
        worst = Math.max(worst, diff);
        assert.ok(diff < 1e-4, `decode position ${pos}: max |diff| ${diff}`);
      });
      t.diagnostic(`f32 max |diff|: ${observed.join(', ')}, decode ${worst.toExponential(1)}`);
    });

    for (const dtype of c.dtypes ?? []) {
      test(`${c.name} on ${backend.name}: ${dtype} weights load and match the naive reference on the rounded weights`, (t) => {
        const { tokens, vocab } = prepare();
        const dDir = `${dir}-${dtype}-${backend.name}`;
        const config = writeRandomModel(dDir, c.overrides, { seed: c.seed, dtype, mtpLayer: c.mtpLayer ?? false });
        const want = naiveLogits(config, readWeightsF64(dDir), tokens);
        const scale = maxAbs(want);
        const { model } = loadModel(dDir, { precision: 'f64', backend });
        const got = Float64Array.from(model.forward(tokens, model.createCache(), { logits: 'all' }));
        const diff = maxAbsDiff(got, want, vocab, 0, tokens.length);
        assert.ok(diff <= 1e-9 * scale, `f64: max |diff| ${diff}; ${worstPosition(got, want, vocab)}`);
        const { model: m32 } = loadModel(dDir, { precision: 'f32', backend });
        const diff32 = maxAbsDiff(m32.forward(tokens, m32.createCache(), { logits: 'all' }), want, vocab, 0, tokens.length);
        assert.ok(diff32 < 1e-4, `f32: max |diff| ${diff32}`);
        t.diagnostic(`f64 max |diff| / max |logit| ${(diff / scale).toExponential(1)}, f32 max |diff| ${diff32.toExponential(1)}`);
      });
    }
  }
}
