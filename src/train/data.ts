/**
 * Training text → token streams → batches.
 *
 * A corpus file is plain UTF-8 text whose documents are separated by blank lines (for the shipped
 * model: one chapter of the King James Bible per document, one verse per line). Each document is
 * tokenised and followed by EOS; the line starts are the anchor points where training windows
 * begin, so that every window reads like a prompt would: BOS, then text from the start of a line.
 */
import { Rng } from '../engine/random.js';

export interface TokenStream {
  /** Token ids of all documents, each followed by EOS. */
  readonly tokens: Int32Array;
  /** Offsets into `tokens` where a line (verse) begins. */
  readonly lineStarts: Int32Array;
  readonly documents: number;
}

/** Split a corpus into documents (blank-line separated), trimming each. */
export function splitDocuments(text: string): string[] {
  return text
    .replace(/\r\n?/g, '\n')
    .split(/\n[ \t]*\n+/)
    .map((d) => d.trim())
    .filter((d) => d.length > 0);
}

/** Tokenise documents with `encode` (which must not add BOS); each document ends with `eos`. */
export function tokenizeDocuments(docs: readonly string[], encode: (text: string) => number[], eos: number): TokenStream {
  const tokens: number[] = [];
  const starts: number[] = [];
  for (const doc of docs) {
    const lines = doc.split('\n');
    lines.forEach((line, i) => {
      starts.push(tokens.length);
      for (const id of encode(i + 1 < lines.length ? `${line}\n` : line)) tokens.push(id);
    });
    tokens.push(eos);
  }
  return { tokens: Int32Array.from(tokens), lineStarts: Int32Array.from(starts), documents: docs.length };
}

export interface Batch {
  /** [B][T] inputs: BOS, then T−1 tokens of text. */
  readonly inputs: Int32Array;
  /** [B][T] targets: the next token at each position. */
  readonly targets: Int32Array;
  readonly B: number;
  readonly T: number;
}

/** One window starting at stream offset `start`: input [BOS, s…], target [s…]. */
function fillWindow(stream: Int32Array, start: number, T: number, bos: number, inputs: Int32Array, targets: Int32Array, row: number): void {
  inputs[row * T] = bos;
  for (let t = 0; t < T; t++) {
    const tok = stream[start + t]!;
    targets[row * T + t] = tok;
    if (t + 1 < T) inputs[row * T + t + 1] = tok;
  }
}

/**
 * The training batch of step `step`: B windows from random line starts, drawn from a generator
 * seeded by (seed, step) alone, so that a resumed run sees exactly the batches it would have seen.
 */
export function sampleBatch(data: TokenStream, B: number, T: number, bos: number, seed: number, step: number): Batch {
  const rng = new Rng((seed % 1_000_000_007) * 1_000_003 + step);
  const limit = data.tokens.length - T;
  // Line starts from which a whole window fits.
  let usable = data.lineStarts.length;
  while (usable > 0 && data.lineStarts[usable - 1]! > limit) usable--;
  if (usable === 0) throw new RangeError(`the training text (${data.tokens.length} tokens) is shorter than one window of ${T}`);
  const inputs = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = data.lineStarts[Math.floor(rng.next() * usable)]!;
    fillWindow(data.tokens, start, T, bos, inputs, targets, b);
  }
  return { inputs, targets, B, T };
}

/**
 * Fixed evaluation windows over a held-out stream: consecutive, non-overlapping windows of T
 * targets from the start (each input led by BOS), up to `maxTokens` targets (0 = all).
 */
export function evalWindows(data: TokenStream, T: number, bos: number, maxTokens = 0): Batch[] {
  const windows: { inputs: Int32Array; targets: Int32Array }[] = [];
  let budget = maxTokens > 0 ? maxTokens : Infinity;
  for (let start = 0; start + T <= data.tokens.length && budget >= T; start += T) {
    const inputs = new Int32Array(T);
    const targets = new Int32Array(T);
    fillWindow(data.tokens, start, T, bos, inputs, targets, 0);
    windows.push({ inputs, targets });
    budget -= T;
  }
  // Group into batches of up to 8 windows.
  const batches: Batch[] = [];
  for (let i = 0; i < windows.length; i += 8) {
    const group = windows.slice(i, i + 8);
    const inputs = new Int32Array(group.length * T);
    const targets = new Int32Array(group.length * T);
    group.forEach((w, j) => {
      inputs.set(w.inputs, j * T);
      targets.set(w.targets, j * T);
    });
    batches.push({ inputs, targets, B: group.length, T });
  }
  return batches;
}

/**
 * The unigram baseline: token frequencies of the training stream (add-one smoothed over the
 * vocabulary) scored on `targets`. Returns the mean negative log-likelihood in nats.
 */
export function unigramNll(train: Int32Array, vocabSize: number, targets: Iterable<number>): number {
  const counts = new Float64Array(vocabSize).fill(1);
  for (const t of train) counts[t] = counts[t]! + 1;
  const total = train.length + vocabSize;
  let nll = 0;
  let n = 0;
  for (const t of targets) {
    nll -= Math.log(counts[t]! / total);
    n++;
  }
  return n > 0 ? nll / n : NaN;
}
