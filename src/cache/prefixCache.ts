/**
 * Prefix sharing: a tree over token ids in whole pages. Each node stands for one page of tokens
 * following its parent's; it holds that page (a reference counted in the pool), so a request
 * whose prompt starts with a cached path adopts those pages instead of recomputing them. Leaves
 * are evicted least-recently-used when the pool needs room. Each node also has a hash of the
 * whole prefix ending there: the key under which a ContextStore keeps the page beyond this process
 * (the scheduler fetches and writes those through contextCache.ts, never during a lookup here).
 *
 * Isolation: every lookup and insert names a salt (the tenant: a hash of the API key, the `user`,
 * a request's `cache_salt`). Each salt has its own tree, and its disk keys are chained from a
 * hash of the salt (in every store), so a page computed for one tenant is never a hit for another — otherwise
 * `prompt_cache_hit_tokens` would tell a caller whether someone else sent a given page of text.
 * The empty salt is the shared partition (and keeps the disk keys of unsalted caches).
 */
import { createHash } from 'node:crypto';
import type { Page, PagePool } from './pagePool.js';

interface Node {
  readonly page: Page | null; // null only at the root
  readonly parent: Node | null;
  readonly children: Map<string, Node>;
  readonly key: string;
  /** Hash of every token from the start through this node's page (the context-store key). */
  readonly prefixHash: string;
  lastUsed: number;
}

function chunkKey(tokens: readonly number[], start: number, count: number): string {
  return tokens.slice(start, start + count).join(',');
}

/** Chained content hash: H(parent hash ‖ this page's token ids). */
function chainHash(parent: string, tokens: readonly number[], start: number, count: number): string {
  const ids = Int32Array.from(tokens.slice(start, start + count));
  return createHash('sha256').update(parent).update(new Uint8Array(ids.buffer)).digest('hex');
}

/** The chain's starting hash for a salt: '' for the shared partition, else a hash of the salt. */
function saltHash(salt: string): string {
  return salt === '' ? '' : createHash('sha256').update('dseek prefix-cache salt\0').update(salt).digest('hex');
}

export class PrefixCache {
  /** One tree per salt; a salt's root is dropped when eviction empties it. */
  private readonly roots = new Map<string, Node>();
  private clock = 0;
  private nodes = 0;

  constructor(private readonly pool: PagePool) {}

  /** Tokens held in memory by the tree. */
  get tokens(): number {
    return this.nodes * this.pool.pageTokens;
  }

  /**
   * Pages of the longest cached prefix of `tokens` of at most `maxTokens` tokens, in whole pages,
   * from memory. Each returned page is retained once for the caller (who passes them to
   * LatentCache.adoptPrefix), so eviction cannot take them meanwhile.
   */
  lookup(tokens: readonly number[], maxTokens: number, salt = ''): Page[] {
    const P = this.pool.pageTokens;
    const pages: Page[] = [];
    const root = this.root(salt);
    let node = root;
    const now = ++this.clock;
    for (let start = 0; start + P <= Math.min(tokens.length, maxTokens); start += P) {
      const child = node.children.get(chunkKey(tokens, start, P));
      if (!child) break;
      child.lastUsed = now;
      this.pool.retain(child.page!);
      pages.push(child.page!);
      node = child;
    }
    // A salt that caches nothing keeps no root (callers may send a fresh salt per request).
    if (root.children.size === 0) this.roots.delete(salt);
    return pages;
  }

  /** How many whole pages of `tokens` (at most `maxTokens`) memory holds now, without using them. */
  cachedPages(tokens: readonly number[], maxTokens: number, salt = ''): number {
    const P = this.pool.pageTokens;
    let node = this.roots.get(salt);
    let n = 0;
    for (let start = 0; node && start + P <= Math.min(tokens.length, maxTokens); start += P) {
      node = node.children.get(chunkKey(tokens, start, P));
      if (node) n++;
    }
    return n;
  }

  /** The store keys of the whole pages of `tokens` (at most `maxTokens`): chained, salted hashes. */
  pageKeys(tokens: readonly number[], maxTokens: number, salt = ''): string[] {
    const P = this.pool.pageTokens;
    const keys: string[] = [];
    let hash = saltHash(salt);
    for (let start = 0; start + P <= Math.min(tokens.length, maxTokens); start += P) {
      hash = chainHash(hash, tokens, start, P);
      keys.push(hash);
    }
    return keys;
  }

  /**
   * Remember the full pages of a sequence: `pages[k]` holds tokens [kP, (k+1)P) of `tokens`.
   * Pages already in the tree are kept (theirs and ours hold the same rows); each new node is
   * reported to `onNew` with its store key (the scheduler queues it for the context store).
   */
  insert(tokens: readonly number[], pages: readonly Page[], salt = '', onNew?: (prefixHash: string, page: Page) => void): void {
    const P = this.pool.pageTokens;
    const full = Math.min(Math.floor(tokens.length / P), pages.length);
    let node = this.root(salt);
    const now = ++this.clock;
    for (let k = 0; k < full; k++) {
      const key = chunkKey(tokens, k * P, P);
      let child = node.children.get(key);
      if (!child) {
        const page = pages[k]!;
        this.pool.retain(page);
        child = { page, parent: node, children: new Map(), key, prefixHash: chainHash(node.prefixHash, tokens, k * P, P), lastUsed: now };
        node.children.set(key, child);
        this.nodes++;
        onNew?.(child.prefixHash, page);
      }
      child.lastUsed = now;
      node = child;
    }
  }

  /** Release up to `pages` least-recently-used leaves that no running sequence holds. Returns how many. */
  evict(pages: number): number {
    let freed = 0;
    while (freed < pages) {
      let victim: Node | null = null;
      const visit = (n: Node): void => {
        for (const c of n.children.values()) {
          if (c.children.size === 0) {
            if (c.page!.refs === 1 && (!victim || c.lastUsed < victim.lastUsed)) victim = c;
          } else visit(c);
        }
      };
      for (const root of this.roots.values()) visit(root);
      if (!victim) break;
      const v: Node = victim;
      v.parent!.children.delete(v.key);
      if (v.parent!.parent === null && v.parent!.children.size === 0) this.roots.delete(v.parent!.key);
      this.nodes--;
      this.pool.release(v.page!);
      freed++;
    }
    return freed;
  }

  /** Drop every node (releasing the tree's references). */
  clear(): void {
    const drop = (n: Node): void => {
      for (const c of n.children.values()) {
        drop(c);
        this.pool.release(c.page!);
      }
      n.children.clear();
    };
    for (const root of this.roots.values()) drop(root);
    this.roots.clear();
    this.nodes = 0;
  }

  /** The tree of a salt (its root's `key` is the salt itself). */
  private root(salt: string): Node {
    let r = this.roots.get(salt);
    if (!r) {
      r = { page: null, parent: null, children: new Map(), key: salt, prefixHash: saltHash(salt), lastUsed: 0 };
      this.roots.set(salt, r);
    }
    return r;
  }
}
