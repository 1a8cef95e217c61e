/**
 * Request → prompt token ids. Tokenising here, in the server process, keeps the engine's worker
 * busy with the model only, and lets the context-length check answer before anything is queued.
 */
import { chatPromptIds as renderChatIds, type ChatMessage, type ChatPromptOptions } from '../tokenizer/chatTemplate.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { badRequest } from './httpError.js';
import type { ChatMessageBody } from './schemas.js';

/** Per tokenizer: the most UTF-8 bytes one token stands for (computed once over the vocabulary). */
const longestToken = new WeakMap<Tokenizer, number>();

function maxTokenBytes(tokenizer: Tokenizer): number {
  let max = longestToken.get(tokenizer);
  if (max === undefined) {
    max = 1;
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      try {
        max = Math.max(max, tokenizer.tokenBytes(id).length);
      } catch {
        // a hole in the vocabulary
      }
    }
    longestToken.set(tokenizer, max);
  }
  return max;
}

/**
 * Refuses, before any templating or tokenising, text that cannot fit the context: no token
 * covers more than maxTokenBytes bytes, so `bytes` of text are at least bytes / maxTokenBytes
 * tokens. Tokenising runs on the HTTP event loop; without this bound a multi-megabyte message
 * would stall every client for seconds only to be refused as too long afterwards.
 */
export function refuseTextThatCannotFit(tokenizer: Tokenizer, bytes: number, contextLength: number, param: string): void {
  const perToken = maxTokenBytes(tokenizer);
  const atLeast = Math.ceil(bytes / perToken);
  if (atLeast >= contextLength) {
    throw badRequest(
      param,
      `the text of ${param} is ${bytes} bytes, so at least ${atLeast} tokens (no token is longer than ${perToken} bytes), but the context holds ${contextLength}: shorten the ${param}`,
      'context_length_exceeded',
    );
  }
}

/**
 * Chat messages (as tools.ts's renderMessages made them) → prompt ids, through the one
 * chat-rendering function; `continueFinal` continues the last (assistant) message.
 */
export function chatPromptIds(tokenizer: Tokenizer, messages: readonly ChatMessage[], contextLength = Infinity, options: ChatPromptOptions = {}): number[] {
  if (!tokenizer.chatTemplate) {
    throw badRequest('messages', 'the served model has no chat template; use /v1/completions with a raw prompt');
  }
  const bytes = messages.reduce((sum, m) => sum + Buffer.byteLength(m.content) + (m.tool_calls ?? []).reduce((n, c) => n + Buffer.byteLength(c.function.arguments), 0), 0);
  refuseTextThatCannotFit(tokenizer, bytes, contextLength, 'messages');
  return renderChatIds(tokenizer, messages, options);
}

/** A message's content as one string: parts joined, null or absent (a tool-calling turn) empty. */
export function contentText(content: ChatMessageBody['content']): string {
  if (typeof content === 'string') return content;
  if (content == null) return '';
  return content.map((p) => p.text).join('');
}

export const FIM_BEGIN = '<｜fim▁begin｜>';
export const FIM_HOLE = '<｜fim▁hole｜>';
export const FIM_END = '<｜fim▁end｜>';

/**
 * A raw completion prompt: text is untrusted, so special-token spellings stay plain text
 * (parseSpecial false); token-id prompts are taken as given after a range check. With `suffix`,
 * builds DeepSeek-Coder's fill-in-the-middle prompt `<｜fim▁begin｜>prompt<｜fim▁hole｜>suffix<｜fim▁end｜>`.
 */
export function completionPromptIds(tokenizer: Tokenizer, prompt: string | readonly number[], suffix: string | null | undefined, contextLength = Infinity): number[] {
  if (typeof prompt === 'string') refuseTextThatCannotFit(tokenizer, Buffer.byteLength(prompt) + Buffer.byteLength(suffix ?? ''), contextLength, 'prompt');
  if (typeof prompt !== 'string') {
    const bad = prompt.findIndex((id) => id >= tokenizer.vocabSize);
    if (bad >= 0) throw badRequest('prompt', `prompt[${bad}] = ${prompt[bad]} is not a token id: ids run from 0 to ${tokenizer.vocabSize - 1}`);
    if (suffix != null) throw badRequest('suffix', 'suffix needs a string prompt, not token ids');
    return [...prompt];
  }
  if (suffix == null) {
    const ids = tokenizer.encode(prompt, { parseSpecial: false });
    if (ids.length === 0) throw badRequest('prompt', 'prompt must not be empty');
    return ids;
  }
  const [begin, hole, end] = [FIM_BEGIN, FIM_HOLE, FIM_END].map((t) => tokenizer.tokenId(t));
  if (begin === undefined || hole === undefined || end === undefined) {
    throw badRequest('suffix', `suffix (fill-in-the-middle) is not available: the served model's tokenizer has no ${FIM_BEGIN}, ${FIM_HOLE} and ${FIM_END} tokens`);
  }
  const plain = (text: string) => tokenizer.encode(text, { parseSpecial: false, addBos: false });
  const bos = tokenizer.addBosToken && tokenizer.bosId !== null ? [tokenizer.bosId] : [];
  return [...bos, begin, ...plain(prompt), hole, ...plain(suffix), end];
}

/**
 * The engine's token budget for this request: prompt + max tokens must fit the context.
 * Without max_tokens the answer may use the rest of the context, so only the prompt must fit.
 */
export function tokenBudget(promptLength: number, maxTokens: number | null | undefined, contextLength: number, promptParam: string): number {
  if (promptLength >= contextLength) {
    throw badRequest(
      promptParam,
      `the prompt is ${promptLength} tokens but the context holds ${contextLength}, leaving no room to generate: shorten the ${promptParam}`,
      'context_length_exceeded',
    );
  }
  if (maxTokens == null) return contextLength - promptLength;
  if (promptLength + maxTokens > contextLength) {
    throw badRequest(
      'max_tokens',
      `the prompt (${promptLength} tokens) plus max_tokens (${maxTokens}) is ${promptLength + maxTokens}, more than the context of ${contextLength}: lower max_tokens to at most ${contextLength - promptLength}`,
      'context_length_exceeded',
    );
  }
  return maxTokens;
}
