/**
 * Errors as the OpenAI API reports them: a status code and `{"error":{message,type,param,code}}`.
 * The `openai` client turns the status into its error classes (400 → BadRequestError, …) and
 * retries 408/409/429/5xx, so a client's mistake must never come back as a 5xx.
 */

/** The `type` values OpenAI uses (plus `server_error` for our own faults). */
export type OpenAiErrorType =
  | 'invalid_request_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'timeout_error'
  | 'server_error';

export interface ErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: OpenAiErrorType;
    readonly param: string | null;
    readonly code: string | null;
  };
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: OpenAiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers, e.g. `retry-after` on 429. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 for a bad field: `param` names it, `message` says what is allowed. */
export function badRequest(param: string | null, message: string, code: string | null = null): HttpError {
  return new HttpError(400, message, 'invalid_request_error', param, code);
}

/** Engine errors that carry this code mean "come back later" (design: the engine's queue is bounded). */
export const QUEUE_FULL = 'queue_full';

/**
 * Maps anything thrown while serving a request to the response it deserves. Typed dseek errors
 * caused by the input become 4xx; anything else is our fault: 500 with a generic message, the
 * detail goes to the log (it may contain paths or internals a client should not see).
 */
export function toHttpError(e: unknown, log: (line: string) => void): HttpError {
  if (e instanceof HttpError) return e;
  // By code, not class: errors from the engine's worker thread arrive re-created (EngineError)
  // with the original code but not the original class.
  switch (codeOf(e)) {
    case 'context_length_exceeded': {
      const message = e instanceof Error ? e.message : 'the prompt plus max_tokens does not fit the context';
      return badRequest('max_tokens', message, 'context_length_exceeded');
    }
    case 'invalid_input': {
      const field = (e as { field?: unknown }).field;
      return badRequest(typeof field === 'string' ? field : null, e instanceof Error ? e.message : 'invalid input');
    }
    case 'internal_error': {
      // The engine failed on this request (its log has the stack); the message is the engine's
      // generic one, safe to show. A 500, so clients see a fault, never a short answer.
      log(`engine fault answered with 500: ${e instanceof Error ? e.message : String(e)}`);
      return new HttpError(500, e instanceof Error ? e.message : 'the engine failed', 'server_error', null, 'internal_error');
    }
    case 'model_file_changed': {
      const message = e instanceof Error ? e.message : 'a model file changed on disk: restart the server';
      return new HttpError(503, message, 'server_error', null, 'model_file_changed');
    }
    case QUEUE_FULL: {
      const after = (e as { retryAfterS?: unknown }).retryAfterS;
      const seconds = typeof after === 'number' && after > 0 ? Math.ceil(after) : 1;
      return new HttpError(429, 'the server is busy: too many requests are waiting; retry shortly', 'rate_limit_error', null, QUEUE_FULL, {
        'retry-after': String(seconds),
      });
    }
  }
  const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
  log(`internal error: ${detail}`);
  return new HttpError(500, 'internal server error (details are in the server log)', 'server_error', null, null);
}

function codeOf(e: unknown): unknown {
  return typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
}
