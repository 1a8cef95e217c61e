/**
 * Tool calls (OpenAI's `tools` / `tool_choice`). A model is prompted with the functions and a
 * JSON call format, and its reply is parsed back into `tool_calls`:
 *
 * - the generic format, for every template: the reply is one JSON object
 *   `{"tool_calls": [{"name": "<function>", "arguments": {…}}]}`. With `tool_choice` `required` or
 *   a named function, decoding is constrained to exactly that object, with `arguments` valid under
 *   the function's parameter schema (jsonConstraint.ts), so the arguments always parse and
 *   validate, even on a model that has never seen a tool. With `auto` the model may answer in
 *   text or in that format; a reply that is a call is returned as one.
 * - DeepSeek's own syntax (V2.5/V3 `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
 *   \n```json\n{…}\n```<｜tool▁call▁end｜>…`, V3.1's `NAME<｜tool▁sep｜>{…}`, R1's) is parsed too
 *   (parseDeepSeekToolCalls), for replies of checkpoints trained on it.
 *
 * History goes back through the template: with a template that knows tools (it mentions
 * `tool_calls`, as DeepSeek-V2.5/V3's do), assistant `tool_calls` and `tool` results are handed to
 * it as Hugging Face templates expect; otherwise they are written as text the model can read (the
 * call in the generic format, the result as a user turn naming the call).
 */
import { randomBytes } from 'node:crypto';
import type { JsonSchema } from '../engine/types.js';
import type { ChatMessage } from '../tokenizer/chatTemplate.js';
import { checkSchema } from './engineRequest.js';
import { HttpError } from './httpError.js';
import { chatPromptIds, contentText, tokenBudget } from './prompt.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { ChatBody, ChatMessageBody, ToolBody } from './schemas.js';

export interface ToolCall {
  readonly id: string;
  readonly type: 'function';
  readonly function: { readonly name: string; readonly arguments: string };
}

export interface ToolPlan {
  /** none: tools absent or tool_choice "none"; auto: the model decides; forced: required or named. */
  readonly mode: 'none' | 'auto' | 'forced';
  readonly tools: readonly ToolBody[];
  /** The constraint of a forced call (the generic call object). */
  readonly schema: JsonSchema | null;
  readonly parallel: boolean;
}

/** Parallel calls allowed in one reply (OpenAI sets no number; this keeps a reply bounded). */
export const MAX_PARALLEL_CALLS = 8;

export function toolPlan(body: Pick<ChatBody, 'tools' | 'tool_choice' | 'parallel_tool_calls'>): ToolPlan {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  const parallel = body.parallel_tool_calls !== false;
  // Each function's parameters must be enforceable, whatever the choice: a 400 names the keyword.
  tools.forEach((t, i) => {
    if (t.function.parameters != null) checkSchema(t.function.parameters, `tools[${i}].function.parameters`);
  });
  if (tools.length === 0 || choice === 'none') return { mode: 'none', tools, schema: null, parallel };
  if (choice === 'auto') return { mode: 'auto', tools, schema: null, parallel };
  const allowed = choice === 'required' ? tools : tools.filter((t) => t.function.name === choice.function.name);
  return { mode: 'forced', tools, schema: callSchema(allowed, parallel && choice === 'required' ? allowed.length : 1), parallel };
}

/**
 * The generic call object for these functions: `{"tool_calls": [{"name", "arguments"}, …]}` with
 * at most `maxCalls` calls. A forced reply may hold as many calls as there are functions (capped
 * at MAX_PARALLEL_CALLS): a model that does not know when to stop would otherwise repeat calls
 * until max_tokens cut the object off.
 */
export function callSchema(tools: readonly ToolBody[], maxCalls: number): JsonSchema {
  const call = (t: ToolBody) => ({
    type: 'object',
    properties: { name: { const: t.function.name }, arguments: t.function.parameters ?? { type: 'object' } },
    required: ['name', 'arguments'],
    additionalProperties: false,
  });
  return {
    type: 'object',
    properties: { tool_calls: { type: 'array', items: { anyOf: tools.map(call) }, minItems: 1, maxItems: Math.max(1, Math.min(maxCalls, MAX_PARALLEL_CALLS)) } },
    required: ['tool_calls'],
    additionalProperties: false,
  };
}

