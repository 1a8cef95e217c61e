/**
 * Context caching on disk (DeepSeek API, "context caching on disk", 2024-08): prefix units —
 * one latent page each — persisted under a cache directory, keyed by the model's fingerprint and
 * a hash of every token up to the unit's end, so they survive restarts.
 *
 * File layout (little-endian): "DSKC" | u32 version | u32 header length | header JSON |
 * page bytes (layer by layer) | SHA-256 of everything before it. A file whose magic, version,
 * header (model fingerprint, key, geometry) or checksum disagrees is ignored, reported and
 * removed — never served. Total size is capped; the least recently used files go first.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Page, LatentCacheDType } from './pagePool.js';

const MAGIC = 'DSKC';
const VERSION = 1;
const SUFFIX = '.dskc';

export interface DiskCacheOptions {
  readonly dir: string;
  /** Identifies the model's weights; units of another model are foreign. */
  readonly fingerprint: string;
  readonly layers: number;
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
  /** Size cap in bytes. */
  readonly maxBytes: number;
  readonly log?: (line: string) => void;
}

interface Header {
  fingerprint: string;
  key: string;
  layers: number;
  width: number;
  pageTokens: number;
  dtype: LatentCacheDType;
}

export class DiskCache {
  private readonly o: DiskCacheOptions;
  private readonly log: (line: string) => void;
  /** file name → size, for the cap. */
  private readonly sizes = new Map<string, number>();
  private total = 0;
  /** Units found on disk and units written, and corrupt files rejected (for metrics). */
  hits = 0;
  misses = 0;
  writes = 0;
  rejected = 0;

  constructor(options: DiskCacheOptions) {
    this.o = options;
    this.log = options.log ?? (() => {});
    mkdirSync(options.dir, { recursive: true });
    for (const f of readdirSync(options.dir)) {
      if (!f.endsWith(SUFFIX)) continue;
      try {
        const size = statSync(join(options.dir, f)).size;
        this.sizes.set(f, size);
        this.total += size;
      } catch {
        // vanished meanwhile
      }
    }
  }

  get dir(): string {
    return this.o.dir;
  }

  get bytes(): number {
    return this.total;
  }

  get files(): number {
    return this.sizes.size;
  }

  private fileName(key: string): string {
    // The model fingerprint is part of the name, so two models never share a file.
    return `${createHash('sha256').update(this.o.fingerprint).update(key).digest('hex').slice(0, 40)}${SUFFIX}`;
  }

  has(key: string): boolean {
    const found = this.sizes.has(this.fileName(key));
    if (!found) this.misses++;
    return found;
  }

  /** Fill `page` from the unit stored under `key`. False (and the file removed) if absent or invalid. */
  read(key: string, page: Page): boolean {
    const name = this.fileName(key);
    const path = join(this.o.dir, name);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch {
      this.forget(name);
      return false;
    }
    const problem = this.check(bytes, key, page);
    if (problem) {
      this.rejected++;
      this.log(`disk cache: ignoring ${path}: ${problem}`);
      this.remove(name);
      return false;
    }
    const headerLen = bytes.readUInt32LE(8);
    let offset = 12 + headerLen;
    for (const layer of page.layers) {
      const n = layer.byteLength;
      new Uint8Array(layer.buffer, layer.byteOffset, n).set(bytes.subarray(offset, offset + n));
      offset += n;
    }
    try {
      const now = new Date();
      utimesSync(path, now, now); // least-recently-used order
    } catch {
      // best effort
    }
    this.hits++;
    return true;
  }

  /** Store `page` under `key` (atomically: temp file + rename), then enforce the size cap. */
  write(key: string, page: Page): void {
    const name = this.fileName(key);
    if (this.sizes.has(name)) return;
    const header: Header = { fingerprint: this.o.fingerprint, key, layers: this.o.layers, width: this.o.width, pageTokens: this.o.pageTokens, dtype: this.o.dtype };
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    const prefix = Buffer.alloc(12);
    prefix.write(MAGIC, 0, 'latin1');
    prefix.writeUInt32LE(VERSION, 4);
    prefix.writeUInt32LE(headerBytes.length, 8);
    const parts: Buffer[] = [prefix, headerBytes];
    for (const layer of page.layers) parts.push(Buffer.from(layer.buffer, layer.byteOffset, layer.byteLength));
    const body = Buffer.concat(parts);
    const checksum = createHash('sha256').update(body).digest();
    const path = join(this.o.dir, name);
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      writeFileSync(tmp, Buffer.concat([body, checksum]));
      renameSync(tmp, path);
    } catch (err) {
      this.log(`disk cache: could not write ${path}: ${(err as Error).message}`);
      try {
        if (existsSync(tmp)) unlinkSync(tmp);
      } catch {
        // ignore
      }
      return;
    }
    const size = body.length + checksum.length;
    this.sizes.set(name, size);
    this.total += size;
    this.writes++;
    this.enforceCap();
  }

  private check(bytes: Buffer, key: string, page: Page): string | null {
    if (bytes.length < 12 + 32) return 'truncated';
    if (bytes.toString('latin1', 0, 4) !== MAGIC) return 'not a dseek cache file';
    if (bytes.readUInt32LE(4) !== VERSION) return `version ${bytes.readUInt32LE(4)}, expected ${VERSION}`;
    const headerLen = bytes.readUInt32LE(8);
    if (12 + headerLen + 32 > bytes.length) return 'truncated header';
    const body = bytes.subarray(0, bytes.length - 32);
    const sum = createHash('sha256').update(body).digest();
    if (!sum.equals(bytes.subarray(bytes.length - 32))) return 'checksum mismatch (corrupt)';
    let header: Header;
    try {
      header = JSON.parse(bytes.toString('utf8', 12, 12 + headerLen)) as Header;
    } catch {
      return 'header is not JSON';
    }
    if (header.fingerprint !== this.o.fingerprint) return 'written for another model';
    if (header.key !== key) return 'written for another prefix';
    if (header.layers !== this.o.layers || header.width !== this.o.width || header.pageTokens !== this.o.pageTokens || header.dtype !== this.o.dtype) {
      return 'cache geometry differs (layers, width, page size or type)';
    }
    const expected = page.layers.reduce((n, l) => n + l.byteLength, 0);
    if (body.length - 12 - headerLen !== expected) return 'payload size differs';
    return null;
  }

  private enforceCap(): void {
    if (this.total <= this.o.maxBytes) return;
    const byAge = [...this.sizes.keys()]
      .map((name) => {
        try {
          return { name, t: statSync(join(this.o.dir, name)).mtimeMs };
        } catch {
          return { name, t: 0 };
        }
      })
      .sort((a, b) => a.t - b.t);
    for (const { name } of byAge) {
      if (this.total <= this.o.maxBytes) break;
      this.remove(name);
    }
  }

  private remove(name: string): void {
    try {
      unlinkSync(join(this.o.dir, name));
    } catch {
      // already gone
    }
    this.forget(name);
  }

  private forget(name: string): void {
    const size = this.sizes.get(name);
    if (size !== undefined) {
      this.total -= size;
      this.sizes.delete(name);
    }
  }
}
