/**
 * A model's identity for caches that outlive the process (the disk context cache): the config and
 * the weight files' sizes plus samples of their bytes. Cheap on 30 GB checkpoints, and two
 * fine-tunes of one architecture (same shapes, different weights) still differ.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';

const SAMPLES = 16;
const SAMPLE_BYTES = 64 * 1024;

export function modelFingerprint(path: string): string {
  const hash = createHash('sha256');
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f.endsWith('.gguf'))
        .sort()
        .map((f) => join(path, f))
    : [path];
  const buf = Buffer.alloc(SAMPLE_BYTES);
  for (const file of files) {
    const size = statSync(file).size;
    hash.update(`${file.slice(file.lastIndexOf('/') + 1)}:${size};`);
    const fd = openSync(file, 'r');
    try {
      for (let i = 0; i < SAMPLES; i++) {
        const at = Math.floor(((size - Math.min(size, SAMPLE_BYTES)) * i) / (SAMPLES - 1));
        const n = readSync(fd, buf, 0, Math.min(SAMPLE_BYTES, size), at);
        hash.update(buf.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
  }
  return hash.digest('hex');
}