/**
 * The system text that tells the model its functions and the call format. `compact`: only the
 * names (and for auto, the format), for a context too small for the full description (a forced
 * call needs neither: the constraint writes the format and the arguments' shape).
 */
export function toolPrompt(plan: ToolPlan, compact = false): string {
  const names = plan.tools.map((t) => t.function.name).join(', ');
  if (compact && plan.mode === 'forced') return `Call one of these functions: ${names}.`;
  if (compact) return `You can call these functions: ${names}. To call, reply with only {"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}.`;
  const functions = plan.tools.map((t) => ({ name: t.function.name, description: t.function.description ?? '', parameters: t.function.parameters ?? { type: 'object' } }));
  const how = plan.mode === 'forced' ? 'Call a function now.' : 'When a function helps, call it; otherwise answer in text.';
  return [
    `You can call these functions:\n${JSON.stringify(functions)}`,
    `${how} To call, reply with only a JSON object: {"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}.`,
  ].join('\n');
}

/** Whether the chat template renders tool calls and results itself (DeepSeek-V2.5/V3's do). */
export function templateKnowsTools(template: string): boolean {
  return template.includes('tool_calls');
}

/**
 * The validated messages → what the template renders: `developer` as system, the tools'
 * description as (or in front of) the system message, and tool history natively or as text.
 */
export function renderMessages(messages: readonly ChatMessageBody[], plan: ToolPlan, template: string, compact = false): ChatMessage[] {
  const native = templateKnowsTools(template);
  const names = new Map<string, string>();
  const out: ChatMessage[] = [];
  for (const m of messages) {
    const content = contentText(m.content);
    if (m.role === 'assistant' && m.tool_calls != null && m.tool_calls.length > 0) {
      for (const c of m.tool_calls) names.set(c.id, c.function.name);
      if (native) {
        out.push({ role: 'assistant', content, tool_calls: m.tool_calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.function.name, arguments: c.function.arguments } })) });
      } else {
        const calls = m.tool_calls.map((c) => `{"name": ${JSON.stringify(c.function.name)}, "arguments": ${argumentsJson(c.function.arguments)}}`);
        out.push({ role: 'assistant', content: `${content}${content ? '\n' : ''}{"tool_calls": [${calls.join(', ')}]}` });
      }
      continue;
    }
    if (m.role === 'tool') {
      if (native) out.push({ role: 'tool', content, ...(m.tool_call_id != null && { tool_call_id: m.tool_call_id }) });
      else {
        const name = m.tool_call_id != null ? names.get(m.tool_call_id) : undefined;
        out.push({ role: 'user', content: `Result of the function call${name ? ` ${name}` : ''}${m.tool_call_id != null ? ` (${m.tool_call_id})` : ''}: ${content}` });
      }
      continue;
    }
    out.push({ role: m.role === 'developer' ? 'system' : m.role, content });
  }
  if (plan.mode === 'none') return out;
  const prompt = toolPrompt(plan, compact);
  const first = out[0];
  if (first?.role === 'system') out[0] = { ...first, content: `${first.content}\n\n${prompt}` };
  else out.unshift({ role: 'system', content: prompt });
  return out;
}

/**
 * Messages with the tools' description → prompt ids and the token budget. When the full
 * description does not fit the context, the functions are named only (a forced call's
 * constraint writes the format and the arguments' shape anyway).
 */
export function toolPromptIds(
  tokenizer: Tokenizer,
  messages: readonly ChatMessageBody[],
  plan: ToolPlan,
  contextLength: number,
  maxTokens: number | null | undefined,
  continueFinal = false,
): { prompt: number[]; maxTokens: number } {
  const render = (compact: boolean) => {
    const rendered = renderMessages(messages, plan, tokenizer.chatTemplate ?? '', compact);
    const prompt = chatPromptIds(tokenizer, rendered, contextLength, { continueFinal });
    return { prompt, maxTokens: tokenBudget(prompt.length, maxTokens, contextLength, 'messages') };
  };
  try {
    return render(false);
  } catch (e) {
    if (plan.mode === 'none' || !(e instanceof HttpError) || e.code !== 'context_length_exceeded') throw e;
    return render(true);
  }
}

