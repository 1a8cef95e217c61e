/**
 * Write a tiny, randomly initialised DeepSeek-V2/V3 checkpoint (config.json + model.safetensors)
 * for shape and parity tests. Tensor names and [out, in] shapes follow docs/SPEC.md §6.1. Weights come
 * from a seeded PRNG, so the same (overrides, seed, dtype) always gives the same files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { f32ToBf16, f32ToF16, type Tensor } from '../../src/kernels/tensor.js';

export interface RandomModelOptions {
  seed: number;
  dtype?: 'f32' | 'f16' | 'bf16';
  /**
   * Also write an MTP-style extra layer `model.layers.{num_hidden_layers}.*` (enorm, hnorm,
   * eh_proj, a full decoder block, shared_head) that a loader must ignore.
   */
  mtpLayer?: boolean;
}

/** A small base config (V2-Lite-like); `overrides` replace keys, an `undefined` value deletes one. */
export const baseConfig: Record<string, unknown> = {
  architectures: ['DeepseekV2ForCausalLM'],
  model_type: 'deepseek_v2',
  vocab_size: 97,
  hidden_size: 36,
  intermediate_size: 50,
  moe_intermediate_size: 9,
  num_hidden_layers: 2,
  num_attention_heads: 3,
  num_key_value_heads: 3,
  n_shared_experts: 1,
  n_routed_experts: 6,
  ep_size: 1,
  routed_scaling_factor: 1.0,
  kv_lora_rank: 20,
  q_lora_rank: null,
  qk_rope_head_dim: 6,
  v_head_dim: 7,
  qk_nope_head_dim: 5,
  topk_method: 'greedy',
  n_group: 1,
  topk_group: 1,
  num_experts_per_tok: 2,
  moe_layer_freq: 1,
  first_k_dense_replace: 1,
  norm_topk_prob: false,
  scoring_func: 'softmax',
  aux_loss_alpha: 0.001,
  seq_aux: true,
  hidden_act: 'silu',
  max_position_embeddings: 64,
  initializer_range: 0.02,
  rms_norm_eps: 1e-6,
  use_cache: true,
  pad_token_id: null,
  bos_token_id: 0,
  eos_token_id: 1,
  tie_word_embeddings: false,
  rope_theta: 10000,
  rope_scaling: null,
  attention_bias: false,
  attention_dropout: 0.0,
  torch_dtype: 'float32',
};

/** mulberry32: a small, fast, seedable 32-bit PRNG; returns uniform floats in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function int(c: Record<string, unknown>, key: string): number {
  const v = c[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`random model: ${key} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Write `dir`/config.json and `dir`/model.safetensors. Returns the config written.
 * Scales: projections uniform with std ≈ gain/√in (so activations stay O(1)), embeddings ±1,
 * norm weights 1 ± 0.25, router weights a little larger so routing is decisive but varied,
 * e_score_correction_bias ±0.15 (comparable to sigmoid score gaps, so it changes choices).
 */
