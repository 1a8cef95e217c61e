/**
 * Request validation: one zod schema per endpoint, with OpenAI's field names and ranges. Every
 * schema node carries the rule it enforces as its error message, so whatever fails — wrong type,
 * out of range, missing — the 400 names the field (`param`) and says what is allowed.
 * `null` means "not set", as clients send it. A field the schema does not know is a 400 naming it
 * (OpenAI answers `Unrecognized request argument supplied: …`), unless the server runs with
 * `allowUnknownFields`: silently ignoring e.g. `tools` made clients believe they were honoured.
 */
import { z } from 'zod';
import { badRequest, type HttpError } from './httpError.js';

/** OpenAI allows 4 stop strings; the engine's matcher allows 16. */
export const MAX_STOP = 16;
export const MAX_N = 16;
export const MAX_CACHE_SALT = 1024;
/** Prompts in one /v1/completions request (× n choices each, at most MAX_N choices in all). */
export const MAX_PROMPTS = 16;
/** OpenAI's logit_bias range. */
export const MAX_LOGIT_BIAS = 100;

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
const FORMAT = 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}';
const MAX_TOKENS = 'must be an integer ≥ 1 (omit it to allow the rest of the context)';

// Unions are checked by predicate: a zod union reports the inner issue of whichever member got
// furthest (e.g. `stop[0]` too short), but the client should hear about the field as a whole.
const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
const isStop = (v: unknown) => isNonEmptyString(v) || (Array.isArray(v) && v.length <= MAX_STOP && v.every(isNonEmptyString));
const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((id) => Number.isSafeInteger(id) && (id as number) >= 0);
/** One prompt (text or token ids) or several (an array of texts or of id arrays), as OpenAI accepts. */
const isPrompt = (v: unknown) =>
  typeof v === 'string' ||
  isIds(v) ||
  (Array.isArray(v) && v.length > 0 && v.length <= MAX_PROMPTS && (v.every((p) => typeof p === 'string') || v.every(isIds)));

/** Fields both endpoints share. */
const common = {
  model: z.string(rule('must be a string: the id of the served model (see GET /v1/models)')).nullish(),
  max_tokens: num(MAX_TOKENS, { int: true, min: 1 }),
  max_completion_tokens: num(MAX_TOKENS, { int: true, min: 1 }),
  temperature: num('must be a number from 0 to 2', { min: 0, max: 2 }),
  // OpenAI accepts 0 (only the most likely token survives): greedy decoding.
  top_p: num('must be a number from 0 to 1', { min: 0, max: 1 }),
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
  response_format: z
    .discriminatedUnion(
      'type',
      [
        z.object({ type: z.literal('text') }),
        z.object({ type: z.literal('json_object') }),
        z.object({
          type: z.literal('json_schema'),
          json_schema: z.object(
            {
              name: z.string(rule('must be a string')).optional(),
              description: z.string(rule('must be a string')).optional(),
              schema: z.record(z.unknown(), rule('must be a JSON Schema object')).optional(),
              strict: z.boolean(rule('must be a boolean')).nullish(),
            },
            rule('must be an object like {"name": "...", "schema": {...}, "strict": true}'),
          ),
        }),
      ],
      rule(FORMAT),
    )
    .nullish(),
  /** Token id (as a string key, as OpenAI sends it) → bias added to its logit, -100 to 100; -100 bans it. */
  logit_bias: z
    .record(
      z.string().regex(/^\d+$/, say('keys must be token ids (decimal integers as strings)')),
      z.number(rule(`values must be numbers from -${MAX_LOGIT_BIAS} to ${MAX_LOGIT_BIAS}`)).min(-MAX_LOGIT_BIAS, say(`values must be numbers from -${MAX_LOGIT_BIAS} to ${MAX_LOGIT_BIAS}`)).max(MAX_LOGIT_BIAS, say(`values must be numbers from -${MAX_LOGIT_BIAS} to ${MAX_LOGIT_BIAS}`)),
      rule('must be an object mapping token ids to biases from -100 to 100'),
    )
    .nullish(),
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
const ROLE = 'must be one of "system", "developer", "user", "assistant", "tool"';
const TOOL_CALL = 'must be an array of {"id", "type": "function", "function": {"name", "arguments"}} tool calls';
const toolCall = z.object(
  {
    id: z.string(rule('must be a string')),
    type: z.literal('function', rule('must be "function"')),
    function: z.object({ name: z.string(rule('must be a string')), arguments: z.string(rule('must be a string of JSON')) }, rule('must be {"name", "arguments"}')),
  },
  rule(TOOL_CALL),
);
const messageObject = z.object(
  {
    // `developer` is OpenAI's newer name for the system role; it is rendered as a system message.
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool'], rule(ROLE)),
    // An assistant turn that only called tools may have null or no content.
    content: z.union([z.string(), z.array(textPart), z.null()], rule(CONTENT)).optional(),
    name: z.string(rule('must be a string')).nullish(),
    tool_calls: z.array(toolCall, rule(TOOL_CALL)).nullish(),
    tool_call_id: z.string(rule('must be a string')).nullish(),
    /** DeepSeek's chat prefix completion (/beta): the reply continues this last assistant message. */
    prefix: z.boolean(rule('must be a boolean')).nullish(),
    /** DeepSeek's field on earlier assistant turns; like DeepSeek's API, it is not sent to the model again. */
    reasoning_content: z.string(rule('must be a string')).nullish(),
  },
  rule('must be an object with "role" and "content"'),
);
const message = messageObject.superRefine((m, ctx) => {
  if (m.content === undefined && !(m.role === 'assistant' && m.tool_calls != null)) {
    ctx.addIssue({ code: 'custom', path: ['content'], message: CONTENT });
  }
});

export const MAX_TOOLS = 128;
const TOOL = 'must be an array of {"type": "function", "function": {"name", "description", "parameters"}} tools';
const FUNCTION_NAME = 'must be 1 to 64 letters, digits, underscores or dashes';
const tool = z.object(
  {
    type: z.literal('function', rule('must be "function" (the only tool type)')),
    function: z.object(
      {
        name: z.string(rule(FUNCTION_NAME)).regex(/^[A-Za-z0-9_-]{1,64}$/, say(FUNCTION_NAME)),
        description: z.string(rule('must be a string')).nullish(),
        parameters: z.record(z.unknown(), rule('must be a JSON Schema object')).nullish(),
        strict: z.boolean(rule('must be a boolean')).nullish(),
      },
      rule('must be {"name", "description", "parameters"}'),
    ),
  },
  rule(TOOL),
);
const TOOL_CHOICE = 'must be "none", "auto", "required" or {"type": "function", "function": {"name": "..."}}';
const toolChoice = z.union(
  [z.enum(['none', 'auto', 'required']), z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) })],
  rule(TOOL_CHOICE),
);

