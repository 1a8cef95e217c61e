/**
 * The DeepSeek-V2/V3 decoder (SPEC.md §2): embeddings, then per layer
 *   h = h + MLA(RMSNorm(h)),  h = h + FFN(RMSNorm(h))   (FFN dense below first_k_dense_replace, else MoE)
 * then the final RMSNorm and lm_head. Backend-agnostic: all arithmetic goes through `Backend`.
 */
import type { Backend } from '../kernels/backend.js';
import { decodeRow, type Vec } from '../kernels/tensor.js';
import { LatentCache, type LatentCacheDType } from '../cache/latentCache.js';
import { InvalidInputError } from '../errors.js';
import { latentWidth, type ModelConfig } from './config.js';
import { ropeParams, type RopeParams } from './rope.js';
import { multiHeadLatentAttention, type AttentionForm } from './attention.js';
import { moeForward, swiglu, type RoutingObserver } from './moe.js';
import type { ModelWeights } from './weights.js';
import { Workspace, type Precision } from './workspace.js';

export interface ForwardOptions {
  /** `auto` (default): expanded for several tokens, absorbed for one. */
  readonly attention?: AttentionForm | 'auto';
  /** Which positions get logits: only the last (default) or every one. */
  readonly logits?: 'last' | 'all';
  /** Called with each MoE layer's routing decisions. */
  readonly onRouting?: RoutingObserver;
}

export interface CacheOptions {
  /** Storage type of latent rows; f64 models always use f64. Default f32. */
  readonly dtype?: LatentCacheDType;
  /** Context window in tokens (default and maximum: max_position_embeddings). */
  readonly maxTokens?: number;
}

export class DeepseekModel {
  readonly rope: RopeParams;
  private readonly ws: Workspace;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly backend: Backend,
    readonly precision: Precision = 'f32',
  ) {
    this.rope = ropeParams(config);
    this.ws = new Workspace(precision);
  }

  createCache(options: CacheOptions = {}): LatentCache {
    const c = this.config;
    const maxTokens = Math.min(options.maxTokens ?? c.maxPositionEmbeddings, c.maxPositionEmbeddings);
    return new LatentCache({
      layers: c.numHiddenLayers,
      width: latentWidth(c),
      maxTokens,
      dtype: this.precision === 'f64' ? 'f64' : (options.dtype ?? 'f32'),
    });
  }

  /**
   * Run `tokens` as the continuation of the sequence in `cache` and return logits
   * [rows][vocab_size] (rows = 1 for `last`, tokens.length for `all`). The returned vector is
   * scratch space: valid until the next forward call.
   */
  forward(tokens: readonly number[], cache: LatentCache, options: ForwardOptions = {}): Vec {
    const c = this.config;
    const T = tokens.length;
    if (T === 0) throw new InvalidInputError('tokens', 'empty: give at least one token id');
    for (const id of tokens) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
        throw new InvalidInputError('tokens', `token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
      }
    }
    cache.reserve(T);
    const start = cache.length;
    const positions = new Int32Array(T);
    for (let t = 0; t < T; t++) positions[t] = start + t;
    const form: AttentionForm = options.attention && options.attention !== 'auto' ? options.attention : T > 1 ? 'expanded' : 'absorbed';

    const { backend, ws } = this;
    const d = c.hiddenSize;
    const h = ws.get('h', T * d);
    for (let t = 0; t < T; t++) decodeRow(this.weights.embed, tokens[t]! * d, d, h.subarray(t * d, (t + 1) * d));

    const normed = ws.get('normed', T * d);
    const branch = ws.get('branch', T * d);
    const ctx = { backend, config: c, rope: this.rope, ws };
    this.weights.layers.forEach((layer, l) => {
      backend.rmsNorm(normed, h, layer.attnNorm, c.rmsNormEps, T);
      multiHeadLatentAttention(ctx, layer.attention, l, normed, positions, cache, form, branch);
      for (let i = 0; i < T * d; i++) h[i] = h[i]! + branch[i]!;
      backend.rmsNorm(normed, h, layer.ffnNorm, c.rmsNormEps, T);
      if (layer.moe) moeForward(ctx, layer.moe, normed, T, branch, l, options.onRouting);
      else swiglu(ctx, layer.dense!, normed, T, branch);
      for (let i = 0; i < T * d; i++) h[i] = h[i]! + branch[i]!;
    });
    cache.commit(T);

    const rows = options.logits === 'all' ? T : 1;
    const last = h.subarray((T - rows) * d, T * d);
    const final = ws.get('final', rows * d);
    backend.rmsNorm(final, last, this.weights.norm, c.rmsNormEps, rows);
    const logits = ws.get('logits', rows * c.vocabSize);
    backend.matmul(logits, final, this.weights.lmHead, rows);
    return logits;
  }
}
