/**
 * GET /v1/status: what the chat page's status view shows — the served model's shape, the latent
 * cache (bytes in use against the budget, pages shared through prefixes), the disk context cache,
 * prompt-cache hits since start, and the MLA saving measured on the tokens cached right now: the
 * bytes they take against what the same tokens would take in an expanded MHA cache or an
 * 8-KV-head GQA cache of the same model.
 */
import type { CancelReason } from '../metrics.js';
import type { PriceTable } from '../prices.js';
import type { Route, ServerContext } from '../types.js';

export interface StatusBody {
  readonly object: 'dseek.status';
  readonly model: {
    readonly id: string;
    /** The context the server allows per sequence. */
    readonly context_length: number;
    readonly backend: string | null;
    readonly model_type: string | null;
    readonly layers: number | null;
    readonly moe_layers: readonly number[] | null;
    readonly routed_experts: number | null;
    readonly shared_experts: number | null;
    readonly experts_per_token: number | null;
    readonly hidden_size: number | null;
    readonly vocab_size: number | null;
    readonly attention_heads: number | null;
    readonly kv_lora_rank: number | null;
    readonly q_lora_rank: number | null;
    readonly qk_nope_head_dim: number | null;
    readonly qk_rope_head_dim: number | null;
    readonly v_head_dim: number | null;
    readonly max_position_embeddings: number | null;
  };
  readonly engine: { readonly running: number; readonly queued: number };
  readonly latent_cache: {
    readonly bytes_in_use: number;
    readonly bytes_budget: number;
    readonly bytes_per_token: number;
    /** The rows' storage (--cache-type: f16, f32 or q8), null if the engine does not say. */
    readonly type: string | null;
    /** Tokens the pages in use can hold (whole pages). */
    readonly cached_tokens: number;
    readonly budget_tokens: number;
    /** Pages held by more than one holder: a prompt prefix shared by sequences or kept by the prefix tree. */
    readonly shared_pages: number;
    readonly prefix_cache_tokens: number;
  };
  readonly disk_cache: {
    readonly bytes: number;
    readonly files: number;
    readonly hits: number;
    readonly misses: number;
    /** hits / (hits + misses); null before any lookup reached the disk. */
    readonly hit_rate: number | null;
  };
  readonly prompt_cache: { readonly hit_tokens: number; readonly miss_tokens: number; readonly hit_rate: number | null };
  /** The MLA saving on the live cache: cached_tokens × bytes per token for each cache layout. */
  readonly mla: {
    readonly cached_tokens: number;
    readonly bytes_per_token: { readonly mla: number; readonly mha: number; readonly gqa: number };
    readonly bytes: { readonly mla: number; readonly mha: number; readonly gqa: number };
    /** How many times more memory the MHA / GQA cache would take. */
    readonly mha_ratio: number | null;
    readonly gqa_ratio: number | null;
    /** KV heads of the GQA comparison: 8, or the model's head count when it has fewer. */
    readonly gqa_kv_heads: number;
    /** The GQA head count whose cache would equal MLA's (DeepSeek-V2 paper §2.1.4: 2.25 for V2). */
    readonly equivalent_gqa_kv_heads: number | null;
  };
  readonly totals: {
    readonly completion_requests: number;
    readonly prompt_tokens: number;
    readonly completion_tokens: number;
    readonly prompt_cache_hit_tokens: number;
    readonly prompt_cache_miss_tokens: number;
    readonly cost: { readonly currency: string; readonly total: number };
    readonly cancellations: Readonly<Record<CancelReason, number>>;
  };
  readonly prices: { readonly currency: string; readonly input_cache_miss_per_million: number; readonly input_cache_hit_per_million: number; readonly output_per_million: number };
  readonly uptime_s: number;
}

/** The GQA comparison the engine computes (Llama-style 8 KV heads). */
const ENGINE_GQA_KV_HEADS = 8;

export function statusRoute(ctx: ServerContext): Route {
  return async () => ({ kind: 'json', status: 200, body: statusOf(ctx) });
}

