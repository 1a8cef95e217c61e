/**
 * ggml's tensor element formats: plain floats (F32, F16, BF16) and the block-quantised formats
 * Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K — unpack, pack and a reference dot
 * product. A row of n elements is n / blockSize consecutive blocks; ggml requires a tensor's
 * first (fastest) dimension to be a whole number of blocks, so rows never split a block.
 *
 * Sources: the type ids are the `ggml_type` enum in ggml's docs/gguf.md (and ggml.h); the block
 * layouts are ggml-common.h; decoding and reference quantisation follow ggml-quants.c
 * (`dequantize_row_*`, `quantize_row_*_ref`). See legacy.ts and kquants.ts for the layouts.
 *
 * Decoding is exact: every product a block decodes to (f16 scale × small integers) is exact in
 * f64, so writing into a Float32Array gives ggml's f32 results bit for bit and a Float64Array gets
 * the exact values.
 *
 * Error bounds of quantizeRow (tested in test/formats/quant.test.ts), per element, with d the
 * block's step and the f16 rounding of the stored scale adding |q|·(d·2^-11 + 2^-25):
 *   Q8_0 d/2 (d = amax/127) · Q4_0, Q5_0 d/2, up to d for values clipped at the top level
 *   (d = amax/8, amax/16) · Q4_1, Q5_1 d/2 + f16 rounding of the min (d = range/15, range/31) ·
 *   K-quants: each element decodes to the nearest level of its sub-block's decoded grid; the grid
 *   itself is a least-squares fit, so there is no simple per-element bound (a sub-block tiny next
 *   to an outlier in the same super-block gets scale 0 — the 6-bit scales are relative to the
 *   super-block's largest). Relative RMS error on N(0, 1) data: Q2_K 0.30, Q3_K 0.15, Q4_K 0.072,
 *   Q5_K 0.036, Q6_K 0.018 (Q4_0 0.087, Q4_1 0.078, Q5_0 0.043, Q5_1 0.038, Q8_0 0.0054).
 * Re-quantising decoded data gives identical bytes for Q8_0, Q4_0, Q5_0 (and F16/BF16/F32), for
 * Q4_1/Q5_1 while |min| ≪ 2^11·d; the K-quants re-run their search and promise no bit-exactness.
 */
import { InvalidInputError } from '../../errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../kernels/float16.js';
import type { BlockCodec, OutVec } from './common.js';
import { q2_k, q3_k, q4_k, q5_k, q6_k } from './kquants.js';
import { q4_0, q4_1, q5_0, q5_1, q8_0 } from './legacy.js';

export type GgmlType =
  | 'f32' | 'f16' | 'bf16'
  | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1'
  | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k';

/** GGML_TYPE_* ids (docs/gguf.md `enum ggml_type`) of the types dseek reads and writes. */
export const GGML_TYPE_ID: Readonly<Record<GgmlType, number>> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8,
  q2_k: 10, q3_k: 11, q4_k: 12, q5_k: 13, q6_k: 14, bf16: 30,
};

export const GGML_TYPES: readonly GgmlType[] = Object.keys(GGML_TYPE_ID) as GgmlType[];

const BY_ID: ReadonlyMap<number, GgmlType> = new Map(GGML_TYPES.map((t) => [GGML_TYPE_ID[t], t]));

