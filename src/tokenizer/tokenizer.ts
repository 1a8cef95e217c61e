/**
 * Byte-level BPE tokenizer for DeepSeek-V2/V3 checkpoints (Hugging Face `tokenizer.json` +
 * `tokenizer_config.json`), docs/SPEC.md §7.
 *
 * @lenml/tokenizers (a transformers.js fork) does the normalizer → pre-tokenizer → BPE steps. We
 * deliberately do the rest ourselves, because the library's versions of it do not fit:
 *  - added/special tokens: the library always splits them out (no `parseSpecial: false`) and writes
 *    them into the BPE vocab map, where an added token whose text equals a byte-level vocab string
 *    would hijack that entry. We split them here and keep the two maps apart.
 *  - BOS: the library never adds BOS for DeepSeek (tokenizer.json's post_processor is plain
 *    ByteLevel; Python's LlamaTokenizerFast adds it from `add_bos_token`), so we add it.
 *  - decoding: ids → raw bytes (reverse GPT-2 byte map) → UTF-8, the exact operation the streaming
 *    detokenizer repeats; the library's decode also applies `clean_up_tokenization_spaces` (default
 *    true there) which would break round trips for configs that omit it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TokenizerLoader } from '@lenml/tokenizers';
import { InvalidInputError, ModelFormatError } from '../errors.js';

export interface EncodeOptions {
  /** Prepend BOS. Default: `add_bos_token` from tokenizer_config. Never added twice. */
  addBos?: boolean;
  /** Default true: added/special token strings in the text map to their ids. False treats them as plain text (use for untrusted input). */
  parseSpecial?: boolean;
}

export interface Tokenizer {
  /** Number of token ids the tokenizer can produce (max id + 1, including added tokens). */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly addBosToken: boolean;
  readonly chatTemplate: string | null;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: { skipSpecial?: boolean }): string;
  /** The raw bytes the token stands for; added/special tokens as their UTF-8 content. */
  tokenBytes(id: number): Uint8Array;
  /** The id of the token whose text is `content` (an added token's content, or a vocab entry's decoded text). */
  tokenId(content: string): number | undefined;
  /** True for added tokens flagged `special` in tokenizer.json, and for BOS/EOS. */
  isSpecial(id: number): boolean;
}

/**
 * Reads `tokenizer.json` (+ optional `tokenizer_config.json`, `chat_template.jinja`) from a Hugging
 * Face model folder. Null when the folder has no tokenizer.json.
 */
export function loadTokenizer(folder: string): Tokenizer | null {
  const jsonPath = join(folder, 'tokenizer.json');
  if (!existsSync(jsonPath)) return null;
  const json = readJsonObject(jsonPath);
  const configPath = join(folder, 'tokenizer_config.json');
  let config = existsSync(configPath) ? readJsonObject(configPath) : null;
  // Newer transformers save the template beside the config instead of inside it.
  const templatePath = join(folder, 'chat_template.jinja');
  if (config?.['chat_template'] === undefined && existsSync(templatePath)) {
    config = { ...config, chat_template: readFileSync(templatePath, 'utf8') };
  }
  return tokenizerFromJson(json, config, jsonPath);
}

function readJsonObject(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelFormatError(path, `not valid JSON (${errorText(e)}); re-download the file`);
  }
  if (!isObject(value)) throw new ModelFormatError(path, 'expected a JSON object at the top level');
  return value;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

/** The slice of the library's PreTrainedTokenizer we use. Its pieces are callable objects at run time but not typed so. */
interface BpePipeline {
  normalizer: ((text: string) => string) | null;
  pre_tokenizer: ((text: string) => string[]) | null;
  model: (pieces: string[]) => string[];
}

/**
 * Builds a tokenizer from parsed tokenizer.json / tokenizer_config.json objects. `sourceName`
 * names the origin in errors (a file path, or a GGUF file whose metadata was converted).
 */
