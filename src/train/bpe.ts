/**
 * A byte-level BPE trainer (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with
 * Subword Units"; the byte-level variant of GPT-2, Radford et al. 2019) that writes a standard
 * Hugging Face `tokenizer.json`, which src/tokenizer/tokenizer.ts loads like any DeepSeek tokenizer.
 *
 * Layout of the vocabulary: the special tokens first (BOS = 0, EOS = 1, as DeepSeek-V3 numbers
 * them), then the 256 byte tokens, then one token per merge in the order learned. Text is split by
 * a GPT-2-style pre-tokenizer regex (words with their leading space, digit runs, punctuation runs,
 * whitespace), then each piece is merged bottom-up; merges never cross pieces.
 *
 * Deterministic: the most frequent pair wins, ties go to the pair whose token ids are smallest.
 */
import { DEEPSEEK_V2_CHAT_TEMPLATE } from '../tokenizer/chatTemplate.js';

/** Special tokens in DeepSeek's spelling (U+FF5C fullwidth bar, U+2581 lower block). */
export const BOS_TOKEN = '<｜begin▁of▁sentence｜>';
export const EOS_TOKEN = '<｜end▁of▁sentence｜>';

/**
 * The split pattern (GPT-2's, with `\p{L}`/`\p{N}` classes): contractions, optional space + letters,
 * optional space + digits, optional space + other symbols, whitespace runs.
 */
export const PRETOKENIZE_PATTERN = "'(?:s|t|re|ve|m|ll|d)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** GPT-2's byte → printable character map (the same as src/tokenizer/tokenizer.ts). */
const BYTE_TO_CHAR: string[] = (() => {
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
  return out;
})();

const utf8 = new TextEncoder();

/** Split text into pre-tokens exactly as the tokenizer.json's Split pre-tokenizer will. */
export function pretokenize(text: string): string[] {
  return text.match(new RegExp(PRETOKENIZE_PATTERN, 'gu')) ?? [];
}

export interface BpeModel {
  /** Byte-level token strings by id (ids < specials.length are the special tokens, as plain text). */
  readonly tokens: readonly string[];
  /** Merges in rank order, as pairs of token strings. */
  readonly merges: readonly (readonly [string, string])[];
  readonly specials: readonly string[];
}

export interface BpeTrainOptions {
  /** Total vocabulary including the special tokens and the 256 bytes. */
  readonly vocabSize: number;
  /** Pairs seen fewer times than this are never merged (default 2). */
  readonly minFrequency?: number;
  readonly specials?: readonly string[];
}

/**
 * Learn merges from `texts` until the vocabulary has `vocabSize` tokens (or no pair occurs
 * `minFrequency` times). Word counts are gathered once; each merge then updates only the words
 * that contain the merged pair.
 */
export function trainBpe(texts: Iterable<string>, options: BpeTrainOptions): BpeModel {
  const specials = options.specials ?? [BOS_TOKEN, EOS_TOKEN];
  const minFrequency = options.minFrequency ?? 2;
  const counts = new Map<string, number>();
  for (const text of texts) for (const w of pretokenize(text)) counts.set(w, (counts.get(w) ?? 0) + 1);

  // Symbols are ids into `tokens`; the 256 bytes first (after the specials).
  const tokens: string[] = [...specials];
  const idOf = new Map<string, number>();
  for (let b = 0; b < 256; b++) {
    idOf.set(BYTE_TO_CHAR[b]!, tokens.length);
    tokens.push(BYTE_TO_CHAR[b]!);
  }
  const words: number[][] = [];
  const freq: number[] = [];
  // Sorted for a deterministic word order whatever the Map's insertion order was.
  for (const w of [...counts.keys()].sort()) {
    words.push(Array.from(utf8.encode(w), (b) => b + specials.length));
    freq.push(counts.get(w)!);
  }

  const KEY = 1 << 16;
  if (options.vocabSize > KEY) throw new RangeError(`vocabSize ${options.vocabSize} is above ${KEY}`);
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addWord = (wi: number, sign: number): void => {
    const w = words[wi]!;
    for (let i = 0; i + 1 < w.length; i++) {
      const key = w[i]! * KEY + w[i + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + sign * freq[wi]!);
      if (sign > 0) {
        let set = pairWords.get(key);
        if (!set) pairWords.set(key, (set = new Set()));
        set.add(wi);
      }
    }
  };
  for (let wi = 0; wi < words.length; wi++) addWord(wi, 1);

  const merges: [string, string][] = [];
  while (tokens.length < options.vocabSize) {
    let best = -1;
    let bestCount = 0;
    for (const [key, n] of pairCount) {
      if (n > bestCount || (n === bestCount && n > 0 && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best < 0 || bestCount < minFrequency) break;
    const a = Math.floor(best / KEY);
    const b = best % KEY;
    const text = tokens[a]! + tokens[b]!;
    let id = idOf.get(text);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(text);
      idOf.set(text, id);
    }
    merges.push([tokens[a]!, tokens[b]!]);
    const affected = [...(pairWords.get(best) ?? [])].sort((x, y) => x - y);
    for (const wi of affected) {
      addWord(wi, -1);
      const w = words[wi]!;
      const out: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(id);
          i++;
        } else {
          out.push(w[i]!);
        }
      }
      words[wi] = out;
      addWord(wi, 1);
    }
    pairCount.delete(best);
    pairWords.delete(best);
  }
  return { tokens, merges, specials };
}

