/**
 * Random-weight GGUF files with the real shapes of the DeepSeek family (docs/SPEC.md §1.2–1.3), in the
 * current llama.cpp `deepseek2` layout, for benchmarks: speed does not depend on the weight values,
 * so a 9 GB V2-Lite-shaped Q4_0 file can be made in seconds instead of downloaded.
 *
 * Weights are tiled from a pool of random blocks with small, finite scales (every block decodes to
 * values of order 0.01), so activations stay finite through all layers. Written tensor by tensor.
 */
import { writeGguf, type GgufValue, type GgufWriteTensor } from '../formats/gguf.js';
import { modelMetadata, placeholderVocabulary, tensorTypeFor, type ConvertType } from '../formats/convert.js';
import { blockBytes, rowBytes, type GgmlType } from '../formats/quant/index.js';
import { f32ToBf16, f32ToF16 } from '../kernels/tensor.js';
import { InvalidInputError } from '../errors.js';
import { isMoeLayer, parseConfig, type ModelConfig } from './config.js';

const yarn = (mscale: number) => ({ type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale, mscale_all_dim: mscale });

/** config.json values of each family's reference checkpoint (docs/SPEC.md §1). */
export const RANDOM_MODEL_PRESETS: Readonly<Record<string, Record<string, unknown>>> = {
  'v2-lite': {
    model_type: 'deepseek_v2', vocab_size: 102400, hidden_size: 2048, intermediate_size: 10944, moe_intermediate_size: 1408,
    num_hidden_layers: 27, num_attention_heads: 16, q_lora_rank: null, kv_lora_rank: 512, qk_nope_head_dim: 128,
    qk_rope_head_dim: 64, v_head_dim: 128, n_routed_experts: 64, n_shared_experts: 2, num_experts_per_tok: 6,
    first_k_dense_replace: 1, topk_method: 'greedy', n_group: 1, topk_group: 1, scoring_func: 'softmax',
    norm_topk_prob: false, routed_scaling_factor: 1.0, max_position_embeddings: 163840, rope_theta: 10000,
    rope_scaling: yarn(0.707), rms_norm_eps: 1e-6, bos_token_id: 100000, eos_token_id: 100001,
  },
  v2: {
    model_type: 'deepseek_v2', vocab_size: 102400, hidden_size: 5120, intermediate_size: 12288, moe_intermediate_size: 1536,
    num_hidden_layers: 60, num_attention_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128,
    qk_rope_head_dim: 64, v_head_dim: 128, n_routed_experts: 160, n_shared_experts: 2, num_experts_per_tok: 6,
    first_k_dense_replace: 1, topk_method: 'group_limited_greedy', n_group: 8, topk_group: 3, scoring_func: 'softmax',
    norm_topk_prob: false, routed_scaling_factor: 16.0, max_position_embeddings: 163840, rope_theta: 10000,
    rope_scaling: yarn(0.707), rms_norm_eps: 1e-6, bos_token_id: 100000, eos_token_id: 100001,
  },
  v3: {
    model_type: 'deepseek_v3', vocab_size: 129280, hidden_size: 7168, intermediate_size: 18432, moe_intermediate_size: 2048,
    num_hidden_layers: 61, num_attention_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128,
    qk_rope_head_dim: 64, v_head_dim: 128, n_routed_experts: 256, n_shared_experts: 1, num_experts_per_tok: 8,
    first_k_dense_replace: 3, topk_method: 'noaux_tc', n_group: 8, topk_group: 4, scoring_func: 'sigmoid',
    norm_topk_prob: true, routed_scaling_factor: 2.5, max_position_embeddings: 163840, rope_theta: 10000,
    rope_scaling: yarn(1.0), rms_norm_eps: 1e-6, bos_token_id: 0, eos_token_id: 1,
  },
  moonlight: {
    model_type: 'deepseek_v3', vocab_size: 163840, hidden_size: 2048, intermediate_size: 11264, moe_intermediate_size: 1408,
    num_hidden_layers: 27, num_attention_heads: 16, q_lora_rank: null, kv_lora_rank: 512, qk_nope_head_dim: 128,
    qk_rope_head_dim: 64, v_head_dim: 128, n_routed_experts: 64, n_shared_experts: 2, num_experts_per_tok: 6,
    first_k_dense_replace: 1, topk_method: 'noaux_tc', n_group: 1, topk_group: 1, scoring_func: 'sigmoid',
    norm_topk_prob: true, routed_scaling_factor: 2.446, max_position_embeddings: 8192, rope_theta: 50000,
    rope_scaling: null, rms_norm_eps: 1e-5, bos_token_id: 163584, eos_token_id: 163585,
  },
};


