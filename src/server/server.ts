/**
 * The OpenAI-compatible HTTP server. `createApp` is the framework-free core (routing, auth, the
 * routes' shared context) that both adapters use: `createServer` here on node:http (per-request
 * abort on client gone, timeout or shutdown; response writing; graceful shutdown) and
 * webHandler.ts for web-standard Request/Response. Routes stay free of node:http.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Engine } from '../engine/types.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { InvalidInputError } from '../errors.js';
import { readJsonBody } from './body.js';
import { HttpError, toHttpError } from './httpError.js';
import { Metrics, type CancelReason } from './metrics.js';
import { DEEPSEEK_V2_LAUNCH_PRICES, type PriceTable } from './prices.js';
import { ClientGoneError } from './respond.js';
import { chatRoute } from './routes/chat.js';
import { completionsRoute } from './routes/completions.js';
import { healthRoute, metricsRoute, modelRoute, modelsRoute } from './routes/info.js';
import { isStaticPath, staticRoute } from './routes/static.js';
import { statusRoute } from './routes/status.js';
import { anthropicErrorBody, countTokensRoute, isAnthropicPath, messagesRoute } from './routes/messages.js';
import type { CacheIsolation, ModelFacts, Route, RouteResponse, ServerContext, SseSink, SseStyle } from './types.js';

export interface ServerOptions {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer;
  /** The id clients pass as `model` and GET /v1/models lists. */
  readonly modelName: string;
  /**
   * Other names accepted as `model` and listed by GET /v1/models. Default: DeepSeek's API names
   * `deepseek-chat` and `deepseek-reasoner` (DEFAULT_ALIASES), so code written for DeepSeek's
   * API runs unchanged; `[]` accepts only modelName.
   */
  readonly aliases?: readonly string[];
  /**
   * Origins allowed to call the API from a browser (CORS): exact origins such as
   * `https://app.example.com`, or `*` for any. Default: none (no CORS headers; preflights get 405).
   */
  readonly corsOrigins?: readonly string[];
  /** Ignore request fields the API does not know instead of answering 400 naming them. Default false. */
  readonly allowUnknownFields?: boolean;
  /**
   * Keep a thinking model's reasoning (the text before `</think>`) inline in `content`. Default
   * false: it goes to `reasoning_content`, as DeepSeek's API returns it.
   */
  readonly reasoningInline?: boolean;
  /**
   * What the machine costs per hour, in the price table's currency. With it, every usage.cost also
   * has `machine` and `machine_seconds` (the request's share of the engine's measured busy time),
   * and /metrics the machine cost per million tokens achieved.
   */
  readonly machineCostPerHour?: number;
  /** Context window in tokens: prompt + max_tokens must fit. */
  readonly contextLength: number;
  /** When set, /v1/* and /metrics need `Authorization: Bearer <key>` with one of these keys. */
  readonly apiKey?: string | readonly string[];
  /** Prefix-cache partitions (see CacheIsolation). Default: `key` when there are API keys, else `none`. */
  readonly cacheIsolation?: CacheIsolation;
  /** Default: DeepSeek-V2's launch prices. */
  readonly prices?: PriceTable;
  /** Default 10 minutes. */
  readonly requestTimeoutMs?: number;
  /** Refuse (429) new requests once this many sequences wait in the engine queue. Default: the engine decides. */
  readonly maxQueue?: number;
  /** Default: lines to stderr. */
  readonly log?: (line: string) => void;
  /** Interval of SSE keep-alive comments while queued. Default 5 s. */
  readonly keepAliveMs?: number;
  /** Folder with the chat page (index.html and its assets). Default: the repository's web/. */
  readonly webRoot?: string;
  /** The served model's shape, reported by GET /v1/status and used in routing summaries. */
  readonly model?: ModelFacts;
  /** Which kernels the engine runs on (reported by GET /v1/status). */
  readonly backend?: string;
}

export interface DseekServer {
  /** The node:http server underneath (for `server.http.listen(...)` or attaching to an existing setup). */
  readonly http: Server;
  /** Starts listening; port 0 picks a free port. Resolves with the base URL, e.g. http://127.0.0.1:8080. */
  listen(port: number, host?: string): Promise<{ url: string }>;
  /** Stops accepting, lets in-flight requests finish for up to `deadlineMs`, then aborts them. */
  close(deadlineMs?: number): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
/** The names DeepSeek's own API serves; accepted for the served model unless told otherwise. */
export const DEFAULT_ALIASES: readonly string[] = ['deepseek-chat', 'deepseek-reasoner'];
/** After the shutdown deadline, how long aborted requests get to write their last bytes. */
const SHUTDOWN_GRACE_MS = 1000;

/** What the node:http adapter and the web-standard handler need from a request. */
export interface AppRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** Reads and parses the JSON body (called for POST only). */
  readBody(): Promise<unknown>;
  readonly signal: AbortSignal;
  readonly receivedAt: number;
}

