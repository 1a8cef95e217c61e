/** POST /v1/chat/completions: OpenAI chat.completion / chat.completion.chunk objects. */
import { randomBytes } from 'node:crypto';
import { cacheSaltOf, checkLogitBias, checkModel, engineRequests, requestedMaxTokens } from '../engineRequest.js';
import type { LogprobEntry } from '../generation.js';
import { chatPromptIds, tokenBudget } from '../prompt.js';
import { respond, type Formatter } from '../respond.js';
import { CHAT_FIELDS, chatSchema, parseBody, rejectUnknownFields } from '../schemas.js';
import type { Route, ServerContext } from '../types.js';

export function chatRoute(ctx: ServerContext): Route {
  return async (req) => {
    if (!ctx.allowUnknownFields) rejectUnknownFields(req.body, CHAT_FIELDS);
    const body = parseBody(chatSchema, req.body);
    const model = checkModel(body, ctx);
    checkLogitBias(body, ctx.tokenizer.vocabSize);
    const prompt = chatPromptIds(ctx.tokenizer, body.messages, ctx.contextLength);
    const maxTokens = tokenBudget(prompt.length, requestedMaxTokens(body), ctx.contextLength, 'messages');
    const topLogprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
    const plan = {
      requests: engineRequests(body, prompt, maxTokens, topLogprobs, cacheSaltOf(ctx.cacheIsolation, req, body)),
      prompts: [{ tokens: prompt.length, firstChoice: 0 }],
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
    };
    return respond(ctx, req, plan, chatFormatter(model, body.logprobs === true, plan.includeUsage));
  };
}

function chatFormatter(model: string, logprobs: boolean, includeUsage: boolean): Formatter {
  const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, created, model, system_fingerprint: null };
  // With include_usage, OpenAI sends `usage: null` on every chunk but the last.
  const chunk = (choices: unknown[]) => ({ ...head, object: 'chat.completion.chunk', choices, ...(includeUsage && { usage: null }) });
  const lp = (entries: readonly LogprobEntry[]) => (logprobs ? { content: entries.map(chatLogprob), refusal: null } : null);
  return {
    final: (choices, usage) => ({
      ...head,
      object: 'chat.completion',
      choices: choices.map((c) => ({
        index: c.index,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: lp(c.logprobs),
        finish_reason: c.finishReason,
      })),
      usage,
    }),
    opening: (index) => chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]),
    delta: (u) => chunk([{ index: u.choice, delta: { content: u.text }, logprobs: lp(u.logprobs), finish_reason: null }]),
    finish: (u) => chunk([{ index: u.choice, delta: {}, logprobs: null, finish_reason: u.reason }]),
    usage: (usage) => ({ ...head, object: 'chat.completion.chunk', choices: [], usage }),
  };
}

function chatLogprob(e: LogprobEntry) {
  const one = (t: LogprobEntry['chosen']) => ({ token: t.text, logprob: t.logprob, bytes: [...t.bytes] });
  return { ...one(e.chosen), top_logprobs: e.top.map(one) };
}
