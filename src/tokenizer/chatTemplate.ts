/** Chat prompt rendering with the checkpoint's own Jinja template (docs/SPEC.md §7.2). */
import { Template } from '@huggingface/jinja';
import { InvalidInputError, ModelFormatError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

export interface RenderChatOptions {
  bosToken: string;
  eosToken: string;
  /** Append the assistant-turn opener so the model answers next. */
  addGenerationPrompt: boolean;
}

/**
 * DeepSeek-V2(-Lite)-Chat / Coder-V2-Instruct template, verbatim from their tokenizer_config.json,
 * for checkpoints (e.g. some GGUFs) that ship none. The generation prompt is `Assistant:` with no
 * trailing space: a space there makes Coder-V2-Lite answer in Chinese or repeat itself.
 */
export const DEEPSEEK_V2_CHAT_TEMPLATE = String.raw`{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}`;

/**
 * Renders `messages` into the prompt text. The result starts with `bosToken` for DeepSeek
 * templates, so encode it with parseSpecial on; the tokenizer then adds no second BOS.
 * Throws ModelFormatError when the template does not parse, InvalidInputError when it fails on this
 * conversation (typically the template's own `raise_exception`, e.g. roles that do not alternate).
 */
export function renderChat(template: string, messages: ChatMessage[], options: RenderChatOptions): string {
  let compiled: Template;
  try {
    compiled = new Template(template);
  } catch (e) {
    throw new ModelFormatError('chat_template', `the chat template does not parse: ${errorText(e)}`);
  }
  try {
    return compiled.render({
      // Plain copies: the template sees exactly role and content.
      messages: messages.map(({ role, content }) => ({ role, content })),
      bos_token: options.bosToken,
      eos_token: options.eosToken,
      add_generation_prompt: options.addGenerationPrompt,
    });
  } catch (e) {
    throw new InvalidInputError('messages', `the chat template cannot render this conversation: ${errorText(e)}`);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A conversation → the prompt token ids the model answers: the tokenizer's own chat template
 * rendered with its BOS/EOS spellings and the assistant-turn opener, then encoded with special
 * tokens parsed. The one chat-rendering path: the CLI, the server and the library all call it, so
 * the same conversation gives the same ids everywhere (and hits the same prefix-cache pages).
 * Throws InvalidInputError (field `messages`) when the model has no chat template.
 */
export function chatPromptIds(tokenizer: Tokenizer, messages: readonly ChatMessage[]): number[] {
  if (!tokenizer.chatTemplate) {
    throw new InvalidInputError('messages', 'this model has no chat template (tokenizer_config.json has no chat_template): send a raw prompt instead of messages');
  }
  const text = renderChat(tokenizer.chatTemplate, [...messages], {
    bosToken: tokenText(tokenizer, tokenizer.bosId),
    eosToken: tokenText(tokenizer, tokenizer.eosId),
    addGenerationPrompt: true,
  });
  // The template's special tokens (BOS, role markers) must parse. User text that spells a special
  // token also parses here — as in every HF-template server; the template has no way to escape it.
  return tokenizer.encode(text);
}

function tokenText(tokenizer: Tokenizer, id: number | null): string {
  return id === null ? '' : new TextDecoder().decode(tokenizer.tokenBytes(id));
}
