/** The small GET routes: model list, health, metrics. (The chat page: static.ts; GET /v1/status: status.ts.) */
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
