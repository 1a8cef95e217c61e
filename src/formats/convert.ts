/**
 * Hugging Face folder (config.json + *.safetensors [+ tokenizer.json]) → GGUF v3 that llama.cpp's
 * `deepseek2` loader and dseek's model/ggufModel.ts both load (docs/SPEC.md §6.2).
 *
 * Facts copied from llama.cpp (never its code): the `DeepseekV2Model` converter class
 * (conversion/deepseek.py, formerly convert_hf_to_gguf.py [LC]) and `TextModel.set_gguf_parameters`
 * (conversion/base.py) for the metadata keys and the MLA split; `prepare_tensors` there for which
 * tensors stay F32; src/llama-quant.cpp (`llama_tensor_get_type_impl`, `tensor_type_fallback`,
 * `tensor_allows_quantization`) for the Q4_K_M recipe and the block-size fallbacks; llama.h for
 * `general.file_type` (llama_ftype) values.
 *
 * Streaming: the header (metadata and tensor infos) is planned from the safetensors headers alone;
 * each GGUF tensor's bytes are produced when writeGguf reaches it, reading its HF tensor(s) only
 * then (experts one at a time, straight into the stacked output). Peak memory is one output tensor
 * plus one input tensor, never the model.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidInputError, ModelFormatError, TensorShapeError, UnsupportedConfigError } from '../errors.js';
import { decodeRow, elementCount, elementReader, type Tensor } from '../kernels/tensor.js';
import { isMoeLayer, readConfigFile, type ModelConfig } from '../model/config.js';
import { GGUF_TOKEN_TYPE, GPT2_SPLIT, type GgufPreTokenizer } from '../tokenizer/ggufTokenizer.js';
import { writeGguf, type GgufValue, type GgufWriteTensor } from './gguf.js';
import { blockSize, quantizeRow, rowBytes, type GgmlType } from './quant/index.js';
import { openSafetensors, type WeightSource } from './safetensors.js';

/** `--type`: a single weight type, or `q4_k_m`, llama.cpp's Q4_K_M mixture. */
export type ConvertType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q5_k' | 'q6_k' | 'q4_k_m';
export const CONVERT_TYPES: readonly ConvertType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k', 'q4_k_m'];

/**
 * MLA tensor layout. `current` (llama.cpp ≥ PR #12801, 2025-04): kv_b_proj split into attn_k_b
 * (per head W_UKᵀ) and attn_v_b (per head W_UV), head_count_kv 1, key_length 576. `legacy`: one
 * attn_kv_b, head_count_kv = heads, key_length 192 — what older llama.cpp and ik_llama.cpp load.
 */
export type MlaLayout = 'current' | 'legacy';

export interface ConvertOptions {
  readonly type: ConvertType;
  /** Default `current`. */
  readonly layout?: MlaLayout;
  /** general.name; default the source folder's name. */
  readonly name?: string;
  /** Called after each tensor is produced, just before it is written. */
  readonly onProgress?: (done: number, total: number, tensorName: string, bytes: { readonly done: number; readonly total: number }) => void;
  /** Checked between tensors. */
  readonly signal?: AbortSignal;
}

/** One tensor of the file to be written. */
export interface PlannedTensor {
  /** GGUF name, e.g. `blk.3.ffn_down_exps.weight`. */
  readonly name: string;
  /** torch order, outermost first (GGUF `ne` is this reversed). */
  readonly shape: readonly number[];
  readonly type: GgmlType;
  readonly bytes: number;
  /** The Hugging Face tensors it is built from. */
  readonly sources: readonly string[];
}

export interface ConversionPlan {
  readonly config: ModelConfig;
  readonly layout: MlaLayout;
  readonly type: ConvertType;
  /** general.file_type (llama_ftype). */
  readonly fileType: number;
  readonly metadata: ReadonlyArray<readonly [string, GgufValue]>;
  readonly tensors: readonly PlannedTensor[];
  /** Tensor data bytes (without alignment padding). */
  readonly dataBytes: number;
  /** The tokenizer.ggml.pre of the source's tokenizer, or null when the folder has none (a placeholder vocabulary is written). */
  readonly preTokenizer: GgufPreTokenizer | null;
}

export interface ConvertResult extends ConversionPlan {
  readonly path: string;
  /** Size of the written file. */
  readonly fileBytes: number;
}

export const GGUF_ARCH = 'deepseek2';

/** llama_ftype (llama.h) written as general.file_type. Pure K types take the _S value (mostly that type). */
const FILE_TYPE: Readonly<Record<ConvertType, number>> = {
  f32: 0, // LLAMA_FTYPE_ALL_F32
  f16: 1, // LLAMA_FTYPE_MOSTLY_F16
  q4_0: 2, // LLAMA_FTYPE_MOSTLY_Q4_0
  q8_0: 7, // LLAMA_FTYPE_MOSTLY_Q8_0
  q4_k: 14, // LLAMA_FTYPE_MOSTLY_Q4_K_S
  q4_k_m: 15, // LLAMA_FTYPE_MOSTLY_Q4_K_M
  q5_k: 16, // LLAMA_FTYPE_MOSTLY_Q5_K_S
  q6_k: 18, // LLAMA_FTYPE_MOSTLY_Q6_K
  bf16: 32, // LLAMA_FTYPE_MOSTLY_BF16
};

