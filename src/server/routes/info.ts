/** The small GET routes: model list, health, metrics, and the chat page at /. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HttpError } from '../httpError.js';
import type { Route, ServerContext } from '../types.js';

export function modelsRoute(ctx: ServerContext): Route {
  return async () => ({
    kind: 'json',
    status: 200,
    body: { object: 'list', data: [{ id: ctx.modelName, object: 'model', created: ctx.startedAt, owned_by: 'dseek' }] },
  });
}

/** Liveness plus the engine's load, for load balancers; always open, even with an API key. */
export function healthRoute(ctx: ServerContext): Route {
  return async () => {
    const stats = ctx.engine.stats();
    return { kind: 'json', status: 200, body: { status: 'ok', model: ctx.modelName, running: stats.running, queued: stats.queued } };
  };
}

export function metricsRoute(ctx: ServerContext): Route {
  return async () => ({
    kind: 'text',
    status: 200,
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
    body: ctx.metrics.render(ctx.engine.stats()),
  });
}

/** The chat page, read per request so that it can be edited (or added) while the server runs. */
export function webRoute(ctx: ServerContext): Route {
  return async () => {
    let html: Buffer;
    try {
      html = await readFile(join(ctx.webRoot, 'index.html'));
    } catch {
      throw new HttpError(404, 'no chat page is installed (web/index.html is missing); the API is under /v1', 'not_found_error', null, 'not_found');
    }
    return { kind: 'text', status: 200, contentType: 'text/html; charset=utf-8', body: html };
  };
}
