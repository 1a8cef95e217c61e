/**
 * One latent-cache row in 8 bits: ggml's Q8_0 blocks, byte for byte. ggml-common.h defines
 *
 *     #define QK8_0 32
 *     typedef struct { ggml_half d; int8_t qs[QK8_0]; } block_q8_0;   // 34 bytes
 *
 * so a row of `width` values is ⌈width/32⌉ blocks, each a little-endian f16 scale d followed by
 * 32 int8 values q, value i = d · q[i]. A width that is not a multiple of 32 ends in a short
 * block: its scale and the remaining width mod 32 values (2·⌈width/32⌉ + width bytes per row;
 * 612 for DeepSeek-V2's 512 + 64, which is 18 full blocks).
 *
 * Quantising: d = max|x|/127 as ggml's quantize_row_q8_0_ref, stored as the nearest f16 at or
 * above it (ggml takes the nearest either way), and q = x/d rounded half away from zero (C's
 * roundf) against that stored scale (ggml divides by the unrounded f32 d). So |x/d| ≤ 127 without
 * clamping and every value comes back within d/2 of its input, d the stored scale — also when d
 * is an f16 subnormal (max|x| < 127·2^-14) — and the bytes are still a valid block_q8_0. A scale
 * past f16's range is clamped to its largest finite value (q then clamps to ±127); an all-zero
 * block has d = 0 and q = 0.
 *
 * Dequantising d · q is exact in f32 (an 11-bit significand times 8 bits), so the TypeScript
 * reference and the native kernels (kernels.c, q8_row) see bit-identical rows.
 */
import { f16ToF32, f32ToF16 } from './float16.js';
import type { Vec } from './tensor.js';

/** ggml's QK8_0 and sizeof(block_q8_0). */
export const Q8_BLOCK = 32;
export const Q8_BLOCK_BYTES = 2 + Q8_BLOCK;
const F16_MAX_BITS = 0x7bff; // 65504

/** Bytes of one q8 row of `width` values (the last block short when width mod 32 ≠ 0). */
export function q8RowBytes(width: number): number {
  return 2 * Math.ceil(width / Q8_BLOCK) + width;
}

/** Quantise src[srcOffset, srcOffset + width) into dst at dstOffset (q8RowBytes(width) bytes). */
export function quantizeQ8Row(src: Vec, srcOffset: number, width: number, dst: Uint8Array, dstOffset: number): void {
  for (let b = 0; b * Q8_BLOCK < width; b++) {
    const first = b * Q8_BLOCK;
    const n = Math.min(Q8_BLOCK, width - first);
    let amax = 0;
    for (let i = 0; i < n; i++) amax = Math.max(amax, Math.abs(src[srcOffset + first + i]!));
    const scale = amax / 127;
    let bits = f32ToF16(scale);
    if (f16ToF32(bits) < scale) bits++; // the next f16 up (positive, so the next bit pattern)
    if (!(bits <= F16_MAX_BITS)) bits = F16_MAX_BITS; // past f16's range (or NaN in the input)
    const d = f16ToF32(bits);
    const id = d !== 0 ? 1 / d : 0;
    const at = dstOffset + b * Q8_BLOCK_BYTES;
    dst[at] = bits & 0xff;
    dst[at + 1] = bits >>> 8;
    for (let i = 0; i < n; i++) {
      const v = src[srcOffset + first + i]! * id;
      const q = v < 0 ? -Math.round(-v) : Math.round(v);
      dst[at + 2 + i] = Math.max(-127, Math.min(127, q || 0)) & 0xff;
    }
  }
}

/** Value i of the q8 row at byte `rowOffset` of `bytes`. */
export function q8Value(bytes: Uint8Array, rowOffset: number, i: number): number {
  const at = rowOffset + (i >>> 5) * Q8_BLOCK_BYTES;
  const d = f16ToF32(bytes[at]! | (bytes[at + 1]! << 8));
  return d * ((bytes[at + 2 + (i & 31)]! << 24) >> 24);
}

/** Dequantise the width values of the q8 row at byte `rowOffset` into dst[dstOffset…]. */
export function dequantizeQ8Row(bytes: Uint8Array, rowOffset: number, width: number, dst: Vec, dstOffset: number): void {
  for (let b = 0; b * Q8_BLOCK < width; b++) {
    const first = b * Q8_BLOCK;
    const n = Math.min(Q8_BLOCK, width - first);
    const at = rowOffset + b * Q8_BLOCK_BYTES;
    const d = f16ToF32(bytes[at]! | (bytes[at + 1]! << 8));
    for (let i = 0; i < n; i++) dst[dstOffset + first + i] = d * ((bytes[at + 2 + i]! << 24) >> 24);
  }
}

/** The stored scale of the block holding value i (for tests: the per-value error bound is d/2). */
export function q8Scale(bytes: Uint8Array, rowOffset: number, i: number): number {
  const at = rowOffset + (i >>> 5) * Q8_BLOCK_BYTES;
  return f16ToF32(bytes[at]! | (bytes[at + 1]! << 8));
}