/** Names of llama_ftype values, for `inspect`. */
export const LLAMA_FTYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'ALL_F32', 1: 'MOSTLY_F16', 2: 'MOSTLY_Q4_0', 3: 'MOSTLY_Q4_1', 7: 'MOSTLY_Q8_0', 8: 'MOSTLY_Q5_0', 9: 'MOSTLY_Q5_1',
  10: 'MOSTLY_Q2_K', 11: 'MOSTLY_Q3_K_S', 12: 'MOSTLY_Q3_K_M', 13: 'MOSTLY_Q3_K_L', 14: 'MOSTLY_Q4_K_S', 15: 'MOSTLY_Q4_K_M',
  16: 'MOSTLY_Q5_K_S', 17: 'MOSTLY_Q5_K_M', 18: 'MOSTLY_Q6_K', 32: 'MOSTLY_BF16',
};

export function isConvertType(s: string): s is ConvertType {
  return (CONVERT_TYPES as readonly string[]).includes(s);
}

// --- Tensor types ------------------------------------------------------------------------------

/** What the type rules need to know about the model. */
export interface TypeContext {
  readonly blockCount: number;
  readonly expertCount: number;
  /** No output.weight: token_embd doubles as the output and is typed like it. */
  readonly tiedEmbeddings: boolean;
}

/**
 * Tensors that stay F32 whatever the type: 1-D tensors, `*_norm.weight`, the router
 * (`ffn_gate_inp`) and anything not named `.weight` (`exp_probs_b.bias`) — convert_hf_to_gguf's
 * `prepare_tensors`, matched by llama-quantize's `tensor_allows_quantization`.
 */
function staysF32(name: string, shape: readonly number[]): boolean {
  return shape.length <= 1 || name.endsWith('_norm.weight') || name.includes('ffn_gate_inp') || !name.endsWith('.weight');
}

/**
 * llama.cpp's `use_more_bits` (llama-quant.cpp): the first and last eighth of the layers and every
 * third layer between get the bigger type. C integer division.
 */
