/**
 * The engine's contract with its callers (the HTTP server, the CLI): submit a tokenised request,
 * receive its events as an async stream. The server never sees tensors; the engine never sees HTTP.
 */
import type { SamplingOptions } from './sampler.js';
import type { ContextStoreStats } from '../cache/contextCache.js';
import type { LatentCacheDType } from '../cache/pagePool.js';

export type { ContextStoreStats } from '../cache/contextCache.js';

/** A JSON Schema as a client sent it (an object, or true for any value). */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown };

export interface EngineRequest {
  /** Prompt token ids (already templated and tokenised). */
  readonly prompt: readonly number[];
  /** Upper bound on generated tokens. */
  readonly maxTokens: number;
  readonly sampling: SamplingOptions;
  /** Stop strings (not included in the output). */
  readonly stop?: readonly string[];
  /** Report the chosen token's log-probability and this many alternatives (0–20); omit for none. */
  readonly topLogprobs?: number;
  /** Constrain decoding so that the output is one valid JSON value (response_format json_object). */
  readonly jsonMode?: boolean;
  /**
   * Constrain decoding to one JSON value valid under this JSON Schema (response_format
   * json_schema, tool-call arguments); wins over jsonMode. Plain JSON, so it crosses to the
   * worker thread; the server has compiled it once already (compileSchema) to refuse what the
   * automaton cannot enforce.
   */
  readonly jsonSchema?: JsonSchema;
  readonly ignoreEos?: boolean;
  /** Count which routed experts the generated tokens used in each MoE layer (reported with `done`). */
  readonly routing?: boolean;
  /**
   * Partitions the prefix cache: pages computed under one salt are never a hit for a request with
   * another (the server derives it from the API key, `user` and `cache_salt`). '' or absent: the
   * shared partition.
   */
  readonly cacheSalt?: string;
}

/** Expert routing of a request's generated tokens: counts[i][e] = tokens routed to expert e in MoE layer layers[i]. */
export interface RoutingCounts {
  readonly layers: readonly number[];
  readonly experts: number;
  readonly sharedExperts: number;
  readonly counts: readonly (readonly number[])[];
}

export interface TokenLogprob {
  readonly token: number;
  /** The token's text (its UTF-8 bytes decoded leniently) and the raw bytes. */
  readonly text: string;
  readonly bytes: readonly number[];
  readonly logprob: number;
}

export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Prompt tokens served from the prefix cache (memory or disk); hit + miss = promptTokens. */
  readonly promptCacheHitTokens: number;
  readonly promptCacheMissTokens: number;
}

/**
 * How a sequence ended — the one finish-reason type of dseek: `stop` (an end-of-sequence token, a
 * stop string, or a complete JSON value), `length` (max tokens or the context ran out), `cancelled`
 * (stopped from outside: an aborted signal, a client gone, the engine closing).
 */
export type FinishReason = 'stop' | 'length' | 'cancelled';

/** The reasons an answer that ran to its end reports: OpenAI's `finish_reason`, a resolved library call. */
export type AnswerFinishReason = Exclude<FinishReason, 'cancelled'>;

export type EngineEvent =
  /** Waiting for a slot; `position` 0 is next. */
  | { readonly type: 'queued'; readonly position: number }
  /** The prompt is being processed; cachedTokens of it came from the prefix cache. */
  | { readonly type: 'started'; readonly promptTokens: number; readonly cachedTokens: number }
  /** A generated token and the text that became final with it (may be empty). */
  | {
      readonly type: 'token';
      readonly token: number;
      readonly text: string;
      readonly logprob?: TokenLogprob;
      readonly topLogprobs?: readonly TokenLogprob[];
    }
  /** The end: no events follow. `text` holds any final text not yet delivered. */
  | {
      readonly type: 'done';
      readonly finishReason: FinishReason;
      readonly text: string;
      readonly usage: Usage;
      /** Seconds from submission to the first token, and of generation after it. */
      readonly timeToFirstTokenS: number;
      readonly generationS: number;
      /**
       * Seconds of the engine's forward passes this request used: each step's time shared among
       * its sequences by the tokens each put into it. Absent from engines that do not measure it.
       */
      readonly busyS?: number;
      /** Present when the request asked for it. */
      readonly routing?: RoutingCounts;
    };

export interface EngineStats {
  readonly running: number;
  readonly queued: number;
  /** Latent-cache bytes in use by running sequences and the prefix cache, and the budget. */
  readonly cacheBytesInUse: number;
  readonly cacheBytesBudget: number;
  /** Bytes one cached token takes (all layers), and the tokens held in pages now. */
  readonly cacheBytesPerToken: number;
  /** How the latent rows are stored (f16, f32, q8; f64 in a float64 run); absent from engines that do not say. */
  readonly cacheType?: LatentCacheDType;
  readonly cachedTokens: number;
  /** Pages held by more than one holder (a prefix shared by sequences or kept by the prefix tree). */
  readonly sharedPages: number;
  readonly prefixCacheTokens: number;
  readonly diskCacheBytes: number;
  readonly diskCacheFiles: number;
  /** Pages found in the context store / pages asked for but not served. */
  readonly diskCacheHits: number;
  readonly diskCacheMisses: number;
  /** The context store (folder or Redis): its state, lookups, rejections and writes; null without one. */
  readonly contextStore: ContextStoreStats | null;
  /** Prompt tokens served from the prefix cache / computed, since start. */
  readonly promptCacheHitTokens: number;
  readonly promptCacheMissTokens: number;
  /** What the same cached tokens would take with the expanded MHA cache and with a GQA cache (8 KV heads), for comparison. */
  readonly mhaBytesPerToken: number;
  readonly gqaBytesPerToken: number;
  /** Steps that failed with an exception since start (each failed the requests it ran). */
  readonly engineFaults: number;
  /** Why the engine can no longer serve (e.g. a weight file changed on disk), or null when healthy. */
  readonly unhealthy: string | null;
}

export interface Engine {
  /** Runs a request; the iterable ends after its `done` event. Aborting the signal cancels it and frees its cache. */
  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent>;
  stats(): EngineStats;
  /** Finishes or cancels in-flight work (within `deadlineMs`) and releases the model. */
  close(deadlineMs?: number): Promise<void>;
}
