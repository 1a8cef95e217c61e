/**
 * HF folder → GGUF conversion (src/formats/convert.ts) and `dseek convert` / GGUF `inspect`
 * (src/cli/convert.ts). The golden checkpoints are converted in every type and run through the
 * GGUF loader against the safetensors model; a wider random model (rows of 256) exercises the
 * K-quants and the Q4_K_M recipe for real, since the golden rows (64/48/32 wide) make the K-quants
 * fall back to 32-element block types.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { convertToGguf, planConversion, useMoreBits, type ConvertType, type MlaLayout } from '../../src/formats/convert.js';
import { openGguf, type GgufFile } from '../../src/formats/gguf.js';
import type { GgmlType } from '../../src/formats/quant/index.js';
import { openSafetensors, writeSafetensors } from '../../src/formats/safetensors.js';
import { decodeRow, type Tensor } from '../../src/kernels/tensor.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { preTokenizerJson } from '../../src/tokenizer/ggufTokenizer.js';
import { inspectGguf, inspectGgufReport, registerConvertCommand, runConvert, type ProgressSink } from '../../src/cli/convert.js';
import { DseekError, InvalidInputError, ModelFormatError, TensorShapeError, UnsupportedConfigError } from '../../src/errors.js';
import { goldenModels, goldenRoot } from '../paths.js';
import { writeRandomModel } from '../model/randomModel.js';

const tmp = mkdtempSync(join(tmpdir(), 'dseek-convert-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const load = (path: string): LoadedModel => loadModel(path, { backend: referenceBackend });

/** Logits of every position, copied out of the model's scratch space. */
function logitsAll(m: LoadedModel, tokens: readonly number[]): Float32Array {
  return Float32Array.from(m.model.forward(tokens, m.model.createCache(), { logits: 'all' }));
}

/** Per position, the experts chosen in every MoE layer. */
function routes(m: LoadedModel, tokens: readonly number[]): string[] {
  const out = tokens.map(() => '');
  m.model.forward(tokens, m.model.createCache(), {
    logits: 'last',
    onRouting: (layer, r) => {
      for (let t = 0; t < r.tokens; t++) out[t] += `${layer}:${Array.from(r.experts.subarray(t * r.k, (t + 1) * r.k)).sort((a, b) => a - b).join(',')};`;
    },
  });
  return out;
}

function argmax(x: ArrayLike<number>, from = 0, n = x.length): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[from + i]! > x[from + best]!) best = i;
  return best;
}

function greedy(m: LoadedModel, prompt: readonly number[], steps: number): number[] {
  const cache = m.model.createCache();
  let logits = m.model.forward(prompt, cache);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const next = argmax(logits);
    out.push(next);
    logits = m.model.forward([next], cache);
  }
  return out;
}