/** The routes, auth and context, free of any HTTP framework: one core under both adapters. */
export interface App {
  readonly ctx: ServerContext;
  readonly timeoutMs: number;
  /** The metrics label of a request: its route's path, `static` for chat-page files, `other` when nothing matches. */
  labelOf(method: string, path: string): string;
  /** The error body for a request to `path`: OpenAI's shape, or Anthropic's on the Messages API. */
  errorBody(path: string, err: HttpError): unknown;
  /** An error as the last event of a stream already under way on `path`, and the stream's end. */
  streamError(path: string, err: HttpError): string;
  /** CORS headers every response to a request with these headers carries (empty without --cors). */
  corsHeaders(headers: IncomingHttpHeaders): Record<string, string>;
  /** Routes the request (404, 405 and 401 are thrown as HttpErrors) and runs it. */
  dispatch(req: AppRequest): Promise<RouteResponse>;
}

export function createApp(options: ServerOptions): App {
  const log = options.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const prices = options.prices ?? DEEPSEEK_V2_LAUNCH_PRICES;
  const keys = options.apiKey === undefined ? [] : typeof options.apiKey === 'string' ? [options.apiKey] : [...options.apiKey];
  if (options.apiKey !== undefined && (keys.length === 0 || keys.some((k) => k === ''))) {
    throw new InvalidInputError('apiKey', 'give one or more non-empty API keys, or none to leave the API open');
  }
  const cacheIsolation = options.cacheIsolation ?? (keys.length > 0 ? 'key' : 'none');
  const ctx: ServerContext = {
    engine: options.engine,
    tokenizer: options.tokenizer,
    modelName: options.modelName,
    modelNames: [...new Set([options.modelName, ...(options.aliases ?? DEFAULT_ALIASES)])],
    allowUnknownFields: options.allowUnknownFields === true,
    reasoningInline: options.reasoningInline === true,
    machineCostPerHour: options.machineCostPerHour ?? null,
    contextLength: options.contextLength,
    prices,
    metrics: new Metrics(prices.currency),
    log,
    keepAliveMs: options.keepAliveMs ?? 5000,
    maxQueue: options.maxQueue,
    webRoot: options.webRoot ?? fileURLToPath(new URL('../../../web/', import.meta.url)),
    model: options.model ?? null,
    backend: options.backend ?? null,
    startedAt: Math.floor(Date.now() / 1000),
    cacheIsolation,
  };
  const page = staticRoute(ctx);
  const files = new Map([['GET', page], ['HEAD', page]]);
  const post = (route: Route) => new Map([['POST', route]]);
  const get = (route: Route) => new Map([['GET', route]]);
  // The API's own routes, each answered with and without /v1: DeepSeek's documented base URL
  // (https://api.deepseek.com) has none, so clients configured for it call /chat/completions.
  const api: [string, ReadonlyMap<string, Route>][] = [
    ['/chat/completions', post(chatRoute(ctx))],
    ['/completions', post(completionsRoute(ctx))],
    ['/models', get(modelsRoute(ctx))],
    ['/status', get(statusRoute(ctx))],
  ];
  // A Map, not an object literal: a path like /__proto__ must not find anything.
  const routes = new Map<string, ReadonlyMap<string, Route>>([
    ...api.map(([p, t]): [string, ReadonlyMap<string, Route>] => [`/v1${p}`, t]),
    ...api,
    // DeepSeek's beta surface: chat prefix completion (`prefix: true`) and FIM completions.
    ['/beta/chat/completions', post(chatRoute(ctx))],
    ['/beta/completions', post(completionsRoute(ctx))],
    // The Anthropic Messages API, also where DeepSeek serves it (base URL …/anthropic).
    ['/v1/messages', post(messagesRoute(ctx))],
    ['/anthropic/v1/messages', post(messagesRoute(ctx))],
    ['/v1/messages/count_tokens', post(countTokensRoute(ctx))],
    ['/anthropic/v1/messages/count_tokens', post(countTokensRoute(ctx))],
    // OpenAI endpoints dseek does not serve: a 404 that says so and what to use instead.
    ...(['/responses', '/embeddings', '/audio/speech', '/audio/transcriptions', '/images/generations', '/moderations'].flatMap((p) => {
      const table = post(unsupported(p));
      return [[`/v1${p}`, table], [p, table]] as [string, ReadonlyMap<string, Route>][];
    })),
    ['/health', get(healthRoute(ctx))],
    ['/metrics', get(metricsRoute(ctx))],
    ['/', files],
  ]);
  const oneModel = get(modelRoute(ctx));
  const keyDigests = keys.map(digest);
  const cors = options.corsOrigins ?? [];
  // Any other GET or HEAD outside the API may name a file of the chat page.
  const isFile = (method: string, path: string) => !routes.has(path) && !isModelPath(path) && (method === 'GET' || method === 'HEAD') && isStaticPath(path);
  const tableOf = (method: string, path: string) => (isFile(method, path) ? files : isModelPath(path) ? oneModel : routes.get(path));
  const corsHeaders = (origin: string | undefined): Record<string, string> => {
    if (cors.length === 0) return {};
    if (cors.includes('*')) return { 'access-control-allow-origin': '*' };
    // Echo an allowed origin only; Vary keeps shared caches from serving it to another origin.
    return origin !== undefined && cors.includes(origin) ? { 'access-control-allow-origin': origin, vary: 'Origin' } : { vary: 'Origin' };
  };
  return {
    ctx,
    timeoutMs: options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    labelOf: (method, path) => (isFile(method, path) ? 'static' : isModelPath(path) ? '/v1/models/{id}' : tableOf(method, path) ? path : 'other'),
    errorBody: (path, err) => (isAnthropicPath(path) ? anthropicErrorBody(err) : err.body()),
    streamError: (path, err) =>
      isAnthropicPath(path) ? `event: error\ndata: ${JSON.stringify(anthropicErrorBody(err))}\n\n` : `data: ${JSON.stringify(err.body())}\n\ndata: [DONE]\n\n`,
    corsHeaders: (headers) => corsHeaders(typeof headers.origin === 'string' ? headers.origin : undefined),
    async dispatch(req) {
      const { method, path } = req;
      const table = tableOf(method, path);
      if (!table) throw new HttpError(404, `Invalid URL (${method} ${path})`, 'invalid_request_error');
      if (method === 'OPTIONS' && cors.length > 0) return preflight(req.headers, [...table.keys()]);
      const route = table.get(method);
      if (!route) {
        const allowed = [...table.keys()].join(', ');
        throw new HttpError(405, `${method} is not allowed on ${path}; use ${allowed}`, 'invalid_request_error', null, 'method_not_allowed', { allow: allowed });
      }
      // Everything but liveness and the chat page's files is behind the key.
      const apiKeyDigest = keyDigests.length > 0 && table !== files && path !== '/health' ? checkApiKey(req.headers, keyDigests) : null;
      const body = method === 'POST' ? await req.readBody() : undefined;
      return route({ method, path, headers: req.headers, body, signal: req.signal, receivedAt: req.receivedAt, apiKeyDigest });
    },
  };
}