export function tokenizerFromJson(
  tokenizerJson: object,
  tokenizerConfig: object | null,
  sourceName: string,
): Tokenizer {
  const json = tokenizerJson as Record<string, unknown>;
  const config = (tokenizerConfig ?? {}) as Record<string, unknown>;
  const fail = (message: string): never => {
    throw new ModelFormatError(sourceName, message);
  };

  const model = json['model'];
  if (!isObject(model) || (model['type'] !== undefined && model['type'] !== 'BPE')) {
    fail(`model.type must be "BPE" (dseek supports byte-level BPE tokenizers only)`);
  }
  const { vocab: vocabJson, merges } = model as Record<string, unknown>;
  if (!isObject(vocabJson) || !Array.isArray(merges)) fail('model.vocab (object) and model.merges (array) are required');
  if (!mentionsByteLevel(json['pre_tokenizer']) || !mentionsByteLevel(json['decoder'])) {
    fail('pre_tokenizer and decoder must include ByteLevel (dseek supports byte-level BPE tokenizers only)');
  }

  const vocab = new Map<string, number>();
  for (const [text, id] of Object.entries(vocabJson as Record<string, unknown>)) {
    if (!isTokenId(id)) fail(`model.vocab[${JSON.stringify(text)}] = ${JSON.stringify(id)} is not a token id`);
    vocab.set(text, id as number);
  }
  const added = parseAddedTokens(json['added_tokens'] ?? [], fail);

  let pipeline: BpePipeline;
  try {
    // Only normalizer, pre-tokenizer and BPE model come from the library (see the file comment):
    // no added tokens, post-processor or decoder, and a neutral config. The config matters:
    // tokenizer_class LlamaTokenizer with `legacy: false` makes the library swap our pre-tokenizer
    // for SentencePiece's Metaspace, and its special-token getter throws on AddedToken objects
    // lacking `__type`.
    type LibInput = Parameters<typeof TokenizerLoader.fromPreTrained>[0];
    pipeline = TokenizerLoader.fromPreTrained({
      tokenizerJSON: {
        ...json,
        normalizer: json['normalizer'] ?? null,
        pre_tokenizer: portPreTokenizer(json['pre_tokenizer']),
        post_processor: null,
        decoder: null,
        added_tokens: [],
      } as unknown as LibInput['tokenizerJSON'],
      tokenizerConfig: {} as LibInput['tokenizerConfig'],
    }) as unknown as BpePipeline;
  } catch (e) {
    return fail(`cannot build the tokenizer: ${errorText(e)}`);
  }

  const special = (key: string): string | null => {
    const v = config[key];
    if (v === undefined || v === null) return null;
    if (typeof v === 'string') return v;
    if (isObject(v) && typeof v['content'] === 'string') return v['content'];
    return fail(`tokenizer_config ${key} must be a string or an AddedToken object, got ${JSON.stringify(v)}`);
  };
  const templateOf = (v: unknown): string | null => {
    if (typeof v === 'string') return v;
    // Several named templates: use "default", as transformers does when no name is requested.
    if (Array.isArray(v)) {
      const named = v.find((t: unknown) => isObject(t) && t['name'] === 'default');
      return isObject(named) && typeof named['template'] === 'string' ? named['template'] : null;
    }
    return null;
  };

  return new BpeTokenizer(
    sourceName,
    pipeline,
    vocab,
    added,
    special('bos_token'),
    special('eos_token'),
    // LlamaTokenizer(Fast) adds BOS unless told otherwise.
    typeof config['add_bos_token'] === 'boolean'
      ? config['add_bos_token']
      : /^LlamaTokenizer/.test(String(config['tokenizer_class'] ?? '')),
    templateOf(config['chat_template']),
  );
}

