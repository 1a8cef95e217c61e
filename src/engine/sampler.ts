/**
 * Token sampling: logits row → one token id.
 *
 * Chain (order matters): penalties → top-k → temperature → softmax → top-p → min-p → draw.
 * Penalties and top-k come first as in llama.cpp's default chain. Temperature is applied before
 * top-p/min-p (as in HF transformers and vLLM), so those cut-offs see the probabilities that are
 * actually drawn from; llama.cpp's default chain instead scales by temperature last.
 * temperature 0 is greedy: argmax of the penalized logits, ties → lowest id.
 *
 * Only ids below `validVocab` are ever candidates: rows past it are embedding padding, and
 * their logits are garbage that must not be sampled even when they are the largest.
 *
 * Per call the sampler allocates nothing vocab-sized: scratch buffers are made once in the
 * constructor. The caller's logits are only read.
 */
import { InvalidInputError } from '../errors.js';
import { Rng } from './random.js';

export interface SamplingOptions {
  /** Softmax temperature, ≥ 0. Default 1; 0 = greedy argmax. */
  temperature?: number;
  /** Keep the k most likely tokens. 0/undefined = off. */
  topK?: number;
  /** Nucleus: keep the smallest most-likely set whose probability reaches topP, in (0, 1]. 1 = off. */
  topP?: number;
  /** Drop tokens whose probability is below minP × the top probability, in [0, 1]. 0 = off. */
  minP?: number;
  /**
   * llama.cpp / HF repetition penalty, > 0 (1 = off): for each distinct id in the penalty window,
   * a positive logit is divided by it and a non-positive logit multiplied by it.
   */
  repetitionPenalty?: number;
  /** OpenAI frequency penalty in [-2, 2]: logit -= count × frequencyPenalty. */
  frequencyPenalty?: number;
  /** OpenAI presence penalty in [-2, 2]: logit -= presencePenalty if count > 0. */
  presencePenalty?: number;
  /**
   * How many of the most recent `history` tokens the three penalties look at (the "window").
   * Default 64 like llama.cpp's `penalty_last_n`; -1 = all of history; 0 = penalties off.
   */
  penaltyLastN?: number;
  /** Seed for a reproducible draw sequence; any safe integer. Omitted → random (see Rng.seed). */
  seed?: number;
  /**
   * OpenAI's logit_bias: [token id, bias] pairs, bias in [-100, 100], added to the token's logit
   * before the penalties; -100 bans the token outright (OpenAI documents it as a ban).
   */
  logitBias?: readonly (readonly [number, number])[];
}

const DEFAULT_PENALTY_LAST_N = 64;

function isAbsent(v: unknown): boolean {
  // JSON clients often send explicit nulls for "not set" (OpenAI accepts `"seed": null`).
  return v === undefined || v === null;
}

function checkNumber(field: string, v: unknown, ok: (x: number) => boolean, rule: string): void {
  if (isAbsent(v)) return;
  if (typeof v !== 'number' || Number.isNaN(v) || !ok(v)) {
    throw new InvalidInputError(field, `must be ${rule}, got ${String(v)}`);
  }
}

