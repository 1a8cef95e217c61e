/**
 * Repack once, map forever: the native backend's interleaved copies of a model's weights, kept in
 * one file per model and set of layouts under the cache folder (default
 * ~/.cache/dseek/repacked), memory-mapped on later loads so that a warm load costs a mapping and
 * a checksum pass instead of seconds of repacking, and the original pages are never touched.
 *
 * File: "DSEEKRP1" | u32 header length | header JSON | zero padding to 4 KiB | tensors, each at a
 * 4 KiB-aligned offset. The header names the format version, the level that wrote it, the key, and per tensor
 * its layout, offset, bytes and 64-bit content hash (addon `hashBytes`); a load re-hashes every
 * tensor, and a file whose header, size, version or any hash disagrees is removed and rebuilt,
 * never used.
 *
 * Key: SHA-256 of the format version, and per tensor its type, shape, byte length, layout and
 * the content hash of up to three 4 KiB samples (start, middle, end) — so the same weights under
 * another path or name hit, a changed file misses, and levels that pick the same layouts (AVX-512
 * and AMX) share one file while a level that picks another (AVX2's 6-bit Q6_K) gets its own.
 * (A change confined to unsampled bytes of a
 * tensor is not seen by the key; the stored hashes then still match the old copy. Content
 * hashing every weight at each load would cost what repacking costs.)
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statfsSync, statSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../tensor.js';

/** Bumped whenever a layout in ops.h changes. */
export const REPACK_FORMAT_VERSION = 3;
const MAGIC = 'DSEEKRP1';
const ALIGN = 4096;
const SAMPLE = 4096;
/** Free space a new cache file must leave on its disk. */
const DISK_MARGIN = 1 << 30;

export interface RepackAddon {
  repackPlan(wtype: number, rows: number, cols: number): [layout: number, bytes: number];
  repack(src: Uint8Array, dst: Uint8Array, wtype: number, rows: number, cols: number): number;
  hashBytes(view: Uint8Array): string;
  /** Read-only views of byte regions of a file, over one shared mapping. */
  mapRegions(path: string, regions: ReadonlyArray<{ offset: number; size: number }>, populate: boolean): Uint8Array[];
  releasePages(view: Uint8Array): void;
}

export interface PlannedTensor {
  readonly tensor: Tensor;
  readonly wtype: number;
  readonly rows: number;
  readonly cols: number;
  readonly layout: number;
  readonly bytes: number;
}

interface HeaderEntry {
  layout: number;
  offset: number;
  bytes: number;
  hash: string;
}

interface Header {
  version: number;
  level: string;
  key: string;
  entries: HeaderEntry[];
}

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** The cache key of a set of weights in their planned layouts (see the file comment). */
export function repackKey(addon: RepackAddon, planned: readonly PlannedTensor[]): string {
  const h = createHash('sha256');
  h.update(`dseek-repack:${REPACK_FORMAT_VERSION};`);
  for (const p of planned) {
    const d = p.tensor.data;
    h.update(`${p.tensor.dtype}[${p.tensor.shape.join(',')}]${d.byteLength}:${p.layout}:`);
    const mid = Math.max(0, Math.floor(d.byteLength / 2) - SAMPLE / 2);
    for (const at of [0, mid, Math.max(0, d.byteLength - SAMPLE)]) h.update(addon.hashBytes(d.subarray(at, Math.min(d.byteLength, at + SAMPLE))));
  }
  return h.digest('hex').slice(0, 40);
}

