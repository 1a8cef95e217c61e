/**
 * The shipped default model (models/default): loads unchanged through loadModel, fits the size
 * budget, keeps its held-out perplexity under a bound (on chapters the trainer held out), and
 * writes recognisable King James English.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/model/load.js';
import { loadModel as loadLibraryModel } from 'dseek';
import { crossEntropy } from '../../src/train/ops.js';
import { evalWindows, splitDocuments, tokenizeDocuments } from '../../src/train/data.js';

const MODEL_DIR = fileURLToPath(new URL('../../../models/default', import.meta.url));
const SAMPLE = fileURLToPath(new URL('../../../test/train/data/heldout-kjv.txt', import.meta.url));

/** Measured at release: 41.1 on this sample (2,048 tokens); the unigram baseline is ~400. The bound leaves room for kernel changes, not for a broken model. */
const PERPLEXITY_BOUND = 50;

const loaded = loadModel(MODEL_DIR);

test('models/default: a DeepSeek-V3-architecture checkpoint of at most 30 MB with tokenizer, chat template, card and corpus license', () => {
  let bytes = 0;
  for (const f of readdirSync(MODEL_DIR)) bytes += statSync(join(MODEL_DIR, f)).size;
  assert.ok(bytes <= 30 * 1024 * 1024, `${bytes} bytes`);
  const c = loaded.config;
  assert.equal(c.modelType, 'deepseek_v3');
  assert.equal(c.topkMethod, 'noaux_tc');
  assert.ok(c.nRoutedExperts > 0 && c.nSharedExperts > 0 && c.kvLoraRank > 0);
  const tok = loaded.tokenizer!;
  assert.ok(tok.chatTemplate?.includes('Assistant:'));
  assert.equal(tok.bosId, c.bosTokenId);
  assert.deepEqual([tok.eosId], c.eosTokenIds);
  const text = 'And the LORD spake unto Moses, saying,\nSpeak unto the children of Israel.';
  assert.equal(tok.decode(tok.encode(text), { skipSpecial: true }), text);
  const card = readFileSync(join(MODEL_DIR, 'README.md'), 'utf8');
  assert.match(card, /unigram baseline/);
  assert.match(card, /perplexity/);
  assert.ok(statSync(join(MODEL_DIR, 'LICENSE-corpus.txt')).size > 0);
});

test(`models/default: held-out perplexity stays under ${PERPLEXITY_BOUND}`, () => {
  const tok = loaded.tokenizer!;
  const stream = tokenizeDocuments(splitDocuments(readFileSync(SAMPLE, 'utf8')), (t) => tok.encode(t, { addBos: false, parseSpecial: false }), tok.eosId!);
  const T = loaded.config.maxPositionEmbeddings;
  const V = loaded.config.vocabSize;
  let nll = 0;
  let n = 0;
  for (const b of evalWindows(stream, T, tok.bosId!, 0)) {
    for (let i = 0; i < b.B; i++) {
      const logits = loaded.model.forward(Array.from(b.inputs.subarray(i * T, (i + 1) * T)), loaded.model.createCache(), { logits: 'all' });
      nll += crossEntropy(logits, b.targets.subarray(i * T, (i + 1) * T), T, V, null);
      n += T;
    }
  }
  assert.ok(n >= 1000, `${n} tokens`);
  const ppl = Math.exp(nll / n);
  assert.ok(ppl < PERPLEXITY_BOUND, `held-out perplexity ${ppl.toFixed(2)} over ${n} tokens`);
});

test('models/default: greedy text continues a prompt in the corpus style', async () => {
  const model = await loadLibraryModel(undefined, { cacheType: 'f32' });
  const { text } = await model.generate('And the LORD said unto', { maxTokens: 40, temperature: 0 }).finally(() => model.close());
  const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
  const common = new Set(['the', 'and', 'of', 'unto', 'i', 'thou', 'thee', 'thy', 'shall', 'lord', 'him', 'his', 'my', 'that', 'in', 'is', 'me', 'ye', 'not', 'for', 'will', 'be', 'a', 'to', 'them', 'they', 'he', 'said', 'moses', 'israel', 'god', 'all', 'which', 'this', 'with']);
  const hits = words.filter((w) => common.has(w)).length;
  assert.ok(words.length >= 10 && hits / words.length > 0.3, `generated: ${JSON.stringify(text)}`);
});