/** Throws InvalidInputError naming the first bad field. Absent (undefined/null) fields are fine. */
export function validateSamplingOptions(o: SamplingOptions): void {
  checkNumber('temperature', o.temperature, (x) => Number.isFinite(x) && x >= 0, 'a finite number ≥ 0');
  checkNumber('topK', o.topK, (x) => Number.isSafeInteger(x) && x >= 0, 'an integer ≥ 0 (0 = off)');
  checkNumber('topP', o.topP, (x) => x > 0 && x <= 1, 'in (0, 1] (1 = off)');
  checkNumber('minP', o.minP, (x) => x >= 0 && x <= 1, 'in [0, 1] (0 = off)');
  checkNumber('repetitionPenalty', o.repetitionPenalty, (x) => Number.isFinite(x) && x > 0, 'a finite number > 0 (1 = off)');
  checkNumber('frequencyPenalty', o.frequencyPenalty, (x) => x >= -2 && x <= 2, 'in [-2, 2] (0 = off)');
  checkNumber('presencePenalty', o.presencePenalty, (x) => x >= -2 && x <= 2, 'in [-2, 2] (0 = off)');
  checkNumber('penaltyLastN', o.penaltyLastN, (x) => Number.isSafeInteger(x) && x >= -1, 'an integer ≥ -1 (-1 = all history)');
  checkNumber('seed', o.seed, (x) => Number.isSafeInteger(x), 'a safe integer');
  if (!isAbsent(o.logitBias)) {
    if (!Array.isArray(o.logitBias)) throw new InvalidInputError('logitBias', 'must be an array of [token id, bias] pairs');
    for (const pair of o.logitBias) {
      const [id, bias] = Array.isArray(pair) ? pair : [NaN, NaN];
      if (!Number.isSafeInteger(id) || id < 0) throw new InvalidInputError('logitBias', `token ids must be integers ≥ 0, got ${String(id)}`);
      if (typeof bias !== 'number' || !(bias >= -100 && bias <= 100)) throw new InvalidInputError('logitBias', `biases must be numbers in [-100, 100], got ${String(bias)}`);
    }
  }
}

export class Sampler {
  private readonly vocab: number;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly minP: number;
  private readonly repetitionPenalty: number;
  private readonly frequencyPenalty: number;
  private readonly presencePenalty: number;
  private readonly penaltyLastN: number;
  private readonly logitBias: readonly (readonly [number, number])[];
  private readonly rng: Rng;

  // Scratch, sized once to the vocabulary and reused by every call.
  /** Penalized logits of ids [0, vocab). */
  private readonly work: Float64Array;
  /** Per-id occurrence count in the penalty window; zeroed again after each use (O(window)). */
  private readonly counts: Int32Array;
  /** Candidate ids, arranged as a max-heap by (logit desc, id asc). */
  private readonly heap: Int32Array;
  /** Candidates popped from the heap, most likely first. */
  private readonly sorted: Int32Array;
  /** Unnormalized probabilities of `sorted` entries, exp((logit - max) / T). */
  private readonly weights: Float64Array;

  /**
   * @param options validated here (InvalidInputError on a bad field).
   * @param validVocab number of ids the tokenizer can produce; logits rows at or past it are
   *   padding and never sampled.
   */
  constructor(options: SamplingOptions, validVocab: number) {
    validateSamplingOptions(options);
    if (!Number.isSafeInteger(validVocab) || validVocab <= 0) {
      throw new InvalidInputError('validVocab', `must be a positive integer, got ${validVocab}`);
    }
    this.vocab = validVocab;
    this.temperature = options.temperature ?? 1;
    const topK = options.topK ?? 0;
    this.topK = topK === 0 || topK >= validVocab ? validVocab : topK;
    this.topP = options.topP ?? 1;
    this.minP = options.minP ?? 0;
    this.repetitionPenalty = options.repetitionPenalty ?? 1;
    this.frequencyPenalty = options.frequencyPenalty ?? 0;
    this.presencePenalty = options.presencePenalty ?? 0;
    this.penaltyLastN = options.penaltyLastN ?? DEFAULT_PENALTY_LAST_N;
    this.logitBias = options.logitBias ?? [];
    const outside = this.logitBias.find(([id]) => id >= validVocab);
    if (outside) throw new InvalidInputError('logitBias', `token id ${outside[0]} is outside the vocabulary [0, ${validVocab})`);
    this.rng = new Rng(options.seed ?? undefined);
    this.work = new Float64Array(validVocab);
    this.counts = new Int32Array(validVocab);
    this.heap = new Int32Array(validVocab);
    this.sorted = new Int32Array(validVocab);
    this.weights = new Float64Array(validVocab);
  }

  /** The seed actually in use (drawn from crypto when none was given), for logging/replay. */
  get seed(): number {
    return this.rng.seed;
  }

