/**
 * Single-sequence generation: prefill the prompt, then sample token by token through the latent
 * cache, streaming text that never splits a UTF-8 character or shows part of a stop string.
 * The server's batching scheduler builds on the same pieces.
 */
import type { DeepseekModel } from '../model/deepseek.js';
import type { LatentCacheDType } from '../cache/latentCache.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { StreamingDetokenizer } from '../tokenizer/streamingDetokenizer.js';
import { InvalidInputError } from '../errors.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import { StopStringMatcher } from './stopStrings.js';

export interface GenerateOptions extends SamplingOptions {
  /** Upper bound on generated tokens (generation also ends when the context is full). */
  readonly maxTokens: number;
  /** Stop strings (OpenAI semantics: not included in the output). Needs a tokenizer. */
  readonly stop?: readonly string[];
  /** Keep going past end-of-sequence tokens. */
  readonly ignoreEos?: boolean;
  /** Latent cache storage type (default f32). */
  readonly cacheType?: LatentCacheDType;
  /** Context window in tokens (default: the model's). */
  readonly contextLength?: number;
  readonly signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationStep {
  /** The generated id, or null for the final flush of text held back until the end. */
  readonly token: number | null;
  /** Text that became final with this step (may be empty). */
  readonly text: string;
}

export interface GenerationResult {
  readonly promptTokens: readonly number[];
  readonly tokens: readonly number[];
  readonly text: string;
  readonly finishReason: FinishReason;
}

/** The ids that end a sequence: the config's eos ids and the tokenizer's. */
export function endOfSequenceIds(model: DeepseekModel, tokenizer: Tokenizer | null): Set<number> {
  const ids = new Set(model.config.eosTokenIds);
  if (tokenizer?.eosId !== null && tokenizer?.eosId !== undefined) ids.add(tokenizer.eosId);
  return ids;
}

/**
 * Yields each generated token with the text it completes; returns the whole result. Throws
 * ContextLengthExceededError if the prompt alone does not fit the context.
 */
export function* generate(
  model: DeepseekModel,
  tokenizer: Tokenizer | null,
  promptTokens: readonly number[],
  options: GenerateOptions,
): Generator<GenerationStep, GenerationResult> {
  if (!Number.isSafeInteger(options.maxTokens) || options.maxTokens < 0) {
    throw new InvalidInputError('max_tokens', `must be an integer ≥ 0, got ${options.maxTokens}`);
  }
  if (promptTokens.length === 0) throw new InvalidInputError('prompt', 'empty: give at least one token');
  if (options.stop?.length && !tokenizer) {
    throw new InvalidInputError('stop', 'stop strings need a tokenizer, and this model has no tokenizer.json');
  }
  const validVocab = tokenizer ? Math.min(tokenizer.vocabSize, model.config.vocabSize) : model.config.vocabSize;
  const sampler = new Sampler(options, validVocab);
  const stops = new StopStringMatcher([...(options.stop ?? [])]);
  const detokenizer = tokenizer ? new StreamingDetokenizer(tokenizer, { skipSpecial: true }) : null;
  const eos = options.ignoreEos ? new Set<number>() : endOfSequenceIds(model, tokenizer);
  const cache = model.createCache({
    ...(options.cacheType ? { dtype: options.cacheType } : {}),
    ...(options.contextLength ? { maxTokens: options.contextLength } : {}),
  });

  const history = [...promptTokens];
  const generated: number[] = [];
  let text = '';
  let finishReason: FinishReason = 'length';
  let stoppedByString = false;
  let logits = options.maxTokens > 0 ? model.forward(promptTokens, cache) : null;
  while (logits && generated.length < options.maxTokens) {
    if (options.signal?.aborted) {
      finishReason = 'abort';
      break;
    }
    const token = sampler.sample(logits, history);
    generated.push(token);
    history.push(token);
    if (eos.has(token)) {
      finishReason = 'stop';
      break;
    }
    const piece = detokenizer ? stops.push(detokenizer.push(token)) : { emit: '', stopped: false };
    text += piece.emit;
    yield { token, text: piece.emit };
    if (piece.stopped) {
      finishReason = 'stop';
      stoppedByString = true;
      break;
    }
    if (generated.length >= options.maxTokens || cache.length >= cache.maxTokens) break;
    logits = model.forward([token], cache);
  }
  if (detokenizer && !stoppedByString) {
    // Bytes of an unfinished character and text that could have begun a stop string.
    const rest = stops.push(detokenizer.flush());
    const tail = rest.emit + (rest.stopped ? '' : stops.flush());
    if (tail) {
      text += tail;
      yield { token: null, text: tail };
    }
    if (rest.stopped) finishReason = 'stop';
  }
  return { promptTokens: [...promptTokens], tokens: generated, text, finishReason };
}
