/**
 * The BPE trainer: deterministic, and its tokenizer.json loads through src/tokenizer (the
 * @lenml/tokenizers pipeline inference uses) with exact round trips, the same ids as the trainer's
 * own encoder, BOS/EOS as special tokens, and a working chat template.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpeEncoder, BOS_TOKEN, EOS_TOKEN, tokenizerConfigJson, tokenizerJson, trainBpe } from '../../src/train/bpe.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { renderChat } from '../../src/tokenizer/chatTemplate.js';
import { splitDocuments } from '../../src/train/data.js';
import { syntheticCorpus, tempDir } from './helpers.js';

const EXTRA = [
  'In the beginning God created the heaven and the earth.',
  'And God said, Let there be light: and there was light.',
  "Thou shalt love thy neighbour as thyself; it's 42 o'clock — naïve café, 東京, emoji 🙂.",
];

function trained(vocabSize = 330) {
  const docs = [...splitDocuments(syntheticCorpus(60)), ...EXTRA];
  return trainBpe(docs, { vocabSize });
}

test('BPE training is deterministic and fills the vocabulary: specials, 256 bytes, merges', () => {
  const a = trained();
  const b = trained();
  assert.deepEqual(a.merges, b.merges);
  assert.equal(a.tokens.length, 330);
  assert.equal(a.tokens[0], BOS_TOKEN);
  assert.equal(a.tokens[1], EOS_TOKEN);
  assert.ok(a.merges.length >= 330 - 2 - 256);
});

test('tokenizer.json loads with loadTokenizer: round trips, same ids as the trainer, specials, chat template', () => {
  const model = trained();
  const dir = tempDir('bpe');
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(model)));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(model, 64)));
    const tok = loadTokenizer(dir);
    assert.ok(tok);
    assert.equal(tok.vocabSize, 330);
    assert.equal(tok.bosId, 0);
    assert.equal(tok.eosId, 1);
    const enc = new BpeEncoder(model);
    const samples = [
      ...EXTRA,
      'And the lord said unto moses,\nthey went up.\n\n  Spaces   and\ttabs\r\n',
      'Unseen words: xylophone QUIZ zebra; numbers 1234567 and 3.14159!',
      '',
      ' leading space',
      '\u{1F600}\u{1F680} astral and \u00e9\u0301 combining',
    ];
    for (const s of samples) {
      const ids = tok.encode(s, { addBos: false });
      assert.deepEqual(ids, enc.encode(s), `ids of ${JSON.stringify(s)}`);
      assert.equal(tok.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
      const withBos = tok.encode(s);
      assert.equal(withBos[0], 0);
      assert.equal(tok.decode(withBos, { skipSpecial: true }), s);
    }
    // Merges made common words single tokens.
    assert.ok(tok.encode(' the', { addBos: false }).length === 1);
    // Specials: parsed from text, one BOS only, EOS stops.
    assert.deepEqual(tok.encode(`${BOS_TOKEN}And${EOS_TOKEN}`).filter((id) => id < 2), [0, 1]);
    const prompt = renderChat(tok.chatTemplate!, [{ role: 'user', content: 'Who made the light?' }], {
      bosToken: BOS_TOKEN,
      eosToken: EOS_TOKEN,
      addGenerationPrompt: true,
    });
    assert.equal(prompt, `${BOS_TOKEN}User: Who made the light?\n\nAssistant:`);
    const ids = tok.encode(prompt);
    assert.equal(ids.filter((id) => id === 0).length, 1);
    assert.equal(tok.decode(ids, { skipSpecial: true }), 'User: Who made the light?\n\nAssistant:');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
