/**
 * POST /v1/chat/completions (also /chat/completions and /beta/chat/completions): OpenAI
 * chat.completion / chat.completion.chunk objects, with DeepSeek's reasoning_content and
 * prefix completion, and tool calls (tools.ts).
 */
import { randomBytes } from 'node:crypto';
import { cacheSaltOf, checkLogitBias, checkModel, engineRequests, requestedMaxTokens } from '../engineRequest.js';
import type { LogprobEntry } from '../generation.js';
import { badRequest } from '../httpError.js';
import { promptOpensThinking, ReasoningSplitter, splitReasoning, thinks } from '../reasoning.js';
import { Events, respond, type Finish, type Formatter } from '../respond.js';
import { CHAT_FIELDS, chatSchema, parseBody, rejectUnknownFields } from '../schemas.js';
import { couldBeToolCall, parseToolCalls, ToolCallStreamer, toolCallDeltas, toolPlan, toolPromptIds, type ToolCall, type ToolPlan } from '../tools.js';
import type { Route, ServerContext } from '../types.js';

export function chatRoute(ctx: ServerContext): Route {
  return async (req) => {
    if (!ctx.allowUnknownFields) rejectUnknownFields(req.body, CHAT_FIELDS);
    const body = parseBody(chatSchema, req.body);
    const model = checkModel(body, ctx);
    checkLogitBias(body, ctx.tokenizer.vocabSize);
    const tools = toolPlan(body);
    if (tools.mode === 'forced' && body.response_format != null && body.response_format.type !== 'text') {
      throw badRequest('response_format', 'response_format cannot be combined with tool_choice "required" or a named function: the reply is then the tool call');
    }
    const continueFinal = body.messages.at(-1)?.prefix === true;
    const { prompt, maxTokens } = toolPromptIds(ctx.tokenizer, body.messages, tools, ctx.contextLength, requestedMaxTokens(body), continueFinal);
    const topLogprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
    const requests = engineRequests(body, prompt, maxTokens, topLogprobs, cacheSaltOf(ctx.cacheIsolation, req, body));
    // A forced call is decoded under the call object's schema: its arguments always validate.
    const constrained = tools.schema === null ? requests : requests.map((r) => ({ ...r, jsonSchema: tools.schema! }));
    const thinking = !ctx.reasoningInline && !continueFinal && thinks(ctx.tokenizer) ? { opened: promptOpensThinking(ctx.tokenizer, prompt) } : null;
    const plan = {
      requests: constrained,
      prompts: [{ tokens: prompt.length, firstChoice: 0 }],
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
      thinking,
    };
    return respond(ctx, req, plan, chatFormatter(model, body.logprobs === true, plan.includeUsage, tools, thinking, requests.length));
  };
}

/** Per streamed choice: reasoning split off, text held back while it may be a tool call. */
interface StreamState {
  readonly splitter: ReasoningSplitter | null;
  /** Content not yet sent (auto: while it could be a call; forced: all of it). */
  held: string;
  holding: boolean;
  calls: ToolCall[] | null;
  /** Forced calls: streamed as they are written. */
  readonly streamer: ToolCallStreamer | null;
}

