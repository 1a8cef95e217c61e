/**
 * Shared pieces of the block formats: the per-block codec shape, little-endian f16 fields, and
 * the two rounding rules ggml's reference quantisers use.
 */
import { InvalidInputError } from '../../errors.js';
import { f16ToF32, f32ToF16 } from '../../kernels/float16.js';

/** Where dequantised values go: f32 normally, f64 for a float64 reference run. */
export type OutVec = Float32Array | Float64Array;

/** One block format: how many elements a block holds, its bytes, and how to (de)code one block. */
export interface BlockCodec {
  readonly elements: number;
  readonly bytes: number;
  /** Decode the block at `src[at]` into `out[outAt .. outAt + elements)`. */
  decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void;
  /** Encode `x` (exactly `elements` f32 values, all finite) into `out[at .. at + bytes)`. */
  encode(x: Float32Array, out: Uint8Array, at: number): void;
}

/** The f32 value of the little-endian IEEE half at `src[at]` (ggml_half, ggml-common.h). */
export function readHalf(src: Uint8Array, at: number): number {
  return f16ToF32(src[at]! | (src[at + 1]! << 8));
}

/**
 * Store `value` (already an f32, as in ggml's GGML_FP32_TO_FP16) as a little-endian half and
 * return the half's value, which is what a decoder will see. Throws when the scale overflows f16:
 * ggml would store ±inf and every element of the block would decode to inf or NaN.
 */
export function writeHalf(out: Uint8Array, at: number, value: number, what: string): number {
  const bits = f32ToF16(value);
  const back = f16ToF32(bits);
  if (!Number.isFinite(back)) {
    throw new InvalidInputError('values', `${what} ${value} does not fit an f16 (|x| ≤ 65504): the block's values are too large for this format`);
  }
  out[at] = bits & 0xff;
  out[at + 1] = bits >>> 8;
  return back;
}

/**
 * Round to the nearest integer, ties to even: what ggml-quants.c's `nearest_int` does (it adds
 * 1.5·2^23 in f32, so the FPU's round-to-nearest-even picks the integer).
 */
export function nearestInt(v: number): number {
  const r = Math.round(v); // ties go up (towards +∞)
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** C's roundf: ties away from zero (used by Q8_0's reference quantiser). */
export function roundAway(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/** Block quantisers need finite input: a NaN or ∞ would poison the whole block's scale. */
export function checkFinite(x: Float32Array, firstIndex: number): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) {
      throw new InvalidInputError('values', `element ${firstIndex + i} is ${x[i]}: block formats can only store finite values`);
    }
  }
}

/** The element of largest magnitude, keeping the first on ties (its sign matters to Q4_0/Q5_0/Q3_K/Q6_K). */
export function maxByAbs(x: Float32Array, from = 0, to = x.length): number {
  let amax = 0;
  let max = 0;
  for (let i = from; i < to; i++) {
    const v = x[i]!;
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}