/** Server-sent events in OpenAI's style (`data:` only) or Anthropic's (`event: <type>` before each `data:`). */
export function sseSink(style: SseStyle, write: (text: string) => void): SseSink {
  return {
    data: (payload) => {
      const type = style === 'anthropic' ? (payload as { type?: unknown }).type : undefined;
      write(`${typeof type === 'string' ? `event: ${type}\n` : ''}data: ${JSON.stringify(payload)}\n\n`);
    },
    comment: (text) => write(`: ${text}\n\n`),
  };
}

/** An OpenAI endpoint dseek does not implement: 404 naming it and pointing to what it does serve. */
function unsupported(path: string): Route {
  const instead = path === '/responses' ? 'use /v1/chat/completions (or /v1/messages)' : 'dseek serves chat, completions and the Messages API only';
  return async () => {
    throw new HttpError(404, `${path.slice(1)} is not supported by dseek: ${instead}`, 'invalid_request_error', null, 'unsupported_endpoint');
  };
}

/** `/v1/models/{id}` and `/models/{id}`. */
function isModelPath(path: string): boolean {
  return /^(\/v1)?\/models\/[^/]+$/.test(path);
}

/** A CORS preflight: the methods the path takes and the headers the browser asked to send. */
function preflight(headers: IncomingHttpHeaders, methods: string[]): RouteResponse {
  const asked = headers['access-control-request-headers'];
  return {
    kind: 'text',
    status: 204,
    contentType: 'text/plain',
    body: '',
    headers: {
      'access-control-allow-methods': [...methods, 'OPTIONS'].join(', '),
      'access-control-allow-headers': typeof asked === 'string' && asked !== '' ? asked : 'authorization, content-type',
      'access-control-max-age': '600',
    },
  };
}

