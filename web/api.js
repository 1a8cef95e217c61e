// @ts-check
/**
 * The page's client for the OpenAI-compatible API of `dseek serve` (same origin): streamed chat
 * completions read as server-sent events, the model list and dseek's status endpoint.
 */

/**
 * What dseek adds to the last chunk of a stream (and to a whole response).
 * @typedef {{ prompt_tokens: number, prompt_cache_hit_tokens: number, prompt_cache_miss_tokens: number,
 *   completion_tokens: number, time_to_first_token_s: number | null, generation_s: number | null,
 *   tokens_per_second: number | null, total_s: number }} Timings
 * @typedef {{ layers: number[], routed_experts: number, shared_experts: number,
 *   experts_per_token: number | null, tokens: number | null, counts: number[][] }} Routing
 * @typedef {{ currency: string, input_cache_miss: number, input_cache_hit: number, output: number, total: number }} Cost
 * @typedef {{ prompt_tokens: number, completion_tokens: number, total_tokens: number,
 *   prompt_cache_hit_tokens: number, prompt_cache_miss_tokens: number, cost: Cost }} Usage
 * @typedef {{ index: number, delta?: { role?: string, content?: string | null }, finish_reason?: string | null }} ChunkChoice
 * @typedef {{ choices?: ChunkChoice[], usage?: Usage | null, timings?: Timings, routing?: Routing | null }} Chunk
 */

/** An error answer from the server: `{"error": {"message", "type", "param", "code"}}`. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {{ message?: string, type?: string, param?: string | null, code?: string | null } | null | undefined} body
   */
  constructor(status, body) {
    super(body?.message ?? `the server answered ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.type = body?.type ?? null;
    this.param = body?.param ?? null;
    this.code = body?.code ?? null;
  }
}

/**
 * @param {string} apiKey
 * @returns {Record<string, string>}
 */
function headers(apiKey) {
  /** @type {Record<string, string>} */
  const h = { 'content-type': 'application/json' };
  if (apiKey) h['authorization'] = `Bearer ${apiKey}`;
  return h;
}

/**
 * @param {Response} res
 * @returns {Promise<never>}
 */
async function fail(res) {
  /** @type {unknown} */
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const error = body && typeof body === 'object' && 'error' in body ? /** @type {{ error: ConstructorParameters<typeof ApiError>[1] }} */ (body).error : null;
  throw new ApiError(res.status, error);
}

/**
 * @template T
 * @param {string} path
 * @param {string} apiKey
 * @param {AbortSignal} [signal]
 * @returns {Promise<T>}
 */
export async function getJson(path, apiKey, signal) {
  const res = await fetch(path, { headers: headers(apiKey), signal: signal ?? null, cache: 'no-store' });
  if (!res.ok) return fail(res);
  return /** @type {Promise<T>} */ (res.json());
}

/**
 * POSTs a streamed chat completion and yields each `data:` object until `data: [DONE]`.
 * An error event inside the stream throws ApiError; aborting `signal` rejects with an AbortError
 * (and the server, seeing the connection close, cancels the generation).
 * @param {Record<string, unknown>} body the request (stream: true is set here)
 * @param {string} apiKey
 * @param {AbortSignal} signal
 * @returns {AsyncGenerator<Chunk>}
 */
export async function* streamChat(body, apiKey, signal) {
  const res = await fetch('/v1/chat/completions', {
    method: 'POST',
    headers: headers(apiKey),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!res.ok) await fail(res);
  if (!res.body) throw new ApiError(res.status, { message: 'the server sent no body' });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data === '') continue; // a comment (keep-alive)
        if (data === '[DONE]') return;
        /** @type {Chunk & { error?: ConstructorParameters<typeof ApiError>[1] }} */
        const obj = JSON.parse(data);
        if (obj.error) throw new ApiError(200, obj.error);
        yield obj;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new ApiError(0, { message: 'the stream ended early (the server went away?)' });
}