export interface RandomModelOptions {
  readonly like: string;
  readonly type: ConvertType;
  /** Fewer layers than the preset (quick benchmarks). */
  readonly layers?: number;
  readonly seed?: number;
  readonly onProgress?: (done: number, total: number, name: string) => void;
}

/** Byte offsets of the f16 scale (and minimum) fields of each block format (ggml-common.h). */
const SCALE_FIELDS: Partial<Record<GgmlType, readonly number[]>> = {
  q8_0: [0], q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2],
  q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208],
};

/** Deterministic random bytes (xorshift32): the same file for the same options, run after run. */
function fillRandom(out: Uint8Array | Uint32Array, seed: number): void {
  const words = new Uint32Array(out.buffer, out.byteOffset, Math.floor(out.byteLength / 4));
  let s = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = s >>> 0;
  }
}

/** Random bytes of `type` with every block's scales set small and finite: a pool to tile tensors from. */
function randomPool(type: GgmlType, bytes: number, seed: number): Uint8Array {
  const pool = new Uint8Array(bytes);
  if (type === 'f32' || type === 'f16' || type === 'bf16') {
    const n = bytes / (type === 'f32' ? 4 : 2);
    const raw = new Uint32Array(n);
    fillRandom(raw, seed);
    const value = (i: number) => ((raw[i]! / 2 ** 32) * 2 - 1) * 0.05;
    if (type === 'f32') new Float32Array(pool.buffer).set(Float32Array.from({ length: n }, (_, i) => value(i)));
    else new Uint16Array(pool.buffer).set(Uint16Array.from({ length: n }, (_, i) => (type === 'f16' ? f32ToF16(value(i)) : f32ToBf16(value(i)))));
    return pool;
  }
  fillRandom(pool, seed);
  const scale = f32ToF16(type === 'q8_0' ? 0.0004 : type.endsWith('_k') ? 0.0005 : 0.006);
  const bb = blockBytes(type);
  for (let at = 0; at + bb <= bytes; at += bb) {
    for (const o of SCALE_FIELDS[type]!) {
      pool[at + o] = scale & 0xff;
      pool[at + o + 1] = scale >> 8;
    }
  }
  return pool;
}

/** The config a preset describes, with an optional layer count. */
export function randomModelConfig(like: string, layers?: number): ModelConfig {
  const preset = RANDOM_MODEL_PRESETS[like];
  if (!preset) throw new InvalidInputError('--like', `unknown model "${like}": choose ${Object.keys(RANDOM_MODEL_PRESETS).join(', ')}`);
  if (layers !== undefined && (!Number.isSafeInteger(layers) || layers < 1)) throw new InvalidInputError('--layers', `must be an integer ≥ 1, got ${layers}`);
  return parseConfig({ ...preset, ...(layers !== undefined ? { num_hidden_layers: layers } : {}) }, `preset ${like}`);
}

