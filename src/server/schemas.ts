/**
 * Request validation: one zod schema per endpoint, with OpenAI's field names and ranges. Every
 * schema node carries the rule it enforces as its error message, so whatever fails — wrong type,
 * out of range, missing — the 400 names the field (`param`) and says what is allowed.
 * Unknown fields are dropped, as OpenAI ignores them; `null` means "not set", as clients send it.
 */
import { z } from 'zod';
import { badRequest, type HttpError } from './httpError.js';

/** OpenAI allows 4 stop strings; the engine's matcher allows 16. */
export const MAX_STOP = 16;
export const MAX_N = 16;
export const MAX_CACHE_SALT = 1024;

/** Create-params that make every issue the schema raises say `rule`. */
const rule = (message: string) => ({ errorMap: () => ({ message }) });
const say = (message: string) => ({ message });

function num(message: string, o: { int?: boolean; min?: number; max?: number; gt?: number } = {}) {
  let s = z.number(rule(message));
  if (o.int) s = s.int(say(message)).safe(say(message));
  if (o.min !== undefined) s = s.min(o.min, say(message));
  if (o.max !== undefined) s = s.max(o.max, say(message));
  if (o.gt !== undefined) s = s.gt(o.gt, say(message));
  return s.nullish();
}
const bool = (message: string) => z.boolean(rule(message)).nullish();

const STOP = `must be a non-empty string or an array of at most ${MAX_STOP} non-empty strings`;
const FORMAT = 'must be {"type": "text"} or {"type": "json_object"} (json_schema is not supported)';
const MAX_TOKENS = 'must be an integer ≥ 1 (omit it to allow the rest of the context)';

// Unions are checked by predicate: a zod union reports the inner issue of whichever member got
// furthest (e.g. `stop[0]` too short), but the client should hear about the field as a whole.
const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
const isStop = (v: unknown) => isNonEmptyString(v) || (Array.isArray(v) && v.length <= MAX_STOP && v.every(isNonEmptyString));
const isPrompt = (v: unknown) =>
  typeof v === 'string' || (Array.isArray(v) && v.length > 0 && v.every((id) => Number.isSafeInteger(id) && (id as number) >= 0));

/** Fields both endpoints share. */
const common = {
  model: z.string(rule('must be a string: the id of the served model (see GET /v1/models)')).nullish(),
  max_tokens: num(MAX_TOKENS, { int: true, min: 1 }),
  max_completion_tokens: num(MAX_TOKENS, { int: true, min: 1 }),
  temperature: num('must be a number from 0 to 2', { min: 0, max: 2 }),
  top_p: num('must be a number greater than 0 and at most 1', { gt: 0, max: 1 }),
  top_k: num('must be an integer ≥ 0 (0 = off)', { int: true, min: 0 }),
  min_p: num('must be a number from 0 to 1', { min: 0, max: 1 }),
  frequency_penalty: num('must be a number from -2 to 2', { min: -2, max: 2 }),
  presence_penalty: num('must be a number from -2 to 2', { min: -2, max: 2 }),
  repetition_penalty: num('must be a number greater than 0 (1 = off)', { gt: 0 }),
  seed: num('must be an integer', { int: true }),
  stop: z.custom<string | string[]>(isStop, say(STOP)).nullish(),
  n: num(`must be an integer from 1 to ${MAX_N}`, { int: true, min: 1, max: MAX_N }),
  stream: bool('must be a boolean'),
  stream_options: z
    .object({ include_usage: bool('must be a boolean') }, rule('must be an object like {"include_usage": true}'))
    .nullish(),
  response_format: z.object({ type: z.enum(['text', 'json_object'], rule(FORMAT)) }, rule(FORMAT)).nullish(),
  user: z.string(rule('must be a string')).nullish(),
  /**
   * vLLM's field: a secret that partitions the prefix cache. Requests share cached prompt pages
   * only when their salts (and tenants, see --cache-isolation) are equal.
   */
  cache_salt: z
    .string(rule(`must be a non-empty string of at most ${MAX_CACHE_SALT} characters`))
    .min(1, say(`must be a non-empty string of at most ${MAX_CACHE_SALT} characters`))
    .max(MAX_CACHE_SALT, say(`must be a non-empty string of at most ${MAX_CACHE_SALT} characters`))
    .nullish(),
  /** dseek's own opt-in extras: `{"routing": true}` adds the answer's expert-routing counts to the response. */
  dseek: z
    .object({ routing: bool('must be a boolean') }, rule('must be an object like {"routing": true}'))
    .nullish(),
};

