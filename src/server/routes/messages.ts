/**
 * POST /v1/messages (also /anthropic/v1/messages, where DeepSeek serves it): the Anthropic
 * Messages API, so the Anthropic SDK and tools built on it work unchanged. A request is turned
 * into the chat route's pieces — the same template, tool plan, constraint and engine requests —
 * and the answer into Anthropic's message object or its event stream (message_start,
 * content_block_start / _delta / _stop per block, message_delta with the stop reason and usage,
 * message_stop). Errors come in Anthropic's shape: `{"type": "error", "error": {type, message}}`.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { EngineRequest } from '../../engine/types.js';
import { cacheSaltOf, resolveModelName } from '../engineRequest.js';
import { badRequest, type HttpError } from '../httpError.js';
import { Events, respond, type BilledUsage, type Finish, type Formatter } from '../respond.js';
import { parseBody, rejectUnknownFields, type ChatMessageBody, type ToolBody } from '../schemas.js';
import { couldBeToolCall, parseToolCalls, toolPlan, toolPromptIds, type ToolCall } from '../tools.js';
import type { Route, ServerContext } from '../types.js';

const rule = (message: string) => ({ errorMap: () => ({ message }) });

// cache_control is accepted on every block: dseek caches every prompt prefix on its own.
const cacheControl = z.object({ type: z.string() }).passthrough().nullish();
const textBlock = z.object({ type: z.literal('text'), text: z.string(rule('must be a string')), cache_control: cacheControl }).passthrough();
const toolUseBlock = z.object({ type: z.literal('tool_use'), id: z.string(), name: z.string(), input: z.record(z.unknown()), cache_control: cacheControl });
const toolResultBlock = z.object({
  type: z.literal('tool_result'),
  tool_use_id: z.string(),
  content: z.union([z.string(), z.array(textBlock)]).optional(),
  is_error: z.boolean().optional(),
  cache_control: cacheControl,
});
const BLOCKS = 'must be a string or an array of text, tool_use and tool_result blocks (images and documents are not supported)';
const block = z.discriminatedUnion('type', [textBlock, toolUseBlock, toolResultBlock], rule(BLOCKS));
const anthropicMessage = z.object({
  role: z.enum(['user', 'assistant'], rule('must be "user" or "assistant"')),
  content: z.union([z.string(), z.array(block)], rule(BLOCKS)),
});
const anthropicTool = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1 to 64 letters, digits, underscores or dashes'),
  description: z.string().optional(),
  input_schema: z.record(z.unknown(), rule('must be a JSON Schema object')),
  cache_control: cacheControl,
});
const TOOL_CHOICE = 'must be {"type": "auto"}, {"type": "any"}, {"type": "none"} or {"type": "tool", "name": "..."}';
const messagesObject = z.object({
  model: z.string(rule('must be a string: the served model or one of its aliases')),
  max_tokens: z.number(rule('must be an integer ≥ 1')).int().min(1),
  messages: z.array(anthropicMessage).min(1, 'must be a non-empty array of messages'),
  system: z.union([z.string(), z.array(textBlock)], rule('must be a string or an array of text blocks')).optional(),
  stop_sequences: z.array(z.string().min(1)).max(16, 'at most 16 stop sequences').optional(),
  stream: z.boolean().optional(),
  temperature: z.number(rule('must be a number from 0 to 1')).min(0).max(1).optional(),
  top_p: z.number(rule('must be a number from 0 to 1')).min(0).max(1).optional(),
  top_k: z.number(rule('must be an integer ≥ 0')).int().min(0).optional(),
  tools: z.array(anthropicTool).max(128).optional(),
  tool_choice: z
    .object({ type: z.enum(['auto', 'any', 'none', 'tool'], rule(TOOL_CHOICE)), name: z.string().optional(), disable_parallel_tool_use: z.boolean().optional() }, rule(TOOL_CHOICE))
    .optional(),
  metadata: z.object({ user_id: z.string().nullish() }).optional(),
});
const MESSAGES_FIELDS: ReadonlySet<string> = new Set(Object.keys(messagesObject.shape));

export function isAnthropicPath(path: string): boolean {
  return /^(\/anthropic)?\/v1\/messages(\/count_tokens)?$/.test(path);
}

/** An HttpError in Anthropic's error shape; the type follows the status as Anthropic's API uses them. */
export function anthropicErrorBody(err: HttpError): unknown {
  const type =
    err.status === 401 ? 'authentication_error'
    : err.status === 403 ? 'permission_error'
    : err.status === 404 ? 'not_found_error'
    : err.status === 413 ? 'request_too_large'
    : err.status === 429 ? 'rate_limit_error'
    : err.status === 503 ? 'overloaded_error'
    : err.status >= 500 ? 'api_error'
    : 'invalid_request_error';
  return { type: 'error', error: { type, message: err.param ? `${err.param}: ${err.message}` : err.message } };
}

