/**
 * A model's identity for caches shared beyond the process (the context store): derived from what
 * the weights are, never from where they are, so the same model under another path, another file
 * name or on another replica names the same pages, while two fine-tunes of one architecture (same
 * shapes, different weights) differ.
 *
 * What is hashed (SHA-256), cheap enough to run at every load of a 30 GB checkpoint (about 1.3 MiB
 * read per weight file, whatever its size):
 * - the config: config.json parsed and re-serialised with sorted keys (whitespace and key order do
 *   not matter), or nothing for a GGUF file, whose metadata is in its header (below);
 * - per weight file, in the order of their names within the folder (`*.safetensors`, or the one
 *   `.gguf` file; the names themselves are not hashed): its byte length, its first 1 MiB (the
 *   safetensors header with every tensor's name, dtype, shape and offsets, or the GGUF metadata
 *   and tensor infos), and 64 samples of 4 KiB spread evenly over the file, the last one ending at
 *   its end (tensor bytes from every part of the file).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';

const HEAD_BYTES = 1 << 20;
const SAMPLES = 64;
const SAMPLE_BYTES = 4096;
/** Bumped when what is hashed changes, so that old and new fingerprints never collide. */
const SCHEME = 'dseek model fingerprint v2';

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The weight files of a model path (a folder or one .gguf file), in a stable order. */
function weightFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => f.endsWith('.safetensors') || f.endsWith('.gguf'))
    .sort()
    .map((f) => join(path, f));
}

function hashFile(hash: ReturnType<typeof createHash>, file: string, buf: Buffer): void {
  const size = statSync(file).size;
  hash.update(`file ${size}\0`);
  const fd = openSync(file, 'r');
  try {
    const head = readSync(fd, buf, 0, Math.min(HEAD_BYTES, size), 0);
    hash.update(buf.subarray(0, head));
    if (size <= HEAD_BYTES) return;
    for (let i = 0; i < SAMPLES; i++) {
      const at = Math.floor(((size - SAMPLE_BYTES) * i) / (SAMPLES - 1));
      const n = readSync(fd, buf, 0, SAMPLE_BYTES, at);
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

/** Hex SHA-256 identifying the model's content (see the module comment for what is hashed). */
export function modelFingerprint(path: string): string {
  const hash = createHash('sha256').update(`${SCHEME}\0`);
  if (statSync(path).isDirectory()) {
    let config: unknown = null;
    try {
      config = JSON.parse(readFileSync(join(path, 'config.json'), 'utf8'));
    } catch {
      // No readable config: the loader reports that; the weights alone still identify the model.
    }
    hash.update(`config ${canonicalJson(config)}\0`);
  }
  const buf = Buffer.alloc(HEAD_BYTES);
  for (const file of weightFiles(path)) hashFile(hash, file, buf);
  return hash.digest('hex');
}