export function createServer(options: ServerOptions): DseekServer {
  const app = createApp(options);
  const { ctx } = app;
  const log = ctx.log;
  const timeoutMs = app.timeoutMs;
  const inFlight = new Set<AbortController>();
  let closing = false;
  let onIdle: (() => void) | null = null;

  const server = createHttpServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log(`internal error while answering: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedAt = performance.now();
    const method = req.method ?? 'GET';
    const path = pathOf(req.url);
    const controller = new AbortController();
    inFlight.add(controller);
    const abort = (reason: CancelReason) => {
      if (controller.signal.aborted) return;
      controller.abort(reason);
      ctx.metrics.cancelled(reason);
    };
    const timer = setTimeout(() => abort('timeout'), timeoutMs);
    req.on('error', () => abort('client_disconnect'));
    res.on('error', () => abort('client_disconnect'));
    // 'close' before the response finished means the client hung up: stop its work now.
    res.on('close', () => {
      if (!res.writableFinished) abort('client_disconnect');
      clearTimeout(timer);
      inFlight.delete(controller);
      const status = res.writableFinished ? res.statusCode : 499;
      ctx.metrics.request(app.labelOf(method, path), status, (performance.now() - receivedAt) / 1000);
      log(`${method} ${path} ${status} ${Math.round(performance.now() - receivedAt)}ms`);
      if (inFlight.size === 0) onIdle?.();
    });

    const cors = app.corsHeaders(req.headers);
    for (const [name, value] of Object.entries(cors)) res.setHeader(name, value);
    try {
      if (closing) throw new HttpError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
      const out = await app.dispatch({ method, path, headers: req.headers, readBody: () => readJsonBody(req), signal: controller.signal, receivedAt });
      await write(res, out);
    } catch (e) {
      if (e instanceof ClientGoneError || res.destroyed) return;
      const err = toHttpError(e, log);
      if (res.headersSent) {
        // Mid-stream: the status is already 200, so the error travels as an event (the openai
        // client throws it), and the stream still ends as every stream does.
        writeSse(res, app.streamError(path, err));
        res.end();
      } else {
        sendJson(res, err.status, app.errorBody(path, err), err.headers);
      }
    }
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...closeHeader(), ...headers });
    res.end(text);
  }

  /** While shutting down, ask clients not to reuse the connection. */
  function closeHeader(): Record<string, string> {
    return closing ? { connection: 'close' } : {};
  }

  async function write(res: ServerResponse, out: RouteResponse): Promise<void> {
    if (out.kind === 'json') return sendJson(res, out.status, out.body, out.headers);
    if (out.kind === 'text') {
      res.writeHead(out.status, { 'content-type': out.contentType, 'content-length': Buffer.byteLength(out.body), ...closeHeader(), ...out.headers });
      res.end(out.body);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no', ...closeHeader() });
    res.flushHeaders();
    await out.run(sseSink(out.style ?? 'openai', (text) => writeSse(res, text)));
    if (out.style !== 'anthropic') writeSse(res, 'data: [DONE]\n\n');
    res.end();
  }

  function writeSse(res: ServerResponse, text: string): void {
    if (!res.destroyed && !res.writableEnded) res.write(text);
  }

  return {
    http: server,
    listen(port, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const { address, port: bound } = server.address() as AddressInfo;
          resolve({ url: `http://${address.includes(':') ? `[${address}]` : address}:${bound}` });
        });
      });
    },

    async close(deadlineMs = 30_000) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const idle = new Promise<void>((resolve) => {
        onIdle = resolve;
        if (inFlight.size === 0) resolve();
      });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          for (const c of inFlight) {
            if (!c.signal.aborted) {
              c.abort('shutdown');
              ctx.metrics.cancelled('shutdown');
            }
          }
          // Aborted requests end their responses themselves; give them a moment to flush.
          setTimeout(resolve, SHUTDOWN_GRACE_MS).unref();
        }, deadlineMs);
      });
      await Promise.race([idle, deadline]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
    },
  };
}

/** The path of origin-form (`/v1/models?x`) and absolute-form (`http://host/v1/models`) targets alike. */
function pathOf(url: string | undefined): string {
  try {
    return new URL(url ?? '/', 'http://localhost').pathname;
  } catch {
    return '/';
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * The digest (hex) of the request's key when it is one of `expected`. Compares digests in
 * constant time and against every key, so response timing does not leak a key or which one matched.
 */
function checkApiKey(headers: IncomingHttpHeaders, expected: readonly Buffer[]): string {
  // Bearer (OpenAI's clients) or x-api-key (Anthropic's).
  const match = /^Bearer\s+(.+)$/i.exec(headers.authorization ?? '');
  const xKey = typeof headers['x-api-key'] === 'string' ? headers['x-api-key'].trim() : '';
  const given = match ? digest(match[1]!.trim()) : xKey !== '' ? digest(xKey) : null;
  let found: Buffer | null = null;
  for (const key of expected) if (given && timingSafeEqual(given, key)) found = key;
  if (!found) {
    throw new HttpError(401, 'invalid or missing API key: send "Authorization: Bearer <key>" (or "x-api-key: <key>")', 'invalid_request_error', null, 'invalid_api_key');
  }
  return found.toString('hex');
}
