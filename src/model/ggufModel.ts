/**
 * DeepSeek models from GGUF files as llama.cpp writes them (architecture `deepseek2`; docs/SPEC.md
 * §6.2): the metadata keys mapped onto ModelConfig, and the `blk.N.*` tensors onto ModelWeights.
 * Both MLA layouts load: legacy (`attn_kv_b`, head_count_kv = heads) and current (`attn_k_b` +
 * `attn_v_b`, head_count_kv 1, key_length 576).
 *
 * Optional keys follow llama.cpp's loader, which is what writes and reads these files: its model
 * saver writes `attention.q_lora_rank = 0` for Lite models (0 or absent: no q_lora, `attn_q`);
 * V2/V2.5 files predate `expert_gating_func` (absent or 0, "none": softmax); group counts absent
 * or 0 mean one group; `expert_weights_norm` absent is false, `expert_weights_scale` absent 1,
 * `leading_dense_block_count` and `expert_shared_count` absent 0; the yarn keys default as below.
 */
import type { GgufFile } from '../formats/gguf.js';
import { ModelFormatError, TensorShapeError, UnsupportedConfigError } from '../errors.js';
import { reshape, rowSlice, type Tensor } from '../kernels/tensor.js';
import { isMoeLayer, parseConfig, type ModelConfig } from './config.js';
import { GGUF_ARCHITECTURE, supportedSummary } from './registry.js';
import type { AttentionWeights, LayerWeights, ModelWeights, SwiGluWeights } from './weights.js';

export { GGUF_ARCHITECTURE } from './registry.js';

