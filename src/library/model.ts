/**
 * The library's Model: one loaded model whose weights, scheduler and caches live in an engine
 * worker thread (engine/worker.ts), the same engine `dseek serve` runs. Every `generate` and
 * `chat` call is one engine request; concurrent calls are batched by the scheduler automatically
 * (there are no contexts or sequences to manage) and share its prefix cache, so a conversation
 * continued turn by turn reuses the latent pages of the turns before.
 */
import { ContextLengthExceededError, DseekError, InvalidInputError, ModelClosedError, AbortError } from '../errors.js';
import type { Engine, EngineEvent, EngineRequest, EngineStats, AnswerFinishReason, JsonSchema, TokenLogprob } from '../engine/types.js';
import { compileSchema } from '../engine/jsonConstraint.js';
import { EventStream } from '../engine/localEngine.js';
import { validateSamplingOptions, type SamplingOptions } from '../engine/sampler.js';
import { chatPromptIds, type ChatMessage } from '../tokenizer/chatTemplate.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { ModelConfig } from '../model/config.js';
import type { ParameterCounts } from '../model/params.js';
import type { CacheType } from '../cache/pagePool.js';
import { costOf, type PriceTable } from '../server/prices.js';
import { reviveError } from './errors.js';
import { splitThinking } from './reasoning.js';

export type { ChatMessage };

/** Sampling and stop fields of the HTTP API, camelCased, plus cancellation. */
export interface GenerateOptions {
  /**
   * Upper bound on generated tokens. Default: the rest of the context. Generation also ends when
   * the context is full (finish reason `length`).
   */
  readonly maxTokens?: number;
  /** ≥ 0; 0 is greedy (the same output every time). Default 1. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly topK?: number;
  readonly minP?: number;
  readonly frequencyPenalty?: number;
  readonly presencePenalty?: number;
  readonly repetitionPenalty?: number;
  /** The same seed (and options) gives the same output. */
  readonly seed?: number;
  /** Stop strings (up to 16), not included in the output. */
  readonly stop?: string | readonly string[];
  /** Report each generated token's log-probability. */
  readonly logprobs?: boolean;
  /** With `logprobs`, also this many most likely alternatives per token (0–20). */
  readonly topLogprobs?: number;
  /** `json_object`: decoding is constrained so that the output is one valid JSON value. */
  /** `json_object`: any JSON object; `json_schema`: one JSON value valid under `schema` (constrained decoding; unsupported keywords throw InvalidInputError naming them). */
  readonly responseFormat?: { readonly type: 'text' | 'json_object' } | { readonly type: 'json_schema'; readonly schema: JsonSchema };
  /** Keep going past end-of-sequence tokens. */
  readonly ignoreEos?: boolean;
  /** Cancels the call: it rejects (or its stream throws) with an AbortError and its cache pages are freed. */
  readonly signal?: AbortSignal;
  /** true: return a GenerationStream of deltas instead of a promise of the whole result. */
  readonly stream?: boolean;
}

export interface TokenLogprobs {
  /** The generated token: id, text, raw bytes, log-probability. */
  readonly chosen: TokenLogprob;
  /** The most likely alternatives (topLogprobs of them). */
  readonly top: readonly TokenLogprob[];
}

/** A piece of a streamed answer. */
export interface GenerationDelta {
  /** Text that became final with this delta (never part of a UTF-8 character or of a stop string; may be empty). */
  readonly text: string;
  /** Token ids generated with it (empty for the final flush of held-back text). */
  readonly tokens: readonly number[];
  /** Present when the call asked for logprobs. */
  readonly logprobs?: readonly TokenLogprobs[];
}

export interface Cost {
  readonly currency: string;
  readonly inputCacheMiss: number;
  readonly inputCacheHit: number;
  readonly output: number;
  readonly total: number;
}

/** Token counts as the HTTP API reports them, with DeepSeek's cache split and the cost at the model's prices. */
export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly totalTokens: number;
  /** Prompt tokens whose latent cache came from the prefix cache (memory or disk); hit + miss = promptTokens. */
  readonly promptCacheHitTokens: number;
  readonly promptCacheMissTokens: number;
  readonly cost: Cost;
}