export function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.trunc(layers / 8);
  return layer < eighth || layer >= Math.trunc((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

function layerOf(name: string): number {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/**
 * llama.cpp's Q4_K_M mixture (`llama_tensor_get_type_impl` with LLAMA_FTYPE_MOSTLY_Q4_K_M, default
 * Q4_K), the rules that apply to deepseek2 tensors:
 *  - output.weight (and token_embd.weight when it is also the output): Q6_K; Q8_0 when its rows are
 *    not a multiple of 256.
 *  - attn_kv_b (legacy layout; llama.cpp files it with attn_v as "attention-v-like"): Q6_K on
 *    use_more_bits layers (the i-th attn_kv_b of n = layer i of block_count); Q8_0 in 8-expert models.
 *  - every ffn_down* (ffn_down, ffn_down_exps, ffn_down_shexp): Q6_K on use_more_bits layers.
 *  - attn_output: Q5_K in 8-expert models (a Mixtral rule llama.cpp applies to any 8-expert model).
 *  - the rest, token_embd (untied), attn_k_b and attn_v_b included: Q4_K. (llama.cpp's name matching
 *    finds "attn_v.weight", not "attn_v_b.weight", so the current layout's value projection is not
 *    bumped.)
 */
function q4kmType(name: string, ctx: TypeContext, rowLength: number): GgmlType {
  if (name === 'output.weight' || (ctx.tiedEmbeddings && name === 'token_embd.weight')) return rowLength % 256 === 0 ? 'q6_k' : 'q8_0';
  if (name.endsWith('.attn_kv_b.weight')) return ctx.expertCount === 8 ? 'q8_0' : useMoreBits(layerOf(name), ctx.blockCount) ? 'q6_k' : 'q4_k';
  if (name.includes('.ffn_down')) return useMoreBits(layerOf(name), ctx.blockCount) ? 'q6_k' : 'q4_k';
  if (name.endsWith('.attn_output.weight') && ctx.expertCount === 8) return 'q5_k';
  return 'q4_k';
}

/**
 * Rows that are not a whole number of blocks: llama.cpp's `tensor_type_fallback` maps Q4_K → Q5_0,
 * Q5_K → Q5_1, Q6_K → Q8_0 (32-element blocks); when even that does not fit, llama.cpp (and its
 * converter, for Q8_0) falls back to F16 — dseek keeps F32 instead: exact, and such tensors are tiny.
 */
function fallback(type: GgmlType, rowLength: number): GgmlType {
  if (rowLength % blockSize(type) === 0) return type;
  const next: Partial<Record<GgmlType, GgmlType>> = { q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0' };
  const t = next[type];
  return t !== undefined && rowLength % blockSize(t) === 0 ? t : 'f32';
}

/** The type a GGUF tensor gets under `type`. */
export function tensorTypeFor(type: ConvertType, name: string, shape: readonly number[], ctx: TypeContext): GgmlType {
  if (staysF32(name, shape)) return 'f32';
  const rowLength = shape[shape.length - 1]!;
  const wanted: GgmlType = type === 'q4_k_m' ? q4kmType(name, ctx, rowLength) : type;
  return fallback(wanted, rowLength);
}

// --- Planning ----------------------------------------------------------------------------------

/** Fills `out` (exactly the tensor's bytes) from the source. */
type Producer = (source: WeightSource, out: Uint8Array) => void;

interface Entry extends PlannedTensor {
  readonly produce: Producer;
}

/** Encode every row of `t` (rows = last dimension) as `type` into `out` from byte `at`. */
function encodeRows(t: Tensor, type: GgmlType, out: Uint8Array, at: number): void {
  if (t.dtype === type) {
    out.set(t.data, at);
    return;
  }
  const rowLen = t.shape[t.shape.length - 1]!;
  const rows = elementCount(t.shape) / rowLen;
  const rb = rowBytes(type, rowLen);
  const row = new Float32Array(rowLen);
  for (let r = 0; r < rows; r++) {
    decodeRow(t, r * rowLen, rowLen, row);
    quantizeRow(type, row, out.subarray(at + r * rb));
  }
}

interface Planner {
  readonly source: WeightSource;
  readonly used: Set<string>;
  readonly entries: Entry[];
  readonly ctx: TypeContext;
  readonly type: ConvertType;
}

/** Check that HF tensor `name` exists with `shape`, and mark it used. */
function expectSource(p: Planner, name: string, shape: readonly number[]): void {
  const info = p.source.describe(name);
  if (!info) throw new TensorShapeError(name, `missing from ${p.source.path}: config.json implies it`);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new TensorShapeError(name, `shape [${info.shape.join(', ')}] in ${p.source.path} does not match [${shape.join(', ')}] implied by config.json`);
  }
  p.used.add(name);
}

function add(p: Planner, name: string, shape: readonly number[], sources: readonly string[], produce: (type: GgmlType) => Producer): void {
  const type = tensorTypeFor(p.type, name, shape, p.ctx);
  const bytes = rowBytes(type, elementCount(shape));
  p.entries.push({ name, shape, type, bytes, sources, produce: produce(type) });
}

/** A GGUF tensor that is one HF tensor, same shape. */
function plain(p: Planner, name: string, hf: string, shape: readonly number[]): void {
  expectSource(p, hf, shape);
  add(p, name, shape, [hf], (type) => (source, out) => encodeRows(source.get(hf), type, out, 0));
}

/** Experts stacked on a new leading dimension, read and encoded one expert at a time. */
function stacked(p: Planner, name: string, hfs: readonly string[], shape: readonly number[]): void {
  for (const hf of hfs) expectSource(p, hf, shape);
  add(p, name, [hfs.length, ...shape], hfs, (type) => (source, out) => {
    const per = rowBytes(type, elementCount(shape));
    hfs.forEach((hf, e) => encodeRows(source.get(hf), type, out, e * per));
  });
}

/**
 * kv_b_proj [H·(dn+dv), dc] (per head dn rows of W_UK then dv rows of W_UV) split as llama.cpp's
 * converter does: attn_k_b [H, dc, dn] = per head W_UKᵀ, attn_v_b [H, dv, dc] = per head W_UV.
 */
function splitKvB(p: Planner, layer: number, hf: string, c: ModelConfig): void {
  const H = c.numAttentionHeads;
  const dn = c.qkNopeHeadDim;
  const dv = c.vHeadDim;
  const dc = c.kvLoraRank;
  expectSource(p, hf, [H * (dn + dv), dc]);
  add(p, `blk.${layer}.attn_k_b.weight`, [H, dc, dn], [hf], (type) => (source, out) => {
    const t = source.get(hf);
    const read = elementReader(t);
    const rb = rowBytes(type, dn);
    const row = new Float32Array(dn);
    for (let h = 0; h < H; h++) {
      for (let j = 0; j < dc; j++) {
        for (let n = 0; n < dn; n++) row[n] = read((h * (dn + dv) + n) * dc + j);
        quantizeRow(type, row, out.subarray((h * dc + j) * rb));
      }
    }
  });
  add(p, `blk.${layer}.attn_v_b.weight`, [H, dv, dc], [hf], (type) => (source, out) => {
    const t = source.get(hf);
    const rb = rowBytes(type, dc);
    const row = new Float32Array(dc);
    for (let h = 0; h < H; h++) {
      for (let v = 0; v < dv; v++) {
        decodeRow(t, (h * (dn + dv) + dn + v) * dc, dc, row);
        quantizeRow(type, row, out.subarray((h * dv + v) * rb));
      }
    }
  });
}

/** HF → GGUF tensor mapping (docs/SPEC.md §6.2, llama.cpp's tensor map for MODEL_ARCH.DEEPSEEK2). */
function planTensors(p: Planner, c: ModelConfig, layout: MlaLayout): void {
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
  plain(p, 'token_embd.weight', 'model.embed_tokens.weight', [c.vocabSize, d]);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const b = `blk.${l}`;
    const m = `model.layers.${l}`;
    plain(p, `${b}.attn_norm.weight`, `${m}.input_layernorm.weight`, [d]);
    if (c.qLoraRank === null) {
      plain(p, `${b}.attn_q.weight`, `${m}.self_attn.q_proj.weight`, [H * dq, d]);
    } else {
      plain(p, `${b}.attn_q_a.weight`, `${m}.self_attn.q_a_proj.weight`, [c.qLoraRank, d]);
      plain(p, `${b}.attn_q_a_norm.weight`, `${m}.self_attn.q_a_layernorm.weight`, [c.qLoraRank]);
      plain(p, `${b}.attn_q_b.weight`, `${m}.self_attn.q_b_proj.weight`, [H * dq, c.qLoraRank]);
    }
    plain(p, `${b}.attn_kv_a_mqa.weight`, `${m}.self_attn.kv_a_proj_with_mqa.weight`, [c.kvLoraRank + c.qkRopeHeadDim, d]);
    plain(p, `${b}.attn_kv_a_norm.weight`, `${m}.self_attn.kv_a_layernorm.weight`, [c.kvLoraRank]);
    const kvB = `${m}.self_attn.kv_b_proj.weight`;
    if (layout === 'legacy') plain(p, `${b}.attn_kv_b.weight`, kvB, [H * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank]);
    else splitKvB(p, l, kvB, c);
    plain(p, `${b}.attn_output.weight`, `${m}.self_attn.o_proj.weight`, [d, H * c.vHeadDim]);
    plain(p, `${b}.ffn_norm.weight`, `${m}.post_attention_layernorm.weight`, [d]);
    if (isMoeLayer(c, l)) {
      const E = c.nRoutedExperts;
      const I = c.moeIntermediateSize;
      plain(p, `${b}.ffn_gate_inp.weight`, `${m}.mlp.gate.weight`, [E, d]);
      const bias = `${m}.mlp.gate.e_score_correction_bias`;
      // The converter renames it e_score_correction.bias; llama.cpp's tensor map makes it exp_probs_b.bias.
      if (c.topkMethod === 'noaux_tc' || p.source.has(bias)) plain(p, `${b}.exp_probs_b.bias`, bias, [E]);
      const experts = (w: string) => Array.from({ length: E }, (_, e) => `${m}.mlp.experts.${e}.${w}_proj.weight`);
      stacked(p, `${b}.ffn_gate_exps.weight`, experts('gate'), [I, d]);
      stacked(p, `${b}.ffn_up_exps.weight`, experts('up'), [I, d]);
      stacked(p, `${b}.ffn_down_exps.weight`, experts('down'), [d, I]);
      if (c.nSharedExperts > 0) {
        const S = c.nSharedExperts * I;
        plain(p, `${b}.ffn_gate_shexp.weight`, `${m}.mlp.shared_experts.gate_proj.weight`, [S, d]);
        plain(p, `${b}.ffn_up_shexp.weight`, `${m}.mlp.shared_experts.up_proj.weight`, [S, d]);
        plain(p, `${b}.ffn_down_shexp.weight`, `${m}.mlp.shared_experts.down_proj.weight`, [d, S]);
      }
    } else {
      plain(p, `${b}.ffn_gate.weight`, `${m}.mlp.gate_proj.weight`, [c.intermediateSize, d]);
      plain(p, `${b}.ffn_up.weight`, `${m}.mlp.up_proj.weight`, [c.intermediateSize, d]);
      plain(p, `${b}.ffn_down.weight`, `${m}.mlp.down_proj.weight`, [d, c.intermediateSize]);
    }
  }
  plain(p, 'output_norm.weight', 'model.norm.weight', [d]);
  // Tied embeddings: llama.cpp skips lm_head and uses token_embd as the output.
  if (!c.tieWordEmbeddings) plain(p, 'output.weight', 'lm_head.weight', [c.vocabSize, d]);

  for (const name of p.source.names()) {
    if (p.used.has(name)) continue;
    const layer = /^model\.layers\.(\d+)\./.exec(name);
    if (layer && Number(layer[1]) >= c.numHiddenLayers) continue; // MTP layers: llama.cpp's skip_mtp
    if (name.endsWith('.rotary_emb.inv_freq')) continue; // a buffer some checkpoints save, recomputed at load
    if (name === 'lm_head.weight' && c.tieWordEmbeddings) continue;
    throw new ModelFormatError(p.source.path, `tensor ${JSON.stringify(name)} has no deepseek2 GGUF counterpart (is config.json for this checkpoint?)`);
  }
}

// --- Metadata ----------------------------------------------------------------------------------

const u32 = (value: number): GgufValue => ({ type: 'u32', value });
const f32 = (value: number): GgufValue => ({ type: 'f32', value });
const str = (value: string): GgufValue => ({ type: 'string', value });
const bool = (value: boolean): GgufValue => ({ type: 'bool', value });

/**
 * The `deepseek2.*` keys, as llama.cpp's converter writes them (TextModel.set_gguf_parameters then
 * DeepseekV2Model.set_gguf_parameters), and all that configFromGguf reads.
 */
export function modelMetadata(c: ModelConfig, layout: MlaLayout): Array<[string, GgufValue]> {
  const k = (name: string) => `${GGUF_ARCH}.${name}`;
  const moe = c.nRoutedExperts > 0;
  if (c.moeLayerFreq !== 1 && moe) {
    throw new UnsupportedConfigError('moe_layer_freq', c.moeLayerFreq, 'GGUF deepseek2 has no key for it: only 1 (every layer past first_k_dense_replace is MoE) converts');
  }
  const out: Array<[string, GgufValue]> = [
    [k('block_count'), u32(c.numHiddenLayers)],
    [k('context_length'), u32(c.maxPositionEmbeddings)],
    [k('embedding_length'), u32(c.hiddenSize)],
    [k('feed_forward_length'), u32(c.intermediateSize)],
    [k('attention.head_count'), u32(c.numAttentionHeads)],
    // MLA as MQA: one shared 576-wide key head (current); legacy files decompress to per-head K/V.
    [k('attention.head_count_kv'), u32(layout === 'current' ? 1 : c.numAttentionHeads)],
    [k('rope.freq_base'), f32(c.ropeTheta)],
    [k('attention.layer_norm_rms_epsilon'), f32(c.rmsNormEps)],
  ];
  if (moe) {
    out.push(
      [k('expert_count'), u32(c.nRoutedExperts)],
      [k('expert_used_count'), u32(c.numExpertsPerTok)],
      [k('expert_group_count'), u32(c.nGroup)],
      [k('expert_group_used_count'), u32(c.topkGroup)],
      // 1 = softmax, 2 = sigmoid (llama.cpp LLM_EXPERT_GATING_FUNC_*); missing would mean softmax.
      [k('expert_gating_func'), u32(c.scoringFunc === 'sigmoid' ? 2 : 1)],
    );
  }
  out.push(
    [k('leading_dense_block_count'), u32(moe ? c.firstKDenseReplace : c.numHiddenLayers)],
    [k('vocab_size'), u32(c.vocabSize)],
  );
  if (c.qLoraRank !== null) out.push([k('attention.q_lora_rank'), u32(c.qLoraRank)]);
  out.push([k('attention.kv_lora_rank'), u32(c.kvLoraRank)]);
  if (layout === 'current') {
    out.push(
      [k('attention.key_length'), u32(c.kvLoraRank + c.qkRopeHeadDim)],
      [k('attention.value_length'), u32(c.kvLoraRank)],
      [k('attention.key_length_mla'), u32(c.qkNopeHeadDim + c.qkRopeHeadDim)],
      [k('attention.value_length_mla'), u32(c.vHeadDim)],
    );
  } else {
    out.push([k('attention.key_length'), u32(c.qkNopeHeadDim + c.qkRopeHeadDim)], [k('attention.value_length'), u32(c.vHeadDim)]);
  }
  out.push(
    [k('expert_feed_forward_length'), u32(moe ? c.moeIntermediateSize : c.intermediateSize)],
    [k('expert_shared_count'), u32(c.nSharedExperts)],
  );
  if (moe) {
    out.push([k('expert_weights_scale'), f32(c.routedScalingFactor)]);
    // Written only when true, as llama.cpp's converter does.
    if (c.normTopkProb) out.push([k('expert_weights_norm'), bool(true)]);
  }
  out.push([k('rope.dimension_count'), u32(c.qkRopeHeadDim)]);
  const y = c.ropeScaling;
  if (y) {
    // llama.cpp's deepseek2 graph assumes mscale == mscale_all_dim (cos/sin magnitude 1, docs/SPEC.md §4.3)
    // and only stores mscale_all_dim; a checkpoint where they differ would silently change.
    if (y.mscale !== y.mscaleAllDim) {
      throw new UnsupportedConfigError('rope_scaling.mscale', y.mscale, `GGUF deepseek2 stores only mscale_all_dim (${y.mscaleAllDim}); llama.cpp assumes both are equal`);
    }
    out.push(
      [k('rope.scaling.type'), str('yarn')],
      [k('rope.scaling.factor'), f32(y.factor)],
      [k('rope.scaling.original_context_length'), u32(y.originalMaxPositionEmbeddings)],
      [k('rope.scaling.yarn_beta_fast'), f32(y.betaFast)],
      [k('rope.scaling.yarn_beta_slow'), f32(y.betaSlow)],
      // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: 0.1 × mscale_all_dim, kept for compatibility (PR #17945).
      [k('rope.scaling.yarn_log_multiplier'), f32(0.1 * y.mscaleAllDim)],
    );
  }
  return out;
}

// --- Tokenizer ---------------------------------------------------------------------------------

/** The GPT-2 byte ↔ unicode map used by byte-level BPE vocabularies (bytes_to_unicode). */
function byteLevelAlphabet(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(keep(b) ? b : next++));
}

/**
 * A placeholder byte-level vocabulary (256 byte tokens, BOS/EOS, padding) for files made without a
 * real tokenizer, so that llama.cpp (which requires tokenizer.ggml.*) and dseek load them.
 */
export function placeholderVocabulary(c: ModelConfig, pre: string): Array<[string, GgufValue]> {
  const tokens: string[] = [];
  const types: number[] = [];
  const alphabet = byteLevelAlphabet();
  const eos = c.eosTokenIds[0] ?? 1;
  for (let id = 0; id < c.vocabSize; id++) {
    if (id === c.bosTokenId) {
      tokens.push('<｜begin▁of▁sentence｜>');
      types.push(3);
    } else if (id === eos) {
      tokens.push('<｜end▁of▁sentence｜>');
      types.push(3);
    } else if (id >= 2 && id < 258) {
      tokens.push(alphabet[id - 2]!);
      types.push(1);
    } else {
      tokens.push(`[PAD${id}]`);
      types.push(5);
    }
  }
  return [
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: pre }],
    ['tokenizer.ggml.tokens', { type: 'array', elementType: 'string', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'array', elementType: 'i32', value: types }],
    ['tokenizer.ggml.merges', { type: 'array', elementType: 'string', value: [] }],
    ['tokenizer.ggml.bos_token_id', { type: 'u32', value: c.bosTokenId ?? 0 }],
    ['tokenizer.ggml.eos_token_id', { type: 'u32', value: eos }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
  ];
}


