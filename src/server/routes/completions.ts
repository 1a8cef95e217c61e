/** POST /v1/completions: raw prompts (text or token ids) and fill-in-the-middle, text_completion objects. */
import { randomBytes } from 'node:crypto';
import { cacheSaltOf, checkModel, engineRequests, requestedMaxTokens } from '../engineRequest.js';
import type { LogprobEntry } from '../generation.js';
import { completionPromptIds, tokenBudget } from '../prompt.js';
import { respond, type Formatter } from '../respond.js';
import { completionSchema, parseBody } from '../schemas.js';
import type { Route, ServerContext } from '../types.js';

export function completionsRoute(ctx: ServerContext): Route {
  return async (req) => {
    const body = parseBody(completionSchema, req.body);
    checkModel(body, ctx.modelName);
    const prompt = completionPromptIds(ctx.tokenizer, body.prompt, body.suffix, ctx.contextLength);
    const maxTokens = tokenBudget(prompt.length, requestedMaxTokens(body), ctx.contextLength, 'prompt');
    const topLogprobs = body.logprobs ?? undefined;
    const plan = {
      requests: engineRequests(body, prompt, maxTokens, topLogprobs, cacheSaltOf(ctx.cacheIsolation, req, body)),
      promptTokens: prompt.length,
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
    };
    const echo = body.echo !== true ? '' : typeof body.prompt === 'string' ? body.prompt : ctx.tokenizer.decode(body.prompt);
    return respond(ctx, req, plan, completionFormatter(ctx.modelName, echo, topLogprobs !== undefined, plan.requests.length, plan.includeUsage));
  };
}

function completionFormatter(model: string, echo: string, logprobs: boolean, n: number, includeUsage: boolean): Formatter {
  const id = `cmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: 'text_completion', created, model, system_fingerprint: null };
  const chunk = (choices: unknown[]) => ({ ...head, choices, ...(includeUsage && { usage: null }) });
  // text_offset counts characters of the choice's whole text so far, echoed prompt included.
  const offsets = Array.from({ length: n }, () => echo.length);
  const lp = (choice: number, entries: readonly LogprobEntry[]) => {
    if (!logprobs) return null;
    const text_offset = entries.map((e) => {
      const at = offsets[choice]!;
      offsets[choice] = at + e.chosen.text.length;
      return at;
    });
    return {
      tokens: entries.map((e) => e.chosen.text),
      token_logprobs: entries.map((e) => e.chosen.logprob),
      top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.text, t.logprob]))),
      text_offset,
    };
  };
  return {
    final: (choices, usage) => ({
      ...head,
      choices: choices.map((c) => ({ index: c.index, text: echo + c.text, logprobs: lp(c.index, c.logprobs), finish_reason: c.finishReason })),
      usage,
    }),
    opening: (index) => (echo ? chunk([{ index, text: echo, logprobs: null, finish_reason: null }]) : null),
    delta: (u) => chunk([{ index: u.choice, text: u.text, logprobs: lp(u.choice, u.logprobs), finish_reason: null }]),
    finish: (u) => chunk([{ index: u.choice, text: '', logprobs: null, finish_reason: u.reason }]),
    usage: (usage) => ({ ...head, choices: [], usage }),
  };
}
