/**
 * Reasoning models (DeepSeek-R1 and its distills) think first and answer after `</think>`; R1's
 * chat template opens `<think>` itself, so the output often holds only the closing tag.
 */
export function splitThinking(text: string): { text: string; reasoning?: string } {
  const end = text.indexOf('</think>');
  if (end < 0) return { text };
  return { reasoning: text.slice(0, end).replace(/^\s*<think>/, '').trim(), text: text.slice(end + '</think>'.length).trimStart() };
}