  /**
   * Pick the next token.
   *
   * @param logits one row of model output, length ≥ validVocab (extra rows are padding). Read only.
   * @param history the token ids the penalties count, oldest first; only the last `penaltyLastN`
   *   are used. All three penalties count the same window, so the caller chooses what counts:
   *   pass only the generated tokens for OpenAI's frequency/presence semantics, or prompt +
   *   generated for llama.cpp's (whose penalty window also covers the prompt).
   */
  sample(logits: Float32Array | Float64Array, history: readonly number[], allow?: (token: number) => boolean): number {
    const n = this.vocab;
    if (logits.length < n) {
      throw new InvalidInputError('logits', `row has ${logits.length} entries but the vocabulary has ${n}`);
    }
    const work = this.work;
    for (let i = 0; i < n; i++) {
      const x = logits[i]!;
      // NaN or +Inf means the forward pass is broken; -Inf is a legitimate mask (token banned).
      if (Number.isNaN(x) || x === Infinity) {
        throw new InvalidInputError('logits', `logit of token ${i} is ${x}`);
      }
      work[i] = x;
    }
    for (const [id, bias] of this.logitBias) work[id] = bias <= -100 ? -Infinity : work[id]! + bias;
    this.applyPenalties(history);
    if (!allow) return this.temperature === 0 ? this.argmax() : this.draw();

    // Constrained decoding: redraw without a rejected token a few times (cheap when the model
    // mostly agrees with the constraint), then mask every disallowed token and draw once more.
    for (let attempt = 0; attempt < 8; attempt++) {
      const pick = this.temperature === 0 ? this.argmax() : this.draw();
      if (allow(pick)) return pick;
      work[pick] = -Infinity;
    }
    for (let i = 0; i < n; i++) if (work[i] !== -Infinity && !allow(i)) work[i] = -Infinity;
    return this.temperature === 0 ? this.argmax() : this.draw();
  }

  /** Penalties over the last penaltyLastN ids of history, each distinct id once (llama.cpp semantics). */
  private applyPenalties(history: readonly number[]): void {
    const rep = this.repetitionPenalty;
    const freq = this.frequencyPenalty;
    const pres = this.presencePenalty;
    if ((rep === 1 && freq === 0 && pres === 0) || this.penaltyLastN === 0) return;
    const start = this.penaltyLastN < 0 ? 0 : Math.max(0, history.length - this.penaltyLastN);
    const counts = this.counts;
    const work = this.work;
    // Validate the whole window before counting, so a throw cannot leave counts dirty.
    for (let i = start; i < history.length; i++) {
      const id = history[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocab) {
        throw new InvalidInputError('history', `token id ${id} at position ${i} is outside [0, ${this.vocab})`);
      }
    }
    for (let i = start; i < history.length; i++) counts[history[i]!]!++;
    for (let i = start; i < history.length; i++) {
      const id = history[i]!;
      const c = counts[id]!;
      if (c === 0) continue; // already applied for an earlier occurrence
      counts[id] = 0; // also restores the all-zero invariant for the next call
      let x = work[id]!;
      if (rep !== 1) x = x > 0 ? x / rep : x * rep;
      x -= c * freq + pres;
      work[id] = x;
    }
  }

  /** First index of the largest penalized logit among valid ids (ties → lowest id). */
  private argmax(): number {
    const work = this.work;
    let best = 0;
    for (let i = 1; i < this.vocab; i++) if (work[i]! > work[best]!) best = i;
    if (work[best] === -Infinity) throw new InvalidInputError('logits', 'every token is masked (-Infinity)');
    return best;
  }

  /** (a ranks before b): higher logit first, ties by lower id — a total order, so results are deterministic. */
  private before(a: number, b: number): boolean {
    const wa = this.work[a]!;
    const wb = this.work[b]!;
    return wa > wb || (wa === wb && a < b);
  }

