/** How chat() separates a reasoning model's thinking from its answer. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitThinking } from '../../src/library/reasoning.js';

test('text before </think> is the reasoning (an opening <think> dropped), the rest the answer', () => {
  assert.deepEqual(splitThinking('<think>\nadd 2 and 2\n</think>\n\n4'), { reasoning: 'add 2 and 2', text: '4' });
  assert.deepEqual(splitThinking('the template opened it</think> yes'), { reasoning: 'the template opened it', text: 'yes' });
});

test('without </think> the whole text is the answer and there is no reasoning', () => {
  assert.deepEqual(splitThinking('<think> still thinking when max tokens ran out'), { text: '<think> still thinking when max tokens ran out' });
  assert.deepEqual(splitThinking('plain answer'), { text: 'plain answer' });
});