class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly addBosToken: boolean;
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByText = new Map<string, AddedToken>();
  /** Added tokens by first UTF-16 unit, longest first, for the leftmost-longest scan in splitAdded. */
  private readonly addedByFirstUnit = new Map<string, AddedToken[]>();
  private readonly textById: (string | undefined)[];
  private readonly bytesCache: (Uint8Array | undefined)[];

  constructor(
    private readonly source: string,
    private readonly pipeline: BpePipeline,
    private readonly vocab: Map<string, number>,
    added: AddedToken[],
    private readonly bosText: string | null,
    eosText: string | null,
    addBos: boolean,
    readonly chatTemplate: string | null,
  ) {
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    for (const t of added) {
      maxId = Math.max(maxId, t.id);
      this.addedById.set(t.id, t);
      this.addedByText.set(t.content, t);
      const first = t.content[0]!;
      const list = this.addedByFirstUnit.get(first);
      if (list) list.push(t);
      else this.addedByFirstUnit.set(first, [t]);
    }
    for (const list of this.addedByFirstUnit.values()) list.sort((a, b) => b.content.length - a.content.length);
    this.vocabSize = maxId + 1;
    this.textById = new Array<string | undefined>(this.vocabSize);
    for (const [text, id] of vocab) this.textById[id] = text;
    this.bytesCache = new Array<Uint8Array | undefined>(this.vocabSize);
    this.bosId = this.idOfConfigToken(bosText, 'bos_token');
    this.eosId = this.idOfConfigToken(eosText, 'eos_token');
    this.addBosToken = addBos && this.bosId !== null;
  }

  private idOfConfigToken(text: string | null, key: string): number | null {
    if (text === null) return null;
    const id = this.tokenId(text);
    if (id === undefined) throw new ModelFormatError(this.source, `${key} ${JSON.stringify(text)} is not in the vocabulary`);
    return id;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const { addBos = this.addBosToken, parseSpecial = true } = options;
    const ids: number[] = [];
    for (const part of parseSpecial ? this.splitAdded(text) : [text]) {
      if (typeof part === 'number') ids.push(part);
      else this.encodeOrdinary(part, ids);
    }
    // A rendered chat template already starts with BOS: never add a second one.
    const hasBos = ids[0] === this.bosId || (this.bosText !== null && text.startsWith(this.bosText));
    if (addBos && this.bosId !== null && !hasBos) ids.unshift(this.bosId);
    return ids;
  }

  /** Splits out added tokens (leftmost, longest match wins), honouring their lstrip/rstrip flags. */
  private splitAdded(text: string): (string | number)[] {
    const parts: (string | number)[] = [];
    let start = 0;
    let stripNextStart = false;
    const pushText = (s: string) => {
      if (stripNextStart) s = s.trimStart();
      stripNextStart = false;
      if (s) parts.push(s);
    };
    for (let i = 0; i < text.length; ) {
      const hit = this.addedByFirstUnit.get(text[i]!)?.find((t) => text.startsWith(t.content, i));
      if (!hit) {
        i++;
        continue;
      }
      let before = text.slice(start, i);
      if (hit.lstrip) before = before.trimEnd();
      pushText(before);
      parts.push(hit.id);
      stripNextStart = hit.rstrip;
      i += hit.content.length;
      start = i;
    }
    pushText(text.slice(start));
    return parts;
  }

  private encodeOrdinary(text: string, out: number[]): void {
    const { normalizer, pre_tokenizer, model } = this.pipeline;
    const normalized = normalizer ? normalizer(text) : text;
    if (!normalized) return;
    for (const piece of model(pre_tokenizer ? pre_tokenizer(normalized) : [normalized])) {
      const id = this.vocab.get(piece);
      // Every single byte is in a byte-level vocab, so this only trips on an inconsistent vocab/merges pair.
      if (id === undefined) throw new ModelFormatError(this.source, `BPE produced ${JSON.stringify(piece)}, which is not in model.vocab`);
      out.push(id);
    }
  }

  decode(ids: readonly number[], options: { skipSpecial?: boolean } = {}): string {
    const chunks: Uint8Array[] = [];
    for (const id of ids) {
      if (options.skipSpecial && this.isSpecial(id)) continue;
      chunks.push(this.tokenBytes(id));
    }
    return utf8Decoder.decode(Buffer.concat(chunks));
  }

  tokenBytes(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new InvalidInputError('token id', `${id} is outside the tokenizer's 0..${this.vocabSize - 1}`);
    }
    let bytes = this.bytesCache[id];
    if (bytes === undefined) {
      const added = this.addedById.get(id);
      const text = this.textById[id];
      // Ids inside the range that no token uses stand for nothing.
      bytes = added ? utf8.encode(added.content) : text === undefined ? new Uint8Array(0) : byteLevelToBytes(text);
      this.bytesCache[id] = bytes;
    }
    return bytes;
  }

  tokenId(content: string): number | undefined {
    return this.addedByText.get(content)?.id ?? this.vocab.get(bytesToByteLevel(utf8.encode(content)));
  }

  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true || id === this.bosId || id === this.eosId;
  }
}

function parseAddedTokens(value: unknown, fail: (message: string) => never): AddedToken[] {
  if (!Array.isArray(value)) return fail('added_tokens must be an array');
  return value.map((t: unknown, i): AddedToken => {
    if (!isObject(t) || !isTokenId(t['id']) || typeof t['content'] !== 'string' || t['content'] === '') {
      return fail(`added_tokens[${i}] needs an integer id and a non-empty content string`);
    }
    // `normalized` and `single_word` are not honoured: no DeepSeek token sets single_word, and
    // DeepSeek normalizers are empty.
    return { id: t['id'], content: t['content'], special: t['special'] === true, lstrip: t['lstrip'] === true, rstrip: t['rstrip'] === true };
  });
}

