/** Validated OpenAI fields → the engine's requests, one per choice. */
import { createHash } from 'node:crypto';
import type { SamplingOptions } from '../engine/sampler.js';
import { compileSchema } from '../engine/jsonConstraint.js';
import type { EngineRequest, JsonSchema } from '../engine/types.js';
import { InvalidInputError } from '../errors.js';
import { badRequest, HttpError } from './httpError.js';
import type { ChatBody, CompletionBody } from './schemas.js';
import type { CacheIsolation, ParsedRequest, ServerContext } from './types.js';

type Common = ChatBody | CompletionBody;

/**
 * The model field is optional (lenient) and may be any of the served model's names, in any case
 * (`DeepSeek-Chat` is `deepseek-chat`); naming another model is a 404, as OpenAI answers. Returns
 * the name responses report: the listed spelling of the one asked for.
 */
export function checkModel(body: Pick<Common, 'model'>, ctx: Pick<ServerContext, 'modelName' | 'modelNames'>): string {
  return body.model == null ? ctx.modelName : resolveModelName(ctx, body.model);
}

export function resolveModelName(ctx: Pick<ServerContext, 'modelName' | 'modelNames'>, asked: string): string {
  const lower = asked.toLowerCase();
  const found = ctx.modelNames.find((n) => n.toLowerCase() === lower);
  if (found !== undefined) return found;
  const names = ctx.modelNames.map((n) => JSON.stringify(n)).join(', ');
  throw new HttpError(404, `the model ${JSON.stringify(asked)} does not exist: this server serves ${names} (one model; the others are aliases, add more with --alias)`, 'invalid_request_error', 'model', 'model_not_found');
}

/** logit_bias keys must name tokens of the served vocabulary. */
export function checkLogitBias(body: Pick<Common, 'logit_bias'>, vocabSize: number): void {
  for (const id of Object.keys(body.logit_bias ?? {})) {
    if (Number(id) >= vocabSize) throw badRequest(`logit_bias.${id}`, `logit_bias names token ${id}, but the vocabulary's ids run from 0 to ${vocabSize - 1}`);
  }
}

/** max_completion_tokens is OpenAI's newer name for max_tokens; it wins when both are sent. */
export function requestedMaxTokens(body: Common): number | undefined {
  return body.max_completion_tokens ?? body.max_tokens ?? undefined;
}

export function samplingOf(body: Common): SamplingOptions {
  const s: { -readonly [K in keyof SamplingOptions]: SamplingOptions[K] } = {};
  if (body.temperature != null) s.temperature = body.temperature;
  // top_p 0 keeps only the most likely token: greedy, whatever the temperature.
  if (body.top_p === 0) s.temperature = 0;
  else if (body.top_p != null) s.topP = body.top_p;
  if (body.top_k != null) s.topK = body.top_k;
  if (body.min_p != null) s.minP = body.min_p;
  if (body.frequency_penalty != null) s.frequencyPenalty = body.frequency_penalty;
  if (body.presence_penalty != null) s.presencePenalty = body.presence_penalty;
  if (body.repetition_penalty != null) s.repetitionPenalty = body.repetition_penalty;
  if (body.logit_bias != null) s.logitBias = Object.entries(body.logit_bias).map(([id, bias]) => [Number(id), bias] as const);
  return s;
}

/**
 * n requests for the n choices. With a seed, choice i uses seed + i: reproducible, yet the
 * choices differ (n identical answers would be useless).
 */
export function engineRequests(body: Common, prompt: readonly number[], maxTokens: number, topLogprobs: number | undefined, cacheSalt = ''): EngineRequest[] {
  const n = body.n ?? 1;
  const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
  const sampling = samplingOf(body);
  return Array.from({ length: n }, (_, i): EngineRequest => ({
    prompt,
    maxTokens,
    sampling: body.seed != null ? { ...sampling, seed: choiceSeed(body.seed, i) } : sampling,
    ...(stop !== undefined && { stop }),
    ...(topLogprobs !== undefined && { topLogprobs }),
    ...constraintOf(body),
    ...(body.dseek?.routing === true && { routing: true }),
    ...(cacheSalt !== '' && { cacheSalt }),
  }));
}

/**
 * response_format → the engine's JSON constraint. A json_schema is compiled here once, so a
 * keyword the automaton cannot enforce is a 400 naming it rather than output that ignores it.
 */
export function constraintOf(body: Pick<Common, 'response_format'>): Pick<EngineRequest, 'jsonMode' | 'jsonSchema'> {
  const format = body.response_format;
  if (format?.type === 'json_object') return { jsonMode: true };
  if (format?.type !== 'json_schema') return {};
  const schema = format.json_schema.schema;
  if (schema === undefined) throw badRequest('response_format.json_schema.schema', 'response_format.json_schema.schema is missing: give the JSON Schema the output must follow');
  checkSchema(schema, 'response_format.json_schema');
  return { jsonSchema: schema };
}

/** Compiles `schema` to see that constrained decoding can enforce it; a 400 under `param` otherwise. */
export function checkSchema(schema: JsonSchema, param: string): void {
  try {
    compileSchema(schema);
  } catch (e) {
    if (e instanceof InvalidInputError) throw badRequest(`${param}.${e.field}`, `${param}.${e.message}`, 'unsupported_schema');
    throw e;
  }
}

/**
 * The prefix-cache partition of a request: its tenant under the isolation mode (the API key's
 * digest, and the `user` field) and its own `cache_salt`, hashed into one opaque string. ''
 * (the shared partition) only when isolation is off and no salt was sent.
 */
export function cacheSaltOf(isolation: CacheIsolation, req: Pick<ParsedRequest, 'apiKeyDigest'>, body: Pick<Common, 'user' | 'cache_salt'>): string {
  const parts: string[] = [];
  if (isolation !== 'none') parts.push(`key:${req.apiKeyDigest ?? ''}`);
  if (isolation === 'user') parts.push(`user:${body.user ?? ''}`);
  if (body.cache_salt != null) parts.push(`salt:${body.cache_salt}`);
  if (parts.length === 0) return '';
  // JSON keeps the parts unambiguous (a user name cannot forge another tenant's separator).
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** seed + i, stepping down instead at the top of the safe-integer range. */
function choiceSeed(seed: number, i: number): number {
  return Number.isSafeInteger(seed + i) ? seed + i : seed - i;
}
