/** The shapes routes see: a parsed request in, a response description out. No node:http here. */
import type { IncomingHttpHeaders } from 'node:http';
import type { Engine } from '../engine/types.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Metrics } from './metrics.js';
import type { PriceTable } from './prices.js';

export interface ParsedRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body of a POST; undefined otherwise. */
  readonly body: unknown;
  /** Aborts when the client disconnects, the request times out or the server shuts down; `reason` is a CancelReason. */
  readonly signal: AbortSignal;
  /** performance.now() when the request arrived. */
  readonly receivedAt: number;
  /** SHA-256 (hex) of the API key the request was authorised with; null when the server has no keys. */
  readonly apiKeyDigest: string | null;
}

/** Writes server-sent events; writes after the client has gone are dropped. */
export interface SseSink {
  data(payload: unknown): void;
  comment(text: string): void;
}

export type RouteResponse =
  | { readonly kind: 'json'; readonly status: number; readonly body: unknown; readonly headers?: Readonly<Record<string, string>> }
  | {
      readonly kind: 'text';
      readonly status: number;
      readonly contentType: string;
      readonly body: string | Uint8Array;
      readonly headers?: Readonly<Record<string, string>>;
    }
  /**
   * A 200 event stream; `run` writes the events. `openai` (default): `data:` lines, ended with
   * `data: [DONE]` on success. `anthropic`: each payload as `event: <payload.type>` + `data:`,
   * no end marker (Anthropic's Messages stream ends with its message_stop event).
   */
  | { readonly kind: 'sse'; readonly run: (sink: SseSink) => Promise<void>; readonly style?: SseStyle };

export type SseStyle = 'openai' | 'anthropic';

export type Route = (req: ParsedRequest) => Promise<RouteResponse>;

/**
 * Facts about the served model that GET /v1/status reports and routing summaries use; plain
 * numbers, so the server needs no model code. `dseek serve` fills them from the model's config.
 */
export interface ModelFacts {
  /** model_type as written in the checkpoint, e.g. "deepseek_v2". */
  readonly modelType: string;
  readonly layers: number;
  /** Indices of the layers that use DeepSeekMoE (the rest are dense). */
  readonly moeLayers: readonly number[];
  readonly routedExperts: number;
  readonly sharedExperts: number;
  /** Routed experts each token uses (top-k). */
  readonly expertsPerToken: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  readonly attentionHeads: number;
  readonly kvLoraRank: number;
  readonly qLoraRank: number | null;
  readonly qkNopeHeadDim: number;
  readonly qkRopeHeadDim: number;
  readonly vHeadDim: number;
  /** The context the model was trained for (the server may serve less: contextLength). */
  readonly maxPositionEmbeddings: number;
}

/** What the routes share. */
export interface ServerContext {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer;
  readonly modelName: string;
  /**
   * Every name `model` may take for the served model, the real one first: the aliases (by default
   * DeepSeek's `deepseek-chat` and `deepseek-reasoner`, so code written for DeepSeek's API works
   * unchanged). Compared without regard to case.
   */
  readonly modelNames: readonly string[];
  /** Ignore request fields the API does not know, instead of a 400 naming them. */
  readonly allowUnknownFields: boolean;
  /** Leave a thinking model's reasoning inline in `content` instead of splitting it into `reasoning_content`. */
  readonly reasoningInline: boolean;
  /** The machine's price per hour (in the price table's currency), or null: usage.cost then reports only the price table. */
  readonly machineCostPerHour: number | null;
  readonly contextLength: number;
  readonly prices: PriceTable;
  readonly metrics: Metrics;
  readonly log: (line: string) => void;
  /** Interval of `: keep-alive` comments while a streamed request waits in the queue. */
  readonly keepAliveMs: number;
  readonly maxQueue: number | undefined;
  /** Folder holding the chat page (index.html and its assets), served at /. */
  readonly webRoot: string;
  /** The served model's shape, when the server was told (GET /v1/status). */
  readonly model: ModelFacts | null;
  /** Which kernels the engine runs on, when the server was told. */
  readonly backend: string | null;
  /** Seconds since the Unix epoch when the server was created (the model's `created`). */
  readonly startedAt: number;
  /** Who shares prefix-cache pages with whom (see CacheIsolation). */
  readonly cacheIsolation: CacheIsolation;
}

/**
 * Which requests may hit each other's prefix-cache pages. A hit is visible to the caller
 * (`prompt_cache_hit_tokens`, and latency), so a shared cache tells one tenant whether another
 * sent a given page of text. `none`: one pool for everyone; `key`: one per API key; `user`: one
 * per API key and `user` field. A request's `cache_salt` partitions further in every mode.
 */
export type CacheIsolation = 'none' | 'key' | 'user';