/** The config a deepseek2 GGUF describes, expressed as the config.json it came from. */
export function configFromGguf(file: GgufFile): ModelConfig {
  const arch = file.typedKey('general.architecture', 'string');
  if (arch !== GGUF_ARCHITECTURE) {
    throw new UnsupportedConfigError('general.architecture', arch ?? null, supportedSummary());
  }
  const k = (name: string) => `${GGUF_ARCHITECTURE}.${name}`;
  const u32 = (name: string) => file.requireKey(k(name), 'u32');
  const optU32 = (name: string) => file.typedKey(k(name), 'u32');
  const f32 = (name: string) => file.typedKey(k(name), 'f32');

  const heads = u32('attention.head_count');
  const headsKv = optU32('attention.head_count_kv') ?? heads;
  const rope = u32('rope.dimension_count');
  const kvLora = u32('attention.kv_lora_rank');
  // Current layout writes the MQA view (key 576, value 512) and the per-head sizes separately.
  const current = file.tensor('blk.0.attn_k_b.weight') !== undefined;
  const keyLength = current ? optU32('attention.key_length_mla') ?? u32('attention.key_length') : u32('attention.key_length');
  const valueLength = current ? optU32('attention.value_length_mla') ?? u32('attention.value_length') : u32('attention.value_length');
  if (current && headsKv !== 1 && headsKv !== heads) {
    throw new ModelFormatError(file.path, `attention.head_count_kv = ${headsKv}: expected 1 (MLA as MQA) or ${heads}`);
  }
  const nextn = optU32('nextn_predict_layers') ?? 0;
  const blocks = u32('block_count');
  const experts = optU32('expert_count') ?? 0;
  // Missing or 0 ("none") means softmax, as llama.cpp reads V2/V2.5 files written before the key.
  const gating = optU32('expert_gating_func') || 1;
  if (gating !== 1 && gating !== 2) throw new UnsupportedConfigError(k('expert_gating_func'), gating, 'expected 0 or 1 (softmax) or 2 (sigmoid)');
  const groups = optU32('expert_group_count') || 1;
  const groupsUsed = optU32('expert_group_used_count') || 1;
  const sigmoid = gating === 2;
  const ropeType = file.typedKey(k('rope.scaling.type'), 'string');
  let ropeScaling: Record<string, unknown> | null = null;
  if (ropeType !== undefined && ropeType !== 'none') {
    if (ropeType !== 'yarn') throw new UnsupportedConfigError(k('rope.scaling.type'), ropeType, 'DeepSeek GGUFs use yarn');
    // The converter writes yarn_log_multiplier = 0.1 × mscale_all_dim; llama.cpp's DeepSeek graph
    // assumes mscale = mscale_all_dim (cos/sin magnitude 1).
    const logMul = f32('rope.scaling.yarn_log_multiplier') ?? 0;
    const mscaleAllDim = logMul / 0.1;
    ropeScaling = {
      type: 'yarn',
      factor: f32('rope.scaling.factor'),
      original_max_position_embeddings: optU32('rope.scaling.original_context_length') ?? 4096,
      beta_fast: f32('rope.scaling.yarn_beta_fast') ?? 32,
      beta_slow: f32('rope.scaling.yarn_beta_slow') ?? 1,
      mscale: mscaleAllDim,
      mscale_all_dim: mscaleAllDim,
    };
  }
  const embed = file.tensor('token_embd.weight');
  if (!embed) throw new TensorShapeError('token_embd.weight', `missing from ${file.path}`);
  const eos = file.typedKey('tokenizer.ggml.eos_token_id', 'u32');
  const bos = file.typedKey('tokenizer.ggml.bos_token_id', 'u32');
  return parseConfig(
    {
      model_type: sigmoid ? 'deepseek_v3' : 'deepseek_v2',
      vocab_size: embed.shape[0],
      hidden_size: u32('embedding_length'),
      intermediate_size: u32('feed_forward_length'),
      num_hidden_layers: blocks - nextn,
      num_attention_heads: heads,
      // 0 is how llama.cpp's saver writes "no q_lora" (Lite); llama.cpp treats the key as optional.
      q_lora_rank: optU32('attention.q_lora_rank') || null,
      kv_lora_rank: kvLora,
      qk_nope_head_dim: keyLength - rope,
      qk_rope_head_dim: rope,
      v_head_dim: valueLength,
      n_routed_experts: experts > 0 ? experts : null,
      n_shared_experts: optU32('expert_shared_count') ?? 0,
      num_experts_per_tok: optU32('expert_used_count'),
      moe_intermediate_size: optU32('expert_feed_forward_length'),
      first_k_dense_replace: optU32('leading_dense_block_count') ?? 0,
      moe_layer_freq: 1,
      topk_method: sigmoid ? 'noaux_tc' : groups > 1 ? 'group_limited_greedy' : 'greedy',
      n_group: groups,
      topk_group: groupsUsed,
      scoring_func: sigmoid ? 'sigmoid' : 'softmax',
      norm_topk_prob: file.typedKey(k('expert_weights_norm'), 'bool') ?? false,
      routed_scaling_factor: f32('expert_weights_scale') ?? 1,
      max_position_embeddings: u32('context_length'),
      rope_theta: f32('rope.freq_base') ?? 10000,
      rope_scaling: ropeScaling,
      rms_norm_eps: f32('attention.layer_norm_rms_epsilon') ?? 1e-6,
      tie_word_embeddings: file.tensor('output.weight') === undefined,
      bos_token_id: bos ?? null,
      eos_token_id: eos ?? null,
    },
    file.path,
  );
}

