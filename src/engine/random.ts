/**
 * Seeded pseudo-random numbers for sampling.
 *
 * xoshiro128** (Blackman & Vigna) with its state filled by splitmix32. Everything is 32-bit
 * integer math (`Math.imul`, `>>> 0`), so the same seed gives the same sequence on every
 * platform and Node version — which is what makes a `seed` request reproducible.
 */
import { getRandomValues } from 'node:crypto';
import { InvalidInputError } from '../errors.js';

const TWO_POW_32 = 4294967296;

/** One splitmix32 step: advance by the golden-ratio increment, then a bijective avalanche mix. */
function splitmix32(state: number): { state: number; value: number } {
  const next = (state + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return { state: next, value: (z ^ (z >>> 15)) >>> 0 };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Rng {
  /** The seed in use; when none was given it is drawn from crypto, so a run can be logged and replayed. */
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** @param seed any safe integer (negative allowed); omitted → a random 53-bit seed from crypto. */
  constructor(seed?: number) {
    if (seed === undefined) {
      const words = getRandomValues(new Uint32Array(2));
      seed = (words[0]! & 0x1fffff) * TWO_POW_32 + words[1]!;
    } else if (!Number.isSafeInteger(seed)) {
      throw new InvalidInputError('seed', `must be a safe integer, got ${seed}`);
    }
    this.seed = seed;
    // Split the 53-bit seed into two 32-bit halves (ToUint32 is exact here, and floor() gives
    // two's-complement high bits for negative seeds). Each half seeds its own splitmix32 stream,
    // whose first output is a bijection of the half, so distinct seeds give distinct states.
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    let a = splitmix32(lo);
    this.s0 = a.value;
    a = splitmix32(a.state);
    this.s1 = a.value;
    let b = splitmix32(hi ^ 0x6a09e667);
    this.s2 = b.value;
    b = splitmix32(b.state);
    this.s3 = b.value;
    // xoshiro's only bad state is all zeros.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32-bit unsigned integer (xoshiro128**). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits (two outputs), so tiny probabilities still resolve. */
  next(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }
}
