/**
 * One normalised ModelConfig for every supported checkpoint family, from a Hugging Face
 * `config.json` (GGUF metadata maps onto the same shape in formats/gguf).
 *
 * Field meanings and defaults follow the original `configuration_deepseek.py` / modeling code
 * that ships with the checkpoints (docs/SPEC.md §1, §4, §5). Anything dseek cannot compute exactly is
 * rejected here with an UnsupportedConfigError naming the field and value.
 */
import { readFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFormatError, UnsupportedConfigError } from '../errors.js';
import { supportedModelType, supportedSummary, type ArchFamily } from './registry.js';

/** YaRN rope scaling (docs/SPEC.md §4.2–4.3). */
export interface YarnScaling {
  readonly factor: number;
  readonly originalMaxPositionEmbeddings: number;
  readonly betaFast: number;
  readonly betaSlow: number;
  /** Controls the cos/sin magnitude together with mscaleAllDim (1.0 for released checkpoints). */
  readonly mscale: number;
  /** Controls the softmax scale: × m(factor, mscaleAllDim)². */
  readonly mscaleAllDim: number;
}

/** How routed experts are chosen. `greedy` is plain top-k (the config's "gready" typo included). */
export type TopkMethod = 'greedy' | 'group_limited_greedy' | 'noaux_tc';
export type ScoringFunc = 'softmax' | 'sigmoid';

export type { ArchFamily } from './registry.js';

export interface ModelConfig {
  readonly family: ArchFamily;
  /** model_type as written in the checkpoint (kimi_k2 maps to the V3 family). */
  readonly modelType: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numHiddenLayers: number;
  readonly numAttentionHeads: number;
  /** null for Lite models: plain q_proj instead of q_a_proj → q_a_layernorm → q_b_proj. */
  readonly qLoraRank: number | null;
  readonly kvLoraRank: number;
  readonly qkNopeHeadDim: number;
  readonly qkRopeHeadDim: number;
  readonly vHeadDim: number;
  /** 0 means every layer is a dense MLP. */
  readonly nRoutedExperts: number;
  readonly nSharedExperts: number;
  readonly numExpertsPerTok: number;
  readonly moeIntermediateSize: number;
  readonly firstKDenseReplace: number;
  readonly moeLayerFreq: number;
  readonly topkMethod: TopkMethod;
  readonly nGroup: number;
  readonly topkGroup: number;
  readonly scoringFunc: ScoringFunc;
  readonly normTopkProb: boolean;
  readonly routedScalingFactor: number;
  readonly maxPositionEmbeddings: number;
  readonly ropeTheta: number;
  readonly ropeScaling: YarnScaling | null;
  readonly rmsNormEps: number;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
}

type Json = Record<string, unknown>;

/** Whether layer `l` uses DeepSeekMoE (original modeling code: also `l % moe_layer_freq == 0`). */
export function isMoeLayer(c: ModelConfig, layer: number): boolean {
  return c.nRoutedExperts > 0 && layer >= c.firstKDenseReplace && layer % c.moeLayerFreq === 0;
}

/** Width of one latent-cache row: the normalised latent plus the rotated shared RoPE key. */
export function latentWidth(c: ModelConfig): number {
  return c.kvLoraRank + c.qkRopeHeadDim;
}

export function readConfigFile(folder: string): ModelConfig {
  const file = join(folder, 'config.json');
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new ModelFormatError(folder, 'no config.json: a Hugging Face model folder needs config.json next to its *.safetensors');
  }
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelFormatError(file, `not valid JSON (${(err as Error).message})`);
  }
  return parseConfig(json, file);
}

