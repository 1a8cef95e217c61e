/** The small GET routes: model list, health, metrics. (The chat page: static.ts; GET /v1/status: status.ts.) */
import type { Route, ServerContext } from '../types.js';

export function modelsRoute(ctx: ServerContext): Route {
  return async () => ({
    kind: 'json',
    status: 200,
    body: { object: 'list', data: [{ id: ctx.modelName, object: 'model', created: ctx.startedAt, owned_by: 'dseek' }] },
  });
}

/**
 * Liveness plus the engine's load, for load balancers; always open, even with an API key. 503
 * with the reason once the engine cannot serve any more (a weight file changed on disk), so that
 * a balancer takes the instance out and an operator sees what to fix. `dseek serve` listens only
 * once the model is loaded, so a balancer never sends a request to a replica still loading.
 */
export function healthRoute(ctx: ServerContext): Route {
  return async () => {
    const stats = ctx.engine.stats();
    if (stats.unhealthy !== null) {
      return { kind: 'json', status: 503, body: { status: 'unhealthy', reason: stats.unhealthy, model: ctx.modelName, running: stats.running, queued: stats.queued } };
    }
    // A context store that is down does not make the replica unhealthy: it computes prompts as
    // uncached meanwhile, so a balancer keeps sending it traffic; the body says so for operators.
    const store = stats.contextStore ? { context_store: stats.contextStore.up ? 'up' : 'down' } : {};
    return { kind: 'json', status: 200, body: { status: 'ok', model: ctx.modelName, running: stats.running, queued: stats.queued, ...store } };
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
