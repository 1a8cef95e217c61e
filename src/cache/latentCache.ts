/**
 * The MLA latent cache of one sequence: per layer and token exactly kv_lora_rank +
 * qk_rope_head_dim values — the normalised compressed latent c_t and the rotated shared RoPE key
 * k_t^R (DeepSeek-V2 paper §2.1.3: (d_c + d_h^R)·l elements per token). Never expanded per-head
 * keys or values.
 *
 * Rows are stored in f32 (default, exact), f16 (half the memory) or f64 (float64 reference runs).
 * Storage grows by doubling up to `maxTokens`, so appending a token never allocates per token.
 */
import type { SharedKvRows } from '../kernels/backend.js';
import { f32ToF16, f16ToF32, type Vec } from '../kernels/tensor.js';
import { ContextLengthExceededError } from '../errors.js';

export type LatentCacheDType = 'f32' | 'f16' | 'f64';

export interface LatentCacheOptions {
  readonly layers: number;
  /** Values per token and layer: kv_lora_rank + qk_rope_head_dim. */
  readonly width: number;
  /** The context window: positions beyond it are refused. */
  readonly maxTokens: number;
  readonly dtype?: LatentCacheDType;
  /** Initial capacity in tokens (grows by doubling). */
  readonly initialTokens?: number;
}

type Storage = Float32Array | Float64Array | Uint16Array;

export class LatentCache {
  readonly layers: number;
  readonly width: number;
  readonly maxTokens: number;
  readonly dtype: LatentCacheDType;
  /** Tokens whose rows are complete in every layer. */
  private committed = 0;
  private capacity: number;
  private storage: Storage[];

  constructor(options: LatentCacheOptions) {
    this.layers = options.layers;
    this.width = options.width;
    this.maxTokens = options.maxTokens;
    this.dtype = options.dtype ?? 'f32';
    this.capacity = Math.min(Math.max(options.initialTokens ?? 64, 1), this.maxTokens);
    this.storage = Array.from({ length: this.layers }, () => this.allocate(this.capacity));
  }

  /** Number of cached tokens (= the position of the next token). */
  get length(): number {
    return this.committed;
  }

  /** Bytes one token occupies across all layers. */
  get bytesPerToken(): number {
    return this.layers * this.width * (this.dtype === 'f16' ? 2 : this.dtype === 'f32' ? 4 : 8);
  }

  /** Values held for the committed tokens: length × layers × width. */
  get valueCount(): number {
    return this.committed * this.layers * this.width;
  }

  /** Make room for `count` more tokens after the committed ones (throws past the context window). */
  reserve(count: number): void {
    const needed = this.committed + count;
    if (needed > this.maxTokens) throw new ContextLengthExceededError(needed, this.maxTokens);
    if (needed <= this.capacity) return;
    let cap = this.capacity;
    while (cap < needed) cap *= 2;
    cap = Math.min(cap, this.maxTokens);
    this.storage = this.storage.map((old) => {
      const grown = this.allocate(cap);
      grown.set(old.subarray(0, this.committed * this.width) as never);
      return grown;
    });
    this.capacity = cap;
  }

  /**
   * Write the row for token position `pos` in `layer` from src[srcOffset, srcOffset + width).
   * The position must lie in reserved space; it becomes visible to readers of the layer at once
   * but counts in `length` only after `commit`.
   */
  writeRow(layer: number, pos: number, src: Vec, srcOffset: number): void {
    if (pos >= this.capacity) throw new RangeError(`latent cache: position ${pos} not reserved`);
    const dst = this.storage[layer]!;
    const o = pos * this.width;
    if (this.dtype === 'f16') {
      for (let i = 0; i < this.width; i++) dst[o + i] = f32ToF16(src[srcOffset + i]!);
    } else {
      for (let i = 0; i < this.width; i++) dst[o + i] = src[srcOffset + i]!;
    }
  }

  /** Mark `count` more tokens complete in every layer. */
  commit(count: number): void {
    if (this.committed + count > this.capacity) throw new RangeError('latent cache: commit past reserved space');
    this.committed += count;
  }

  /** Drop tokens after the first `length` (e.g. to re-run from a shared prefix). */
  truncate(length: number): void {
    if (length < 0 || length > this.committed) throw new RangeError(`latent cache: cannot truncate to ${length}`);
    this.committed = length;
  }

  /** The rows of one layer (reserved positions included) as the attention kernels read them. */
  rows(layer: number): SharedKvRows {
    return { dtype: this.dtype, data: this.storage[layer]!, width: this.width };
  }

  /** Copy `count` rows from position `start` of a layer into dst as numbers (for the expanded attention form). */
  readRows(layer: number, start: number, count: number, dst: Vec): void {
    const src = this.storage[layer]!;
    const n = count * this.width;
    const o = start * this.width;
    if (this.dtype === 'f16') {
      for (let i = 0; i < n; i++) dst[i] = f16ToF32(src[o + i]!);
    } else {
      for (let i = 0; i < n; i++) dst[i] = src[o + i]!;
    }
  }

  private allocate(tokens: number): Storage {
    const n = tokens * this.width;
    return this.dtype === 'f16' ? new Uint16Array(n) : this.dtype === 'f32' ? new Float32Array(n) : new Float64Array(n);
  }
}
