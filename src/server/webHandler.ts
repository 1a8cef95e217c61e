/**
 * The same API as `dseek serve`, as a web-standard `(Request) => Promise<Response>`: the routes,
 * auth and streaming of server.ts's core (createApp), so it mounts inside hono, express (through
 * an adapter), Next.js route handlers or Node's own `http` with a two-line bridge. A client that
 * goes away (the request's signal, or the response stream cancelled) cancels its generation.
 */
import { createApp, sseSink, type ServerOptions } from './server.js';
import { MAX_BODY_BYTES } from './body.js';
import { badRequest, HttpError, toHttpError } from './httpError.js';
import type { CancelReason } from './metrics.js';
import { ClientGoneError } from './respond.js';
import type { RouteResponse } from './types.js';

export interface WebHandlerOptions extends ServerOptions {
  /**
   * The path the API is mounted under, stripped before routing: with `/api/llm`, a request for
   * `/api/llm/v1/chat/completions` is answered as `/v1/chat/completions`. Default: none.
   */
  readonly basePath?: string;
}

export type WebHandler = (request: Request) => Promise<Response>;

export function createWebHandler(options: WebHandlerOptions): WebHandler {
  const app = createApp(options);
  const { ctx } = app;
  const base = (options.basePath ?? '').replace(/\/+$/, '');

  return async (request) => {
    const receivedAt = performance.now();
    const method = request.method.toUpperCase();
    let path = new URL(request.url, 'http://localhost').pathname;
    if (base && (path === base || path.startsWith(`${base}/`))) path = path.slice(base.length) || '/';
    const label = app.labelOf(method, path);
    const controller = new AbortController();
    const abort = (reason: CancelReason) => {
      if (controller.signal.aborted) return;
      controller.abort(reason);
      ctx.metrics.cancelled(reason);
    };
    const timer = setTimeout(() => abort('timeout'), app.timeoutMs);
    const onGone = () => abort('client_disconnect');
    request.signal.addEventListener('abort', onGone, { once: true });
    let finished = false;
    const done = (status: number) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onGone);
      ctx.metrics.request(label, status, (performance.now() - receivedAt) / 1000);
    };

    const headers = Object.fromEntries(request.headers);
    const cors = app.corsHeaders(headers);
    const withCors = (response: Response) => {
      for (const [name, value] of Object.entries(cors)) response.headers.set(name, value);
      return response;
    };
    try {
      const out = await app.dispatch({ method, path, headers, readBody: () => readWebJsonBody(request), signal: controller.signal, receivedAt });
      if (out.kind !== 'sse') {
        done(out.status);
        return withCors(plainResponse(out));
      }
      return withCors(sseResponse(out, (e) => app.streamError(path, toHttpError(e, ctx.log)), () => done(200), onGone));
    } catch (e) {
      if (e instanceof ClientGoneError) {
        done(499);
        return new Response(null, { status: 499 });
      }
      const err = toHttpError(e, ctx.log);
      done(err.status);
      return withCors(json(err.status, app.errorBody(path, err), err.headers));
    }
  };
}

function json(status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

function plainResponse(out: Exclude<RouteResponse, { kind: 'sse' }>): Response {
  if (out.kind === 'json') return json(out.status, out.body, out.headers);
  // A copy: Response wants an ArrayBuffer-backed view, and the route's buffer may be a shared slice.
  const body = typeof out.body === 'string' ? out.body : new Uint8Array(out.body);
  return new Response(out.status === 204 || out.status === 304 ? null : body, { status: out.status, headers: { 'content-type': out.contentType, ...out.headers } });
}

function sseResponse(out: Extract<RouteResponse, { kind: 'sse' }>, errorEvent: (e: unknown) => string, onEnd: () => void, onCancel: () => void): Response {
  const encoder = new TextEncoder();
  let open = true;
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      const write = (text: string) => {
        if (open) c.enqueue(encoder.encode(text));
      };
      void out
        .run(sseSink(out.style ?? 'openai', write))
        .then(() => out.style !== 'anthropic' && write('data: [DONE]\n\n'))
        .catch((e: unknown) => {
          // Mid-stream: the status is already 200, so the error travels as an event (the clients throw it).
          if (!(e instanceof ClientGoneError)) write(errorEvent(e));
        })
        .finally(() => {
          onEnd();
          if (open) {
            open = false;
            c.close();
          }
        });
    },
    cancel() {
      open = false;
      onCancel();
    },
  });
  return new Response(stream, {
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' },
  });
}

/** The JSON body of a web Request, with the same rules and messages as the node:http reader. */
async function readWebJsonBody(request: Request): Promise<unknown> {
  const type = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw badRequest(null, `the request body must be JSON sent with "Content-Type: application/json" (got ${type ? JSON.stringify(type) : 'no content type'})`, 'invalid_content_type');
  }
  const tooLarge = () => new HttpError(413, `the request body is larger than ${MAX_BODY_BYTES / (1024 * 1024)} MB`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(request.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) throw tooLarge();
  const bytes = new Uint8Array(await request.arrayBuffer());
  if (bytes.length > MAX_BODY_BYTES) throw tooLarge();
  const text = new TextDecoder().decode(bytes);
  if (text.trim() === '') throw badRequest(null, 'the request body is empty: send a JSON object', 'invalid_json');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw badRequest(null, `the request body is not valid JSON (${e instanceof Error ? e.message : String(e)})`, 'invalid_json');
  }
}