  private siftDown(pos: number, size: number): void {
    const heap = this.heap;
    const item = heap[pos]!;
    for (;;) {
      let child = 2 * pos + 1;
      if (child >= size) break;
      if (child + 1 < size && this.before(heap[child + 1]!, heap[child]!)) child++;
      if (!this.before(heap[child]!, item)) break;
      heap[pos] = heap[child]!;
      pos = child;
    }
    heap[pos] = item;
  }

  private draw(): number {
    const work = this.work;
    const heap = this.heap;
    const sorted = this.sorted;
    const weights = this.weights;
    const t = this.temperature;

    // Candidates: every unmasked valid id.
    let size = 0;
    let maxLogit = -Infinity;
    for (let i = 0; i < this.vocab; i++) {
      const x = work[i]!;
      if (x === -Infinity) continue;
      heap[size++] = i;
      if (x > maxLogit) maxLogit = x;
    }
    if (size === 0) throw new InvalidInputError('logits', 'every token is masked (-Infinity)');
    const k = Math.min(this.topK, size);
    // Rank order is only needed for top-k / top-p. Heapify is O(n) and each pop O(log n), so
    // only as many candidates are ordered as those filters actually consume (no full sort).
    if (k < size || this.topP < 1) {
      for (let i = (size >> 1) - 1; i >= 0; i--) this.siftDown(i, size);
    }
    // Weights are exp((x - max) / T): stable softmax numerators. Subtract first, then divide
    // (not multiply by 1/T, which is Infinity for subnormal T and gives 0 × ∞ = NaN at the max),
    // so tiny temperatures give exactly 1 for the max and 0 for the rest.
    const weight = (id: number): number => Math.exp((work[id]! - maxLogit) / t);

    const pop = (): number => {
      const top = heap[0]!;
      size--;
      heap[0] = heap[size]!;
      this.siftDown(0, size);
      return top;
    };

    let kept = 0;
    let total = 0;
    if (this.topP < 1) {
      // Softmax normalizer over the top-k set (k = all candidates when top-k is off).
      // With top-k on, its k candidates are popped first (pops shrink `size`, so decide now).
      const prePopped = k < size;
      let z = 0;
      if (prePopped) {
        for (let j = 0; j < k; j++) {
          const id = pop();
          sorted[j] = id;
          weights[j] = weight(id);
          z += weights[j]!;
        }
      } else {
        for (let j = 0; j < size; j++) z += weight(heap[j]!);
      }
      // Top-p (llama.cpp): keep the most likely tokens until their mass reaches topP,
      // including the one that crosses it; at least one token always survives.
      const target = this.topP * z;
      while (kept < k) {
        if (!prePopped) {
          const id = pop();
          sorted[kept] = id;
          weights[kept] = weight(id);
        }
        total += weights[kept]!;
        kept++;
        if (total >= target) break;
      }
    } else if (k < size) {
      for (; kept < k; kept++) {
        const id = pop();
        sorted[kept] = id;
        weights[kept] = weight(id);
        total += weights[kept]!;
      }
    } else {
      // No truncation by rank: keep every candidate in id order (order only affects which id a
      // given uniform number maps to, and it is deterministic).
      for (; kept < size; kept++) {
        sorted[kept] = heap[kept]!;
        weights[kept] = weight(heap[kept]!);
        total += weights[kept]!;
      }
    }

    // Min-p: keep p ≥ minP × p_max. The top weight is exp(0) = 1, so the bar is just minP.
    if (this.minP > 0) {
      let m = 0;
      total = 0;
      for (let j = 0; j < kept; j++) {
        if (weights[j]! >= this.minP) {
          sorted[m] = sorted[j]!;
          weights[m] = weights[j]!;
          total += weights[m]!;
          m++;
        }
      }
      kept = m;
    }

    // Inverse-CDF draw over the unnormalized weights.
    const u = this.rng.next() * total;
    let acc = 0;
    for (let j = 0; j < kept; j++) {
      acc += weights[j]!;
      if (u < acc) return sorted[j]!;
    }
    return sorted[kept - 1]!; // rounding left u at the very top of the range
  }
}
