/** Shared by the kernel tests: seeded random inputs and the relative difference they are judged by. */

/** A linear congruential generator: uniform in [-0.5, 0.5), the same sequence for the same seed. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** n values uniform in [-scale, scale). */
export function randomVec(rand: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => rand() * 2 * scale);
}

/** max |a − b| over max |b| (at least 1e-6): the error relative to the result's size. */
export function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  let scale = 1e-6;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max / scale;
}

/**
 * max |a − b| over max Σ|wᵢ·xᵢ| (the terms' absolute sum, at least 1e-6). A dot product's rounding error
 * is bounded by the sum of its terms' magnitudes, not its result (Higham, "Accuracy and Stability of
 * Numerical Algorithms", §3.1), so this is the fair measure where a result may cancel to near zero.
 */
export function maxDiffOverTermSums(a: Float32Array, b: Float32Array, termSums: Float32Array): number {
  let max = 0;
  let scale = 1e-6;
  for (let i = 0; i < termSums.length; i++) scale = Math.max(scale, termSums[i]!);
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max / scale;
}