/** Arguments as sent back by a client are a JSON string; anything unparsable goes back as a JSON string. */
function argumentsJson(args: string): string {
  try {
    return JSON.stringify(JSON.parse(args));
  } catch {
    return JSON.stringify(args);
  }
}

const callId = () => `call_${randomBytes(12).toString('hex')}`;

/**
 * A reply → its tool calls, or null when it is text. Accepts the generic object (the whole reply,
 * surrounding whitespace aside) naming known functions, and DeepSeek's syntax.
 */
export function parseToolCalls(text: string, tools: readonly ToolBody[]): ToolCall[] | null {
  const known = new Set(tools.map((t) => t.function.name));
  const deepseek = parseDeepSeekToolCalls(text);
  if (deepseek) return deepseek.every((c) => known.has(c.function.name)) ? deepseek : null;
  let value: unknown;
  try {
    value = JSON.parse(text.trim());
  } catch {
    return null;
  }
  const calls = (value as { tool_calls?: unknown } | null)?.tool_calls;
  if (!Array.isArray(calls) || calls.length === 0) return null;
  const out: ToolCall[] = [];
  for (const c of calls as unknown[]) {
    const { name, arguments: args } = (c ?? {}) as { name?: unknown; arguments?: unknown };
    if (typeof name !== 'string' || !known.has(name) || typeof args !== 'object' || args === null || Array.isArray(args)) return null;
    out.push({ id: callId(), type: 'function', function: { name, arguments: JSON.stringify(args) } });
  }
  return out;
}

const CALLS_BEGIN = '<｜tool▁calls▁begin｜>';
const CALL_BEGIN = '<｜tool▁call▁begin｜>';
const CALL_END = '<｜tool▁call▁end｜>';
const SEP = '<｜tool▁sep｜>';

/**
 * DeepSeek's tool-call syntax → calls, or null when the text has none. V2.5/V3 and R1 write
 * `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>`; V3.1 writes
 * `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`. Calls whose arguments are not JSON
 * make the whole reply text (null), rather than a call a client would choke on.
 */
export function parseDeepSeekToolCalls(text: string): ToolCall[] | null {
  const start = text.indexOf(CALLS_BEGIN);
  if (start < 0) return null;
  const calls: ToolCall[] = [];
  for (const part of text.slice(start + CALLS_BEGIN.length).split(CALL_BEGIN).slice(1)) {
    const body = part.split(CALL_END)[0]!;
    const sep = body.indexOf(SEP);
    if (sep < 0) return null;
    let name: string;
    let args: string;
    const before = body.slice(0, sep).trim();
    const after = body.slice(sep + SEP.length);
    if (before === 'function' || before === '') {
      const newline = after.indexOf('\n');
      name = (newline < 0 ? after : after.slice(0, newline)).trim();
      args = (newline < 0 ? '' : after.slice(newline + 1)).trim().replace(/^```(?:json)?\s*/, '').replace(/\s*```$/, '');
    } else {
      name = before;
      args = after.trim();
    }
    try {
      const parsed: unknown = JSON.parse(args);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
      calls.push({ id: callId(), type: 'function', function: { name, arguments: JSON.stringify(parsed) } });
    } catch {
      return null;
    }
  }
  return calls.length > 0 ? calls : null;
}

/**
 * Streaming in auto mode: text is held back while it could still become a call (it is a prefix
 * of the generic object, or DeepSeek's marker has appeared), and flushed as content once it cannot.
 */
export function couldBeToolCall(text: string): boolean {
  if (text.includes(CALLS_BEGIN)) return true;
  const t = text.replace(/^\s+/, '');
  const head = '{"tool_calls"';
  const compact = t.replace(/\s+/g, '');
  return compact.length < head.length ? head.startsWith(compact) : compact.startsWith(head);
}

