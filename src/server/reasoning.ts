/**
 * DeepSeek's `reasoning_content`: on a template that thinks (R1, V3.1 in thinking mode: the reply
 * starts with reasoning, `<think>` opened by the template or by the model, and closes it with
 * `</think>`), the text before `</think>` is the reasoning and the rest the answer, as DeepSeek's
 * API returns them. The splitter works on a stream of pieces: a `</think>` cut across two pieces
 * is held back until it is whole.
 */
import type { Tokenizer } from '../tokenizer/tokenizer.js';

const OPEN = '<think>';
const CLOSE = '</think>';

/** Whether this model's template thinks (mentions `<think>` or `</think>`, as R1's and V3.1's do). */
export function thinks(tokenizer: Tokenizer): boolean {
  const template = tokenizer.chatTemplate ?? '';
  return template.includes(OPEN) || template.includes(CLOSE);
}

/** Whether the rendered prompt already opened the reasoning (R1's and V3.1's templates end it with `<think>`). */
export function promptOpensThinking(tokenizer: Tokenizer, prompt: readonly number[]): boolean {
  // Enough tokens for `<think>` even where a small vocabulary spells it in pieces.
  return tokenizer.decode(prompt.slice(-16)).trimEnd().endsWith(OPEN);
}

export class ReasoningSplitter {
  private buffer = '';
  private done = false;
  private started = false;
  private closed = false;
  private contentStarted = false;

  /** Whether the reasoning was closed by `</think>` (not merely absent). */
  get closedByThink(): boolean {
    return this.closed;
  }

  /**
   * @param opened the prompt opened `<think>`, so the reply starts inside the reasoning. Otherwise
   *   the reply is reasoning only if it opens `<think>` itself; if it does not, it is all content.
   */
  constructor(private readonly opened: boolean) {}

  /** Whether `</think>` has been seen: the rest is content. */
  get answering(): boolean {
    return this.done;
  }

  /** The next piece → what of it is reasoning and what is content (either may be empty). */
  push(piece: string): { reasoning: string; content: string } {
    if (this.done) {
      // The blank lines after `</think>` separate, they are not the answer.
      if (this.closed && !this.contentStarted) {
        piece = piece.replace(/^\s+/, '');
        this.contentStarted = piece !== '';
      }
      return { reasoning: '', content: piece };
    }
    this.buffer += piece;
    if (!this.started) {
      // A leading `<think>` (the model opened it itself) is markup, not reasoning.
      const trimmed = this.buffer.replace(/^\s+/, '');
      if (OPEN.startsWith(trimmed) && trimmed.length < OPEN.length) return { reasoning: '', content: '' };
      this.started = true;
      if (trimmed.startsWith(OPEN)) this.buffer = trimmed.slice(OPEN.length).replace(/^\s+/, '');
      else if (this.opened) this.buffer = trimmed;
      else {
        this.done = true;
        const content = this.buffer;
        this.buffer = '';
        return { reasoning: '', content };
      }
    }
    const end = this.buffer.indexOf(CLOSE);
    if (end >= 0) {
      const reasoning = this.buffer.slice(0, end).replace(/\s+$/, '');
      const content = this.buffer.slice(end + CLOSE.length).replace(/^\s+/, '');
      this.buffer = '';
      this.done = true;
      this.closed = true;
      this.contentStarted = content !== '';
      return { reasoning, content };
    }
    // Keep back a tail that may be the start of `</think>`, and the whitespace before it (trimmed if the reasoning ends there).
    let keep = 0;
    for (let k = Math.min(CLOSE.length - 1, this.buffer.length); k > 0; k--) {
      if (CLOSE.startsWith(this.buffer.slice(-k))) {
        keep = k;
        break;
      }
    }
    while (keep < this.buffer.length && /\s/.test(this.buffer[this.buffer.length - keep - 1]!)) keep++;
    const reasoning = this.buffer.slice(0, this.buffer.length - keep);
    this.buffer = this.buffer.slice(this.buffer.length - keep);
    return { reasoning, content: '' };
  }

  /** The end of the stream: whatever is held back (a reply cut off while reasoning is all reasoning). */
  end(): { reasoning: string; content: string } {
    const rest = this.buffer;
    this.buffer = '';
    if (!this.started) return this.opened ? { reasoning: rest.trim(), content: '' } : { reasoning: '', content: rest };
    return this.done ? { reasoning: '', content: rest } : { reasoning: rest.trimEnd(), content: '' };
  }
}

/** A whole reply → reasoning and content. */
export function splitReasoning(text: string, opened: boolean): { reasoning: string; content: string } {
  const s = new ReasoningSplitter(opened);
  const a = s.push(text);
  const b = s.end();
  return { reasoning: a.reasoning + b.reasoning, content: a.content + b.content };
}
