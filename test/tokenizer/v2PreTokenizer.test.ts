import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tokenizerFromJson, type Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { DEEPSEEK_V2_CHAT_TEMPLATE, renderChat } from '../../src/tokenizer/chatTemplate.js';

// A tiny byte-level BPE tokenizer with the V2 (`deepseek-llm`) pre-tokenizer of docs/SPEC.md §7.1, in the
// JSON form tokenizer.json uses. Its merges are chosen so that every split the pre-tokenizer must
// make would otherwise be merged away: a control tokenizer without the Split stages shows they fire.

// docs/SPEC.md §7.1 steps 1-6, copied verbatim. The letter class is llama.cpp's copy, in which three Greek
// Extended range ends were NFC-normalized (Ὗ-ώ, ῐ-ΐ, ῖ-Ί end in U+03CE, U+0390, U+038A), making
// those ranges descending; the tokenizer restores them.
const V2_SPLITS = [
  "[\\r\\n]",
  "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
  "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
  "\\s+$",
  "[一-龥ࠀ-一가-퟿]+",
  "\\p{N}+",
];
const V3_DIGITS = '\\p{N}{1,3}';

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

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

const vocab: Record<string, number> = {};
BYTE_CHAR.forEach((c, b) => (vocab[c] = b));
const merges: string[] = [];
/** Merge token texts `a` and `b` (both already tokens) into one. */
function join(a: string, b: string): void {
  merges.push(`${bl(a)} ${bl(b)}`);
  vocab[bl(a + b)] ??= Object.keys(vocab).length;
}
/** Make `text` a single token by merging its bytes left to right. */
function build(text: string): void {
  const bytes = Array.from(new TextEncoder().encode(text), (b) => BYTE_CHAR[b]!);
  let prefix = bytes[0]!;
  for (const c of bytes.slice(1)) {
    merges.push(`${prefix} ${c}`);
    prefix += c;
    vocab[prefix] ??= Object.keys(vocab).length;
  }
}
build('12345');
join('\n', '\n');
build('中');
build('文');
join('a', '中'); // ranks below 中+文, so without the CJK split "a中文" → a中|文
join('中', '文');
build('hi');
join('hi', '!');
join(' ', 'hi');
join('x', '1');
build(' é');
build(' \u03ce');
build('\u{1f7d}'); // ώ U+1F7D, the end of the restored range U+1F5F-U+1F7D

const bosId = Object.keys(vocab).length;
const addedToken = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true });

function makeTokenizer(splits: (string | object)[]): Tokenizer {
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      addedToken(bosId, BOS),
      addedToken(bosId + 1, EOS),
      { ...addedToken(bosId + 2, '<mask>'), special: false, lstrip: true, rstrip: true },
    ],
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...splits.map((p) => (typeof p === 'string' ? { type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false } : p)),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  const token = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: token(BOS),
    eos_token: token(EOS),
    // legacy false makes @lenml/tokenizers' LlamaTokenizer replace the pre-tokenizer with
    // SentencePiece's Metaspace; the tokenizer must not be affected.
    legacy: false,
    tokenizer_class: 'LlamaTokenizerFast',
    chat_template: DEEPSEEK_V2_CHAT_TEMPLATE,
  };
  return tokenizerFromJson(json, config, 'synthetic-v2/tokenizer.json');
}

const v2 = makeTokenizer(V2_SPLITS);
const control = makeTokenizer([]);
const pieces = (tok: Tokenizer, text: string) => tok.encode(text, { addBos: false }).map((id) => tok.decode([id]));

test('synthetic V2 tokenizer loads despite the NFC-damaged ranges of the SPEC pattern', () => {
  assert.throws(() => new RegExp(V2_SPLITS[1]!, 'u'), SyntaxError);
  assert.equal(v2.bosId, bosId);
  assert.equal(v2.eosId, bosId + 1);
  assert.equal(v2.vocabSize, bosId + 3);
  assert.equal(v2.addBosToken, true);
  assert.deepEqual(pieces(v2, ' é'), [' é']);
  // Greek Extended is a letter (step 2) but also lies in the CJK step's range U+0800-U+4E00, which
  // splits it from the space again; U+03CE (Greek block, outside that range) stays joined.
  assert.deepEqual(pieces(v2, ' \u{1f7d}'), [' ', '\u{1f7d}']);
  assert.deepEqual(pieces(v2, ' \u03ce'), [' \u03ce']);
});

test('V2: digit runs stay whole (not grouped by 3 as in V3)', () => {
  assert.deepEqual(pieces(v2, '12345'), ['12345']);
  assert.deepEqual(pieces(v2, 'x1'), ['x', '1']);
  assert.deepEqual(pieces(control, 'x1'), ['x1']);
  const v3Digits = makeTokenizer([V3_DIGITS]);
  assert.deepEqual(pieces(v3Digits, '12345'), ['123', '4', '5']);
  // The real V2 tokenizer.json is reported to use a Digits stage instead; the library handles it.
  const digits = makeTokenizer([...V2_SPLITS.slice(0, 5), { type: 'Digits', individual_digits: true }]);
  assert.deepEqual(pieces(digits, '12345'), ['1', '2', '3', '4', '5']);
});

test('V2: each newline is isolated', () => {
  assert.deepEqual(pieces(control, '\n\n'), ['\n\n']);
  assert.deepEqual(pieces(v2, '\n\n'), ['\n', '\n']);
  assert.deepEqual(pieces(v2, 'hi\n\nhi'), ['hi', '\n', '\n', 'hi']);
});

test('V2: CJK runs split from Latin; letters from punctuation; a space joins the next word', () => {
  assert.deepEqual(pieces(control, 'a中文'), ['a中', '文']);
  assert.deepEqual(pieces(v2, 'a中文'), ['a', '中文']);
  assert.deepEqual(pieces(control, 'hi!'), ['hi!']);
  assert.deepEqual(pieces(v2, 'hi!'), ['hi', '!']);
  assert.deepEqual(pieces(v2, ' hi'), [' hi']);
});

test('V2: round trips', () => {
  const texts = [
    'The quick brown fox, 12345 times!\n\n',
    '深度求索 DeepSeek-V2 中文 and English 混合',
    'def f(x):\n\treturn x ** 2  # square\r\n',
    'Ελληνικά ώ ΐ Ί — Кириллица — 😀👍🏽 — العربية',
    '   ',
    'trailing space ',
  ];
  for (const text of texts) assert.equal(v2.decode(v2.encode(text, { addBos: false })), text, JSON.stringify(text));
});

test('V2: the rendered chat template encodes with a single BOS', () => {
  const prompt = renderChat(v2.chatTemplate!, [{ role: 'user', content: 'hi' }], { bosToken: BOS, eosToken: EOS, addGenerationPrompt: true });
  assert.equal(prompt, `${BOS}User: hi\n\nAssistant:`);
  const ids = v2.encode(prompt);
  assert.equal(ids[0], bosId);
  assert.equal(ids.filter((id) => id === bosId).length, 1);
  assert.equal(v2.decode(ids), prompt);
  assert.equal(v2.encode('hi')[0], bosId);
});

test('added tokens: lstrip/rstrip eat the neighbouring spaces; special flag from tokenizer.json', () => {
  assert.deepEqual(pieces(v2, 'hi  <mask>\t hi'), ['hi', '<mask>', 'hi']);
  assert.equal(v2.isSpecial(bosId + 2), false);
  assert.equal(v2.isSpecial(bosId), true);
  assert.equal(v2.decode(v2.encode('a<mask>b', { addBos: false }), { skipSpecial: true }), 'a<mask>b');
});