/** The tensors of the current llama.cpp layout for `c`: name and torch-order shape. */
export function ggufTensorShapes(c: ModelConfig): Array<[string, number[]]> {
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
  const out: Array<[string, number[]]> = [['token_embd.weight', [c.vocabSize, d]]];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `blk.${l}`;
    out.push([`${p}.attn_norm.weight`, [d]]);
    if (c.qLoraRank === null) out.push([`${p}.attn_q.weight`, [H * dq, d]]);
    else out.push([`${p}.attn_q_a.weight`, [c.qLoraRank, d]], [`${p}.attn_q_a_norm.weight`, [c.qLoraRank]], [`${p}.attn_q_b.weight`, [H * dq, c.qLoraRank]]);
    out.push(
      [`${p}.attn_kv_a_mqa.weight`, [c.kvLoraRank + c.qkRopeHeadDim, d]],
      [`${p}.attn_kv_a_norm.weight`, [c.kvLoraRank]],
      [`${p}.attn_k_b.weight`, [H, c.kvLoraRank, c.qkNopeHeadDim]],
      [`${p}.attn_v_b.weight`, [H, c.vHeadDim, c.kvLoraRank]],
      [`${p}.attn_output.weight`, [d, H * c.vHeadDim]],
      [`${p}.ffn_norm.weight`, [d]],
    );
    if (isMoeLayer(c, l)) {
      const E = c.nRoutedExperts;
      const I = c.moeIntermediateSize;
      out.push([`${p}.ffn_gate_inp.weight`, [E, d]]);
      if (c.topkMethod === 'noaux_tc') out.push([`${p}.exp_probs_b.bias`, [E]]);
      out.push([`${p}.ffn_gate_exps.weight`, [E, I, d]], [`${p}.ffn_up_exps.weight`, [E, I, d]], [`${p}.ffn_down_exps.weight`, [E, d, I]]);
      if (c.nSharedExperts > 0) {
        const S = c.nSharedExperts * I;
        out.push([`${p}.ffn_gate_shexp.weight`, [S, d]], [`${p}.ffn_up_shexp.weight`, [S, d]], [`${p}.ffn_down_shexp.weight`, [d, S]]);
      }
    } else {
      out.push([`${p}.ffn_gate.weight`, [c.intermediateSize, d]], [`${p}.ffn_up.weight`, [c.intermediateSize, d]], [`${p}.ffn_down.weight`, [d, c.intermediateSize]]);
    }
  }
  out.push(['output_norm.weight', [d]], ['output.weight', [c.vocabSize, d]]);
  return out;
}

/**
 * Write a random-weight GGUF. Types follow `dseek convert`'s recipes, except that like llama.cpp's
 * Q4_0/Q4_1/Q5_0/Q5_1 files the output matrix is Q6_K. Returns the file's tensor bytes.
 */
export function writeRandomModel(out: string, o: RandomModelOptions): number {
  const c = randomModelConfig(o.like, o.layers);
  const ctx = { blockCount: c.numHiddenLayers, expertCount: c.nRoutedExperts, tiedEmbeddings: false };
  const shapes = ggufTensorShapes(c);
  const pools = new Map<GgmlType, Uint8Array>();
  const POOL_BYTES = 16 << 20;
  let offset = 0;
  let total = 0;
  const tensors: GgufWriteTensor[] = shapes.map(([name, shape], i) => {
    let type: GgmlType = tensorTypeFor(o.type, name, shape, ctx);
    if (name === 'output.weight' && ['q4_0', 'q4_1', 'q5_0', 'q5_1'].includes(o.type)) type = 'q6_k';
    if (name.endsWith('_norm.weight')) type = 'f32';
    const rowLen = shape[shape.length - 1]!;
    const bytes = (shape.reduce((a, b) => a * b, 1) / rowLen) * rowBytes(type, rowLen);
    total += bytes;
    return {
      name,
      type,
      shape,
      data: () => {
        o.onProgress?.(i, shapes.length, name);
        const data = new Uint8Array(bytes);
        if (name.endsWith('_norm.weight')) {
          new Float32Array(data.buffer).fill(1);
          return data;
        }
        let pool = pools.get(type);
        if (!pool) {
          pool = randomPool(type, Math.floor(POOL_BYTES / blockBytes(type)) * blockBytes(type), (o.seed ?? 1) + pools.size);
          pools.set(type, pool);
        }
        // Tile from a moving start, aligned down to this type's block (the moving offset is shared
        // by all types), so tensors differ from one another.
        const bb = blockBytes(type);
        for (let at = 0; at < bytes; ) {
          offset = (offset + 7919 * bb) % (pool.length - bb);
          const start = offset - (offset % bb);
          const n = Math.min(bytes - at, pool.length - start);
          data.set(pool.subarray(start, start + n), at);
          at += n;
        }
        return data;
      },
    };
  });
  const pre = c.family === 'deepseek_v3' ? 'deepseek-v3' : 'deepseek-llm';
  writeGguf(out, {
    metadata: [
      ['general.architecture', { type: 'string', value: 'deepseek2' }],
      ['general.type', { type: 'string', value: 'model' }],
      ['general.name', { type: 'string', value: `random ${o.like} ${o.type}` }],
      ['general.quantization_version', { type: 'u32', value: 2 }],
      ['general.alignment', { type: 'u32', value: 32 }],
      ...modelMetadata(c, 'current'),
      ...placeholderVocabulary(c, pre),
    ],
    tensors,
  });
  return total;
}