/** Read every tensor the config needs from a deepseek2 GGUF, checking shapes and mapping layouts. */
export function weightsFromGguf(c: ModelConfig, file: GgufFile): ModelWeights {
  const get = (name: string, shape: readonly number[]): Tensor => {
    const info = file.tensor(name);
    if (!info) throw new TensorShapeError(name, `missing from ${file.path}: the metadata (${c.numHiddenLayers} layers, ${c.nRoutedExperts} experts) needs it`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeError(name, `shape [${info.shape.join(', ')}] in ${file.path} does not match [${shape.join(', ')}] implied by the metadata`);
    }
    return file.readTensor(name);
  };
  const has = (name: string) => file.tensor(name) !== undefined;
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dn = c.qkNopeHeadDim;
  const dv = c.vHeadDim;
  const dc = c.kvLoraRank;
  const dq = dn + c.qkRopeHeadDim;
  const swiglu = (prefix: string, suffix: string, width: number): SwiGluWeights => ({
    gate: get(`${prefix}.ffn_gate${suffix}.weight`, [width, d]),
    up: get(`${prefix}.ffn_up${suffix}.weight`, [width, d]),
    down: get(`${prefix}.ffn_down${suffix}.weight`, [d, width]),
  });

  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `blk.${l}`;
    const lite = c.qLoraRank === null;
    const split = has(`${p}.attn_k_b.weight`);
    const attention: AttentionWeights = {
      qProj: lite ? get(`${p}.attn_q.weight`, [H * dq, d]) : null,
      qA: lite ? null : get(`${p}.attn_q_a.weight`, [c.qLoraRank!, d]),
      qANorm: lite ? null : get(`${p}.attn_q_a_norm.weight`, [c.qLoraRank!]),
      qB: lite ? null : get(`${p}.attn_q_b.weight`, [H * dq, c.qLoraRank!]),
      kvA: get(`${p}.attn_kv_a_mqa.weight`, [dc + c.qkRopeHeadDim, d]),
      kvANorm: get(`${p}.attn_kv_a_norm.weight`, [dc]),
      kvB: split ? null : get(`${p}.attn_kv_b.weight`, [H * (dn + dv), dc]),
      // ggml ne {dn, dc, H} / {dc, dv, H}: per head W_UKᵀ and W_UV, viewed as row stacks.
      kB: split ? reshape(get(`${p}.attn_k_b.weight`, [H, dc, dn]), [H * dc, dn]) : null,
      vB: split ? reshape(get(`${p}.attn_v_b.weight`, [H, dv, dc]), [H * dv, dc]) : null,
      o: get(`${p}.attn_output.weight`, [d, H * dv]),
    };
    let dense: SwiGluWeights | null = null;
    let moe: LayerWeights['moe'] = null;
    if (isMoeLayer(c, l)) {
      const E = c.nRoutedExperts;
      const I = c.moeIntermediateSize;
      // Experts are stacked on a leading dimension: expert e is a row slice of the flattened stack.
      const gate = reshape(get(`${p}.ffn_gate_exps.weight`, [E, I, d]), [E * I, d]);
      const up = reshape(get(`${p}.ffn_up_exps.weight`, [E, I, d]), [E * I, d]);
      const down = reshape(get(`${p}.ffn_down_exps.weight`, [E, d, I]), [E * d, I]);
      const experts = Array.from({ length: E }, (_, e) => ({
        gate: rowSlice(gate, e * I, I),
        up: rowSlice(up, e * I, I),
        down: rowSlice(down, e * d, d),
      }));
      moe = {
        router: get(`${p}.ffn_gate_inp.weight`, [E, d]),
        choiceBias: c.topkMethod === 'noaux_tc' ? get(`${p}.exp_probs_b.bias`, [E]) : null,
        experts,
        shared: c.nSharedExperts > 0 ? swiglu(p, '_shexp', c.nSharedExperts * I) : null,
      };
    } else {
      dense = swiglu(p, '', c.intermediateSize);
    }
    layers.push({ attnNorm: get(`${p}.attn_norm.weight`, [d]), attention, ffnNorm: get(`${p}.ffn_norm.weight`, [d]), dense, moe });
  }
  const embed = get('token_embd.weight', [c.vocabSize, d]);
  return {
    embed,
    layers,
    norm: get('output_norm.weight', [d]),
    lmHead: has('output.weight') ? get('output.weight', [c.vocabSize, d]) : embed,
  };
}
