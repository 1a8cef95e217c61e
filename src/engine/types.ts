/**
 * The engine's contract with its callers (the HTTP server, the CLI): submit a tokenised request,
 * receive its events as an async stream. The server never sees tensors; the engine never sees HTTP.
 */
import type { SamplingOptions } from './sampler.js';

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
  readonly ignoreEos?: boolean;
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

export type FinishReason = 'stop' | 'length' | 'cancelled';

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
    };

export interface EngineStats {
  readonly running: number;
  readonly queued: number;
  /** Latent-cache bytes in use by running sequences and the prefix cache, and the budget. */
  readonly cacheBytesInUse: number;
  readonly cacheBytesBudget: number;
  readonly prefixCacheTokens: number;
  readonly diskCacheBytes: number;
}

export interface Engine {
  /** Runs a request; the iterable ends after its `done` event. Aborting the signal cancels it and frees its cache. */
  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent>;
  stats(): EngineStats;
  /** Finishes or cancels in-flight work (within `deadlineMs`) and releases the model. */
  close(deadlineMs?: number): Promise<void>;
}
