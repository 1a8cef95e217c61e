import type { Vec } from '../kernels/tensor.js';

export type Precision = 'f32' | 'f64';

/**
 * Named scratch vectors reused across forward calls, grown by doubling: decoding a token
 * allocates nothing proportional to the model. f64 precision gives a float64 reference run.
 */
export class Workspace {
  private readonly buffers = new Map<string, Vec>();
  constructor(readonly precision: Precision) {}

  /** A vector of exactly `size` elements (contents unspecified), valid until the next get of `name`. */
  get(name: string, size: number): Vec {
    let buf = this.buffers.get(name);
    if (!buf || buf.length < size) {
      const cap = Math.max(size, buf ? buf.length * 2 : 0);
      buf = this.alloc(cap);
      this.buffers.set(name, buf);
    }
    return buf.subarray(0, size);
  }

  /** A fresh vector the caller keeps. */
  alloc(size: number): Vec {
    return this.precision === 'f64' ? new Float64Array(size) : new Float32Array(size);
  }
}