export function messagesRoute(ctx: ServerContext): Route {
  return async (req) => {
    if (!ctx.allowUnknownFields) rejectUnknownFields(req.body, MESSAGES_FIELDS);
    const body = parseBody(messagesObject, req.body);
    const model = resolveModelName(ctx, body.model);
    const tools: ToolBody[] = (body.tools ?? []).map((t) => ({ type: 'function', function: { name: t.name, description: t.description ?? null, parameters: t.input_schema } }));
    const choice = body.tool_choice;
    if (choice?.type === 'tool' && !tools.some((t) => t.function.name === choice.name)) {
      throw badRequest('tool_choice.name', `tool_choice names ${JSON.stringify(choice.name ?? null)}, which is not one of the tools`);
    }
    const plan = toolPlan({
      tools,
      tool_choice: choice === undefined ? undefined : choice.type === 'any' ? 'required' : choice.type === 'tool' ? { type: 'function', function: { name: choice.name! } } : choice.type,
      parallel_tool_calls: choice?.disable_parallel_tool_use !== true,
    });
    const { prompt, maxTokens } = toolPromptIds(ctx.tokenizer, toChatMessages(body), plan, ctx.contextLength, body.max_tokens);
    const salt = cacheSaltOf(ctx.cacheIsolation, req, { user: body.metadata?.user_id ?? null, cache_salt: null });
    const request: EngineRequest = {
      prompt,
      maxTokens,
      // top_p 0 keeps only the most likely token: greedy.
      sampling: {
        ...(body.temperature !== undefined && { temperature: body.temperature }),
        ...(body.top_p === 0 ? { temperature: 0 } : body.top_p !== undefined && { topP: body.top_p }),
        ...(body.top_k !== undefined && { topK: body.top_k }),
      },
      ...(body.stop_sequences !== undefined && body.stop_sequences.length > 0 && { stop: body.stop_sequences }),
      ...(plan.schema !== null && { jsonSchema: plan.schema }),
      ...(salt !== '' && { cacheSalt: salt }),
    };
    const stream = body.stream === true;
    return respond(
      ctx,
      req,
      { requests: [request], prompts: [{ tokens: prompt.length, firstChoice: 0 }], stream, includeUsage: true, sseStyle: 'anthropic' },
      messagesFormatter(model, plan.mode === 'none' ? null : tools, plan.mode),
    );
  };
}

/** POST /v1/messages/count_tokens: the prompt's length as the Messages API would render it. */
export function countTokensRoute(ctx: ServerContext): Route {
  return async (req) => {
    if (!ctx.allowUnknownFields) rejectUnknownFields(req.body, COUNT_FIELDS);
    const body = parseBody(messagesObject.omit({ max_tokens: true, stream: true, stop_sequences: true, temperature: true, top_p: true, top_k: true, metadata: true }), req.body);
    resolveModelName(ctx, body.model);
    const tools: ToolBody[] = (body.tools ?? []).map((t) => ({ type: 'function', function: { name: t.name, description: t.description ?? null, parameters: t.input_schema } }));
    const choice = body.tool_choice;
    const plan = toolPlan({ tools, tool_choice: choice === undefined ? undefined : choice.type === 'any' ? 'required' : choice.type === 'tool' ? { type: 'function', function: { name: choice.name ?? '' } } : choice.type });
    const { prompt } = toolPromptIds(ctx.tokenizer, toChatMessages({ ...body, max_tokens: 1 }), plan, ctx.contextLength, null);
    return { kind: 'json', status: 200, body: { input_tokens: prompt.length } };
  };
}
const COUNT_FIELDS: ReadonlySet<string> = new Set(['model', 'messages', 'system', 'tools', 'tool_choice']);

