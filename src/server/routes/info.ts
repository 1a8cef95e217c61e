/** The small GET routes: model list, health, metrics. (The chat page: static.ts; GET /v1/status: status.ts.) */
import { resolveModelName } from '../engineRequest.js';
import { HttpError } from '../httpError.js';
import type { Route, ServerContext } from '../types.js';

const modelObject = (ctx: ServerContext, id: string) => ({ id, object: 'model', created: ctx.startedAt, owned_by: 'dseek' });

/** The served model under each of its names (its own and the aliases). */
export function modelsRoute(ctx: ServerContext): Route {
  return async () => ({ kind: 'json', status: 200, body: { object: 'list', data: ctx.modelNames.map((id) => modelObject(ctx, id)) } });
}

/** GET /v1/models/{id}: the model object, or 404 model_not_found as OpenAI answers. */
export function modelRoute(ctx: ServerContext): Route {
  return async (req) => {
    const raw = req.path.slice(req.path.lastIndexOf('/') + 1);
    let id: string;
    try {
      id = decodeURIComponent(raw);
    } catch {
      throw new HttpError(404, `the model ${JSON.stringify(raw)} does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    }
    return { kind: 'json', status: 200, body: modelObject(ctx, resolveModelName(ctx, id)) };
  };
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
