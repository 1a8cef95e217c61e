/**
 * dseek's additions to a response body, beside OpenAI's fields (and `usage`, which carries the
 * cache split and the cost): `timings` (always) and `routing`
 * (when the request asked with `"dseek": {"routing": true}`). They ride on the non-streamed body
 * and on the last chunk of a stream (the usage chunk with stream_options.include_usage, else the
 * last finish chunk).
 */
import type { Generation } from './generation.js';
import type { BilledUsage } from './respond.js';
import type { ModelFacts } from './types.js';

export interface Timings {
  readonly prompt_tokens: number;
  readonly prompt_cache_hit_tokens: number;
  readonly prompt_cache_miss_tokens: number;
  readonly completion_tokens: number;
  /** Seconds from the request's arrival to its first generated token; null if none was generated. */
  readonly time_to_first_token_s: number | null;
  /** Seconds of generation after the first token (the engine's figure; the longest choice for n > 1). */
  readonly generation_s: number | null;
  /** Decode speed: tokens generated after the first, per second of generation_s; null with fewer than two tokens. */
  readonly tokens_per_second: number | null;
  /** Seconds from the request's arrival to the end of generation. */
  readonly total_s: number;
}

/** Expert routing of the answer's generated tokens, summed over the choices. */
export interface RoutingBody {
  /** Model layer index of each MoE layer; counts[i] belongs to layers[i]. */
  readonly layers: readonly number[];
  readonly routed_experts: number;
  /** Shared experts: every token goes through all of them, so they have no counts. */
  readonly shared_experts: number;
  /** Routed experts chosen per token (top-k); null when the server was not told. */
  readonly experts_per_token: number | null;
  /** Tokens the counts cover (each token counts once per MoE layer in k experts); null without experts_per_token. */
  readonly tokens: number | null;
  /** counts[i][e]: generated tokens routed to expert e in MoE layer layers[i]. */
  readonly counts: readonly (readonly number[])[];
}

export interface Extras {
  readonly timings: Timings;
  /** Present only when the request asked for routing; null when the engine reported none (e.g. nothing generated). */
  readonly routing?: RoutingBody | null;
}

export function extrasOf(gen: Generation, usage: BilledUsage, receivedAt: number, wantRouting: boolean, model: ModelFacts | null): Extras {
  const timings = timingsOf(gen, usage, receivedAt);
  return wantRouting ? { timings, routing: routingOf(gen, model) } : { timings };
}

function timingsOf(gen: Generation, usage: BilledUsage, receivedAt: number): Timings {
  const now = performance.now();
  const firsts = gen.choices.map((c) => c.firstTokenAt).filter((t) => t > 0);
  const lasts = gen.choices.map((c) => c.lastTokenAt).filter((t) => t > 0);
  const first = firsts.length > 0 ? Math.min(...firsts) : 0;
  // The engine's generation time when every choice reported one; else what the server saw.
  const engine = gen.choices.map((c) => c.engineTimings);
  const generationS =
    first === 0
      ? null
      : engine.every((t) => t !== null)
        ? Math.max(...engine.map((t) => t!.generationS))
        : (Math.max(...lasts) - first) / 1000;
  const decoded = gen.choices.reduce((sum, c) => sum + Math.max(0, (c.usage?.completionTokens ?? c.tokens) - 1), 0);
  return {
    prompt_tokens: usage.prompt_tokens,
    prompt_cache_hit_tokens: usage.prompt_cache_hit_tokens,
    prompt_cache_miss_tokens: usage.prompt_cache_miss_tokens,
    completion_tokens: usage.completion_tokens,
    time_to_first_token_s: first === 0 ? null : seconds((first - receivedAt) / 1000),
    generation_s: generationS === null ? null : seconds(generationS),
    tokens_per_second: generationS !== null && generationS > 0 && decoded > 0 ? Math.round((decoded / generationS) * 100) / 100 : null,
    total_s: seconds((now - receivedAt) / 1000),
  };
}

function routingOf(gen: Generation, model: ModelFacts | null): RoutingBody | null {
  const reports = gen.choices.map((c) => c.routing).filter((r) => r !== null);
  const head = reports[0];
  if (head === undefined) return null;
  const counts = head.counts.map((row, i) => row.map((_, e) => reports.reduce((sum, r) => sum + (r.counts[i]?.[e] ?? 0), 0)));
  const k = model?.expertsPerToken ?? null;
  const firstRow = counts[0];
  return {
    layers: [...head.layers],
    routed_experts: head.experts,
    shared_experts: head.sharedExperts,
    experts_per_token: k,
    tokens: k !== null && k > 0 && firstRow !== undefined ? Math.round(firstRow.reduce((a, b) => a + b, 0) / k) : null,
    counts,
  };
}

/** Tenths of a millisecond. */
function seconds(s: number): number {
  return Math.round(s * 10_000) / 10_000;
}
