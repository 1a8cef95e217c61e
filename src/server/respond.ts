/**
 * The part chat and text completions share: run the engine requests, then answer with one JSON
 * object or a stream of chunks. The endpoint supplies the object shapes (a Formatter).
 */
import type { EngineRequest } from '../engine/types.js';
import { extrasOf, type Extras } from './extras.js';
import { Generation, type ChoiceState, type Update } from './generation.js';
import { HttpError } from './httpError.js';
import type { CancelReason } from './metrics.js';
import { costOf, machineCost, type Cost } from './prices.js';
import type { ParsedRequest, RouteResponse, ServerContext, SseSink, SseStyle } from './types.js';

/**
 * OpenAI's usage object plus DeepSeek's cache fields and our cost. Cache hits appear twice, as
 * DeepSeek's `prompt_cache_hit_tokens` and as OpenAI's `prompt_tokens_details.cached_tokens`,
 * because clients read one or the other (LangChain and the AI SDK's OpenAI provider the latter).
 */
export interface BilledUsage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly prompt_cache_hit_tokens: number;
  readonly prompt_cache_miss_tokens: number;
  readonly prompt_tokens_details: { readonly cached_tokens: number };
  /** reasoning_tokens: generated tokens that went to reasoning_content (a template that thinks). */
  readonly completion_tokens_details: { readonly reasoning_tokens: number };
  readonly cost: Cost;
}

export type Delta = Extract<Update, { kind: 'delta' }>;
export type Finish = Extract<Update, { kind: 'finish' }>;

type JsonObject = Record<string, unknown>;

/** Several events where a Formatter method returns one (Anthropic's stream opens a message and a block at once). */
export class Events {
  constructor(readonly items: readonly unknown[]) {}
}

function send(sink: SseSink, payload: unknown): void {
  if (payload === null) return;
  if (payload instanceof Events) payload.items.forEach((p) => sink.data(p));
  else sink.data(payload);
}

export interface Formatter {
  /** The whole non-streamed response (dseek's extras are added to it). */
  final(choices: readonly ChoiceState[], usage: BilledUsage): JsonObject;
  /** A chunk sent for each choice before any other (chat: the role; completions: the echoed prompt), or null. */
  opening(choice: number): unknown;
  /** The chunk for a delta, or null to send nothing now (text held back, e.g. a tool call being written). */
  delta(update: Delta): unknown;
  /** Chunks sent as soon as a choice finishes, before its finish chunk (held text, tool-call deltas). */
  beforeFinish?(update: Finish): readonly unknown[];
  /** The chunk that ends a choice, or null for none (Anthropic's stream ends with its usage events). */
  finish(update: Finish): JsonObject | null;
  /** The last chunk, `choices: []` with usage (stream_options.include_usage). */
  usage(usage: BilledUsage): JsonObject;
  /** Events after the usage chunk (Anthropic's message_stop). */
  trailer?(): readonly unknown[];
}

export interface Plan {
  readonly requests: readonly EngineRequest[];
  /**
   * Each distinct prompt: its length and the first of its choices. Usage bills every prompt
   * once (n choices of one prompt share it, as OpenAI bills), with that choice's cache split.
   */
  readonly prompts: readonly { readonly tokens: number; readonly firstChoice: number }[];
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** The model thinks first (reasoning tokens are counted); `opened`: the prompt opened `<think>`. */
  readonly thinking?: { readonly opened: boolean } | null;
  readonly sseStyle?: SseStyle;
}

/** Whether the request asked for routing counts (`"dseek": {"routing": true}`). */
function wantsRouting(plan: Plan): boolean {
  return plan.requests.some((r) => r.routing === true);
}

/** The client went away: there is nobody to answer. The server writes nothing more. */
export class ClientGoneError extends Error {
  constructor() {
    super('the client disconnected');
    this.name = 'ClientGoneError';
  }
}

export async function respond(ctx: ServerContext, req: ParsedRequest, plan: Plan, fmt: Formatter): Promise<RouteResponse> {
  if (ctx.maxQueue !== undefined && ctx.engine.stats().queued + plan.requests.length > ctx.maxQueue) {
    throw new HttpError(429, `the server is busy: its queue holds ${ctx.maxQueue} requests; retry shortly`, 'rate_limit_error', null, 'queue_full', { 'retry-after': '1' });
  }
  const gen = new Generation(ctx.engine, plan.requests, req.signal, () => ctx.metrics.firstToken((performance.now() - req.receivedAt) / 1000), {
    thinking: plan.thinking ?? null,
  });
  let handedOver = false;
  try {
    await gen.ready();
    // Nothing generated yet, so nothing to finish with: an error status is the honest answer.
    if (gen.interruptedBy !== null && gen.completionTokens() === 0) throw interruptedError(gen.interruptedBy);

    if (!plan.stream) {
      for await (const _ of gen.updates());
      if (gen.interruptedBy === 'client_disconnect') throw new ClientGoneError();
      if (gen.interruptedBy !== null && gen.completionTokens() === 0) throw interruptedError(gen.interruptedBy);
      const usage = billedUsage(ctx, gen, plan);
      return { kind: 'json', status: 200, body: { ...fmt.final(gen.choices, usage), ...extras(ctx, req, gen, plan, usage) } };
    }
    handedOver = true;
    return { kind: 'sse', style: plan.sseStyle ?? 'openai', run: (sink) => stream(ctx, req, gen, plan, fmt, sink).finally(() => finish(ctx, gen, plan)) };
  } finally {
    if (!handedOver) finish(ctx, gen, plan);
  }
}

