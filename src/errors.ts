/**
 * Typed errors. Every error a user can cause names the file, tensor, key or field at fault and
 * says what would fix it; the CLI prints `message` as one line and exits non-zero, the server
 * maps `code` to an HTTP status.
 */
export class DseekError extends Error {
  /** Stable machine-readable cause, e.g. `model_format`, `unsupported_config`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A model file (safetensors, GGUF, config.json, tokenizer.json) is missing, truncated or lies about itself. */
export class ModelFormatError extends DseekError {
  readonly file: string;
  constructor(file: string, message: string) {
    super('model_format', `${file}: ${message}`);
    this.file = file;
  }
}

/** A config value (or GGUF metadata key) that dseek does not support. */
export class UnsupportedConfigError extends DseekError {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown, hint: string) {
    super('unsupported_config', `unsupported ${field} = ${JSON.stringify(value)}: ${hint}`);
    this.field = field;
    this.value = value;
  }
}

/** A tensor is present but has the wrong shape or type for the config. */
export class TensorShapeError extends DseekError {
  readonly tensor: string;
  constructor(tensor: string, message: string) {
    super('tensor_shape', `tensor ${tensor}: ${message}`);
    this.tensor = tensor;
  }
}

/** A caller passed an argument that cannot work (token id out of range, empty prompt, bad flag). */
export class InvalidInputError extends DseekError {
  readonly field: string;
  constructor(field: string, message: string) {
    super('invalid_input', `${field}: ${message}`);
    this.field = field;
  }
}

/** The prompt plus the requested tokens do not fit the context window. */
export class ContextLengthExceededError extends DseekError {
  readonly requested: number;
  readonly limit: number;
  constructor(requested: number, limit: number) {
    super(
      'context_length_exceeded',
      `this sequence needs ${requested} positions but the context holds ${limit}: shorten the prompt or lower max tokens`,
    );
    this.requested = requested;
    this.limit = limit;
  }
}

/**
 * The engine itself failed while running a request (a bug or a kernel fault, not the caller's
 * input). The requests in the failed step end with it; the engine recovers and keeps serving.
 * `message` is safe to show a client; the stack goes to the log.
 */
export class EngineFaultError extends DseekError {
  constructor(message = 'the engine failed while running this request (details are in the server log); other requests are unaffected, retry') {
    super('internal_error', message);
  }
}

/**
 * A call was cancelled through its `signal` (AbortSignal) before it finished: `loadModel` while
 * downloading or loading, `generate` / `chat` at any point (their cache pages are freed at the
 * engine's next step). The name is `AbortError`, as `fetch` and Node's own APIs use, so code that
 * checks `err.name === 'AbortError'` keeps working. `reason` is the signal's reason.
 */
export class AbortError extends DseekError {
  readonly reason: unknown;
  constructor(what: string, reason?: unknown) {
    super('aborted', `${what} was aborted${reason instanceof Error ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : ''}`);
    this.name = 'AbortError';
    this.reason = reason;
  }
}

/** A call on a Model after `model.close()`, or one still running when close() ended it. */
export class ModelClosedError extends DseekError {
  constructor(message = 'the model is closed: load it again with loadModel()') {
    super('model_closed', message);
  }
}

/**
 * A weight file changed on disk after it was loaded (truncated, replaced or rewritten in place).
 * Its mapped bytes can no longer be trusted, so nothing more is computed from them: restart with
 * an intact file.
 */
export class ModelFileChangedError extends DseekError {
  readonly file: string;
  constructor(file: string, what: string) {
    super('model_file_changed', `the model file ${file} ${what} since it was loaded: restart the server with an intact file`);
    this.file = file;
  }
}

/**
 * The engine's request queue is full (`maxQueue` requests already wait for a slot): retry later,
 * or load the model with a larger `maxQueue` / `parallel`. The server answers it with 429.
 */
export class QueueFullError extends DseekError {
  constructor(limit: number) {
    super('queue_full', `the request queue is full (${limit} waiting): retry later`);
  }
}
