/** Turns generated token ids into text as they arrive, without ever splitting a UTF-8 character. */
import type { Tokenizer } from './tokenizer.js';

export class StreamingDetokenizer {
  // A streaming TextDecoder keeps an incomplete multi-byte sequence until the bytes that complete
  // it arrive, so the concatenated output equals tokenizer.decode() of all ids. ignoreBOM keeps a
  // generated U+FEFF instead of silently dropping it at the start, as decode() does.
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  private readonly skipSpecial: boolean;

  constructor(
    private readonly tokenizer: Tokenizer,
    options: { skipSpecial?: boolean } = {},
  ) {
    this.skipSpecial = options.skipSpecial ?? false;
  }

  /** The text completed by this token (possibly empty while a character is still incomplete). */
  push(id: number): string {
    if (this.skipSpecial && this.tokenizer.isSpecial(id)) return '';
    return this.decoder.decode(this.tokenizer.tokenBytes(id), { stream: true });
  }

  /** Whatever is still held back (an incomplete character becomes U+FFFD); the detokenizer can then be reused. */
  flush(): string {
    return this.decoder.decode();
  }
}