function chatFormatter(model: string, logprobs: boolean, includeUsage: boolean, tools: ToolPlan, thinking: { opened: boolean } | null, n: number): Formatter {
  const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, created, model, system_fingerprint: null };
  // With include_usage, OpenAI sends `usage: null` on every chunk but the last.
  const chunk = (choices: unknown[]) => ({ ...head, object: 'chat.completion.chunk', choices, ...(includeUsage && { usage: null }) });
  const lp = (entries: readonly LogprobEntry[]) => (logprobs ? { content: entries.map(chatLogprob), refusal: null } : null);
  const states: StreamState[] = Array.from({ length: n }, () => ({
    splitter: thinking ? new ReasoningSplitter(thinking.opened) : null,
    held: '',
    holding: tools.mode !== 'none',
    calls: null,
    streamer: tools.mode === 'forced' ? new ToolCallStreamer() : null,
  }));
  const deltaChunk = (index: number, delta: Record<string, unknown>, entries: readonly LogprobEntry[] = []) =>
    chunk([{ index, delta, logprobs: entries.length > 0 ? lp(entries) : null, finish_reason: null }]);

  /** Content for the client now: all of it, or none while a tool call may be forming. */
  const release = (s: StreamState, content: string): string => {
    if (!s.holding) return content;
    s.held += content;
    if (tools.mode === 'auto' && !couldBeToolCall(s.held)) {
      s.holding = false;
      const out = s.held;
      s.held = '';
      return out;
    }
    return '';
  };

  return {
    final: (choices, usage) => ({
      ...head,
      object: 'chat.completion',
      choices: choices.map((c) => {
        const { reasoning, content } = thinking ? splitReasoning(c.text, thinking.opened) : { reasoning: null, content: c.text };
        const calls = tools.mode !== 'none' && c.finishReason === 'stop' ? parseToolCalls(content, tools.tools) : null;
        return {
          index: c.index,
          message: {
            role: 'assistant',
            content: calls ? null : content,
            ...(thinking && { reasoning_content: reasoning }),
            ...(calls && { tool_calls: calls }),
            refusal: null,
          },
          logprobs: lp(c.logprobs),
          finish_reason: calls ? 'tool_calls' : c.finishReason,
        };
      }),
      usage,
    }),
    opening: (index) => chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]),
    delta: (u) => {
      const s = states[u.choice]!;
      if (s.streamer) {
        // A forced call: the text is the call object; its calls go out as tool_calls deltas.
        s.held += u.text;
        const deltas = s.streamer.push(u.text);
        return deltas.length > 0 ? new Events(deltas.map((calls) => deltaChunk(u.choice, { tool_calls: calls }))) : null;
      }
      const split = s.splitter ? s.splitter.push(u.text) : { reasoning: '', content: u.text };
      const content = release(s, split.content);
      if (split.reasoning !== '') return deltaChunk(u.choice, { reasoning_content: split.reasoning, ...(content && { content }) }, u.logprobs);
      if (content !== '' || (u.logprobs.length > 0 && !s.holding)) return deltaChunk(u.choice, { content }, u.logprobs);
      return null;
    },
    beforeFinish: (u: Finish) => {
      const s = states[u.choice]!;
      const out: unknown[] = [];
      const rest = s.splitter ? s.splitter.end() : { reasoning: '', content: '' };
      if (rest.reasoning !== '') out.push(deltaChunk(u.choice, { reasoning_content: rest.reasoning }));
      const content = release(s, rest.content);
      if (content !== '') out.push(deltaChunk(u.choice, { content }));
      if (s.holding) {
        s.calls = u.reason === 'stop' ? parseToolCalls(s.held, tools.tools) : null;
        // Forced calls were streamed already; a call cut off by max_tokens ends with finish_reason length.
        if (!s.streamer?.started) {
          if (s.calls) for (const calls of toolCallDeltas(s.calls)) out.push(deltaChunk(u.choice, { tool_calls: calls }));
          else if (s.held !== '') out.push(deltaChunk(u.choice, { content: s.held }));
        }
        s.held = '';
        s.holding = false;
      }
      return out;
    },
    finish: (u) => chunk([{ index: u.choice, delta: {}, logprobs: null, finish_reason: states[u.choice]!.calls ? 'tool_calls' : u.reason }]),
    usage: (usage) => ({ ...head, object: 'chat.completion.chunk', choices: [], usage }),
  };
}

function chatLogprob(e: LogprobEntry) {
  const one = (t: LogprobEntry['chosen']) => ({ token: t.text, logprob: t.logprob, bytes: [...t.bytes] });
  return { ...one(e.chosen), top_logprobs: e.top.map(one) };
}