type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readJson(path: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelFormatError(path, `not valid JSON (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  }
  if (!isObject(v)) throw new ModelFormatError(path, 'expected a JSON object at the top level');
  return v;
}

/** Every Split regex of a pre_tokenizer config, in order. */
function splitRegexes(config: unknown): string[] {
  if (Array.isArray(config)) return config.flatMap(splitRegexes);
  if (!isObject(config)) return [];
  const own = config['type'] === 'Split' && isObject(config['pattern']) && typeof config['pattern']['Regex'] === 'string' ? [config['pattern']['Regex']] : [];
  return [...own, ...splitRegexes(config['pretokenizers'])];
}

/**
 * Which llama.cpp pre-tokenizer a tokenizer.json's Split regexes are: `\p{N}{1,3}` (digits in
 * threes) is DeepSeek-V3's; unbounded `\p{N}+` after a newline split is DeepSeek-V2's
 * (`deepseek-llm`, docs/SPEC.md §7.1). llama.cpp tells them apart by hashing a test encoding instead.
 */
export function detectPreTokenizer(preTokenizer: unknown, source: string): GgufPreTokenizer {
  const regexes = splitRegexes(preTokenizer);
  if (regexes.includes('\\p{N}{1,3}')) return 'deepseek-v3';
  if (regexes.includes('\\p{N}+') && regexes.some((r) => r === '[\r\n]' || r === '[\\r\\n]')) return 'deepseek-llm';
  if (regexes.length === 1 && (regexes[0] === GPT2_SPLIT || regexes[0] === GPT2_SPLIT.replace("'(?:s|t|re|ve|m|ll|d)", "'s|'t|'re|'ve|'m|'ll|'d"))) return 'gpt-2';
  throw new UnsupportedConfigError(
    `${source} pre_tokenizer`,
    regexes.length > 0 ? regexes.map((r) => (r.length > 24 ? `${r.slice(0, 24)}…` : r)) : preTokenizer ?? null,
    'dseek converts the DeepSeek-V2 (deepseek-llm), DeepSeek-V3 (deepseek-v3) and GPT-2 (gpt-2) byte-level BPE pre-tokenizers only',
  );
}

/** gguf-py's TextModel.does_token_look_special: added tokens that are control tokens whatever their flag. */
function looksSpecial(t: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) ||
    (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'))
  );
}

/**
 * `tokenizer.ggml.*` and `tokenizer.chat_template` from a folder's tokenizer.json (+
 * tokenizer_config.json, chat_template.jinja), as llama.cpp's `_set_vocab_gpt2` + `SpecialVocab`
 * write them: tokens in id order up to the model's vocab_size, ids without a token filled with
 * "[PAD{id}]" of type unused; HF added tokens control (special, or looking special) or
 * user-defined; special ids from tokenizer_config's token texts, else config.json's *_token_id.
 * Null when the folder has no tokenizer.json.
 */
export function tokenizerMetadata(
  folder: string,
  vocabSize: number,
  modelConfig: Json,
): { metadata: Array<[string, GgufValue]>; pre: GgufPreTokenizer } | null {
  const jsonPath = join(folder, 'tokenizer.json');
  if (!existsSync(jsonPath)) return null;
  const tok = readJson(jsonPath);
  const configPath = join(folder, 'tokenizer_config.json');
  const tcfg = existsSync(configPath) ? readJson(configPath) : {};
  const fail = (message: string): never => {
    throw new ModelFormatError(jsonPath, message);
  };
  const model = tok['model'];
  if (!isObject(model) || (model['type'] !== undefined && model['type'] !== 'BPE')) fail('model.type must be "BPE": dseek converts byte-level BPE tokenizers only');
  const { vocab, merges } = model as Json;
  if (!isObject(vocab) || !Array.isArray(merges)) fail('model.vocab (object) and model.merges (array) are required');
  const pre = detectPreTokenizer(tok['pre_tokenizer'], jsonPath);

  const text = new Map<number, string>();
  const type = new Map<number, number>();
  for (const [t, id] of Object.entries(vocab as Json)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) fail(`model.vocab[${JSON.stringify(t)}] = ${JSON.stringify(id)} is not a token id`);
    text.set(id as number, t);
    type.set(id as number, GGUF_TOKEN_TYPE.normal);
  }
  const addedTokens = tok['added_tokens'] ?? [];
  if (!Array.isArray(addedTokens)) fail('added_tokens must be an array');
  const addedByContent = new Map<string, number>();
  (addedTokens as unknown[]).forEach((a, i) => {
    if (!isObject(a) || typeof a['id'] !== 'number' || !Number.isInteger(a['id']) || a['id'] < 0 || typeof a['content'] !== 'string') {
      fail(`added_tokens[${i}] needs an integer id and a content string`);
    }
    const { id, content, special } = a as { id: number; content: string; special?: unknown };
    const control = special === true || looksSpecial(content);
    // llama.cpp pre-normalises user-defined tokens' "▁" to spaces (added for Gemma).
    text.set(id, control ? content : content.replaceAll('\u2581', ' '));
    type.set(id, control ? GGUF_TOKEN_TYPE.control : GGUF_TOKEN_TYPE.userDefined);
    addedByContent.set(content, id);
  });
  let maxId = -1;
  for (const id of text.keys()) maxId = Math.max(maxId, id);
  if (maxId >= vocabSize) fail(`token id ${maxId} does not fit the model's vocab_size ${vocabSize} (embedding rows)`);

  const tokens: string[] = new Array<string>(vocabSize);
  const types: number[] = new Array<number>(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const t = text.get(id);
    tokens[id] = t ?? `[PAD${id}]`;
    types[id] = t === undefined ? GGUF_TOKEN_TYPE.unused : type.get(id)!;
  }
  const mergeStrings = (merges as unknown[]).map((m, i): string => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return `${m[0]} ${m[1]}`;
    return fail(`model.merges[${i}] must be "a b" or ["a", "b"]`);
  });

  // SpecialVocab: tokenizer_config's token texts first, then config.json's ids.
  const specialId = (key: string, configKey: string): number | undefined => {
    const v = tcfg[key];
    const content = typeof v === 'string' ? v : isObject(v) && typeof v['content'] === 'string' ? v['content'] : undefined;
    if (content !== undefined) {
      const id = addedByContent.get(content);
      if (id !== undefined) return id;
    }
    const fromConfig = modelConfig[configKey];
    if (typeof fromConfig === 'number' && Number.isInteger(fromConfig) && fromConfig >= 0 && fromConfig < vocabSize) return fromConfig;
    if (Array.isArray(fromConfig) && typeof fromConfig[0] === 'number') return fromConfig[0];
    return undefined;
  };
  const metadata: Array<[string, GgufValue]> = [
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str(pre)],
    ['tokenizer.ggml.tokens', { type: 'array', elementType: 'string', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'array', elementType: 'i32', value: types }],
    ['tokenizer.ggml.merges', { type: 'array', elementType: 'string', value: mergeStrings }],
  ];
  for (const [key, cfgKey, ggufKey] of [
    ['bos_token', 'bos_token_id', 'tokenizer.ggml.bos_token_id'],
    ['eos_token', 'eos_token_id', 'tokenizer.ggml.eos_token_id'],
    ['pad_token', 'pad_token_id', 'tokenizer.ggml.padding_token_id'],
  ] as const) {
    const id = specialId(key, cfgKey);
    if (id !== undefined) metadata.push([ggufKey, u32(id)]);
  }
  for (const key of ['add_bos_token', 'add_eos_token'] as const) {
    const v = tcfg[key];
    if (typeof v === 'boolean') metadata.push([`tokenizer.ggml.${key}`, bool(v)]);
  }
  let template: unknown = tcfg['chat_template'];
  if (Array.isArray(template)) {
    const named = template.find((t: unknown) => isObject(t) && t['name'] === 'default');
    template = isObject(named) ? named['template'] : undefined;
  }
  const templateFile = join(folder, 'chat_template.jinja');
  if (typeof template !== 'string' && existsSync(templateFile)) template = readFileSync(templateFile, 'utf8');
  if (typeof template === 'string') metadata.push(['tokenizer.chat_template', str(template)]);
  return { metadata, pre };
}

