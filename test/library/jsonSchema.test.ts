/**
 * The library's `responseFormat: { type: 'json_schema', schema }` on the bundled model, imported
 * by the package's name: the output parses and follows the schema; an unsupported keyword throws
 * InvalidInputError naming it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError, loadModel, type Model } from 'dseek';

let model: Model;
before(async () => {
  model = await loadModel(undefined, { threads: 1 });
});
after(() => model.close());

test('model.chat with a json_schema response format returns JSON that follows the schema', async () => {
  const schema = { type: 'object', properties: { book: { enum: ['Genesis', 'Exodus'] }, verse: { type: 'integer' } }, required: ['book', 'verse'] };
  for (const seed of [1, 2, 3]) {
    const r = await model.chat([{ role: 'user', content: 'Name a verse.' }], { responseFormat: { type: 'json_schema', schema }, maxTokens: 40, seed });
    const v = JSON.parse(r.text) as { book: string; verse: number };
    assert.ok(['Genesis', 'Exodus'].includes(v.book) && Number.isInteger(v.verse), r.text);
    assert.equal(r.finishReason, 'stop');
  }
});

test('an unsupported keyword throws InvalidInputError naming it', async () => {
  await assert.rejects(
    model.chat([{ role: 'user', content: 'x' }], { responseFormat: { type: 'json_schema', schema: { type: 'string', pattern: 'a+' } } }),
    (e: unknown) => e instanceof InvalidInputError && e.field === 'responseFormat.schema.pattern',
  );
});
