/** Parsing and checking of CLI arguments: each bad value is an InvalidInputError naming the flag. */
import { InvalidInputError, ModelFormatError } from '../errors.js';
import { DEFAULT_MODEL_DIR, resolveModelSource } from '../library/source.js';
import type { SamplingOptions } from '../engine/sampler.js';

export { DEFAULT_MODEL_DIR } from '../library/source.js';

/**
 * The local path of --model: a folder or .gguf file as given, a hub id (org/name) downloaded once
 * into the cache with progress on stderr, or the bundled default model when omitted.
 */
export async function resolveModelPath(model: string | undefined): Promise<string> {
  let last = '';
  try {
    return await resolveModelSource(model, {
      onDownload: (file, done, total) => {
        const line = `downloading ${model}: ${file} ${(done / 2 ** 20).toFixed(1)}${total ? ` / ${(total / 2 ** 20).toFixed(1)}` : ''} MiB`;
        if (line !== last && process.stderr.isTTY) process.stderr.write(`\r${line}`);
        last = line;
      },
    });
  } catch (err) {
    if (model === undefined && err instanceof ModelFormatError) {
      throw new InvalidInputError('--model', `not given, and no bundled default model is installed at ${DEFAULT_MODEL_DIR}: pass --model <folder>`);
    }
    throw err;
  } finally {
    if (last && process.stderr.isTTY) process.stderr.write('\n');
  }
}

/** "0,17,42" → [0, 17, 42]. */
export function parseTokenList(flag: string, text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.every((p) => p === '')) {
    throw new InvalidInputError(flag, 'empty: give comma-separated token ids, e.g. 0,17,42');
  }
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new InvalidInputError(flag, `"${p}" is not a token id (a non-negative integer)`);
    const n = Number(p);
    if (!Number.isSafeInteger(n)) throw new InvalidInputError(flag, `${p} is too large`);
    return n;
  });
}

export function parseInteger(flag: string, text: string, min = 0): number {
  if (!/^-?\d+$/.test(text.trim())) throw new InvalidInputError(flag, `"${text}" is not an integer`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidInputError(flag, `must be an integer ≥ ${min}, got ${text}`);
  return n;
}

export function parseNumber(flag: string, text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new InvalidInputError(flag, `"${text}" is not a number`);
  return n;
}

/** Sampling flags shared by `run`, `chat` and `generate`, as commander hands them over. */
export interface SamplingFlags {
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  repeatPenalty?: string;
  frequencyPenalty?: string;
  presencePenalty?: string;
  seed?: string;
}

export function samplingFromFlags(f: SamplingFlags): SamplingOptions {
  const o: SamplingOptions = {};
  if (f.temperature !== undefined) o.temperature = parseNumber('--temperature', f.temperature);
  if (f.topP !== undefined) o.topP = parseNumber('--top-p', f.topP);
  if (f.topK !== undefined) o.topK = parseInteger('--top-k', f.topK);
  if (f.minP !== undefined) o.minP = parseNumber('--min-p', f.minP);
  if (f.repeatPenalty !== undefined) o.repetitionPenalty = parseNumber('--repeat-penalty', f.repeatPenalty);
  if (f.frequencyPenalty !== undefined) o.frequencyPenalty = parseNumber('--frequency-penalty', f.frequencyPenalty);
  if (f.presencePenalty !== undefined) o.presencePenalty = parseNumber('--presence-penalty', f.presencePenalty);
  if (f.seed !== undefined) o.seed = parseInteger('--seed', f.seed, Number.MIN_SAFE_INTEGER);
  return o;
}

/** Flags of the repacked-weights cache (`bench`, `serve`, `run`, `chat`, …), as commander hands them over. */
export interface RepackFlags {
  /** commander's `--no-repack` sets this false. */
  repack?: boolean;
  repackCacheSize?: string;
}

/** LoadOptions fields for the repack flags (unset flags keep the defaults and DSEEK_* variables). */
export function repackFromFlags(f: RepackFlags): { repack?: boolean; repackCacheMiB?: number } {
  return {
    ...(f.repack === false ? { repack: false } : {}),
    ...(f.repackCacheSize !== undefined ? { repackCacheMiB: parseInteger('--repack-cache-size', f.repackCacheSize, 1) } : {}),
  };
}
