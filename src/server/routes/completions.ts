/** POST /v1/completions: raw prompts (text or token ids) and fill-in-the-middle, text_completion objects. */
import { randomBytes } from 'node:crypto';
import { cacheSaltOf, checkLogitBias, checkModel, engineRequests, requestedMaxTokens } from '../engineRequest.js';
import type { LogprobEntry } from '../generation.js';
import { completionPromptIds, tokenBudget } from '../prompt.js';
import { respond, type Formatter } from '../respond.js';
import { COMPLETION_FIELDS, completionSchema, parseBody, rejectUnknownFields } from '../schemas.js';
import type { EngineRequest } from '../../engine/types.js';
import { badRequest } from '../httpError.js';
import { MAX_N, type CompletionBody } from '../schemas.js';
import type { Route, ServerContext } from '../types.js';

export function completionsRoute(ctx: ServerContext): Route {
  return async (req) => {
    if (!ctx.allowUnknownFields) rejectUnknownFields(req.body, COMPLETION_FIELDS);
    const body = parseBody(completionSchema, req.body);
    const model = checkModel(body, ctx);
    checkLogitBias(body, ctx.tokenizer.vocabSize);
    // Several prompts (an array of texts or of id arrays) get n choices each, in prompt order:
    // choice p·n + i is prompt p's i-th, as OpenAI numbers them.
    const prompts: (string | number[])[] = isSeveral(body.prompt) ? body.prompt : [body.prompt];
    if (prompts.length * (body.n ?? 1) > MAX_N) {
      throw badRequest('prompt', `${prompts.length} prompts × n = ${body.n ?? 1} is ${prompts.length * (body.n ?? 1)} choices; at most ${MAX_N} per request`);
    }
    const salt = cacheSaltOf(ctx.cacheIsolation, req, body);
    const topLogprobs = body.logprobs ?? undefined;
    const requests: EngineRequest[] = [];
    const planned: { tokens: number; firstChoice: number }[] = [];
    const echoes: string[] = [];
    for (const [p, prompt] of prompts.entries()) {
      const param = prompts.length > 1 ? `prompt[${p}]` : 'prompt';
      const ids = completionPromptIds(ctx.tokenizer, prompt, body.suffix, ctx.contextLength);
      const maxTokens = tokenBudget(ids.length, requestedMaxTokens(body), ctx.contextLength, param);
      const mine = engineRequests(body, ids, maxTokens, topLogprobs, salt);
      planned.push({ tokens: ids.length, firstChoice: requests.length });
      const echo = body.echo !== true ? '' : typeof prompt === 'string' ? prompt : ctx.tokenizer.decode(prompt);
      for (const r of mine) {
        requests.push(r);
        echoes.push(echo);
      }
    }
    const plan = { requests, prompts: planned, stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true };
    return respond(ctx, req, plan, completionFormatter(model, echoes, topLogprobs !== undefined, plan.includeUsage));
  };
}

function isSeveral(prompt: CompletionBody['prompt']): prompt is string[] | number[][] {
  return Array.isArray(prompt) && prompt.length > 0 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]));
}

/** `echoes[i]`: the prompt text choice i starts with (echo: true), else ''. */
function completionFormatter(model: string, echoes: readonly string[], logprobs: boolean, includeUsage: boolean): Formatter {
  const id = `cmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: 'text_completion', created, model, system_fingerprint: null };
  const chunk = (choices: unknown[]) => ({ ...head, choices, ...(includeUsage && { usage: null }) });
  // text_offset counts characters of the choice's whole text so far, echoed prompt included.
  const offsets = echoes.map((e) => e.length);
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
      choices: choices.map((c) => ({ index: c.index, text: echoes[c.index]! + c.text, logprobs: lp(c.index, c.logprobs), finish_reason: c.finishReason })),
      usage,
    }),
    opening: (index) => (echoes[index] ? chunk([{ index, text: echoes[index], logprobs: null, finish_reason: null }]) : null),
    delta: (u) => chunk([{ index: u.choice, text: u.text, logprobs: lp(u.choice, u.logprobs), finish_reason: null }]),
    finish: (u) => chunk([{ index: u.choice, text: '', logprobs: null, finish_reason: u.reason }]),
    usage: (usage) => ({ ...head, choices: [], usage }),
  };
}
