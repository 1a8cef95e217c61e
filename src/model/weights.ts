/**
 * The model's weights, gathered by name from a WeightSource and checked against the config.
 * Names are those of the released Hugging Face checkpoints (docs/SPEC.md §6.1); shapes are [out, in].
 * Layers past num_hidden_layers (DeepSeek-V3's multi-token-prediction module) are ignored.
 */
import type { WeightSource } from '../formats/safetensors.js';
import { TensorShapeError } from '../errors.js';
import type { Tensor } from '../kernels/tensor.js';
import type { ExpertGroup, HeadGroup } from '../kernels/backend.js';
import { isMoeLayer, type ModelConfig } from './config.js';

export interface SwiGluWeights {
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly down: Tensor;
}

export interface AttentionWeights {
  /** Lite models (q_lora_rank null): one query projection [H·(dn+dr), d]. */
  readonly qProj: Tensor | null;
  /** Otherwise the low-rank query path: q_a [dq', d] → RMSNorm → q_b [H·(dn+dr), dq']. */
  readonly qA: Tensor | null;
  readonly qANorm: Tensor | null;
  readonly qB: Tensor | null;
  /** [dc + dr, d]: the latent and the shared RoPE key. */
  readonly kvA: Tensor;
  readonly kvANorm: Tensor;
  /** [H·(dn+dv), dc]: per head, dn rows of W_UK then dv rows of W_UV (HF and legacy GGUF layout). */
  readonly kvB: Tensor | null;
  /** Or split, as current llama.cpp GGUFs store it: [H·dc, dn], per head W_UKᵀ … */
  readonly kB: Tensor | null;
  /** … and [H·dv, dc], per head W_UV. */
  readonly vB: Tensor | null;
  /** [d, H·dv]. */
  readonly o: Tensor;
  /** Set by `prepareModelWeights`: W^UV_h [dv, dc] per head, prepared for the absorbed form's products. */
  readonly uvHeads?: readonly Tensor[];
  /** Set by `prepareModelWeights` for the split layout: k_b's head h [dc, dn], prepared. */
  readonly ukHeads?: readonly Tensor[];
  /** Set by `prepareModelWeights` when the backend runs all heads' W^UV (and W^UK) products in one call. */
  readonly uvGroup?: HeadGroup;
  readonly ukGroup?: HeadGroup;
}

export interface MoeWeights {
  /** Router [n_routed, d]. */
  readonly router: Tensor;
  /** e_score_correction_bias [n_routed] (V3, noaux_tc): added to scores for choosing only. */
  readonly choiceBias: Tensor | null;
  readonly experts: readonly SwiGluWeights[];
  /** All shared experts as one SwiGLU of width n_shared × moe_intermediate, or null. */
  readonly shared: SwiGluWeights | null;
  /** Set by `prepareModelWeights` when the backend runs the routed and shared experts as one operation. */
  readonly fused?: ExpertGroup;
}

export interface LayerWeights {
  readonly attnNorm: Tensor;
  readonly attention: AttentionWeights;
  readonly ffnNorm: Tensor;
  readonly dense: SwiGluWeights | null;
  readonly moe: MoeWeights | null;
}

export interface ModelWeights {
  readonly embed: Tensor;
  readonly layers: readonly LayerWeights[];
  readonly norm: Tensor;
  readonly lmHead: Tensor;
}

/** Read every tensor the config needs from `source`, checking each shape. */
export function loadWeights(c: ModelConfig, source: WeightSource): ModelWeights {
  const get = (name: string, shape: readonly number[]): Tensor => {
    const info = source.describe(name);
    if (!info) {
      throw new TensorShapeError(name, `missing from ${source.path}: the config (${c.modelType}) needs it`);
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeError(
        name,
        `shape [${info.shape.join(', ')}] in ${source.path} does not match [${shape.join(', ')}] implied by config.json`,
      );
    }
    return source.get(name);
  };
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
  const swiglu = (prefix: string, width: number): SwiGluWeights => ({
    gate: get(`${prefix}.gate_proj.weight`, [width, d]),
    up: get(`${prefix}.up_proj.weight`, [width, d]),
    down: get(`${prefix}.down_proj.weight`, [d, width]),
  });

  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    const lite = c.qLoraRank === null;
    const attention: AttentionWeights = {
      qProj: lite ? get(`${a}.q_proj.weight`, [H * dq, d]) : null,
      qA: lite ? null : get(`${a}.q_a_proj.weight`, [c.qLoraRank!, d]),
      qANorm: lite ? null : get(`${a}.q_a_layernorm.weight`, [c.qLoraRank!]),
      qB: lite ? null : get(`${a}.q_b_proj.weight`, [H * dq, c.qLoraRank!]),
      kvA: get(`${a}.kv_a_proj_with_mqa.weight`, [c.kvLoraRank + c.qkRopeHeadDim, d]),
      kvANorm: get(`${a}.kv_a_layernorm.weight`, [c.kvLoraRank]),
      kvB: get(`${a}.kv_b_proj.weight`, [H * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank]),
      kB: null,
      vB: null,
      o: get(`${a}.o_proj.weight`, [d, H * c.vHeadDim]),
    };
    let dense: SwiGluWeights | null = null;
    let moe: MoeWeights | null = null;
    if (isMoeLayer(c, l)) {
      const experts: SwiGluWeights[] = [];
      for (let e = 0; e < c.nRoutedExperts; e++) experts.push(swiglu(`${p}.mlp.experts.${e}`, c.moeIntermediateSize));
      const biasName = `${p}.mlp.gate.e_score_correction_bias`;
      moe = {
        router: get(`${p}.mlp.gate.weight`, [c.nRoutedExperts, d]),
        // noaux_tc is defined with the bias; elsewhere a checkpoint may still carry one (unused by its gate).
        choiceBias: c.topkMethod === 'noaux_tc' ? get(biasName, [c.nRoutedExperts]) : null,
        experts,
        shared: c.nSharedExperts > 0 ? swiglu(`${p}.mlp.shared_experts`, c.nSharedExperts * c.moeIntermediateSize) : null,
      };
    } else {
      dense = swiglu(`${p}.mlp`, c.intermediateSize);
    }
    layers.push({
      attnNorm: get(`${p}.input_layernorm.weight`, [d]),
      attention,
      ffnNorm: get(`${p}.post_attention_layernorm.weight`, [d]),
      dense,
      moe,
    });
  }
  const embed = get('model.embed_tokens.weight', [c.vocabSize, d]);
  const lmHead = c.tieWordEmbeddings && !source.has('lm_head.weight') ? embed : get('lm_head.weight', [c.vocabSize, d]);
  return { embed, layers, norm: get('model.norm.weight', [d]), lmHead };
}