/** Normalise a parsed config.json. `source` names the file in error messages. */
export function parseConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelFormatError(source, 'config must be a JSON object');
  }
  const j = json as Json;
  const modelType = j['model_type'];
  const family = supportedModelType(modelType)?.family;
  if (!family) throw new UnsupportedConfigError('model_type', modelType, supportedSummary());

  const int = (key: string, fallback?: number, min = 1): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new UnsupportedConfigError(key, v, `expected an integer ≥ ${min}`);
    }
    return v;
  };
  const num = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new UnsupportedConfigError(key, v, 'expected a finite number');
    }
    return v;
  };

  const hiddenAct = j['hidden_act'] ?? 'silu';
  if (hiddenAct !== 'silu') throw new UnsupportedConfigError('hidden_act', hiddenAct, 'DeepSeek models use silu');
  if (j['attention_bias'] === true) {
    throw new UnsupportedConfigError('attention_bias', true, 'DeepSeek attention projections have no bias');
  }

  const qLoraRaw = j['q_lora_rank'];
  const qLoraRank = qLoraRaw === null || qLoraRaw === undefined ? null : int('q_lora_rank');

  const nRoutedRaw = j['n_routed_experts'];
  const nRoutedExperts = nRoutedRaw === null || nRoutedRaw === undefined ? 0 : int('n_routed_experts');

  const rawTopk = j['topk_method'] ?? 'greedy';
  let topkMethod: TopkMethod;
  if (rawTopk === 'greedy' || rawTopk === 'gready') topkMethod = 'greedy';
  else if (rawTopk === 'group_limited_greedy' || rawTopk === 'noaux_tc') topkMethod = rawTopk;
  else throw new UnsupportedConfigError('topk_method', rawTopk, 'expected greedy, group_limited_greedy or noaux_tc');

  const scoringFunc = j['scoring_func'] ?? 'softmax';
  if (scoringFunc !== 'softmax' && scoringFunc !== 'sigmoid') {
    throw new UnsupportedConfigError('scoring_func', scoringFunc, 'expected softmax or sigmoid');
  }

  const numHiddenLayers = int('num_hidden_layers');
  const numAttentionHeads = int('num_attention_heads');
  const qkRopeHeadDim = int('qk_rope_head_dim', 64);
  if (qkRopeHeadDim % 2 !== 0) {
    throw new UnsupportedConfigError('qk_rope_head_dim', qkRopeHeadDim, 'RoPE rotates pairs: must be even');
  }

  const moe = nRoutedExperts > 0;
  const nGroup = moe ? int('n_group', 1) : 1;
  const topkGroup = moe ? int('topk_group', 1) : 1;
  const numExpertsPerTok = moe ? int('num_experts_per_tok') : 0;
  if (moe) {
    if (nRoutedExperts % nGroup !== 0) {
      throw new UnsupportedConfigError('n_group', nGroup, `must divide n_routed_experts (${nRoutedExperts})`);
    }
    if (topkGroup > nGroup) throw new UnsupportedConfigError('topk_group', topkGroup, `must be ≤ n_group (${nGroup})`);
    const selectable = topkMethod === 'greedy' ? nRoutedExperts : (nRoutedExperts / nGroup) * topkGroup;
    if (numExpertsPerTok > selectable) {
      throw new UnsupportedConfigError(
        'num_experts_per_tok',
        numExpertsPerTok,
        `only ${selectable} experts are selectable with this grouping`,
      );
    }
    if (topkMethod === 'noaux_tc' && nRoutedExperts / nGroup < 2) {
      throw new UnsupportedConfigError('n_group', nGroup, 'noaux_tc scores groups by their top-2 experts: need ≥ 2 experts per group');
    }
  }

  const eos = j['eos_token_id'];
  let eosTokenIds: number[];
  if (eos === null || eos === undefined) eosTokenIds = [];
  else if (typeof eos === 'number' && Number.isSafeInteger(eos) && eos >= 0) eosTokenIds = [eos];
  else if (Array.isArray(eos) && eos.every((e) => typeof e === 'number' && Number.isSafeInteger(e) && e >= 0)) {
    eosTokenIds = eos as number[];
  } else throw new UnsupportedConfigError('eos_token_id', eos, 'expected a token id or a list of ids');
  const bos = j['bos_token_id'];
  if (bos !== null && bos !== undefined && !(typeof bos === 'number' && Number.isSafeInteger(bos) && bos >= 0)) {
    throw new UnsupportedConfigError('bos_token_id', bos, 'expected a token id or null');
  }

  const config: ModelConfig = {
    family,
    modelType: modelType as string,
    vocabSize: int('vocab_size'),
    hiddenSize: int('hidden_size'),
    intermediateSize: int('intermediate_size'),
    numHiddenLayers,
    numAttentionHeads,
    qLoraRank,
    kvLoraRank: int('kv_lora_rank'),
    qkNopeHeadDim: int('qk_nope_head_dim', 128, 0),
    qkRopeHeadDim,
    vHeadDim: int('v_head_dim', 128),
    nRoutedExperts,
    nSharedExperts: moe ? int('n_shared_experts', 0, 0) : 0,
    numExpertsPerTok,
    moeIntermediateSize: moe ? int('moe_intermediate_size') : 0,
    firstKDenseReplace: int('first_k_dense_replace', 0, 0),
    moeLayerFreq: int('moe_layer_freq', 1),
    topkMethod,
    nGroup,
    topkGroup,
    scoringFunc,
    normTopkProb: j['norm_topk_prob'] === true,
    routedScalingFactor: num('routed_scaling_factor', 1),
    maxPositionEmbeddings: int('max_position_embeddings', 2048),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(j['rope_scaling']),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    tieWordEmbeddings: j['tie_word_embeddings'] === true,
    bosTokenId: typeof bos === 'number' ? bos : null,
    eosTokenIds,
  };
  if (config.ropeTheta <= 0) throw new UnsupportedConfigError('rope_theta', config.ropeTheta, 'must be positive');
  if (config.rmsNormEps <= 0) throw new UnsupportedConfigError('rms_norm_eps', config.rmsNormEps, 'must be positive');
  return config;
}

function parseRopeScaling(raw: unknown): YarnScaling | null {
  if (raw === null || raw === undefined) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new UnsupportedConfigError('rope_scaling', raw, 'expected null or a YaRN object');
  }
  const r = raw as Json;
  const type = r['type'] ?? r['rope_type'];
  if (type === 'default') return null;
  if (type !== 'yarn') {
    throw new UnsupportedConfigError('rope_scaling.type', type, 'DeepSeek checkpoints use yarn (or no rope_scaling)');
  }
  const num = (key: string, fallback: number | undefined, positive: boolean): number => {
    const v = r[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || (positive ? v <= 0 : v < 0)) {
      throw new UnsupportedConfigError(`rope_scaling.${key}`, v, positive ? 'expected a positive number' : 'expected a number ≥ 0');
    }
    return v;
  };
  // Defaults are those of the original DeepseekV2YarnRotaryEmbedding (mscale_all_dim 0 = no softmax factor).
  return {
    factor: num('factor', undefined, true),
    originalMaxPositionEmbeddings: num('original_max_position_embeddings', 4096, true),
    betaFast: num('beta_fast', 32, true),
    betaSlow: num('beta_slow', 1, true),
    mscale: num('mscale', 1, false),
    mscaleAllDim: num('mscale_all_dim', 0, false),
  };
}
