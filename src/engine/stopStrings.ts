/**
 * Stop strings for streamed text, with OpenAI semantics: generation ends at the first stop
 * string, and neither the stop string nor anything after it is returned.
 *
 * Text that might still turn out to be the start of a stop string is held back until it is
 * decided, so a stop split across chunks (tokens) is never partly emitted. "First" means the
 * match that is completed earliest in the text (smallest end offset; on a tie the longer one).
 * That is what a token-by-token check sees first, and it makes the result independent of how
 * the text happens to be chunked.
 */
import { InvalidInputError } from '../errors.js';

/** OpenAI allows 4; we allow more, but a bound keeps the per-chunk scan cheap. */
export const MAX_STOP_STRINGS = 16;

export interface StopPushResult {
  /** Text that is now certain to be output (may be empty). */
  emit: string;
  /** True once a stop string has been seen; the caller should end generation. */
  stopped: boolean;
}

export class StopStringMatcher {
  private readonly stops: readonly string[];
  /** Tail of the text seen so far that is a proper prefix of some stop string. */
  private held = '';
  private stopped = false;

  constructor(stops: string[]) {
    if (!Array.isArray(stops)) throw new InvalidInputError('stop', 'must be an array of strings');
    if (stops.length > MAX_STOP_STRINGS) {
      throw new InvalidInputError('stop', `at most ${MAX_STOP_STRINGS} stop strings are allowed, got ${stops.length}`);
    }
    stops.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) {
        throw new InvalidInputError('stop', `stop string ${i} must be a non-empty string`);
      }
    });
    this.stops = [...stops];
  }

  /** Feed the next piece of generated text. After a stop, further pushes emit nothing. */
  push(text: string): StopPushResult {
    if (this.stopped) return { emit: '', stopped: true };
    const buf = this.held + text;

    // Earliest-completed full match. `held` had no full match when it was kept (that push would
    // have stopped), so any match found here ends inside the new text.
    let bestStart = -1;
    let bestEnd = Infinity;
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at < 0) continue;
      const end = at + s.length;
      if (end < bestEnd || (end === bestEnd && at < bestStart)) {
        bestStart = at;
        bestEnd = end;
      }
    }
    if (bestStart >= 0) {
      this.stopped = true;
      this.held = '';
      return { emit: buf.slice(0, bestStart), stopped: true };
    }

    // Hold back the longest suffix that is a proper prefix of some stop: a later match can only
    // start there or later, so everything before it is final.
    const hold = this.longestPendingSuffix(buf);
    this.held = buf.slice(buf.length - hold);
    return { emit: buf.slice(0, buf.length - hold), stopped: false };
  }

  /** End of generation: release the held-back text (it never completed a stop). */
  flush(): string {
    const out = this.held;
    this.held = '';
    return out;
  }

  private longestPendingSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      // Try longest first; a suffix of length len must equal s's first len characters.
      for (let len = Math.min(s.length - 1, buf.length); len > best; len--) {
        if (buf.endsWith(s.slice(0, len))) {
          best = len;
          break;
        }
      }
    }
    return best;
  }
}