export function statusOf(ctx: ServerContext): StatusBody {
  const s = ctx.engine.stats();
  const t = ctx.metrics.totals();
  const m = ctx.model;
  const rate = (hit: number, miss: number) => (hit + miss > 0 ? hit / (hit + miss) : null);
  // A GQA cache grows linearly with its KV heads; a model with fewer than 8 heads is compared
  // with GQA at its own head count (more KV heads than query heads would not be GQA).
  const gqaHeads = m ? Math.min(ENGINE_GQA_KV_HEADS, m.attentionHeads) : ENGINE_GQA_KV_HEADS;
  const gqaPerHead = s.gqaBytesPerToken / ENGINE_GQA_KV_HEADS;
  const perToken = { mla: s.cacheBytesPerToken, mha: s.mhaBytesPerToken, gqa: gqaPerHead * gqaHeads };
  const ratio = (x: number) => (perToken.mla > 0 && x > 0 ? Math.round((x / perToken.mla) * 100) / 100 : null);
  return {
    object: 'dseek.status',
    model: {
      id: ctx.modelName,
      context_length: ctx.contextLength,
      backend: ctx.backend,
      model_type: m?.modelType ?? null,
      layers: m?.layers ?? null,
      moe_layers: m ? [...m.moeLayers] : null,
      routed_experts: m?.routedExperts ?? null,
      shared_experts: m?.sharedExperts ?? null,
      experts_per_token: m?.expertsPerToken ?? null,
      hidden_size: m?.hiddenSize ?? null,
      vocab_size: m?.vocabSize ?? null,
      attention_heads: m?.attentionHeads ?? null,
      kv_lora_rank: m?.kvLoraRank ?? null,
      q_lora_rank: m?.qLoraRank ?? null,
      qk_nope_head_dim: m?.qkNopeHeadDim ?? null,
      qk_rope_head_dim: m?.qkRopeHeadDim ?? null,
      v_head_dim: m?.vHeadDim ?? null,
      max_position_embeddings: m?.maxPositionEmbeddings ?? null,
    },
    engine: { running: s.running, queued: s.queued },
    latent_cache: {
      bytes_in_use: s.cacheBytesInUse,
      bytes_budget: s.cacheBytesBudget,
      bytes_per_token: s.cacheBytesPerToken,
      type: s.cacheType ?? null,
      cached_tokens: s.cachedTokens,
      budget_tokens: s.cacheBytesPerToken > 0 ? Math.floor(s.cacheBytesBudget / s.cacheBytesPerToken) : 0,
      shared_pages: s.sharedPages,
      prefix_cache_tokens: s.prefixCacheTokens,
    },
    disk_cache: { bytes: s.diskCacheBytes, files: s.diskCacheFiles, hits: s.diskCacheHits, misses: s.diskCacheMisses, hit_rate: rate(s.diskCacheHits, s.diskCacheMisses) },
    prompt_cache: { hit_tokens: s.promptCacheHitTokens, miss_tokens: s.promptCacheMissTokens, hit_rate: rate(s.promptCacheHitTokens, s.promptCacheMissTokens) },
    mla: {
      cached_tokens: s.cachedTokens,
      bytes_per_token: perToken,
      bytes: { mla: s.cachedTokens * perToken.mla, mha: s.cachedTokens * perToken.mha, gqa: s.cachedTokens * perToken.gqa },
      mha_ratio: ratio(perToken.mha),
      gqa_ratio: ratio(perToken.gqa),
      gqa_kv_heads: gqaHeads,
      equivalent_gqa_kv_heads: gqaPerHead > 0 ? Math.round((perToken.mla / gqaPerHead) * 100) / 100 : null,
    },
    totals: {
      completion_requests: t.completionRequests,
      prompt_tokens: t.promptTokens,
      completion_tokens: t.completionTokens,
      prompt_cache_hit_tokens: t.promptCacheHitTokens,
      prompt_cache_miss_tokens: t.promptCacheMissTokens,
      cost: { currency: t.currency, total: Math.round(t.cost * 1e12) / 1e12 },
      cancellations: t.cancellations,
    },
    prices: pricesOf(ctx.prices),
    uptime_s: Math.round(Date.now() / 1000 - ctx.startedAt),
  };
}

function pricesOf(p: PriceTable): StatusBody['prices'] {
  return {
    currency: p.currency,
    input_cache_miss_per_million: p.inputCacheMissPerMillion,
    input_cache_hit_per_million: p.inputCacheHitPerMillion,
    output_per_million: p.outputPerMillion,
  };
}
