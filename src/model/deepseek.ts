/**
 * The DeepSeek-V2/V3 decoder (docs/SPEC.md §2): embeddings, then per layer
 *   h = h + MLA(RMSNorm(h)),  h = h + FFN(RMSNorm(h))   (FFN dense below first_k_dense_replace, else MoE)
 * then the final RMSNorm and lm_head. Backend-agnostic: all arithmetic goes through `Backend`.
 */
import type { Backend } from '../kernels/backend.js';
import { decodeRow, type Vec } from '../kernels/tensor.js';
import { LatentCache, type LatentCacheDType } from '../cache/latentCache.js';
import { InvalidInputError } from '../errors.js';
import { latentWidth, type ModelConfig } from './config.js';
import { ropeParams, type RopeParams } from './rope.js';
import { multiHeadLatentAttention, type AttentionForm, type SequenceSlice } from './attention.js';
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
  /**
   * Called after each layer with the residual stream h [tokens][hidden_size] (scratch: copy it to
   * keep it). For comparing two runs layer by layer (tests, debugging a backend).
   */
  readonly onHidden?: (layer: number, hidden: Vec) => void;
  /**
   * Per MoE layer, the experts to use instead of the router's top-k (`experts[t·k + i]`, as
   * Routing has them; undefined: the router decides). Their weights still come from this run's
   * own scores. Lets a comparison of two backends follow one routing where scores nearly tie.
   */
  readonly forceExperts?: (layer: number) => Int32Array | undefined;
}

/** One sequence's share of a batched forward pass. */
export interface BatchItem {
  readonly tokens: readonly number[];
  readonly cache: LatentCache;
  /** Which of this item's positions get logits (default: the last; none for a prompt chunk that is not the end). */
  readonly logits?: 'last' | 'all' | 'none';
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
    return this.forwardBatch([{ tokens, cache, logits: options.logits ?? 'last' }], options);
  }

  /**
   * Run several sequences in one pass: every weight is read once for all their tokens (the
   * projections, the experts) while attention stays per sequence. Returns the requested logits
   * rows of each item, concatenated in order ([rows][vocab_size], scratch as for forward).
   */
  forwardBatch(items: readonly BatchItem[], options: Omit<ForwardOptions, 'logits'> = {}): Vec {
    const c = this.config;
    if (items.length === 0) throw new InvalidInputError('batch', 'empty: give at least one sequence');
    const caches = new Set<LatentCache>();
    for (const item of items) {
      if (item.tokens.length === 0) throw new InvalidInputError('tokens', 'empty: give at least one token id');
      if (caches.has(item.cache)) throw new InvalidInputError('batch', 'a sequence appears twice in one batch');
      caches.add(item.cache);
      for (const id of item.tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
          throw new InvalidInputError('tokens', `token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
        }
      }
    }
    for (const item of items) item.cache.reserve(item.tokens.length);

    const T = items.reduce((n, item) => n + item.tokens.length, 0);
    const positions = new Int32Array(T);
    const tokens = new Int32Array(T);
    const slices: SequenceSlice[] = [];
    let start = 0;
    for (const item of items) {
      const n = item.tokens.length;
      for (let i = 0; i < n; i++) {
        positions[start + i] = item.cache.length + i;
        tokens[start + i] = item.tokens[i]!;
      }
      const form: AttentionForm = options.attention && options.attention !== 'auto' ? options.attention : n > 1 ? 'expanded' : 'absorbed';
      slices.push({ start, count: n, cache: item.cache, form });
      start += n;
    }

    const { backend, ws } = this;
    const d = c.hiddenSize;
    const h = ws.get('h', T * d);
    for (let t = 0; t < T; t++) decodeRow(this.weights.embed, tokens[t]! * d, d, h.subarray(t * d, (t + 1) * d));

    const normed = ws.get('normed', T * d);
    const branch = ws.get('branch', T * d);
    const ctx = { backend, config: c, rope: this.rope, ws };
    this.weights.layers.forEach((layer, l) => {
      backend.rmsNorm(normed, h, layer.attnNorm, c.rmsNormEps, T);
      multiHeadLatentAttention(ctx, layer.attention, l, normed, positions, slices, branch);
      backend.add(h, branch, T * d);
      backend.rmsNorm(normed, h, layer.ffnNorm, c.rmsNormEps, T);
      if (layer.moe) moeForward(ctx, layer.moe, normed, T, branch, l, options.onRouting, options.forceExperts?.(l));
      else swiglu(ctx, layer.dense!, normed, T, branch);
      backend.add(h, branch, T * d);
      options.onHidden?.(l, h.subarray(0, T * d));
    });
    for (const item of items) item.cache.commit(item.tokens.length);

    // Final norm and lm_head only for the rows whose logits were asked for.
    const rows: number[] = [];
    slices.forEach((s, i) => {
      const want = items[i]!.logits ?? 'last';
      if (want === 'all') for (let t = s.start; t < s.start + s.count; t++) rows.push(t);
      else if (want === 'last') rows.push(s.start + s.count - 1);
    });
    if (rows.length === 0) return ws.get('logits', 0);
    const last = ws.get('last', rows.length * d);
    rows.forEach((t, r) => last.set(h.subarray(t * d, (t + 1) * d), r * d));
    const final = ws.get('final', rows.length * d);
    backend.rmsNorm(final, last, this.weights.norm, c.rmsNormEps, rows.length);
    const logits = ws.get('logits', rows.length * c.vocabSize);
    backend.matmul(logits, final, this.weights.lmHead, rows.length);
    return logits;
  }
}
