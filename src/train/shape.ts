/**
 * The shape of a model to train, and the Hugging Face `config.json` it becomes. The config is a
 * DeepSeek-V3 one (model_type deepseek_v3: sigmoid router with e_score_correction_bias, noaux_tc),
 * so that src/model/config.ts parses it and src/model runs it unchanged.
 */
import { parseConfig, type ModelConfig } from '../model/config.js';

export interface ModelShape {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly layers: number;
  readonly heads: number;
  /** null: a plain q_proj (V2-Lite style); a number: q_a_proj → RMSNorm → q_b_proj. */
  readonly qLoraRank: number | null;
  readonly kvLoraRank: number;
  readonly qkNopeHeadDim: number;
  readonly qkRopeHeadDim: number;
  readonly vHeadDim: number;
  /** Width of the dense SwiGLU in the first `denseLayers` layers. */
  readonly intermediateSize: number;
  readonly denseLayers: number;
  readonly moeIntermediateSize: number;
  readonly routedExperts: number;
  readonly sharedExperts: number;
  readonly expertsPerToken: number;
  /** Context length trained on (also max_position_embeddings). */
  readonly context: number;
  readonly ropeTheta: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
}

/** The shipped default's shape (see models/default/README.md). */
export const DEFAULT_SHAPE: ModelShape = {
  vocabSize: 4096,
  hiddenSize: 256,
  layers: 4,
  heads: 4,
  qLoraRank: null,
  kvLoraRank: 64,
  qkNopeHeadDim: 32,
  qkRopeHeadDim: 16,
  vHeadDim: 32,
  intermediateSize: 640,
  denseLayers: 1,
  moeIntermediateSize: 256,
  routedExperts: 8,
  sharedExperts: 1,
  expertsPerToken: 2,
  context: 256,
  ropeTheta: 10000,
  bosTokenId: 0,
  eosTokenId: 1,
};

/** The Hugging Face config.json of a shape. */
export function hfConfig(s: ModelShape): Record<string, unknown> {
  return {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    vocab_size: s.vocabSize,
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    moe_intermediate_size: s.moeIntermediateSize,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.heads,
    n_shared_experts: s.sharedExperts,
    n_routed_experts: s.routedExperts,
    num_experts_per_tok: s.expertsPerToken,
    routed_scaling_factor: 1.0,
    topk_method: 'noaux_tc',
    scoring_func: 'sigmoid',
    n_group: 1,
    topk_group: 1,
    norm_topk_prob: true,
    first_k_dense_replace: s.denseLayers,
    moe_layer_freq: 1,
    q_lora_rank: s.qLoraRank,
    kv_lora_rank: s.kvLoraRank,
    qk_nope_head_dim: s.qkNopeHeadDim,
    qk_rope_head_dim: s.qkRopeHeadDim,
    v_head_dim: s.vHeadDim,
    hidden_act: 'silu',
    max_position_embeddings: s.context,
    rope_theta: s.ropeTheta,
    rope_scaling: null,
    rms_norm_eps: 1e-6,
    attention_bias: false,
    tie_word_embeddings: false,
    bos_token_id: s.bosTokenId,
    eos_token_id: s.eosTokenId,
    num_nextn_predict_layers: 0,
    initializer_range: 0.02,
    torch_dtype: 'float16',
    use_cache: true,
  };
}

export function modelConfigOf(s: ModelShape): ModelConfig {
  return parseConfig(hfConfig(s), 'training shape');
}
