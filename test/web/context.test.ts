/** The chat page's context fitting (web/context.js): which turns of a conversation are sent. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../paths.js';

interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
  tokens?: number;
}
interface ContextModule {
  TOKENS_PER_MESSAGE: number;
  estimateTokens(messages: readonly Message[], tokensPerChar: number): number;
  fitContext(history: readonly Message[], system: Message | null, budget: number, tokensPerChar: number): { messages: Message[]; dropped: number };
  dropOldestTurn(messages: readonly Message[]): Message[] | null;
  lastMessageTokens(sent: readonly Message[], promptTokens: number, tokensPerChar: number): number | null;
  calibrate(text: string, tokens: number): number | null;
}

const ctx = (await import(pathToFileURL(join(repoRoot, 'web', 'context.js')).href)) as ContextModule;
const user = (content: string, tokens?: number): Message => (tokens === undefined ? { role: 'user', content } : { role: 'user', content, tokens });
const bot = (content: string, tokens?: number): Message => (tokens === undefined ? { role: 'assistant', content } : { role: 'assistant', content, tokens });

test('counted messages use their count; others are estimated from characters', () => {
  const per = ctx.TOKENS_PER_MESSAGE;
  assert.equal(ctx.estimateTokens([user('x'.repeat(100))], 0.25), 25 + per);
  assert.equal(ctx.estimateTokens([user('x'.repeat(100), 7), bot('y', 40)], 0.25), 47);
});

test('the newest turns that fit are kept, starting with a user message; the system prompt always goes', () => {
  const history = [user('a', 50), bot('b', 50), user('c', 50), bot('d', 50), user('e', 50)];
  const system: Message = { role: 'system', content: 'be brief', tokens: 10 };
  assert.deepEqual(ctx.fitContext(history, system, 1000, 0.3).messages, [system, ...history]);
  const fit = ctx.fitContext(history, system, 170, 0.3);
  assert.deepEqual(fit.messages, [system, history[2], history[3], history[4]]);
  assert.equal(fit.dropped, 2);
  // Even when nothing fits, the newest user message is sent (the server then says why it cannot).
  assert.deepEqual(ctx.fitContext(history, null, 10, 0.3).messages, [history[4]]);
});

test('dropping the oldest turn keeps the system prompt and starts at the next user message', () => {
  const sys: Message = { role: 'system', content: 's' };
  const m = [sys, user('a'), bot('b'), user('c'), bot('d'), user('e')];
  assert.deepEqual(ctx.dropOldestTurn(m), [sys, user('c'), bot('d'), user('e')]);
  assert.deepEqual(ctx.dropOldestTurn([sys, user('e')]), null);
  assert.deepEqual(ctx.dropOldestTurn([user('a'), user('b')]), [user('b')]);
});

test('the server’s prompt count gives the new message’s tokens and a characters-per-token ratio', () => {
  const sent = [user('a', 20), bot('b', 30), user('x'.repeat(40))];
  assert.equal(ctx.lastMessageTokens(sent, 66, 0.3), 16);
  assert.equal(ctx.lastMessageTokens(sent, 40, 0.3), null);
  assert.equal(ctx.calibrate('x'.repeat(40), 16), (16 - ctx.TOKENS_PER_MESSAGE) / 40);
  assert.equal(ctx.calibrate('short', 9), null);
});