export function writeRandomModel(dir: string, overrides: Record<string, unknown>, options: RandomModelOptions): Record<string, unknown> {
  const config: Record<string, unknown> = { ...baseConfig };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  if (config['model_type'] === 'deepseek_v3' && overrides['architectures'] === undefined) config['architectures'] = ['DeepseekV3ForCausalLM'];
  if (options.mtpLayer) config['num_nextn_predict_layers'] = 1;

  const rand = prng(options.seed);
  const dtype = options.dtype ?? 'f32';
  const tensors: Array<[string, Tensor]> = [];
  const put = (name: string, shape: number[], value: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = value();
    let data: Uint8Array;
    if (dtype === 'f32') data = new Uint8Array(values.buffer);
    else {
      const bits = new Uint16Array(n);
      for (let i = 0; i < n; i++) bits[i] = dtype === 'f16' ? f32ToF16(values[i]!) : f32ToBf16(values[i]!);
      data = new Uint8Array(bits.buffer);
    }
    tensors.push([name, { dtype, shape, data }]);
  };
  // the router bias is fp32 in real V3 checkpoints; keep it f32 whatever the weight dtype
  const putF32 = (name: string, shape: number[], value: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = value();
    tensors.push([name, { dtype: 'f32', shape, data: new Uint8Array(values.buffer) }]);
  };
  const uniform = (amplitude: number) => () => (2 * rand() - 1) * amplitude;
  const proj = (name: string, out: number, inDim: number, gain = 1): void => put(name, [out, inDim], uniform((gain * Math.sqrt(3)) / Math.sqrt(inDim)));
  const norm = (name: string, n: number): void => put(name, [n], () => 1 + (2 * rand() - 1) * 0.25);

  const d = int(config, 'hidden_size');
  const L = int(config, 'num_hidden_layers');
  const H = int(config, 'num_attention_heads');
  const V = int(config, 'vocab_size');
  const dn = int(config, 'qk_nope_head_dim');
  const dr = int(config, 'qk_rope_head_dim');
  const dv = int(config, 'v_head_dim');
  const dc = int(config, 'kv_lora_rank');
  const qLora = config['q_lora_rank'];
  const inter = int(config, 'intermediate_size');
  const nRouted = typeof config['n_routed_experts'] === 'number' ? (config['n_routed_experts'] as number) : 0;
  const nShared = typeof config['n_shared_experts'] === 'number' ? (config['n_shared_experts'] as number) : 0;
  const moeInter = nRouted > 0 ? int(config, 'moe_intermediate_size') : 0;
  const firstDense = typeof config['first_k_dense_replace'] === 'number' ? (config['first_k_dense_replace'] as number) : 0;
  const freq = typeof config['moe_layer_freq'] === 'number' ? (config['moe_layer_freq'] as number) : 1;
  const noaux = config['topk_method'] === 'noaux_tc';

  put('model.embed_tokens.weight', [V, d], uniform(1));
  const block = (l: number, forceMoe: boolean): void => {
    const p = `model.layers.${l}`;
    norm(`${p}.input_layernorm.weight`, d);
    if (qLora === null || qLora === undefined) {
      proj(`${p}.self_attn.q_proj.weight`, H * (dn + dr), d, 1.5);
    } else {
      const r = qLora as number;
      proj(`${p}.self_attn.q_a_proj.weight`, r, d);
      norm(`${p}.self_attn.q_a_layernorm.weight`, r);
      proj(`${p}.self_attn.q_b_proj.weight`, H * (dn + dr), r, 1.5);
    }
    proj(`${p}.self_attn.kv_a_proj_with_mqa.weight`, dc + dr, d, 1.5);
    norm(`${p}.self_attn.kv_a_layernorm.weight`, dc);
    proj(`${p}.self_attn.kv_b_proj.weight`, H * (dn + dv), dc, 1.5);
    proj(`${p}.self_attn.o_proj.weight`, d, H * dv);
    norm(`${p}.post_attention_layernorm.weight`, d);
    const moe = nRouted > 0 && ((l >= firstDense && l % freq === 0) || forceMoe);
    if (!moe) {
      proj(`${p}.mlp.gate_proj.weight`, inter, d);
      proj(`${p}.mlp.up_proj.weight`, inter, d);
      proj(`${p}.mlp.down_proj.weight`, d, inter);
      return;
    }
    proj(`${p}.mlp.gate.weight`, nRouted, d, 3);
    if (noaux) putF32(`${p}.mlp.gate.e_score_correction_bias`, [nRouted], uniform(0.15));
    for (let e = 0; e < nRouted; e++) {
      proj(`${p}.mlp.experts.${e}.gate_proj.weight`, moeInter, d);
      proj(`${p}.mlp.experts.${e}.up_proj.weight`, moeInter, d);
      proj(`${p}.mlp.experts.${e}.down_proj.weight`, d, moeInter);
    }
    if (nShared > 0) {
      const w = nShared * moeInter;
      proj(`${p}.mlp.shared_experts.gate_proj.weight`, w, d);
      proj(`${p}.mlp.shared_experts.up_proj.weight`, w, d);
      proj(`${p}.mlp.shared_experts.down_proj.weight`, d, w);
    }
  };
  for (let l = 0; l < L; l++) block(l, false);
  norm('model.norm.weight', d);
  if (config['tie_word_embeddings'] !== true) proj('lm_head.weight', V, d, 2);
  if (options.mtpLayer) {
    const p = `model.layers.${L}`;
    norm(`${p}.enorm.weight`, d);
    norm(`${p}.hnorm.weight`, d);
    proj(`${p}.eh_proj.weight`, d, 2 * d);
    block(L, true);
    norm(`${p}.shared_head.norm.weight`, d);
    proj(`${p}.shared_head.head.weight`, V, d);
  }

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return config;
}