/** OpenAI streams a call as a chunk with id, type and name (empty arguments), then argument fragments. */
export function toolCallDeltas(calls: readonly ToolCall[]): { index: number; id?: string; type?: 'function'; function: { name?: string; arguments: string } }[][] {
  const chunks: { index: number; id?: string; type?: 'function'; function: { name?: string; arguments: string } }[][] = [];
  calls.forEach((c, index) => {
    chunks.push([{ index, id: c.id, type: 'function', function: { name: c.function.name, arguments: '' } }]);
    const args = c.function.arguments;
    const piece = Math.max(1, Math.ceil(args.length / 4));
    for (let at = 0; at < args.length; at += piece) chunks.push([{ index, function: { arguments: args.slice(at, at + piece) } }]);
  });
  return chunks;
}

type CallDelta = { index: number; id?: string; type?: 'function'; function: { name?: string; arguments: string } };

/**
 * Streams a forced call as it is generated. Under the constraint the text is exactly the compact
 * call object, `{"tool_calls":[{"name":"f","arguments":{…}},…]}`, name before arguments, so a scan
 * of the text so far finds each call's name and the growing text of its arguments: a call is
 * announced (id, type, name) once its arguments begin, and each push sends the arguments' new
 * bytes, as OpenAI streams them.
 */
export class ToolCallStreamer {
  private text = '';
  private readonly sent: { id: string; chars: number }[] = [];

  /** Whether any call has been announced. */
  get started(): boolean {
    return this.sent.length > 0;
  }

  push(piece: string): CallDelta[][] {
    this.text += piece;
    const out: CallDelta[][] = [];
    scanCalls(this.text).forEach((call, index) => {
      if (call.argsStart < 0 || call.name === null) return;
      let sent = this.sent[index];
      if (!sent) {
        sent = { id: callId(), chars: 0 };
        this.sent[index] = sent;
        out.push([{ index, id: sent.id, type: 'function', function: { name: call.name, arguments: '' } }]);
      }
      const args = this.text.slice(call.argsStart, call.argsEnd < 0 ? this.text.length : call.argsEnd);
      if (args.length > sent.chars) {
        out.push([{ index, function: { arguments: args.slice(sent.chars) } }]);
        sent.chars = args.length;
      }
    });
    return out;
  }
}

/**
 * The calls in (a prefix of) the call object: each one's name once its string is closed, and
 * where its arguments start and end (-1: not yet). A small JSON scanner: strings and escapes
 * are skipped, depth counts brackets (1: the outer object, 2: tool_calls, 3: a call, 4+: its arguments).
 */
function scanCalls(text: string): { name: string | null; argsStart: number; argsEnd: number }[] {
  const calls: { name: string | null; argsStart: number; argsEnd: number }[] = [];
  let depth = 0;
  let key: string | null = null;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"') {
      // Read the whole string (or stop at the end of the text).
      let j = i + 1;
      let value = '';
      let closed = false;
      for (; j < text.length; j++) {
        const c = text[j]!;
        if (c === '\\') {
          value += text.slice(j, j + 2);
          j++;
          continue;
        }
        if (c === '"') {
          closed = true;
          break;
        }
        value += c;
      }
      if (!closed) break;
      if (depth === 3 && expectKey) key = value;
      else if (depth === 3 && key === 'name') calls[calls.length - 1]!.name = value;
      expectKey = false;
      i = j;
      continue;
    }
    if (ch === ':' && depth === 3 && key === 'arguments') {
      calls[calls.length - 1]!.argsStart = i + 1;
      continue;
    }
    if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 3 && ch === '{') calls.push({ name: null, argsStart: -1, argsEnd: -1 });
      if (depth === 3) {
        expectKey = true;
        key = null;
      }
      continue;
    }
    if (ch === '}' || ch === ']') {
      depth--;
      if (depth === 3 && key === 'arguments') calls[calls.length - 1]!.argsEnd = i + 1;
      continue;
    }
    if (ch === ',' && depth === 3) {
      expectKey = true;
      key = null;
    }
  }
  return calls;
}