async function stream(ctx: ServerContext, req: ParsedRequest, gen: Generation, plan: Plan, fmt: Formatter, sink: SseSink): Promise<void> {
  // While waiting in the queue nothing else flows; comments keep proxies and clients from timing out.
  const keepAlive = setInterval(() => gen.anyQueued() && sink.comment('keep-alive'), ctx.keepAliveMs);
  try {
    for (const c of gen.choices) send(sink, fmt.opening(c.index));
    if (gen.anyQueued()) sink.comment('keep-alive');
    // The latest finish chunk is held back: if it turns out to be the stream's last chunk, it
    // carries dseek's extras (timings, routing), which are only known once every choice is done.
    let held: Finish | null = null;
    for await (const u of gen.updates()) {
      if (u.kind === 'delta') {
        send(sink, fmt.delta(u));
        continue;
      }
      for (const chunk of fmt.beforeFinish?.(u) ?? []) send(sink, chunk);
      if (held) send(sink, fmt.finish(held));
      held = u;
    }
    if (gen.interruptedBy === 'client_disconnect') throw new ClientGoneError();
    const usage = billedUsage(ctx, gen, plan);
    const more = extras(ctx, req, gen, plan, usage);
    if (plan.includeUsage) {
      if (held) send(sink, fmt.finish(held));
      sink.data({ ...fmt.usage(usage), ...more });
      for (const chunk of fmt.trailer?.() ?? []) send(sink, chunk);
    } else if (held) {
      const last = fmt.finish(held);
      if (last !== null) sink.data({ ...last, ...more });
    }
  } finally {
    clearInterval(keepAlive);
  }
}

function extras(ctx: ServerContext, req: ParsedRequest, gen: Generation, plan: Plan, usage: BilledUsage): Extras {
  return extrasOf(gen, usage, req.receivedAt, wantsRouting(plan), ctx.model);
}

/** Cancels leftovers and books the tokens of any request the engine actually worked on. */
function finish(ctx: ServerContext, gen: Generation, plan: Plan): void {
  gen.dispose();
  if (!gen.choices.some((c) => c.started || c.usage !== null)) return;
  const u = billedUsage(ctx, gen, plan);
  ctx.metrics.tokens(u.prompt_tokens, u.completion_tokens, u.prompt_cache_hit_tokens, u.prompt_cache_miss_tokens, u.cost.total);
  if (u.cost.machine !== undefined) ctx.metrics.machine(u.cost.machine, u.cost.machine_seconds ?? 0, u.prompt_cache_miss_tokens + u.completion_tokens);
}

/**
 * With n > 1 a prompt is billed once (as OpenAI does); its cache split is its first choice's,
 * so hit + miss = prompt_tokens holds.
 */
function billedUsage(ctx: ServerContext, gen: Generation, plan: Plan): BilledUsage {
  let promptTokens = 0;
  let hit = 0;
  for (const p of plan.prompts) {
    const first = gen.choices[p.firstChoice]!;
    promptTokens += p.tokens;
    hit += Math.min(p.tokens, Math.max(0, first.usage?.promptCacheHitTokens ?? first.cachedTokens));
  }
  const miss = promptTokens - hit;
  const completion = gen.completionTokens();
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completion,
    total_tokens: promptTokens + completion,
    prompt_cache_hit_tokens: hit,
    prompt_cache_miss_tokens: miss,
    prompt_tokens_details: { cached_tokens: hit },
    completion_tokens_details: { reasoning_tokens: gen.reasoningTokens() },
    cost: ctx.machineCostPerHour === null ? costOf(ctx.prices, hit, miss, completion) : { ...costOf(ctx.prices, hit, miss, completion), ...machineCost(ctx.machineCostPerHour, gen.busySeconds()) },
  };
}

function interruptedError(reason: CancelReason): Error {
  if (reason === 'client_disconnect') return new ClientGoneError();
  if (reason === 'timeout') {
    return new HttpError(408, 'the request timed out before the model produced any output; retry, or ask for fewer tokens', 'timeout_error', null, 'request_timeout');
  }
  return new HttpError(503, 'the server is shutting down; retry on another instance', 'server_error', null, 'server_shutting_down');
}
