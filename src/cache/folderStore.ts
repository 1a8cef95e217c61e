/**
 * Context pages as files in one folder, through fs.promises (in the context store's thread, never
 * inside an engine step). Several processes may share the folder:
 *
 * - a read simply opens `<key>.dskc`, so a page another process wrote is a hit at once (there is no
 *   index read once at start);
 * - a write goes to a temporary file renamed into place, so a reader never sees half a page;
 * - the size cap counts every `.dskc` file in the folder, whoever wrote it: the total is re-read
 *   from the folder whenever this process's estimate passes the cap (and every 30 s), and the least
 *   recently used files go first (a hit refreshes a file's modification time).
 */
import { mkdirSync } from 'node:fs';
import { readdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ContextStore } from './contextStore.js';

const SUFFIX = '.dskc';
const RESCAN_MS = 30_000;

export interface FolderStoreOptions {
  readonly dir: string;
  /** Size cap in bytes over every page file in the folder. */
  readonly maxBytes: number;
  readonly log?: (line: string) => void;
}

export class FolderStore implements ContextStore {
  readonly kind = 'folder' as const;
  readonly location: string;
  private readonly dir: string;
  private readonly maxBytes: number;
  private readonly log: (line: string) => void;
  private total = 0;
  private entries = 0;
  /** One cap enforcement at a time; a write that finds one running relies on it. */
  private trimming: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  /** The cap is logged the first time it bites, not on every write after. */
  private capReported = false;

  constructor(options: FolderStoreOptions) {
    this.dir = options.dir;
    this.maxBytes = options.maxBytes;
    this.log = options.log ?? (() => {});
    this.location = `folder ${options.dir}`;
    mkdirSync(options.dir, { recursive: true });
    void this.scan().catch(() => {});
    this.timer = setInterval(() => void this.scan().catch(() => {}), RESCAN_MS);
    this.timer.unref();
  }

  /** Keys are hex digests joined by ':' (ContextCache): safe file names once ':' becomes '-'. */
  private path(key: string): string {
    return join(this.dir, `${key.replace(/[^0-9a-zA-Z_-]/g, '-')}${SUFFIX}`);
  }

  async get(keys: readonly string[]): Promise<(Uint8Array | null)[]> {
    return Promise.all(
      keys.map(async (key) => {
        const path = this.path(key);
        try {
          const bytes = await readFile(path);
          const now = new Date();
          utimes(path, now, now).catch(() => {}); // least-recently-used order
          return bytes;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
          throw err;
        }
      }),
    );
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const path = this.path(key);
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, bytes);
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    this.total += bytes.byteLength;
    this.entries++;
    if (this.total > this.maxBytes) await this.trim();
  }

  async delete(key: string): Promise<void> {
    await unlink(this.path(key)).catch(() => {});
  }

  usage(): { bytes: number; entries: number } {
    return { bytes: this.total, entries: this.entries };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.trimming;
  }

  /** The folder's page files, oldest first, and their total size. */
  private async scan(): Promise<{ name: string; size: number; mtimeMs: number }[]> {
    const names = (await readdir(this.dir)).filter((f) => f.endsWith(SUFFIX));
    const files = (
      await Promise.all(
        names.map(async (name) => {
          try {
            const s = await stat(join(this.dir, name));
            return { name, size: s.size, mtimeMs: s.mtimeMs };
          } catch {
            return null; // removed meanwhile (another process trimming)
          }
        }),
      )
    ).filter((f): f is { name: string; size: number; mtimeMs: number } => f !== null);
    this.total = files.reduce((n, f) => n + f.size, 0);
    this.entries = files.length;
    return files.sort((a, b) => a.mtimeMs - b.mtimeMs);
  }

  private trim(): Promise<void> {
    this.trimming ??= (async () => {
      try {
        const files = await this.scan();
        let removed = 0;
        for (const f of files) {
          if (this.total <= this.maxBytes) break;
          await unlink(join(this.dir, f.name)).catch(() => {});
          this.total -= f.size;
          this.entries--;
          removed++;
        }
        if (removed > 0 && !this.capReported) {
          this.capReported = true;
          this.log(`context store ${this.location}: over its ${this.maxBytes}-byte cap, removing the least recently used pages from now on`);
        }
      } finally {
        this.trimming = null;
      }
    })();
    return this.trimming;
  }
}