export interface GenerationResult {
  /** The answer (for a chat with a reasoning model: the part after its reasoning). */
  readonly text: string;
  /** The generated token ids. */
  readonly tokens: readonly number[];
  /** `stop`: an end-of-sequence token, a stop string or a complete JSON value; `length`: maxTokens or the context ran out. */
  readonly finishReason: AnswerFinishReason;
  readonly usage: Usage;
  /** Present when the call asked for logprobs. */
  readonly logprobs?: readonly TokenLogprobs[];
  /** chat() on a reasoning model (one whose vocabulary has `</think>`): the thinking before the answer. */
  readonly reasoning?: string;
  /** Seconds from the call to the first token, and of generation after it. */
  readonly timeToFirstTokenS: number;
  readonly generationS: number;
}

/** A streamed call: iterate it for deltas; `result` resolves once generation has ended. */
export interface GenerationStream extends AsyncIterable<GenerationDelta> {
  /** The whole result (rejects as the iteration would). Breaking out of the iteration cancels the call. */
  readonly result: Promise<GenerationResult>;
}

export interface ModelInfo {
  /** The local folder or .gguf file the weights came from. */
  readonly path: string;
  readonly config: ModelConfig;
  readonly parameters: ParameterCounts;
  /** Latent-cache bytes one token takes, all layers, at the cache type in use. */
  readonly cacheBytesPerToken: number;
  /** The latent cache's storage (the `cacheType` option): f16, f32 or q8. */
  readonly cacheType: CacheType;
  /** Tokens per sequence (prompt + answer). */
  readonly contextSize: number;
  /** The kernels the engine runs on, e.g. `native (avx2, 4 threads)` or `reference`. */
  readonly kernels: string;
  /** false: the model has no tokenizer and takes token ids only. */
  readonly hasTokenizer: boolean;
  /** Whether `chat` can render messages (the tokenizer has a chat template). */
  readonly hasChatTemplate: boolean;
  /** Where prefix pages are kept on disk (loadModel's diskCacheDir, per model), or null. */
  readonly diskCacheDir: string | null;
  /** The context store pages are shared through (`folder /path`, `redis://host:port/0`), or null. */
  readonly contextStore: string | null;
}

/** A snapshot of the engine: load, cache memory, prefix and disk caches. */
export type EngineSnapshot = EngineStats;

/** What createServer/createHandler need from a Model; not part of the public API. */
export interface ModelInternals {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer | null;
  readonly contextSize: number;
  readonly prices: PriceTable;
  readonly name: string;
}

const internals = new WeakMap<Model, ModelInternals>();

/** @internal */
export function modelInternals(model: Model): ModelInternals {
  const i = internals.get(model);
  if (!i) throw new InvalidInputError('model', 'not a Model from loadModel()');
  return i;
}

const MAX_STOP = 16;

export class Model {
  readonly info: ModelInfo;
  private closed = false;
  private readonly thinkEnd: boolean;

  /** @internal Use loadModel(). */
  constructor(init: ModelInternals & { readonly info: ModelInfo }) {
    const { info, ...rest } = init;
    this.info = info;
    internals.set(this, rest);
    this.thinkEnd = rest.tokenizer?.tokenId('</think>') !== undefined;
  }

  /** The model's name as the server lists it (the folder or file name). */
  get name(): string {
    return modelInternals(this).name;
  }

  /** Text → token ids, as the model reads a raw prompt (BOS added as the tokenizer says; special-token spellings stay text). */
  tokenize(text: string): number[] {
    return this.requireTokenizer().encode(text, { parseSpecial: false });
  }