const chatObject = z.object({
  ...common,
  messages: z.array(message, rule('must be a non-empty array of {"role", "content"} messages')).min(1, say('must be a non-empty array of {"role", "content"} messages')),
  logprobs: bool('must be a boolean'),
  top_logprobs: num('must be an integer from 0 to 20', { int: true, min: 0, max: 20 }),
  tools: z.array(tool, rule(TOOL)).max(MAX_TOOLS, say(`must hold at most ${MAX_TOOLS} tools`)).nullish(),
  tool_choice: toolChoice.nullish(),
  parallel_tool_calls: bool('must be a boolean'),
});

export const chatSchema = chatObject.superRefine((v, ctx) => {
  commonRefinements(v, ctx);
  if (v.top_logprobs != null && v.logprobs !== true) {
    ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'requires "logprobs": true' });
  }
  const choice = v.tool_choice;
  if (choice != null && choice !== 'none' && choice !== 'auto' && (v.tools ?? []).length === 0) {
    ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: 'needs "tools": there is no function to call' });
  }
  if (typeof choice === 'object' && choice !== null && !(v.tools ?? []).some((t) => t.function.name === choice.function.name)) {
    ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: `names ${JSON.stringify(choice.function.name)}, which is not one of the tools` });
  }
  v.messages.forEach((m, i) => {
    if (m.prefix === true && (i !== v.messages.length - 1 || m.role !== 'assistant')) {
      ctx.addIssue({ code: 'custom', path: ['messages', i, 'prefix'], message: 'is only allowed on the last message, an assistant message' });
    }
  });
});

const PROMPT = `must be a string, an array of token ids, or an array of at most ${MAX_PROMPTS} strings or token-id arrays (one choice per prompt)`;
const completionObject = z.object({
  ...common,
  prompt: z.custom<string | number[] | string[] | number[][]>(isPrompt, say(PROMPT)),
  suffix: z.string(rule('must be a string')).nullish(),
  echo: bool('must be a boolean'),
  logprobs: num('must be an integer from 0 to 5', { int: true, min: 0, max: 5 }),
});
export const completionSchema = completionObject.superRefine((v, ctx) => {
  commonRefinements(v, ctx);
  if (v.echo === true && v.logprobs != null) {
    ctx.addIssue({
      code: 'custom',
      path: ['echo'],
      message: 'cannot be combined with logprobs: dseek does not compute log-probabilities of prompt tokens',
    });
  }
});

/** The fields each endpoint knows; anything else is a 400 unless unknown fields are allowed. */
export const CHAT_FIELDS: ReadonlySet<string> = new Set(Object.keys(chatObject.shape));
export const COMPLETION_FIELDS: ReadonlySet<string> = new Set(Object.keys(completionObject.shape));
const MESSAGE_FIELDS: ReadonlySet<string> = new Set(Object.keys(messageObject.shape));

/**
 * A 400 naming the first field the endpoint does not know (top level, and in each chat message),
 * as OpenAI answers. Silence would be worse: a client sending e.g. `functions` would believe it
 * was honoured.
 */
export function rejectUnknownFields(body: unknown, known: ReadonlySet<string>): void {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
  for (const key of Object.keys(body)) {
    if (!known.has(key)) throw unknownField(key);
  }
  const messages = (body as { messages?: unknown }).messages;
  if (known === CHAT_FIELDS && Array.isArray(messages)) {
    messages.forEach((m: unknown, i) => {
      if (typeof m !== 'object' || m === null || Array.isArray(m)) return;
      for (const key of Object.keys(m)) if (!MESSAGE_FIELDS.has(key)) throw unknownField(`messages[${i}].${key}`);
    });
  }
}

function unknownField(param: string): HttpError {
  return badRequest(
    param,
    `Unrecognized request argument supplied: ${param}. dseek does not support it; remove it, or start the server with --allow-unknown-fields to have unknown fields ignored`,
    'unknown_parameter',
  );
}

export type ChatBody = z.infer<typeof chatSchema>;
export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatMessageBody = z.infer<typeof message>;
export type ToolBody = z.infer<typeof tool>;
export type ToolChoiceBody = z.infer<typeof toolChoice>;

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