/** The Hugging Face tokenizer.json of a trained model. */
export function tokenizerJson(model: BpeModel): object {
  const vocab: Record<string, number> = {};
  model.tokens.forEach((t, id) => {
    if (id >= model.specials.length && vocab[t] === undefined) vocab[t] = id;
  });
  const bosId = 0;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: model.specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: PRETOKENIZE_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: model.specials[bosId], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: model.specials[bosId], type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: model.specials[bosId], type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [model.specials[bosId]!]: { id: model.specials[bosId], ids: [bosId], tokens: [model.specials[bosId]] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/**
 * tokenizer_config.json: BOS added by default, DeepSeek-V2's chat template
 * (`User: …\n\nAssistant: …<eos>`, docs/SPEC.md §7.2) with this tokenizer's BOS/EOS.
 */
export function tokenizerConfigJson(model: BpeModel, contextLength: number): object {
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: model.specials[0],
    eos_token: model.specials[1],
    pad_token: model.specials[1],
    clean_up_tokenization_spaces: false,
    model_max_length: contextLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
    chat_template: DEEPSEEK_V2_CHAT_TEMPLATE,
  };
}

/**
 * Encode text with the learned merges (lowest rank first inside each pre-token), caching pieces.
 * The same result as the tokenizer.json through src/tokenizer (test/train/bpe.test.ts checks it),
 * but fast enough to tokenise a training corpus. Special-token strings are not recognised here.
 */
export class BpeEncoder {
  private readonly rank = new Map<string, number>();
  private readonly idOf = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();

  constructor(readonly model: BpeModel) {
    model.merges.forEach(([a, b], i) => {
      const key = `${a} ${b}`;
      if (!this.rank.has(key)) this.rank.set(key, i);
    });
    model.tokens.forEach((t, id) => {
      if (id >= model.specials.length && !this.idOf.has(t)) this.idOf.set(t, id);
    });
  }

  encode(text: string, out: number[] = []): number[] {
    for (const piece of pretokenize(text)) {
      let ids = this.cache.get(piece);
      if (!ids) {
        ids = this.encodePiece(piece);
        this.cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  private encodePiece(piece: string): number[] {
    let parts = Array.from(utf8.encode(piece), (b) => BYTE_TO_CHAR[b]!);
    for (;;) {
      let bestRank = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = this.rank.get(`${parts[i]} ${parts[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          at = i;
        }
      }
      if (at < 0) break;
      const [a, b] = this.model.merges[bestRank]!;
      // Merge every occurrence of this pair, left to right (as HF's BPE does for one rank).
      const next: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === a && parts[i + 1] === b) {
          next.push(a + b);
          i++;
        } else {
          next.push(parts[i]!);
        }
      }
      parts = next;
    }
    return parts.map((p) => {
      const id = this.idOf.get(p);
      if (id === undefined) throw new RangeError(`BPE produced ${JSON.stringify(p)}, which is not in the vocabulary`);
      return id;
    });
  }
}