// --- Entry points ------------------------------------------------------------------------------

function checkSource(srcFolder: string): void {
  if (!existsSync(srcFolder)) throw new ModelFormatError(srcFolder, 'no such folder: pass a Hugging Face model folder (config.json + *.safetensors)');
  if (!statSync(srcFolder).isDirectory()) {
    throw new ModelFormatError(srcFolder, 'not a folder: convert takes a Hugging Face model folder (config.json + *.safetensors)');
  }
}

function checkOptions(options: ConvertOptions): MlaLayout {
  if (!isConvertType(String(options.type))) {
    throw new InvalidInputError('type', `unsupported ${JSON.stringify(options.type)}: choose one of ${CONVERT_TYPES.join(', ')}`);
  }
  const layout = options.layout ?? 'current';
  if (layout !== 'current' && layout !== 'legacy') throw new InvalidInputError('layout', `must be "current" or "legacy", got ${JSON.stringify(layout)}`);
  return layout;
}

function buildPlan(srcFolder: string, source: WeightSource, options: ConvertOptions): { plan: ConversionPlan; entries: Entry[] } {
  const layout = checkOptions(options);
  const config = readConfigFile(srcFolder);
  const rawConfig = readJson(join(srcFolder, 'config.json'));
  const p: Planner = {
    source,
    used: new Set(),
    entries: [],
    type: options.type,
    ctx: { blockCount: config.numHiddenLayers, expertCount: config.nRoutedExperts, tiedEmbeddings: config.tieWordEmbeddings },
  };
  const model = modelMetadata(config, layout);
  planTensors(p, config, layout);
  const tokenizer = tokenizerMetadata(srcFolder, config.vocabSize, rawConfig);
  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', str(GGUF_ARCH)],
    ['general.type', str('model')],
    ['general.name', str(options.name ?? basename(resolve(srcFolder)))],
    ...model,
    ['general.file_type', u32(FILE_TYPE[options.type])],
    ['general.quantization_version', u32(2)], // GGML_QNT_VERSION
    ['general.alignment', u32(32)],
  ];
  if (tokenizer) metadata.push(...tokenizer.metadata);
  else {
    // No tokenizer.json: llama.cpp refuses a file without tokenizer.ggml.*, so write a placeholder
    // byte-level vocabulary that keeps config.json's BOS/EOS ids (token-id use only).
    metadata.push(...placeholderVocabulary(config, config.family === 'deepseek_v3' ? 'deepseek-v3' : 'deepseek-llm'));
  }
  const tensors = p.entries;
  return {
    entries: tensors,
    plan: {
      config,
      layout,
      type: options.type,
      fileType: FILE_TYPE[options.type],
      metadata,
      tensors: tensors.map(({ produce: _, ...t }) => t),
      dataBytes: tensors.reduce((s, t) => s + t.bytes, 0),
      preTokenizer: tokenizer?.pre ?? null,
    },
  };
}