/** Anthropic's turns → the chat route's messages: tool_use blocks become tool_calls, tool_result blocks tool turns. */
function toChatMessages(body: z.infer<typeof messagesObject>): ChatMessageBody[] {
  const out: ChatMessageBody[] = [];
  const system = typeof body.system === 'string' ? body.system : (body.system ?? []).map((b) => b.text).join('\n');
  if (system !== '') out.push({ role: 'system', content: system });
  for (const m of body.messages) {
    if (typeof m.content === 'string') {
      out.push({ role: m.role, content: m.content });
      continue;
    }
    const text = m.content.flatMap((b) => (b.type === 'text' ? [b.text] : [])).join('');
    if (m.role === 'assistant') {
      const calls = m.content.flatMap((b) => (b.type === 'tool_use' ? [{ id: b.id, type: 'function' as const, function: { name: b.name, arguments: JSON.stringify(b.input) } }] : []));
      out.push({ role: 'assistant', content: text, ...(calls.length > 0 && { tool_calls: calls }) });
      continue;
    }
    for (const b of m.content) {
      if (b.type !== 'tool_result') continue;
      const result = typeof b.content === 'string' ? b.content : (b.content ?? []).map((t) => t.text).join('');
      out.push({ role: 'tool', tool_call_id: b.tool_use_id, content: b.is_error === true ? `Error: ${result}` : result });
    }
    if (text !== '' || !m.content.some((b) => b.type === 'tool_result')) out.push({ role: 'user', content: text });
  }
  return out;
}

const toolUse = (c: ToolCall) => ({ type: 'tool_use', id: c.id.replace(/^call_/, 'toolu_'), name: c.function.name, input: JSON.parse(c.function.arguments) as unknown });

function stopReason(reason: 'stop' | 'length', calls: readonly ToolCall[] | null): string {
  return calls ? 'tool_use' : reason === 'length' ? 'max_tokens' : 'end_turn';
}

/** Anthropic's input_tokens excludes cache reads; they are reported apart, as cache_read_input_tokens. */
const anthropicUsage = (u: BilledUsage) => ({
  input_tokens: u.prompt_cache_miss_tokens,
  output_tokens: u.completion_tokens,
  cache_read_input_tokens: u.prompt_cache_hit_tokens,
  cache_creation_input_tokens: 0,
});

function messagesFormatter(model: string, tools: readonly ToolBody[] | null, mode: 'none' | 'auto' | 'forced'): Formatter {
  const id = `msg_${randomBytes(12).toString('hex')}`;
  // Streaming state (one choice): the open text block, text held while it may be a tool call.
  let index = -1;
  let textOpen = false;
  let held = '';
  let holding = tools !== null;
  let reason: string = 'end_turn';
  const startText = (): unknown[] => {
    if (textOpen) return [];
    textOpen = true;
    index++;
    return [{ type: 'content_block_start', index, content_block: { type: 'text', text: '' } }];
  };
  const text = (t: string): unknown[] => (t === '' ? [] : [...startText(), { type: 'content_block_delta', index, delta: { type: 'text_delta', text: t } }]);
  const closeText = (): unknown[] => {
    if (!textOpen) return [];
    textOpen = false;
    return [{ type: 'content_block_stop', index }];
  };
  return {
    final: (choices, usage) => {
      const c = choices[0]!;
      const calls = tools && c.finishReason === 'stop' ? parseToolCalls(c.text, tools) : null;
      return {
        id,
        type: 'message',
        role: 'assistant',
        model,
        content: calls ? calls.map(toolUse) : [{ type: 'text', text: c.text }],
        stop_reason: stopReason(c.finishReason ?? 'length', calls),
        stop_sequence: null,
        usage: anthropicUsage(usage),
      };
    },
    opening: () =>
      new Events([
        { type: 'message_start', message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } } },
        { type: 'ping' },
      ]),
    delta: (u) => {
      if (!holding) return new Events(text(u.text));
      held += u.text;
      if (mode === 'auto' && !couldBeToolCall(held)) {
        holding = false;
        const out = held;
        held = '';
        return new Events(text(out));
      }
      return null;
    },
    beforeFinish: (u: Finish) => {
      const out: unknown[] = [];
      const calls = holding && tools && u.reason === 'stop' ? parseToolCalls(held, tools) : null;
      if (calls) {
        for (const call of calls) {
          index++;
          const block = toolUse(call);
          out.push({ type: 'content_block_start', index, content_block: { ...block, input: {} } });
          out.push({ type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: call.function.arguments } });
          out.push({ type: 'content_block_stop', index });
        }
      } else if (holding) out.push(...text(held));
      held = '';
      holding = false;
      if (index < 0) out.push(...startText()); // an empty answer still has its (empty) text block
      out.push(...closeText());
      reason = stopReason(u.reason, calls);
      return out;
    },
    finish: () => null,
    usage: (usage) => ({ type: 'message_delta', delta: { stop_reason: reason, stop_sequence: null }, usage: anthropicUsage(usage) }),
    trailer: () => [{ type: 'message_stop' }],
  };
}