/** Cross-field rules both endpoints share. */
function commonRefinements(v: { stream?: boolean | null; stream_options?: object | null }, ctx: z.RefinementCtx): void {
  if (v.stream_options != null && v.stream !== true) {
    ctx.addIssue({ code: 'custom', path: ['stream_options'], message: 'is only allowed when stream is true' });
  }
}

const CONTENT = 'must be a string or an array of {"type": "text", "text": "..."} parts (other part types such as images are not supported)';
const textPart = z.object({ type: z.literal('text'), text: z.string() });
const message = z.object(
  {
    role: z.enum(['system', 'user', 'assistant', 'tool'], rule('must be one of "system", "user", "assistant", "tool"')),
    // An assistant turn that only called tools has null content; tools themselves are not supported.
    content: z.union([z.string(), z.array(textPart), z.null()], rule(CONTENT)),
  },
  rule('must be an object with "role" and "content"'),
);

export const chatSchema = z
  .object({
    ...common,
    messages: z.array(message, rule('must be a non-empty array of {"role", "content"} messages')).min(1, say('must be a non-empty array of {"role", "content"} messages')),
    logprobs: bool('must be a boolean'),
    top_logprobs: num('must be an integer from 0 to 20', { int: true, min: 0, max: 20 }),
  })
  .superRefine((v, ctx) => {
    commonRefinements(v, ctx);
    if (v.top_logprobs != null && v.logprobs !== true) {
      ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'requires "logprobs": true' });
    }
  });

const PROMPT = 'must be a string or an array of token ids (arrays of strings, i.e. several prompts, are not supported)';
export const completionSchema = z
  .object({
    ...common,
    prompt: z.custom<string | number[]>(isPrompt, say(PROMPT)),
    suffix: z.string(rule('must be a string')).nullish(),
    echo: bool('must be a boolean'),
    logprobs: num('must be an integer from 0 to 5', { int: true, min: 0, max: 5 }),
  })
  .superRefine((v, ctx) => {
    commonRefinements(v, ctx);
    if (v.echo === true && v.logprobs != null) {
      ctx.addIssue({
        code: 'custom',
        path: ['echo'],
        message: 'cannot be combined with logprobs: dseek does not compute log-probabilities of prompt tokens',
      });
    }
  });

export type ChatBody = z.infer<typeof chatSchema>;
export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatMessageBody = z.infer<typeof message>;

/** Parses `body` or throws a 400 naming the first offending field. */
export function parseBody<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, body: unknown): T {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest(null, 'the request body must be a JSON object');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  throw issueToError(result.error.issues[0]!, body);
}

function issueToError(issue: z.ZodIssue, body: unknown): HttpError {
  const param = paramName(issue.path);
  const value = valueAt(body, issue.path);
  const got = value === undefined ? ' (it is missing)' : ` (got ${preview(value)})`;
  return badRequest(param, `${param} ${issue.message}${got}`);
}

/** ['messages', 0, 'role'] → "messages[0].role", the form OpenAI uses in `param`. */
export function paramName(path: readonly (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function valueAt(body: unknown, path: readonly (string | number)[]): unknown {
  let v: unknown = body;
  for (const p of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

const PREVIEW_CHARS = 60;
const PREVIEW_DEPTH = 8;

/**
 * A short JSON-like rendering of an offending value for the error message. It walks at most
 * PREVIEW_DEPTH levels and stops once it has PREVIEW_CHARS characters: JSON.stringify of a value
 * nested thousands deep overflows the stack (a 500), and of a huge one costs its whole size.
 */
export function preview(v: unknown): string {
  let out = '';
  const full = () => out.length > PREVIEW_CHARS;
  const walk = (x: unknown, depth: number): void => {
    if (full()) return;
    if (Array.isArray(x) || (typeof x === 'object' && x !== null)) {
      if (depth >= PREVIEW_DEPTH) {
        out += Array.isArray(x) ? '[…]' : '{…}';
        return;
      }
      const array = Array.isArray(x);
      out += array ? '[' : '{';
      let first = true;
      for (const key in x) {
        if (full()) return;
        if (!first) out += ',';
        first = false;
        if (!array) out += `${JSON.stringify(key.slice(0, PREVIEW_CHARS))}:`;
        walk((x as Record<string, unknown>)[key], depth + 1);
      }
      out += array ? ']' : '}';
      return;
    }
    out += typeof x === 'string' ? JSON.stringify(x.slice(0, PREVIEW_CHARS + 1)) : (JSON.stringify(x) ?? String(x));
  };
  walk(v, 0);
  return out.length > PREVIEW_CHARS ? `${out.slice(0, PREVIEW_CHARS - 3)}...` : out;
}