/** What `convertToGguf` would write, from the headers alone (no tensor data is read). */
export function planConversion(srcFolder: string, options: ConvertOptions): ConversionPlan {
  checkSource(srcFolder);
  checkOptions(options);
  readConfigFile(srcFolder); // the clearer error when config.json is missing
  const source = openSafetensors(srcFolder);
  try {
    return buildPlan(srcFolder, source, options).plan;
  } finally {
    source.close();
  }
}

/**
 * Convert a Hugging Face DeepSeek-V2/V3 folder into a GGUF v3 file at `outPath` (written as
 * `outPath.partial`, renamed when complete; an existing file is replaced, as llama.cpp does).
 */
export function convertToGguf(srcFolder: string, outPath: string, options: ConvertOptions): ConvertResult {
  checkSource(srcFolder);
  checkOptions(options);
  readConfigFile(srcFolder);
  const outDir = dirname(resolve(outPath));
  if (!existsSync(outDir) || !statSync(outDir).isDirectory()) throw new InvalidInputError('OUT', `${outPath}: the folder ${outDir} does not exist`);
  if (existsSync(outPath) && statSync(outPath).isDirectory()) throw new InvalidInputError('OUT', `${outPath} is a folder: give a .gguf file name`);
  const source = openSafetensors(srcFolder);
  try {
    const { plan, entries } = buildPlan(srcFolder, source, options);
    const total = entries.length;
    let bytesDone = 0;
    const tensors: GgufWriteTensor[] = entries.map((e, i) => ({
      name: e.name,
      type: e.type,
      shape: e.shape,
      data: () => {
        options.signal?.throwIfAborted();
        const out = new Uint8Array(e.bytes);
        e.produce(source, out);
        bytesDone += e.bytes;
        options.onProgress?.(i + 1, total, e.name, { done: bytesDone, total: plan.dataBytes });
        return out;
      },
    }));
    options.signal?.throwIfAborted();
    writeGguf(outPath, { metadata: plan.metadata, tensors });
    return { ...plan, path: outPath, fileBytes: statSync(outPath).size };
  } finally {
    source.close();
  }
}
