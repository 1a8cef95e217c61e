// @ts-check
/**
 * Fitting a conversation into the model's context. The page cannot tokenise, but the server
 * counts for it: an answer's length is usage.completion_tokens, and a user message's is what the
 * request's usage.prompt_tokens adds to the messages before it. Messages not counted yet (the
 * new one) are estimated from their characters at the ratio learned so far. The oldest turns are
 * left out first; the newest user message is always sent. If the estimate was too hopeful, the
 * server answers context_length_exceeded and the page leaves out one more turn and asks again.
 */

/** @typedef {{ role: 'system' | 'user' | 'assistant', content: string, tokens?: number }} Message */

/** Chat-template tokens around each message (role markers, separators), roughly. */
export const TOKENS_PER_MESSAGE = 6;
/** Tokens per character when nothing is known yet: ≈ 3.3 characters per token, typical of BPE on English. */
export const DEFAULT_TOKENS_PER_CHAR = 0.3;

/**
 * @param {readonly Message[]} messages
 * @param {number} tokensPerChar
 */
export function estimateTokens(messages, tokensPerChar) {
  return messages.reduce((sum, m) => sum + (m.tokens ?? Math.ceil(m.content.length * tokensPerChar) + TOKENS_PER_MESSAGE), 0);
}

/**
 * The tokens the last message of `sent` took: the server's prompt count minus the others (counted
 * or estimated). Null when that leaves nothing plausible.
 * @param {readonly Message[]} sent
 * @param {number} promptTokens
 * @param {number} tokensPerChar
 */
export function lastMessageTokens(sent, promptTokens, tokensPerChar) {
  const rest = estimateTokens(sent.slice(0, -1), tokensPerChar);
  const own = promptTokens - rest;
  return own > 0 ? own : null;
}

/**
 * The newest part of `history` (user/assistant turns, oldest first) that fits `budget` tokens
 * together with `system`; it always starts with a user message and keeps the last one.
 * @param {readonly Message[]} history
 * @param {Message | null} system
 * @param {number} budget prompt tokens available (context minus the room kept for the answer)
 * @param {number} tokensPerChar
 * @returns {{ messages: Message[], dropped: number }}
 */
export function fitContext(history, system, budget, tokensPerChar) {
  const fixed = system ? [system] : [];
  let start = history.length - 1;
  while (start > 0 && history[start]?.role !== 'user') start--;
  // Walk back turn by turn while the estimate fits.
  for (let s = start - 1; s >= 0; s--) {
    if (history[s]?.role !== 'user') continue;
    if (estimateTokens([...fixed, ...history.slice(s)], tokensPerChar) > budget) break;
    start = s;
  }
  return { messages: [...fixed, ...history.slice(Math.max(0, start))], dropped: Math.max(0, start) };
}

/**
 * `messages` with its oldest turn (after any system message) left out, or null if only the
 * newest user message is left.
 * @param {readonly Message[]} messages
 * @returns {Message[] | null}
 */
export function dropOldestTurn(messages) {
  const head = messages[0]?.role === 'system' ? 1 : 0;
  let next = head + 1;
  while (next < messages.length && messages[next]?.role !== 'user') next++;
  if (next >= messages.length) return null;
  return [...messages.slice(0, head), ...messages.slice(next)];
}

/**
 * Tokens per character of a message whose token count is known; null for short texts.
 * @param {string} text
 * @param {number} tokens
 */
export function calibrate(text, tokens) {
  const content = tokens - TOKENS_PER_MESSAGE;
  if (text.length < 20 || content <= 0) return null;
  return Math.min(1.5, Math.max(0.05, content / text.length));
}
