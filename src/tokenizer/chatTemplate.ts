/** Chat prompt rendering with the checkpoint's own Jinja template (docs/SPEC.md §7.2). */
import { randomBytes } from 'node:crypto';
import { Template } from '@huggingface/jinja';
import { InvalidInputError, ModelFormatError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  /** An assistant turn's calls, as Hugging Face templates that know tools read them (DeepSeek-V2.5/V3). */
  tool_calls?: readonly { readonly id: string; readonly type: 'function'; readonly function: { readonly name: string; readonly arguments: string } }[];
  /** A `tool` turn: the call it answers. */
  tool_call_id?: string;
}

export interface ChatPromptOptions {
  /**
   * Continue the last message (an assistant turn) instead of opening a new one: DeepSeek's chat
   * prefix completion. The template renders the conversation without the generation prompt and
   * the end-of-sentence token it closes that turn with is cut off.
   */
  continueFinal?: boolean;
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
      // Plain copies: the template sees exactly role, content and the tool fields that are set.
      messages: messages.map(({ role, content, tool_calls, tool_call_id }) => ({
        role,
        // A turn that only called tools has no content: templates test `content is none` (DeepSeek-V3's does).
        content: tool_calls !== undefined && tool_calls.length > 0 && content === '' ? null : content,
        ...(tool_calls !== undefined && { tool_calls: tool_calls.map((c) => ({ id: c.id, type: c.type, function: { name: c.function.name, arguments: c.function.arguments } })) }),
        ...(tool_call_id !== undefined && { tool_call_id }),
      })),
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
 * rendered with its BOS/EOS spellings and the assistant-turn opener, then encoded. The one
 * chat-rendering path: the CLI, the server and the library all call it, so the same conversation
 * gives the same ids everywhere (and hits the same prefix-cache pages).
 *
 * Only the template's own markers become special tokens. Message text (and tool-call arguments)
 * is untrusted: a user who writes `<｜end▁of▁sentence｜>` or `<｜Assistant｜>` must not end or forge
 * a turn. So the template is rendered with a random placeholder for each text, its own output is
 * encoded with special tokens parsed, and the texts are put back as plain text, merged with the
 * template text around them before encoding, so that BPE merges across the seam (`User: Hello`)
 * come out exactly as when the whole string is encoded.
 * Throws InvalidInputError (field `messages`) when the model has no chat template.
 */
export function chatPromptIds(tokenizer: Tokenizer, messages: readonly ChatMessage[], options: ChatPromptOptions = {}): number[] {
  if (!tokenizer.chatTemplate) {
    throw new InvalidInputError('messages', 'this model has no chat template (tokenizer_config.json has no chat_template): send a raw prompt instead of messages');
  }
  const nonce = randomBytes(8).toString('hex');
  const texts: string[] = [];
  const hold = (text: string) => `\uE000${nonce}:${texts.push(text) - 1}\uE001`;
  const placeheld = messages.map((m): ChatMessage => ({
    ...m,
    content: m.tool_calls !== undefined && m.tool_calls.length > 0 && m.content === '' ? '' : hold(m.content),
    ...(m.tool_calls !== undefined && { tool_calls: m.tool_calls.map((c) => ({ ...c, function: { name: c.function.name, arguments: hold(c.function.arguments) } })) }),
  }));
  const eos = tokenText(tokenizer, tokenizer.eosId);
  let rendered = renderChat(tokenizer.chatTemplate, placeheld, {
    bosToken: tokenText(tokenizer, tokenizer.bosId),
    eosToken: eos,
    addGenerationPrompt: options.continueFinal !== true,
  });
  if (options.continueFinal === true) {
    rendered = rendered.trimEnd();
    if (eos !== '' && rendered.endsWith(eos)) rendered = rendered.slice(0, -eos.length);
  }
  // Segments: special-token ids from the template, and plain text (template text and messages).
  const ids: number[] = [];
  let plain = '';
  const flush = () => {
    if (plain !== '') ids.push(...tokenizer.encode(plain, { parseSpecial: false, addBos: false }));
    plain = '';
  };
  const pattern = new RegExp(`\uE000${nonce}:(\\d+)\uE001`, 'g');
  let at = 0;
  const templateText = (piece: string) => {
    if (piece === '') return;
    let run: number[] = [];
    const endRun = () => {
      if (run.length > 0) plain += tokenizer.decode(run);
      run = [];
    };
    for (const id of tokenizer.encode(piece, { parseSpecial: true, addBos: false })) {
      if (tokenizer.isSpecial(id) || isAddedOnly(tokenizer, id)) {
        endRun();
        flush();
        ids.push(id);
      } else run.push(id);
    }
    endRun();
  };
  for (const m of rendered.matchAll(pattern)) {
    templateText(rendered.slice(at, m.index));
    plain += texts[Number(m[1])] ?? '';
    at = m.index + m[0].length;
  }
  templateText(rendered.slice(at));
  flush();
  if (tokenizer.addBosToken && tokenizer.bosId !== null && ids[0] !== tokenizer.bosId) ids.unshift(tokenizer.bosId);
  return ids;
}

/**
 * An added token the template spelled that plain-text encoding would not reproduce (e.g.
 * `<｜User｜>`, not flagged special in every tokenizer.json): it must stay an id.
 */
function isAddedOnly(tokenizer: Tokenizer, id: number): boolean {
  const text = new TextDecoder().decode(tokenizer.tokenBytes(id));
  const plain = tokenizer.encode(text, { parseSpecial: false, addBos: false });
  return !(plain.length === 1 && plain[0] === id);
}

function tokenText(tokenizer: Tokenizer, id: number | null): string {
  return id === null ? '' : new TextDecoder().decode(tokenizer.tokenBytes(id));
}
