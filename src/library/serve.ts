/**
 * The OpenAI-compatible API over a loaded Model: `createServer` (a node:http server, what
 * `dseek serve` runs) and `createHandler` (a web-standard `(Request) => Promise<Response>` to
 * mount inside an existing app). Both answer from the model's engine, so HTTP requests and direct
 * `model.chat` calls are batched together and share its caches.
 */
import type { Server } from 'node:http';
import { InvalidInputError } from '../errors.js';
import { isMoeLayer, type ModelConfig } from '../model/config.js';
import { createServer as createApiServer, type ServerOptions } from '../server/server.js';
import type { CacheIsolation } from '../server/types.js';
import { createWebHandler } from '../server/webHandler.js';
import type { PriceTable } from '../server/prices.js';
import type { ModelFacts } from '../server/types.js';
import { modelInternals, type Model } from './model.js';

export interface ServeOptions {
  readonly model: Model;
  /** The id clients pass as `model` and GET /v1/models lists (default: the model's folder or file name). */
  readonly modelName?: string;
  /** More names accepted as `model` (default: DeepSeek's `deepseek-chat` and `deepseek-reasoner`; `[]` for none). */
  readonly aliases?: readonly string[];
  /** Browser origins allowed to call the API (CORS), or `['*']` for any. Default: none. */
  readonly corsOrigins?: readonly string[];
  /** Ignore unknown request fields instead of answering 400 naming them (default false). */
  readonly allowUnknownFields?: boolean;
  /** Keep a thinking model's reasoning inline in `content` instead of `reasoning_content` (default false). */
  readonly reasoningInline?: boolean;
  /** The machine's price per hour: usage.cost adds the request's share of measured engine time (`machine`). */
  readonly machineCostPerHour?: number;
  /** When set, /v1/* and /metrics need `Authorization: Bearer <key>` with this key or one of these. */
  readonly apiKey?: string | readonly string[];
  /**
   * Whose prefix-cache pages may serve whom: `none` (one pool), `key` (per API key; the default
   * when keys are given) or `user` (per API key and `user` field). See the README's cache isolation.
   */
  readonly cacheIsolation?: CacheIsolation;
  /** Prices for `usage.cost` (default: the model's, i.e. DeepSeek-V2's launch prices unless loadModel said otherwise). */
  readonly prices?: PriceTable;
  /** Per-request time limit in ms (default 10 minutes). */
  readonly requestTimeoutMs?: number;
  /** Request log lines (default: stderr). */
  readonly log?: (line: string) => void;
  /** Folder of the chat page served at / (default: the package's web/). */
  readonly webRoot?: string;
}

export interface HandlerOptions extends ServeOptions {
  /** Path prefix the handler is mounted under (stripped before routing), e.g. `/api/llm`. */
  readonly basePath?: string;
}

/** A node:http server with the API; `shutdown` finishes in-flight requests before closing. */
export interface DseekHttpServer extends Server {
  /** Stops accepting, lets in-flight requests finish for up to `deadlineMs` (default 30 s), then aborts them. */
  shutdown(deadlineMs?: number): Promise<void>;
}

function apiOptions(o: ServeOptions): ServerOptions {
  const m = modelInternals(o.model);
  if (!m.tokenizer) throw new InvalidInputError('model', `${o.model.info.path} has no tokenizer: the HTTP API needs one to read text`);
  return {
    engine: m.engine,
    tokenizer: m.tokenizer,
    modelName: o.modelName ?? m.name,
    contextLength: m.contextSize,
    prices: o.prices ?? m.prices,
    model: modelFacts(o.model.info.config),
    backend: o.model.info.kernels,
    ...(o.apiKey !== undefined ? { apiKey: o.apiKey } : {}),
    ...(o.aliases !== undefined ? { aliases: o.aliases } : {}),
    ...(o.corsOrigins !== undefined ? { corsOrigins: o.corsOrigins } : {}),
    ...(o.allowUnknownFields !== undefined ? { allowUnknownFields: o.allowUnknownFields } : {}),
    ...(o.reasoningInline !== undefined ? { reasoningInline: o.reasoningInline } : {}),
    ...(o.machineCostPerHour !== undefined ? { machineCostPerHour: o.machineCostPerHour } : {}),
    ...(o.cacheIsolation !== undefined ? { cacheIsolation: o.cacheIsolation } : {}),
    ...(o.requestTimeoutMs !== undefined ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
    ...(o.log ? { log: o.log } : {}),
    ...(o.webRoot !== undefined ? { webRoot: o.webRoot } : {}),
  };
}

/** The HTTP server `dseek serve` runs; call `listen` on it as on any node:http server. */
export function createServer(options: ServeOptions): DseekHttpServer {
  const api = createApiServer(apiOptions(options));
  return Object.assign(api.http, { shutdown: (deadlineMs?: number) => api.close(deadlineMs) });
}

/**
 * The API as a web-standard handler: `(Request) => Promise<Response>`. Mount it in hono
 * (`app.all('/v1/*', (c) => handler(c.req.raw))`), a Next.js route handler (`export const POST = handler`)
 * or anything else that speaks Request/Response.
 */
export function createHandler(options: HandlerOptions): (request: Request) => Promise<Response> {
  return createWebHandler({ ...apiOptions(options), ...(options.basePath !== undefined ? { basePath: options.basePath } : {}) });
}

/** What the server's status view and routing summaries need to know about the model. */
export function modelFacts(c: ModelConfig): ModelFacts {
  return {
    modelType: c.modelType,
    layers: c.numHiddenLayers,
    moeLayers: Array.from({ length: c.numHiddenLayers }, (_, l) => l).filter((l) => isMoeLayer(c, l)),
    routedExperts: c.nRoutedExperts,
    sharedExperts: c.nSharedExperts,
    expertsPerToken: c.numExpertsPerTok,
    hiddenSize: c.hiddenSize,
    vocabSize: c.vocabSize,
    attentionHeads: c.numAttentionHeads,
    kvLoraRank: c.kvLoraRank,
    qLoraRank: c.qLoraRank,
    qkNopeHeadDim: c.qkNopeHeadDim,
    qkRopeHeadDim: c.qkRopeHeadDim,
    vHeadDim: c.vHeadDim,
    maxPositionEmbeddings: c.maxPositionEmbeddings,
  };
}