function logSoftmax(x: Float32Array, from: number, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[from + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[from + i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = x[from + i]! - lse;
  return out;
}

interface Agreement {
  /** Mean KL(reference ‖ test) of the next-token distributions, in nats. */
  readonly kl: number;
  /** Share of positions with the same argmax. */
  readonly top1: number;
  /** The same over positions where the reference's top-1 leads its top-2 by ≥ DECISIVE. */
  readonly decisiveTop1: number;
  readonly decisive: number;
  readonly positions: number;
  readonly maxDiff: number;
}

/** Random models have many near-ties; a flip there says nothing about the weights. */
const DECISIVE = 0.1;

function agreement(reference: readonly Float32Array[], test: readonly Float32Array[], vocab: number): Agreement {
  let kl = 0;
  let positions = 0;
  let same = 0;
  let decisive = 0;
  let decisiveSame = 0;
  let maxDiff = 0;
  reference.forEach((ref, p) => {
    const q = test[p]!;
    for (let pos = 0; pos < ref.length / vocab; pos++) {
      const a = logSoftmax(ref, pos * vocab, vocab);
      const b = logSoftmax(q, pos * vocab, vocab);
      for (let i = 0; i < vocab; i++) {
        kl += Math.exp(a[i]!) * (a[i]! - b[i]!);
        maxDiff = Math.max(maxDiff, Math.abs(ref[pos * vocab + i]! - q[pos * vocab + i]!));
      }
      const top = argmax(ref, pos * vocab, vocab);
      const agree = top === argmax(q, pos * vocab, vocab);
      let second = -Infinity;
      for (let i = 0; i < vocab; i++) if (i !== top) second = Math.max(second, ref[pos * vocab + i]!);
      positions++;
      if (agree) same++;
      if (ref[pos * vocab + top]! - second >= DECISIVE) {
        decisive++;
        if (agree) decisiveSame++;
      }
    }
  });
  return { kl: kl / positions, top1: same / positions, decisiveTop1: decisive > 0 ? decisiveSame / decisive : 1, decisive, positions, maxDiff };
}

const describeAgreement = (a: Agreement): string =>
  `mean KL ${a.kl.toExponential(2)} nats, top-1 ${(100 * a.top1).toFixed(1)} % of ${a.positions} positions ` +
  `(${(100 * a.decisiveTop1).toFixed(1)} % of the ${a.decisive} with a top-1 lead ≥ ${DECISIVE}), max |Δlogit| ${a.maxDiff.toExponential(2)}`;

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Each (source, type, layout) is converted once and shared by the tests that need it. */
const converted = new Map<string, string>();
function convert(src: string, label: string, type: ConvertType, layout: MlaLayout = 'current'): string {
  const key = `${src}|${type}|${layout}`;
  let out = converted.get(key);
  if (!out) {
    out = join(tmp, `${label}-${type}-${layout}.gguf`);
    convertToGguf(src, out, { type, layout });
    converted.set(key, out);
  }
  return out;
}

function withGguf<T>(path: string, f: (file: GgufFile) => T): T {
  const file = openGguf(path);
  try {
    return f(file);
  } finally {
    file.close();
  }
}

/** Every element of a tensor of any type, decoded. */
function f32Values(t: Tensor): Float64Array {
  const out = new Float64Array(t.shape.reduce((a, b) => a * b, 1));
  decodeRow(t, 0, out.length, out);
  return out;
}

/** Throws a one-line DseekError of class `kind` whose message matches `pattern`. */
function assertOneLine(f: () => unknown, kind: new (...args: never[]) => DseekError, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof kind, `expected ${kind.name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    return true;
  });
}

// --- Golden checkpoints -------------------------------------------------------------------------

interface Golden {
  prompt_tokens: number[][];
  greedy_prompt_tokens: number[];
  greedy_tokens: number[];
}

const QUANT_TYPES: readonly ConvertType[] = ['q8_0', 'q6_k', 'q5_k', 'q4_k', 'q4_0', 'q4_k_m'];

for (const name of goldenModels) {
  const dir = join(goldenRoot, name);
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  let referenceCache: { model: LoadedModel; logits: Float32Array[] } | undefined;
  const reference = () => {
    if (!referenceCache) {
      const model = load(dir);
      referenceCache = { model, logits: golden.prompt_tokens.map((t) => logitsAll(model, t)) };
    }
    return referenceCache;
  };

  test(`${name}: f32 GGUF in both MLA layouts reproduces the safetensors logits (≤ 1e-6) and greedy tokens`, () => {
    for (const layout of ['current', 'legacy'] as const) {
      const path = convert(dir, name, 'f32', layout);
      const m = load(path);
      golden.prompt_tokens.forEach((tokens, p) => {
        const diff = maxAbsDiff(reference().logits[p]!, logitsAll(m, tokens));
        assert.ok(diff <= 1e-6, `${layout}, prompt ${p}: max |diff| ${diff}`);
      });
      assert.deepEqual(greedy(m, golden.greedy_prompt_tokens, golden.greedy_tokens.length), golden.greedy_tokens, layout);
      withGguf(path, (f) => {
        assert.equal(f.tensor('blk.0.attn_k_b.weight') !== undefined, layout === 'current');
        assert.equal(f.tensor('blk.0.attn_kv_b.weight') !== undefined, layout === 'legacy');
        assert.ok(f.tensors.every((t) => t.type === 'f32'));
      });
    }
  });

  test(`${name}: attn_k_b is per-head W_UKᵀ and attn_v_b per-head W_UV of kv_b_proj, as llama.cpp splits it`, () => {
    const H = config['num_attention_heads'] as number;
    const dn = config['qk_nope_head_dim'] as number;
    const dv = config['v_head_dim'] as number;
    const dc = config['kv_lora_rank'] as number;
    const source = openSafetensors(dir);
    const kvb = f32Values(source.get('model.layers.1.self_attn.kv_b_proj.weight'));
    source.close();
    withGguf(convert(dir, name, 'f32'), (f) => {
      const kInfo = f.tensor('blk.1.attn_k_b.weight')!;
      const vInfo = f.tensor('blk.1.attn_v_b.weight')!;
      assert.deepEqual(kInfo.dims, [dn, dc, H]); // ggml ne order
      assert.deepEqual(vInfo.dims, [dc, dv, H]);
      const k = f32Values(f.readTensor(kInfo.name));
      const v = f32Values(f.readTensor(vInfo.name));
      for (let h = 0; h < H; h++) {
        for (let c = 0; c < dc; c++) {
          for (let n = 0; n < dn; n++) assert.equal(k[(h * dc + c) * dn + n], kvb[(h * (dn + dv) + n) * dc + c]);
          for (let j = 0; j < dv; j++) assert.equal(v[(h * dv + j) * dc + c], kvb[(h * (dn + dv) + dn + j) * dc + c]);
        }
      }
    });
  });

  test(`${name}: f16 stays within 1e-2 with unchanged greedy tokens; bf16 within 2e-2 where routing agrees`, (t) => {
    const ref = reference();
    for (const type of ['f16', 'bf16'] as const) {
      const m = load(convert(dir, name, type));
      let worst = 0;
      let flips = 0;
      golden.prompt_tokens.forEach((tokens, p) => {
        const logits = logitsAll(m, tokens);
        const refRoutes = routes(ref.model, tokens);
        const testRoutes = routes(m, tokens);
        const V = ref.model.config.vocabSize;
        for (let pos = 0; pos < tokens.length; pos++) {
          const diff = maxAbsDiff(ref.logits[p]!.subarray(pos * V, (pos + 1) * V), logits.subarray(pos * V, (pos + 1) * V));
          if (type === 'f16') assert.ok(diff <= 1e-2, `f16 prompt ${p} position ${pos}: ${diff}`);
          // bf16 keeps 8 significant bits (rounding ≤ 2^-9, 8× f16's 2^-12): at f16's measured
          // ~1.3e-3 that is ~1e-2, and 2e-2 leaves room. Where a near-tied router picks another
          // expert the output jumps by design; those positions are counted, not bounded.
          if (refRoutes[pos] !== testRoutes[pos]) flips++;
          else worst = Math.max(worst, diff);
        }
      });
      const steps = greedy(m, golden.greedy_prompt_tokens, golden.greedy_tokens.length);
      const same = steps.filter((x, i) => x === golden.greedy_tokens[i]).length;
      t.diagnostic(`${name} ${type}: max |Δlogit| ${worst.toExponential(2)} where routing agrees, ${flips} position(s) with other experts, greedy ${same}/${steps.length} tokens as the reference`);
      if (type === 'f16') {
        assert.deepEqual(steps, golden.greedy_tokens);
      } else {
        assert.ok(worst <= 2e-2, `bf16: ${worst}`);
        assert.ok(flips <= 2, `bf16: routing differs at ${flips} positions`);
      }
    }
  });

  test(`${name}: quantised types: KL from the f32 model and top-1 agreement`, (t) => {
    const ref = reference();
    const V = ref.model.config.vocabSize;
    const results = new Map<ConvertType, Agreement>();
    for (const type of QUANT_TYPES) {
      const path = convert(dir, name, type);
      const m = load(path);
      const a = agreement(ref.logits, golden.prompt_tokens.map((tokens) => logitsAll(m, tokens)), V);
      results.set(type, a);
      const types = withGguf(path, (f) => [...new Set(f.tensors.map((x) => x.type))].sort().join(' '));
      t.diagnostic(`${name} ${type.padEnd(6)} ${describeAgreement(a)}; tensor types: ${types}`);
      // Rows here are 16-96 wide: no K-quant fits (256-element blocks), so K targets take
      // llama.cpp's 32-element fallbacks and rows of 16 or 48 stay f32.
      withGguf(path, (f) => {
        for (const x of f.tensors) {
          assert.ok(!x.type.endsWith('_k'), `${x.name} is ${x.type} but its rows are ${x.dims[0]} wide`);
          if (x.dims[0]! % 32 !== 0) assert.equal(x.type, 'f32', x.name);
        }
      });
    }
    const q8 = results.get('q8_0')!;
    // Q8_0 is near lossless: relative RMS error 0.0054 per weight (formats/quant/index.ts) moves
    // logits of sd ≈ 0.4 by ~1e-2, KL ≈ ½·E[Δ²] ≈ 5e-5; 1e-3 is a 20× margin.
    assert.ok(q8.kl < 1e-3, describeAgreement(q8));
    assert.ok(q8.decisiveTop1 >= 0.95, describeAgreement(q8));
    for (const type of QUANT_TYPES.filter((x) => x !== 'q8_0' && x !== 'q6_k')) {
      const a = results.get(type)!;
      // 4-5 bit blocks (relative RMS error 0.04-0.09) move logits ~10× more than Q8_0: KL ~100×.
      // They move these logits (sd ≈ 0.4) by up to ~1, so even decisive positions may flip; half
      // of them agreeing (chance: 1/256) still says it is the same model.
      assert.ok(a.kl < 3e-2, `${type}: ${describeAgreement(a)}`);
      assert.ok(a.kl > q8.kl, `${type} should lose more than q8_0`);
      assert.ok(a.decisiveTop1 >= 0.5, `${type}: ${describeAgreement(a)}`);
    }
  });

  test(`${name}: metadata has every deepseek2 key llama.cpp and dseek read (docs/SPEC.md §6.2)`, () => {
    const c = config as Record<string, number & string & boolean & null & Record<string, number>>;
    const yarn = c['rope_scaling'];
    const moeKeys: Record<string, [string, number | boolean]> = {
      expert_count: ['u32', c['n_routed_experts']],
      expert_used_count: ['u32', c['num_experts_per_tok']],
      expert_shared_count: ['u32', c['n_shared_experts']],
      expert_feed_forward_length: ['u32', c['moe_intermediate_size']],
      expert_group_count: ['u32', c['n_group']],
      expert_group_used_count: ['u32', c['topk_group']],
      expert_gating_func: ['u32', c['scoring_func'] === 'sigmoid' ? 2 : 1],
      expert_weights_scale: ['f32', c['routed_scaling_factor']],
      leading_dense_block_count: ['u32', c['first_k_dense_replace']],
    };
    if (c['norm_topk_prob'] === true) moeKeys['expert_weights_norm'] = ['bool', true];
    const common: Record<string, [string, number | string | boolean]> = {
      block_count: ['u32', c['num_hidden_layers']],
      context_length: ['u32', c['max_position_embeddings']],
      embedding_length: ['u32', c['hidden_size']],
      feed_forward_length: ['u32', c['intermediate_size']],
      vocab_size: ['u32', c['vocab_size']],
      'attention.head_count': ['u32', c['num_attention_heads']],
      'attention.layer_norm_rms_epsilon': ['f32', c['rms_norm_eps']],
      'attention.kv_lora_rank': ['u32', c['kv_lora_rank']],
      'rope.dimension_count': ['u32', c['qk_rope_head_dim']],
      'rope.freq_base': ['f32', c['rope_theta']],
      'rope.scaling.type': ['string', 'yarn'],
      'rope.scaling.factor': ['f32', yarn['factor']!],
      'rope.scaling.original_context_length': ['u32', yarn['original_max_position_embeddings']!],
      'rope.scaling.yarn_beta_fast': ['f32', yarn['beta_fast']!],
      'rope.scaling.yarn_beta_slow': ['f32', yarn['beta_slow']!],
      'rope.scaling.yarn_log_multiplier': ['f32', 0.1 * yarn['mscale_all_dim']!],
      ...moeKeys,
    };
    if (c['q_lora_rank'] !== null) common['attention.q_lora_rank'] = ['u32', c['q_lora_rank']];
    const perLayout: Record<MlaLayout, Record<string, [string, number]>> = {
      current: {
        'attention.head_count_kv': ['u32', 1],
        'attention.key_length': ['u32', c['kv_lora_rank'] + c['qk_rope_head_dim']],
        'attention.value_length': ['u32', c['kv_lora_rank']],
        'attention.key_length_mla': ['u32', c['qk_nope_head_dim'] + c['qk_rope_head_dim']],
        'attention.value_length_mla': ['u32', c['v_head_dim']],
      },
      legacy: {
        'attention.head_count_kv': ['u32', c['num_attention_heads']],
        'attention.key_length': ['u32', c['qk_nope_head_dim'] + c['qk_rope_head_dim']],
        'attention.value_length': ['u32', c['v_head_dim']],
      },
    };
    for (const layout of ['current', 'legacy'] as const) {
      withGguf(convert(dir, name, 'f32', layout), (f) => {
        const expected: Record<string, [string, number | string | boolean]> = {};
        for (const [k, v] of Object.entries({ ...common, ...perLayout[layout] })) expected[`deepseek2.${k}`] = v;
        Object.assign(expected, {
          'general.architecture': ['string', 'deepseek2'],
          'general.type': ['string', 'model'],
          'general.name': ['string', name],
          'general.file_type': ['u32', 0],
          'general.quantization_version': ['u32', 2],
          'general.alignment': ['u32', 32],
          'tokenizer.ggml.bos_token_id': ['u32', c['bos_token_id']],
          'tokenizer.ggml.eos_token_id': ['u32', c['eos_token_id']],
          // No tokenizer.json in the golden folders: a placeholder byte-level vocabulary, because
          // llama.cpp will not load a file without one.
          'tokenizer.ggml.model': ['string', 'gpt2'],
          'tokenizer.ggml.pre': ['string', name === 'v3' ? 'deepseek-v3' : 'deepseek-llm'],
          'tokenizer.ggml.add_bos_token': ['bool', true],
        });
        const arrays = ['tokenizer.ggml.tokens', 'tokenizer.ggml.token_type', 'tokenizer.ggml.merges'];
        assert.deepEqual([...f.metadata.keys()].sort(), [...Object.keys(expected), ...arrays].sort(), layout);
        const tokens = f.metadata.get('tokenizer.ggml.tokens')!;
        assert.equal(tokens.type === 'array' ? tokens.value.length : 0, c['vocab_size']);
        for (const [key, [type, value]] of Object.entries(expected)) {
          const v = f.metadata.get(key)!;
          assert.equal(v.type, type, key);
          assert.equal((v as { value: unknown }).value, type === 'f32' ? Math.fround(value as number) : value, key);
        }
        // What dseek reads back is the config it started from.
        const m = load(f.path);
        const ref = reference().model.config;
        assert.deepEqual({ ...m.config, modelType: ref.modelType, rmsNormEps: ref.rmsNormEps, ropeScaling: null }, { ...ref, ropeScaling: null });
        assert.ok(Math.abs(m.model.rope.softmaxScale - reference().model.model.rope.softmaxScale) < 1e-7);
      });
    }
  });
}

test('use_more_bits picks llama.cpp\'s layers (V2-Lite, 27 layers)', () => {
  const picked = Array.from({ length: 27 }, (_, i) => i).filter((i) => useMoreBits(i, 27));
  assert.deepEqual(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26]);
  assert.deepEqual([0, 1].filter((i) => useMoreBits(i, 2)), [1]);
});

// --- A model with 256-wide rows: the K-quants and the Q4_K_M recipe for real ----------------------

const WIDE = join(tmp, 'wide');
const wideConfig = {
  model_type: 'deepseek_v3',
  vocab_size: 64,
  hidden_size: 256,
  intermediate_size: 256,
  moe_intermediate_size: 256,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  q_lora_rank: 256,
  kv_lora_rank: 256,
  qk_nope_head_dim: 32, // attn_k_b rows: 32 wide, so K targets fall back there
  qk_rope_head_dim: 32,
  v_head_dim: 128,
  n_routed_experts: 4,
  n_shared_experts: 1,
  // Every expert is used: a random router has near-ties, and a flipped choice would swamp the
  // quantisation error these tests measure. The weights still go through the sigmoid gate and bias.
  num_experts_per_tok: 4,
  first_k_dense_replace: 1,
  topk_method: 'noaux_tc',
  scoring_func: 'sigmoid',
  norm_topk_prob: true,
  n_group: 1,
  topk_group: 1,
  routed_scaling_factor: 2.5,
  max_position_embeddings: 128,
  rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 16, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 },
};
let wideWritten = false;
function wide(): string {
  if (!wideWritten) {
    // bf16 like released checkpoints, with an MTP layer the converter must skip.
    writeRandomModel(WIDE, wideConfig, { seed: 7, dtype: 'bf16', mtpLayer: true });
    wideWritten = true;
  }
  return WIDE;
}

/** What the recipe says each tensor of the wide model gets (SPEC-independent table, written out by hand). */
function wideExpectedType(type: ConvertType, name: string): GgmlType {
  if (name.endsWith('_norm.weight') || name.includes('ffn_gate_inp') || name.endsWith('.bias')) return 'f32';
  const fallback: Partial<Record<ConvertType, GgmlType>> = { q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0', q4_k_m: 'q5_0' };
  if (name.includes('attn_k_b')) return fallback[type] ?? (type as GgmlType); // 32-wide rows
  if (type !== 'q4_k_m') return type as GgmlType;
  if (name === 'output.weight') return 'q6_k';
  if (name.startsWith('blk.1.ffn_down')) return 'q6_k'; // ffn_down_exps and ffn_down_shexp: use_more_bits(1, 2)
  if (name === 'blk.1.attn_kv_b.weight') return 'q6_k'; // legacy layout, same rule
  return 'q4_k'; // token_embd, attn_v_b, blk.0.ffn_down, the rest
}

const WIDE_PROMPTS = [
  [0, 5, 17, 42, 3, 63, 8, 8, 21, 34, 55, 1, 13, 2, 44, 60, 7, 30, 31, 9, 11, 12],
  [0, 9, 4, 50, 38],
];

test('wide model: every tensor gets the type its recipe says, in the plan and in the written file', () => {
  const src = wide();
  for (const type of ['q4_k', 'q5_k', 'q6_k', 'q4_k_m'] as const) {
    for (const layout of ['current', 'legacy'] as const) {
      const plan = planConversion(src, { type, layout });
      for (const t of plan.tensors) assert.equal(t.type, wideExpectedType(type, t.name), `${type} ${layout} ${t.name}`);
      assert.ok(plan.tensors.every((t) => !t.name.startsWith('blk.2.')), 'the MTP layer is skipped');
    }
    withGguf(convert(src, 'wide', type), (f) => {
      assert.ok(f.tensors.some((x) => x.type === (type === 'q4_k_m' ? 'q4_k' : type)));
      for (const x of f.tensors) assert.equal(x.type, wideExpectedType(type, x.name), `${type} ${x.name}`);
      assert.equal(f.typedKey('general.file_type', 'u32'), { q4_k: 14, q5_k: 16, q6_k: 18, q4_k_m: 15 }[type]);
    });
  }
  // The names and shapes llama.cpp's deepseek2 loader asks for.
  const plan = planConversion(src, { type: 'f16' });
  const shapes = Object.fromEntries(plan.tensors.map((t) => [t.name, t.shape.join('x')]));
  assert.equal(shapes['blk.1.ffn_gate_exps.weight'], '4x256x256');
  assert.equal(shapes['blk.1.ffn_down_exps.weight'], '4x256x256');
  assert.equal(shapes['blk.1.exp_probs_b.bias'], '4');
  assert.equal(shapes['blk.0.attn_k_b.weight'], '2x256x32');
  assert.equal(shapes['blk.0.attn_v_b.weight'], '2x128x256');
  assert.equal(shapes['blk.0.attn_q_b.weight'], '128x256');
  assert.equal(Object.keys(shapes).length, 1 + 13 + 18 + 2); // token_embd, dense layer 0, MoE layer 1, output_norm + output
});

test('wide model: every quantised tensor decodes to its source within its type\'s error', () => {
  const src = wide();
  withGguf(convert(src, 'wide', 'f32'), (exact) => {
    // Relative RMS error on well-spread data (formats/quant/index.ts: Q8_0 0.0054, Q6_K 0.018,
    // Q5_K 0.036, Q5_1 0.038, Q4_K 0.072, Q5_0 0.043, Q4_0 0.087), with some room.
    const bound: Partial<Record<GgmlType, number>> = { f32: 0, q8_0: 0.007, q6_k: 0.022, q5_k: 0.045, q5_1: 0.045, q5_0: 0.05, q4_k: 0.085, q4_0: 0.1 };
    for (const type of ['q8_0', 'q6_k', 'q5_k', 'q4_k', 'q4_k_m'] as const) {
      withGguf(convert(src, 'wide', type), (f) => {
        for (const info of f.tensors) {
          const got = f32Values(f.readTensor(info.name));
          const want = f32Values(exact.readTensor(info.name));
          let err = 0;
          let norm = 0;
          for (let i = 0; i < want.length; i++) {
            err += (got[i]! - want[i]!) ** 2;
            norm += want[i]! ** 2;
          }
          const rel = Math.sqrt(err / norm);
          assert.ok(rel <= bound[info.type]!, `${type} ${info.name} (${info.type}): relative RMS error ${rel}`);
        }
      });
    }
  });
});

test('wide model: K-quant KL and top-1 against the f32 conversion', (t) => {
  const src = wide();
  const f32 = load(convert(src, 'wide', 'f32'));
  const V = f32.config.vocabSize;
  const refLogits = WIDE_PROMPTS.map((p) => logitsAll(f32, p));
  // The bf16 checkpoint itself: same values; only the MLA split changes the summation order.
  const hf = load(src);
  WIDE_PROMPTS.forEach((p, i) => assert.ok(maxAbsDiff(refLogits[i]!, logitsAll(hf, p)) <= 1e-5, 'bf16 → f32 is exact'));
  const kl = new Map<string, Agreement>();
  for (const type of ['q8_0', 'q6_k', 'q5_k', 'q4_k', 'q4_k_m'] as const) {
    const m = load(convert(src, 'wide', type));
    const a = agreement(refLogits, WIDE_PROMPTS.map((p) => logitsAll(m, p)), V);
    kl.set(type, a);
    t.diagnostic(`wide ${type.padEnd(6)} ${describeAgreement(a)}`);
  }
  const k = (type: string) => kl.get(type)!.kl;
  // Error per weight falls about 2× per extra bit (Q8_0 0.0054 … Q4_K 0.072) and KL goes with its
  // square. This random model amplifies weight noise more than the golden ones (logits ~5 wide,
  // uniform weights): Q8_0 lands near 2e-3 here, so its bound is 5e-3.
  assert.ok(k('q8_0') < k('q6_k') && k('q6_k') < k('q5_k') && k('q5_k') < k('q4_k'), 'KL grows as bits drop');
  assert.ok(k('q4_k_m') < k('q4_k'), 'Q4_K_M spends its extra bits (output, ffn_down of layer 1 at Q6_K) usefully');
  assert.ok(k('q8_0') < 5e-3 && k('q6_k') < 3e-2 && k('q4_k') < 0.5);
  assert.ok(kl.get('q8_0')!.decisiveTop1 >= 0.95, describeAgreement(kl.get('q8_0')!));
});

// --- Tokenizer, MTP, bad input ----------------------------------------------------------------------

/** A byte-level BPE tokenizer.json with the DeepSeek-V2 pre-tokenizer and a few merges. */
function writeV2Tokenizer(dir: string, preTokenizer: unknown = preTokenizerJson('deepseek-llm')): void {
  const chars: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    chars.push(String.fromCodePoint(keep ? b : 256 + n++));
  }
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => (vocab[c] = i));
  const merges: string[] = [];
  for (const [a, b] of [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w'], ['1', '2'], ['12', '3']] as const) {
    merges.push(`${a} ${b}`);
    vocab[a + b] = Object.keys(vocab).length;
  }
  const added = (id: number, content: string, special: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  const size = Object.keys(vocab).length;
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({
      version: '1.0',
      added_tokens: [added(size, '<｜begin▁of▁sentence｜>', true), added(size + 1, '<｜end▁of▁sentence｜>', true), added(size + 2, '<｜User｜>', false)],
      normalizer: { type: 'Sequence', normalizers: [] },
      pre_tokenizer: preTokenizer,
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', vocab, merges },
    }),
  );
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      add_bos_token: true,
      bos_token: { __type: 'AddedToken', content: '<｜begin▁of▁sentence｜>' },
      eos_token: '<｜end▁of▁sentence｜>',
      chat_template: "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }),
  );
}

test('a folder with tokenizer.json converts to a GGUF whose tokenizer matches it; MTP layers are skipped', () => {
  const dir = join(tmp, 'with-tokenizer');
  writeRandomModel(dir, { vocab_size: 300, bos_token_id: 263, eos_token_id: 264 }, { seed: 3, mtpLayer: true });
  writeV2Tokenizer(dir);
  const out = join(tmp, 'with-tokenizer.gguf');
  const result = convertToGguf(dir, out, { type: 'f32', name: 'tiny' });
  assert.equal(result.preTokenizer, 'deepseek-llm');
  const hf = load(dir);
  const gguf = load(out);
  const prompt = [263, 5, 99, 280, 7];
  assert.ok(maxAbsDiff(logitsAll(hf, prompt), logitsAll(gguf, prompt)) <= 1e-6);
  assert.ok(gguf.tokenizer && hf.tokenizer);
  for (const text of ['hello world 12345', 'hello<｜User｜>hi\n\n中文 ώ', '']) {
    assert.deepEqual(gguf.tokenizer.encode(text), hf.tokenizer.encode(text), text);
  }
  assert.equal(gguf.tokenizer.chatTemplate, hf.tokenizer.chatTemplate);
  assert.equal(gguf.tokenizer.bosId, 263);
  assert.equal(gguf.tokenizer.eosId, 264);
  withGguf(out, (f) => {
    assert.equal(f.typedKey('general.name', 'string'), 'tiny');
    assert.equal(f.typedKey('tokenizer.ggml.pre', 'string'), 'deepseek-llm');
    const tokens = f.requireKey('tokenizer.ggml.tokens', 'array').value as readonly string[];
    const types = f.requireKey('tokenizer.ggml.token_type', 'array').value as readonly number[];
    assert.equal(tokens.length, 300);
    assert.deepEqual([tokens[265], types[265]], ['<｜User｜>', 3]); // not flagged special, but looks it: control
    assert.deepEqual([tokens[299], types[299]], ['[PAD299]', 5]);
    assert.equal(f.typedKey('tokenizer.ggml.add_bos_token', 'bool'), true);
    assert.ok(f.tensors.every((x) => !x.name.startsWith('blk.2.')));
  });
});

test('bad input: one-line typed errors, and no partial file left behind', () => {
  const out = join(tmp, 'bad.gguf');
  const lite = join(goldenRoot, 'lite');
  assertOneLine(() => convertToGguf(join(tmp, 'nowhere'), out, { type: 'f16' }), ModelFormatError, /no such folder/);
  assertOneLine(() => convertToGguf(join(lite, 'config.json'), out, { type: 'f16' }), ModelFormatError, /not a folder/);
  const empty = join(tmp, 'empty');
  mkdirSync(empty);
  assertOneLine(() => convertToGguf(empty, out, { type: 'f16' }), ModelFormatError, /no config\.json/);
  writeFileSync(join(empty, 'config.json'), readFileSync(join(lite, 'config.json')));
  assertOneLine(() => convertToGguf(empty, out, { type: 'f16' }), ModelFormatError, /no weights found/);
  assertOneLine(() => convertToGguf(lite, out, { type: 'q3_k' as ConvertType }), InvalidInputError, /unsupported "q3_k".*q4_k_m/);
  assertOneLine(() => convertToGguf(lite, join(tmp, 'missing', 'x.gguf'), { type: 'f16' }), InvalidInputError, /does not exist/);
  assertOneLine(() => convertToGguf(lite, tmp, { type: 'f16' }), InvalidInputError, /is a folder/);
  assertOneLine(() => runConvert(lite, out, { type: 'iq2_xxs' }, { write: () => true }), InvalidInputError, /^--type: unsupported "iq2_xxs"/);

  // A tensor the config does not account for, and one that is missing.
  const odd = join(tmp, 'odd');
  writeRandomModel(odd, { tie_word_embeddings: true }, { seed: 5 });
  const source = openSafetensors(odd);
  // Copies: the source's tensors may be views of a mapping of the very file rewritten below.
  const all = source.names().map((n): [string, Tensor] => {
    const x = source.get(n);
    return [n, { ...x, data: x.data.slice() }];
  });
  source.close();
  writeSafetensors(join(odd, 'model.safetensors'), [...all, ['model.vision_tower.weight', all[0]![1]]]);
  assertOneLine(() => convertToGguf(odd, out, { type: 'f16' }), ModelFormatError, /"model\.vision_tower\.weight" has no deepseek2 GGUF counterpart/);
  writeSafetensors(join(odd, 'model.safetensors'), all.filter(([n]) => n !== 'model.layers.1.mlp.experts.2.up_proj.weight'));
  assertOneLine(() => convertToGguf(odd, out, { type: 'f16' }), TensorShapeError, /model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight: missing/);
  writeSafetensors(join(odd, 'model.safetensors'), all);
  // Tied embeddings: no output.weight, and dseek reads the file back as tied.
  const tied = convertToGguf(odd, out, { type: 'q4_k_m' });
  assert.ok(tied.tensors.every((x) => x.name !== 'output.weight'));
  assert.equal(load(out).config.tieWordEmbeddings, true);

  // Tokenizers dseek cannot express in GGUF.
  writeV2Tokenizer(odd, { type: 'Sequence', pretokenizers: [{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] });
  assertOneLine(() => convertToGguf(odd, out, { type: 'f16' }), UnsupportedConfigError, /pre_tokenizer.*deepseek-llm.*deepseek-v3/);
  writeV2Tokenizer(odd); // 263 + 3 ids, but this model has 97 embedding rows
  assertOneLine(() => convertToGguf(odd, out, { type: 'f16' }), ModelFormatError, /token id 265 does not fit the model's vocab_size 97/);
  rmSync(join(odd, 'tokenizer.json'));

  // An existing OUT is replaced; a conversion that fails midway leaves neither OUT nor OUT.partial.
  writeFileSync(out, 'not a gguf');
  convertToGguf(lite, out, { type: 'q8_0' });
  assert.equal(withGguf(out, (f) => f.typedKey('general.file_type', 'u32')), 7);
  rmSync(out);
  const controller = new AbortController();
  assert.throws(() =>
    convertToGguf(lite, out, { type: 'f16', signal: controller.signal, onProgress: (done) => done === 3 && controller.abort() }),
  );
  assert.ok(!existsSync(out) && !existsSync(`${out}.partial`));
});

// --- CLI ----------------------------------------------------------------------------------------

function sink(isTTY: boolean): ProgressSink & { text: string } {
  const s = { isTTY, columns: 80, text: '', write: (x: string) => ((s.text += x), true) };
  return s;
}

test('dseek convert: progress lines when stderr is not a terminal, a bar when it is', () => {
  const src = join(goldenRoot, 'full');
  const plain = sink(false);
  runConvert(src, join(tmp, 'cli-plain.gguf'), { type: 'q8_0' }, plain);
  const lines = plain.text.trimEnd().split('\n');
  assert.ok(lines.length >= 2 && lines.length <= 10, plain.text);
  for (const line of lines) assert.match(line, /^convert: +\d+% \(\d+\/\d+ tensors, [\d.]+ MiB \/ [\d.]+ MiB\) \S+$/);
  assert.match(lines.at(-1)!, /^convert: 100% \((\d+)\/\1 tensors/);

  const tty = sink(true);
  runConvert(src, join(tmp, 'cli-tty.gguf'), { type: 'f16', legacyLayout: true }, tty);
  assert.match(tty.text, /^\r\[[#-]{24}\] +\d+%/);
  assert.match(tty.text, /\r\[#{24}\] 100% {2}\d+\/\d+ tensors.*\x1b\[K\n$/);
  assert.ok(tty.text.split('\r').every((l) => l.replace('\x1b[K', '').replace('\n', '').length <= 80));
});

test('dseek convert is a commander command; inspect reports types, sizes and bits per weight', async (t: TestContext) => {
  const program = new Command('dseek').exitOverride();
  registerConvertCommand(program);
  const out = join(tmp, 'cli.gguf');
  const written: string[] = [];
  const stdout = process.stdout.write.bind(process.stdout);
  const stderr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => (written.push(s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => (written.push(s), true)) as typeof process.stderr.write;
  try {
    await program.parseAsync(['convert', join(goldenRoot, 'v3'), out, '--type', 'q4_k_m', '--legacy-layout', '--name', 'V3 tiny'], { from: 'user' });
  } finally {
    process.stdout.write = stdout;
    process.stderr.write = stderr;
  }
  assert.match(written.join(''), /cli\.gguf: \d+ tensors, [\d.]+ MiB, [\d.]+ bits\/weight, MOSTLY_Q4_K_M \(legacy MLA layout, placeholder vocabulary\)/);

  const report = inspectGgufReport(out);
  assert.equal(report.architecture, 'deepseek2');
  assert.equal(report.name, 'V3 tiny');
  assert.equal(report.mlaLayout, 'legacy');
  assert.equal(report.config?.scoringFunc, 'sigmoid');
  const byType = Object.fromEntries(report.types.map((x) => [x.type, x]));
  assert.equal(byType['q8_0']?.bitsPerWeight, 8.5);
  assert.equal(byType['f32']?.bitsPerWeight, 32);
  assert.equal(report.bytes, report.types.reduce((s, x) => s + x.bytes, 0));
  assert.ok(Math.abs(report.bitsPerWeight - (8 * report.bytes) / report.elements) < 1e-12);
  const text = inspectGguf(out);
  t.diagnostic(text);
  assert.match(text, /architecture: deepseek2, name "V3 tiny", file type MOSTLY_Q4_K_M, MLA layout legacy/);
  assert.match(text, /MoE: 16 routed experts \(top-4, sigmoid, noaux_tc, 2 of 4 groups\)/);
  assert.match(text, /^ {2}q8_0 +\d+ +[\d.]+ ?\w* +[\d.]+ MiB +8\.50$/m);
  assert.match(text, /^ {2}total +\d+ +[\d.]+ ?\w* +[\d.]+ MiB +[\d.]+$/m);
  assert.match(text, /tokenizer: gpt2 \/ deepseek-v3, 256 tokens, bos 0, eos 1, chat template no/);

  // With a tokenizer.
  const tok = join(tmp, 'cli-v2-tokenizer');
  writeRandomModel(tok, { vocab_size: 300 }, { seed: 9 });
  writeV2Tokenizer(tok);
  runConvert(tok, join(tmp, 'cli-tok.gguf'), {}, { write: () => true });
  assert.match(inspectGguf(join(tmp, 'cli-tok.gguf')), /tokenizer: gpt2 \/ deepseek-llm, 300 tokens, bos 263, eos 264, chat template yes/);
  assert.match(inspectGguf(join(tmp, 'cli-tok.gguf')), /file type MOSTLY_F16/);
});