  /** Token ids → text (special tokens included as their text). */
  detokenize(ids: readonly number[]): string {
    const tokenizer = this.requireTokenizer();
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0 || id >= tokenizer.vocabSize) {
        throw new InvalidInputError('ids', `${id} is not a token id: ids run from 0 to ${tokenizer.vocabSize - 1}`);
      }
    }
    return tokenizer.decode(ids);
  }

  /** A snapshot of the engine (running and queued calls, cache bytes, prefix and disk cache). */
  stats(): EngineSnapshot {
    return modelInternals(this).engine.stats();
  }

  /** Continue a raw prompt (text, or token ids as given). */
  generate(prompt: string | readonly number[], options: GenerateOptions & { readonly stream: true }): GenerationStream;
  generate(prompt: string | readonly number[], options?: GenerateOptions & { readonly stream?: false }): Promise<GenerationResult>;
  generate(prompt: string | readonly number[], options?: GenerateOptions): GenerationStream | Promise<GenerationResult>;
  generate(prompt: string | readonly number[], options: GenerateOptions = {}): GenerationStream | Promise<GenerationResult> {
    return this.start(() => this.promptIds(prompt), options, false);
  }

  /** Answer the last message of a conversation, rendered with the model's own chat template. */
  chat(messages: readonly ChatMessage[], options: GenerateOptions & { readonly stream: true }): GenerationStream;
  chat(messages: readonly ChatMessage[], options?: GenerateOptions & { readonly stream?: false }): Promise<GenerationResult>;
  chat(messages: readonly ChatMessage[], options?: GenerateOptions): GenerationStream | Promise<GenerationResult>;
  chat(messages: readonly ChatMessage[], options: GenerateOptions = {}): GenerationStream | Promise<GenerationResult> {
    return this.start(() => {
      if (!Array.isArray(messages) || messages.length === 0) throw new InvalidInputError('messages', 'must be a non-empty array of { role, content }');
      return chatPromptIds(this.requireTokenizer(), messages);
    }, options, this.thinkEnd);
  }

  /**
   * Finishes running calls (up to `deadlineMs`, default 5 s), cancels the rest (they reject with
   * ModelClosedError) and stops the engine thread. Calls after close() reject at once.
   */
  async close(deadlineMs = 5000): Promise<void> {
    this.closed = true;
    await modelInternals(this).engine.close(deadlineMs);
  }

  private requireTokenizer(): Tokenizer {
    const { tokenizer } = modelInternals(this);
    if (!tokenizer) {
      throw new InvalidInputError('model', `${this.info.path} has no tokenizer (tokenizer.json or GGUF vocabulary): text needs one, pass token ids instead`);
    }
    return tokenizer;
  }

  private promptIds(prompt: string | readonly number[]): number[] {
    if (typeof prompt === 'string') {
      if (prompt.length === 0) throw new InvalidInputError('prompt', 'empty: give some text to continue');
      return this.tokenize(prompt);
    }
    if (!Array.isArray(prompt) || prompt.length === 0) throw new InvalidInputError('prompt', 'empty: give at least one token id');
    return [...prompt];
  }

  private start(ids: () => number[], options: GenerateOptions, splitReasoning: boolean): GenerationStream | Promise<GenerationResult> {
    const deltas = new EventStream<GenerationDelta>();
    const stop = new AbortController();
    deltas.onReturn = () => stop.abort(new AbortError('the stream', 'its consumer stopped reading'));
    const result = (async () => {
      if (this.closed) throw new ModelClosedError();
      options.signal?.throwIfAborted();
      const prompt = ids();
      const request = this.engineRequest(prompt, options);
      // Deltas are kept only for a stream's reader; a plain call needs just the result.
      const sink = options.stream === true ? (d: GenerationDelta) => deltas.push(d) : () => {};
      return this.run(request, options, stop.signal, sink, splitReasoning);
    })().catch((err: unknown) => {
      throw asAbortError(err, options.signal);
    });
    result.then(
      () => deltas.end(),
      (err: unknown) => deltas.fail(err),
    );
    if (options.stream !== true) return result;
    // Whoever only iterates gets the error from the iteration; the promise must not count as unhandled.
    result.catch(() => {});
    return Object.assign(deltas, { result });
  }

  /** Checks the options here, in the caller's thread, so a bad field throws the named error at once. */
  private engineRequest(prompt: number[], o: GenerateOptions): EngineRequest {
    const { contextSize, tokenizer } = modelInternals(this);
    if (prompt.length >= contextSize) throw new ContextLengthExceededError(prompt.length + 1, contextSize);
    if (o.maxTokens !== undefined && (!Number.isSafeInteger(o.maxTokens) || o.maxTokens < 1)) {
      throw new InvalidInputError('maxTokens', `must be an integer ≥ 1 (omit it to allow the rest of the context), got ${String(o.maxTokens)}`);
    }
    const sampling: SamplingOptions = {};
    const copy = <K extends keyof SamplingOptions>(key: K, value: SamplingOptions[K] | undefined) => {
      if (value !== undefined) sampling[key] = value;
    };
    copy('temperature', o.temperature);
    copy('topP', o.topP);
    copy('topK', o.topK);
    copy('minP', o.minP);
    copy('frequencyPenalty', o.frequencyPenalty);
    copy('presencePenalty', o.presencePenalty);
    copy('repetitionPenalty', o.repetitionPenalty);
    copy('seed', o.seed);
    validateSamplingOptions(sampling);
    const stop = o.stop === undefined ? [] : typeof o.stop === 'string' ? [o.stop] : [...o.stop];
    if (stop.length > MAX_STOP || stop.some((s) => typeof s !== 'string' || s.length === 0)) {
      throw new InvalidInputError('stop', `must be a non-empty string or at most ${MAX_STOP} non-empty strings`);
    }
    if (o.topLogprobs !== undefined && (!Number.isSafeInteger(o.topLogprobs) || o.topLogprobs < 0 || o.topLogprobs > 20)) {
      throw new InvalidInputError('topLogprobs', `must be an integer from 0 to 20, got ${String(o.topLogprobs)}`);
    }
    const format = o.responseFormat?.type ?? 'text';
    if (format !== 'text' && format !== 'json_object' && format !== 'json_schema') {
      throw new InvalidInputError('responseFormat', `type must be "text", "json_object" or "json_schema", got ${JSON.stringify(format)}`);
    }
    const schema = o.responseFormat?.type === 'json_schema' ? o.responseFormat.schema : undefined;
    if (format === 'json_schema') compileSchema(schema === undefined ? false : schema, 'responseFormat.schema');
    if ((stop.length > 0 || format !== 'text') && !tokenizer) {
      throw new InvalidInputError(stop.length > 0 ? 'stop' : 'responseFormat', 'needs a tokenizer, and this model has none');
    }
    const room = contextSize - prompt.length;
    return {
      prompt,
      maxTokens: Math.min(o.maxTokens ?? room, room),
      sampling,
      ...(stop.length > 0 ? { stop } : {}),
      ...(o.logprobs === true || o.topLogprobs !== undefined ? { topLogprobs: o.topLogprobs ?? 0 } : {}),
      ...(format === 'json_object' ? { jsonMode: true } : {}),
      ...(schema !== undefined ? { jsonSchema: schema } : {}),
      ...(o.ignoreEos === true ? { ignoreEos: true } : {}),
    };
  }

  private async run(
    request: EngineRequest,
    options: GenerateOptions,
    stopped: AbortSignal,
    emit: (delta: GenerationDelta) => void,
    splitReasoning: boolean,
  ): Promise<GenerationResult> {
    const { engine, prices } = modelInternals(this);
    const signal = options.signal ? AbortSignal.any([options.signal, stopped]) : stopped;
    const wantLogprobs = request.topLogprobs !== undefined;
    const tokens: number[] = [];
    const logprobs: TokenLogprobs[] = [];
    let text = '';
    let done: Extract<EngineEvent, { type: 'done' }> | null = null;
    try {
      for await (const e of engine.generate(request, signal)) {
        if (e.type === 'token') {
          tokens.push(e.token);
          text += e.text;
          const lp = e.logprob ? [{ chosen: e.logprob, top: e.topLogprobs ?? [] }] : [];
          logprobs.push(...lp);
          emit({ text: e.text, tokens: [e.token], ...(wantLogprobs ? { logprobs: lp } : {}) });
        } else if (e.type === 'done') {
          done = e;
          if (e.text) {
            text += e.text;
            emit({ text: e.text, tokens: [], ...(wantLogprobs ? { logprobs: [] } : {}) });
          }
          break;
        }
      }
    } catch (err) {
      throw reviveError(err);
    }
    if (!done || done.finishReason === 'cancelled') {
      if (signal.aborted) throw asAbortError(signal.reason, options.signal);
      throw new ModelClosedError('the engine ended this call: the model was closed while it ran, or the engine failed (see the log option of loadModel)');
    }
    const u = done.usage;
    const cost = costOf(prices, u.promptCacheHitTokens, u.promptCacheMissTokens, u.completionTokens);
    const answer = splitReasoning ? splitThinking(text) : { text };
    return {
      ...answer,
      tokens,
      finishReason: done.finishReason,
      usage: {
        promptTokens: u.promptTokens,
        completionTokens: u.completionTokens,
        totalTokens: u.promptTokens + u.completionTokens,
        promptCacheHitTokens: u.promptCacheHitTokens,
        promptCacheMissTokens: u.promptCacheMissTokens,
        cost: { currency: cost.currency, inputCacheMiss: cost.input_cache_miss, inputCacheHit: cost.input_cache_hit, output: cost.output, total: cost.total },
      },
      ...(wantLogprobs ? { logprobs } : {}),
      timeToFirstTokenS: done.timeToFirstTokenS,
      generationS: done.generationS,
    };
  }
}

/** Any failure caused by the caller's signal becomes an AbortError (a DseekError stays as it is otherwise). */
function asAbortError(err: unknown, signal: AbortSignal | undefined): unknown {
  if (err instanceof AbortError) return err;
  if (signal?.aborted && (err === signal.reason || !(err instanceof DseekError))) return new AbortError('the call', signal.reason);
  return err;
}