/** The GgmlType with this GGML_TYPE_* id, or undefined for ids dseek does not handle. */
export function ggmlTypeFromId(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** Every id in the `ggml_type` enum (gaps are removed types), for messages about unsupported ones. */
const ENUM_NAMES = [
  'F32', 'F16', 'Q4_0', 'Q4_1', 'Q4_2 (removed)', 'Q4_3 (removed)', 'Q5_0', 'Q5_1', 'Q8_0', 'Q8_1',
  'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K', 'IQ2_XXS', 'IQ2_XS', 'IQ3_XXS', 'IQ1_S',
  'IQ4_NL', 'IQ3_S', 'IQ2_S', 'IQ4_XS', 'I8', 'I16', 'I32', 'I64', 'F64', 'IQ1_M', 'BF16',
  'Q4_0_4_4 (removed)', 'Q4_0_4_8 (removed)', 'Q4_0_8_8 (removed)', 'TQ1_0', 'TQ2_0',
  'IQ4_NL_4_4 (removed)', 'IQ4_NL_4_8 (removed)', 'IQ4_NL_8_8 (removed)', 'MXFP4',
];

/** ggml's name for a type id ('Q4_K', 'IQ2_XXS', …), or 'unknown' past the enum. */
export function ggmlTypeName(id: number): string {
  return ENUM_NAMES[id] ?? 'unknown';
}

export function isGgmlType(s: string): s is GgmlType {
  return Object.hasOwn(GGML_TYPE_ID, s);
}

const CODECS: Readonly<Record<Exclude<GgmlType, 'f32' | 'f16' | 'bf16'>, BlockCodec>> = {
  q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k,
};

function codec(type: GgmlType): BlockCodec | undefined {
  return type === 'f32' || type === 'f16' || type === 'bf16' ? undefined : CODECS[type];
}

/** Elements per block: 1 for the float types, 32 for Q*_0/Q*_1, 256 for the K-quants. */
export function blockSize(type: GgmlType): number {
  return codec(type)?.elements ?? 1;
}

/** Bytes per block (for the float types, per element). */
export function blockBytes(type: GgmlType): number {
  return codec(type)?.bytes ?? (type === 'f32' ? 4 : 2);
}

/** Bytes of `n` elements; n must be a whole number of blocks. */
export function rowBytes(type: GgmlType, n: number): number {
  const bs = blockSize(type);
  if (!Number.isSafeInteger(n) || n < 0 || n % bs !== 0) {
    throw new InvalidInputError('count', `${n} elements of ${type} is not a whole number of ${bs}-element blocks`);
  }
  return (n / bs) * blockBytes(type);
}

function checkRow(type: GgmlType, src: Uint8Array, count: number, outLength: number, outOffset: number): number {
  const bytes = rowBytes(type, count);
  if (src.length < bytes) throw new InvalidInputError('src', `${count} elements of ${type} need ${bytes} bytes but ${src.length} were given`);
  if (!Number.isSafeInteger(outOffset) || outOffset < 0 || outOffset + count > outLength) {
    throw new InvalidInputError('out', `no room for ${count} values at offset ${outOffset} in an array of ${outLength}`);
  }
  return bytes;
}

/**
 * Decode the first `count` elements of `src` (which starts at a block boundary; count is a whole
 * number of blocks) into `out[outOffset ..]`.
 */
export function dequantizeRow(type: GgmlType, src: Uint8Array, count: number, out: OutVec, outOffset = 0): void {
  checkRow(type, src, count, out.length, outOffset);
  const c = codec(type);
  if (c !== undefined) {
    for (let b = 0; b < count / c.elements; b++) c.decode(src, b * c.bytes, out, outOffset + b * c.elements);
    return;
  }
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (type === 'f32') {
    for (let i = 0; i < count; i++) out[outOffset + i] = dv.getFloat32(4 * i, true);
  } else {
    const conv = type === 'f16' ? f16ToF32 : bf16ToF32;
    for (let i = 0; i < count; i++) out[outOffset + i] = conv(dv.getUint16(2 * i, true));
  }
}

/**
 * Encode `values` (a whole number of blocks) into the start of `out` and return the bytes
 * written. Values are first rounded to f32, as ggml quantises from f32. Block formats need
 * finite values (InvalidInputError names the first that is not); the float types store NaN and ∞
 * as they are. Every type dseek supports can be quantised.
 */
export function quantizeRow(type: GgmlType, values: ArrayLike<number>, out: Uint8Array): number {
  const n = values.length;
  const bytes = rowBytes(type, n);
  if (out.length < bytes) throw new InvalidInputError('out', `${n} elements of ${type} need ${bytes} bytes but the output has ${out.length}`);
  const c = codec(type);
  if (c === undefined) {
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    if (type === 'f32') for (let i = 0; i < n; i++) dv.setFloat32(4 * i, values[i]!, true);
    else {
      const conv = type === 'f16' ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < n; i++) dv.setUint16(2 * i, conv(values[i]!), true);
    }
    return bytes;
  }
  const block = new Float32Array(c.elements);
  for (let b = 0; b < n / c.elements; b++) {
    for (let i = 0; i < c.elements; i++) block[i] = values[b * c.elements + i]!;
    try {
      c.encode(block, out, b * c.bytes);
    } catch (e) {
      if (e instanceof InvalidInputError) {
        throw new InvalidInputError('values', `block ${b} (elements ${b * c.elements}..${(b + 1) * c.elements - 1}) of ${type}: ${e.message.replace(/^values: /, '')}`);
      }
      throw e;
    }
  }
  return bytes;
}

/** Σ dequant(src)[i] · x[i] over `count` elements, accumulated in f64 (the reference for fast kernels). */
export function dotRow(type: GgmlType, src: Uint8Array, x: OutVec, count: number): number {
  checkRow(type, src, count, x.length, 0);
  const bs = Math.max(blockSize(type), 256);
  const tmp = new Float64Array(Math.min(bs, count));
  let sum = 0;
  for (let start = 0; start < count; start += tmp.length) {
    // Whole blocks at a time: tmp.length is a multiple of the block size.
    const n = Math.min(tmp.length, count - start);
    const byteStart = rowBytes(type, start);
    dequantizeRow(type, src.subarray(byteStart), n, tmp);
    for (let i = 0; i < n; i++) sum += tmp[i]! * x[start + i]!;
  }
  return sum;
}

export type { OutVec } from './common.js';