// ---- regex porting -----------------------------------------------------------------------------

/** What HF tokenizers' regex engine (Oniguruma) calls `\s`: JS's `\s` adds U+FEFF and lacks U+0085 (NEL). */
const ONIG_SPACE = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Copies a pre_tokenizer config with each Split regex made to mean in JS what it means in HF tokenizers. */
function portPreTokenizer(config: unknown): unknown {
  if (Array.isArray(config)) return config.map(portPreTokenizer);
  if (!isObject(config)) return config ?? null;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) out[k] = portPreTokenizer(v);
  const pattern = config['pattern'];
  if (config['type'] === 'Split' && isObject(pattern) && typeof pattern['Regex'] === 'string') {
    out['pattern'] = { Regex: portRegex(pattern['Regex']) };
  }
  return out;
}

/**
 * Two fixes, applied by a scan that knows whether it is inside a [...] class:
 *  - `\s`/`\S` are spelled out as Oniguruma's whitespace set (a BOM before a word must not join it).
 *  - A descending range `a-b` (a > b) gets its end restored. llama.cpp's copy of the `deepseek-llm`
 *    letter class (and so docs/SPEC.md §7.1) has three Greek Extended range ends NFC-normalized to lookalike
 *    singletons (U+1F7D→U+03CE, U+1FD3→U+0390, U+1FDB→U+038A); JS rejects such a class outright.
 *    The original end is the first code point above `a` whose NFC form is `b`.
 * `\S` inside a class keeps JS's meaning; no DeepSeek pattern has one.
 */
export function portRegex(src: string): string {
  const cps = Array.from(src);
  let out = '';
  let inClass = false;
  let last: number | null = null; // the previous class member, if a plain literal
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i]!;
    if (c === '\\') {
      const n = cps[++i] ?? '';
      out += n === 's' ? (inClass ? ONIG_SPACE : `[${ONIG_SPACE}]`) : n === 'S' && !inClass ? `[^${ONIG_SPACE}]` : c + n;
      last = null;
    } else if (!inClass) {
      out += c;
      if (c === '[') {
        inClass = true;
        last = null;
        if (cps[i + 1] === '^') out += cps[++i];
      }
    } else if (c === ']') {
      out += c;
      inClass = false;
    } else if (c === '-' && last !== null && i + 1 < cps.length && cps[i + 1] !== '\\' && cps[i + 1] !== ']') {
      let end = cps[++i]!.codePointAt(0)!;
      if (end < last) end = undoNfc(last, end) ?? end;
      out += '-' + String.fromCodePoint(end);
      last = null;
    } else {
      out += c;
      last = c.codePointAt(0)!;
    }
  }
  return out;
}

function undoNfc(above: number, nfc: number): number | null {
  const target = String.fromCodePoint(nfc);
  for (let cp = above + 1; cp <= Math.min(above + 0x2000, 0x10ffff); cp++) {
    if (String.fromCodePoint(cp).normalize('NFC') === target) return cp;
  }
  return null;
}

// ---- GPT-2 byte ↔ unicode map ------------------------------------------------------------------

/** Byte-level BPE writes each byte as one printable code point: printable Latin-1 bytes as themselves, the rest as U+0100 + n. */
const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<number, number>();
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cp = printable ? b : 256 + n++;
    BYTE_TO_CHAR[b] = String.fromCodePoint(cp);
    CHAR_TO_BYTE.set(cp, b);
  }
}

const utf8 = new TextEncoder();
/** Invalid bytes become U+FFFD, as in HF's ByteLevel decoder; ignoreBOM keeps a leading U+FEFF that the text really has. */
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

function byteLevelToBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0)!);
    // A vocab entry outside the byte alphabet (e.g. a raw special string kept in model.vocab) stands for its own UTF-8.
    if (b === undefined) out.push(...utf8.encode(ch));
    else out.push(b);
  }
  return Uint8Array.from(out);
}

function bytesToByteLevel(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}

// ---- small helpers -----------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTokenId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function mentionsByteLevel(config: unknown): boolean {
  if (Array.isArray(config)) return config.some(mentionsByteLevel);
  if (!isObject(config)) return false;
  return config['type'] === 'ByteLevel' || mentionsByteLevel(config['pretokenizers']) || mentionsByteLevel(config['decoders']);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