function readHeader(path: string): { header: Header; dataStart: number; size: number } | null {
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    const size = statSync(path).size;
    const head = Buffer.alloc(12);
    if (readSync(fd, head, 0, 12, 0) !== 12 || head.toString('latin1', 0, 8) !== MAGIC) return null;
    const length = head.readUInt32LE(8);
    if (length <= 0 || 12 + length > size || length > 64 << 20) return null;
    const json = Buffer.alloc(length);
    if (readSync(fd, json, 0, length, 12) !== length) return null;
    const header = JSON.parse(json.toString('utf8')) as Header;
    return { header, dataStart: alignUp(12 + length), size };
  } catch {
    return null;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

export interface CacheHit {
  readonly views: Uint8Array[];
  readonly file: string;
}

/**
 * The cached copies for `key`, verified, or null (absent). A file that fails verification is
 * removed and reported through `notice`.
 */
export function openRepacked(
  addon: RepackAddon,
  dir: string,
  key: string,
  planned: readonly PlannedTensor[],
  notice: (message: string) => void,
): CacheHit | null {
  const file = join(dir, `${key}.dsrp`);
  let exists = false;
  try {
    exists = statSync(file).isFile();
  } catch {
    return null;
  }
  if (!exists) return null;
  const bad = (why: string): null => {
    notice(`dseek: repacked weights ${file} ${why}; rebuilding them`);
    rmSync(file, { force: true });
    return null;
  };
  const read = readHeader(file);
  if (!read) return bad('have an unreadable header');
  const { header, size } = read;
  if (header.version !== REPACK_FORMAT_VERSION || header.key !== key) return bad('are from another version');
  if (!Array.isArray(header.entries) || header.entries.length !== planned.length) return bad('list other tensors');
  for (let i = 0; i < planned.length; i++) {
    const e = header.entries[i]!;
    if (e.layout !== planned[i]!.layout || e.bytes !== planned[i]!.bytes || e.offset % ALIGN !== 0 || e.offset + e.bytes > size) {
      return bad('do not match this model (layout or size)');
    }
  }
  const views = addon.mapRegions(
    file,
    header.entries.map((e) => ({ offset: e.offset, size: e.bytes })),
    // No MAP_POPULATE: the checksum pass below reads every page anyway, and its faults (with the
    // kernel's fault-around) cost less than populating first and hashing after (measured).
    false,
  );
  for (let i = 0; i < views.length; i++) {
    if (addon.hashBytes(views[i]!) !== header.entries[i]!.hash) return bad(`are corrupt (tensor ${i} fails its checksum)`);
  }
  try {
    const now = new Date();
    utimesSync(file, now, now); // least-recently-used order for the size cap
  } catch {
    /* read-only cache: still usable */
  }
  return { views, file };
}

/**
 * Remove files of another format version (no dseek of this version reads them again: after an
 * upgrade they would hold gigabytes until the cap pushed them out), then the least recently used
 * files until the folder holds at most `maxBytes` (plus `incoming`).
 */
function evict(dir: string, maxBytes: number, incoming: number, keep: string): void {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.dsrp'))
    .map((f) => {
      const path = join(dir, f);
      const st = statSync(path);
      return { path, size: st.size, mtime: st.mtimeMs };
    })
    .filter((f) => f.path !== keep)
    .filter((f) => {
      const read = readHeader(f.path);
      if (read && read.header.version === REPACK_FORMAT_VERSION) return true;
      rmSync(f.path, { force: true });
      return false;
    })
    .sort((a, b) => a.mtime - b.mtime);
  let total = files.reduce((n, f) => n + f.size, 0) + incoming;
  for (const f of files) {
    if (total <= maxBytes) break;
    rmSync(f.path, { force: true });
    total -= f.size;
  }
}

/**
 * Repack every planned tensor into a new cache file (written beside its final name, then renamed,
 * so a crash never leaves a half file under the real name) and map it. Returns null when the file
 * would not fit under the cap or cannot be written (the caller repacks in memory instead).
 */
export function buildRepacked(
  addon: RepackAddon,
  dir: string,
  key: string,
  level: string,
  planned: readonly PlannedTensor[],
  maxBytes: number,
  onProgress: (done: number, total: number) => void,
  notice: (message: string) => void,
): CacheHit | null {
  const file = join(dir, `${key}.dsrp`);
  const total = planned.reduce((n, p) => n + p.bytes, 0);
  // Offsets depend only on sizes; the header has a fixed-width hash per entry, so its length is known up front.
  const entries: HeaderEntry[] = [];
  const placeholder = (): string =>
    JSON.stringify({ version: REPACK_FORMAT_VERSION, level, key, entries } satisfies Header);
  for (const p of planned) entries.push({ layout: p.layout, offset: 0, bytes: p.bytes, hash: '0'.repeat(16) });
  let offset = alignUp(12 + Buffer.byteLength(placeholder()) + 64 * 1024); // room for offsets' digits
  for (const e of entries) {
    e.offset = offset;
    offset = alignUp(offset + e.bytes);
  }
  const fileBytes = offset;
  if (fileBytes > maxBytes) {
    notice(`dseek: repacked weights (${(fileBytes / 2 ** 20).toFixed(0)} MiB) exceed the repack cache cap (${(maxBytes / 2 ** 20).toFixed(0)} MiB); repacking in memory`);
    return null;
  }
  const tmp = `${file}.tmp-${process.pid}`;
  let fd = -1;
  try {
    mkdirSync(dir, { recursive: true });
    evict(dir, maxBytes, fileBytes, file);
    // A disk that fills mid-write fails late and leaves the disk full for everyone else.
    const fs = statfsSync(dir);
    const free = fs.bavail * fs.bsize;
    if (free < fileBytes + DISK_MARGIN) {
      notice(
        `dseek: repacked weights (${(fileBytes / 2 ** 20).toFixed(0)} MiB) do not fit on the disk of ${dir} ` +
          `(${(free / 2 ** 20).toFixed(0)} MiB free); repacking in memory (free space, or set DSEEK_REPACK_DIR to another disk)`,
      );
      return null;
    }
    fd = openSync(tmp, 'w');
    const largest = planned.reduce((n, p) => Math.max(n, p.bytes), 0);
    const scratch = new Uint8Array(largest);
    let done = 0;
    for (let i = 0; i < planned.length; i++) {
      const p = planned[i]!;
      const out = scratch.subarray(0, p.bytes);
      addon.repack(p.tensor.data, out, p.wtype, p.rows, p.cols);
      entries[i]!.hash = addon.hashBytes(out);
      let written = 0;
      while (written < out.byteLength) written += writeSync(fd, out, written, out.byteLength - written, entries[i]!.offset + written);
      addon.releasePages(p.tensor.data); // the original rows are not read again
      done += p.bytes;
      onProgress(done, total);
    }
    const json = Buffer.from(JSON.stringify({ version: REPACK_FORMAT_VERSION, level, key, entries } satisfies Header));
    const head = Buffer.alloc(12);
    head.write(MAGIC, 0, 'latin1');
    head.writeUInt32LE(json.byteLength, 8);
    if (alignUp(12 + json.byteLength) > entries[0]!.offset) throw new Error('header larger than its reserved space');
    writeSync(fd, head, 0, 12, 0);
    writeSync(fd, json, 0, json.byteLength, 12);
    // The full extent, including the padding after the last tensor.
    ftruncateSync(fd, fileBytes);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, file);
  } catch (err) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    notice(`dseek: cannot write repacked weights to ${dir} (${err instanceof Error ? err.message : String(err)}); repacking in memory`);
    return null;
  }
  return openRepacked(addon, dir, key, planned, notice);
}
