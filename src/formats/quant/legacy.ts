/**
 * The 32-element block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.
 *
 * Layouts are ggml-common.h's `block_q*` structs (packed, little-endian, `ggml_half` = IEEE half):
 *   Q8_0  34 B: d, qs[32] int8                      x = q·d
 *   Q4_0  18 B: d, qs[16]                           x = (q − 8)·d
 *   Q4_1  20 B: d, m, qs[16]                        x = q·d + m
 *   Q5_0  22 B: d, qh[4], qs[16]                    x = (q − 16)·d
 *   Q5_1  24 B: d, m, qh[4], qs[16]                 x = q·d + m
 * Nibble order: byte j of qs holds element j in its low nibble and element j + 16 in its high
 * nibble. The fifth bit of element i (Q5_*) is bit i of qh read as a little-endian u32.
 *
 * Quantisers follow ggml-quants.c's `quantize_row_q*_ref` (the reference used to make model
 * files): Q8_0 d = amax/127 and round half away from zero; Q4_0/Q5_0 d = (element of largest
 * magnitude)/−8 (resp. −16), so that element lands exactly on the −8 (−16) end of the range and
 * the opposite end is clipped at +7 (+15); Q4_1/Q5_1 span [min, max] with 15 (31) steps. As in the
 * reference, products and sums are rounded to f32 (Math.fround) before the integer conversion,
 * and the quants are computed with the f32 scale while the decoder sees its f16 rounding.
 */
import { checkFinite, maxByAbs, readHalf, roundAway, writeHalf, type BlockCodec, type OutVec } from './common.js';

const f = Math.fround;

export const q8_0: BlockCodec = {
  elements: 32,
  bytes: 34,
  decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
    const d = readHalf(src, at);
    for (let j = 0; j < 32; j++) out[outAt + j] = ((src[at + 2 + j]! << 24) >> 24) * d;
  },
  encode(x: Float32Array, out: Uint8Array, at: number): void {
    checkFinite(x, 0);
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[j]!));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    writeHalf(out, at, d, 'Q8_0 scale');
    for (let j = 0; j < 32; j++) out[at + 2 + j] = roundAway(f(x[j]! * id)) & 0xff;
  },
};

/** Q4_0 and Q5_0: symmetric, 2^bits levels, scale from the element of largest magnitude. */
function symmetric(bits: 4 | 5): BlockCodec {
  const half = 1 << (bits - 1); // 8 or 16
  const top = (1 << bits) - 1; // 15 or 31
  const qsAt = bits === 4 ? 2 : 6;
  return {
    elements: 32,
    bytes: qsAt + 16,
    decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
      const d = readHalf(src, at);
      for (let j = 0; j < 16; j++) {
        const b = src[at + qsAt + j]!;
        let lo = b & 15;
        let hi = b >> 4;
        if (bits === 5) {
          lo |= ((src[at + 2 + (j >> 3)]! >> (j & 7)) & 1) << 4; // qh bit j
          hi |= ((src[at + 4 + (j >> 3)]! >> (j & 7)) & 1) << 4; // qh bit j + 16
        }
        out[outAt + j] = (lo - half) * d;
        out[outAt + j + 16] = (hi - half) * d;
      }
    },
    encode(x: Float32Array, out: Uint8Array, at: number): void {
      checkFinite(x, 0);
      const d = f(maxByAbs(x) / -half);
      const id = d !== 0 ? f(1 / d) : 0;
      writeHalf(out, at, d, `Q${bits}_0 scale`);
      // (int8_t)(x·id + half + 0.5) in the reference: truncation, then clip the top.
      const q = (v: number): number => Math.min(top, Math.trunc(f(f(v * id) + half + 0.5)));
      if (bits === 5) out.fill(0, at + 2, at + 6);
      for (let j = 0; j < 16; j++) {
        const lo = q(x[j]!);
        const hi = q(x[j + 16]!);
        out[at + qsAt + j] = (lo & 15) | ((hi & 15) << 4);
        if (bits === 5) {
          out[at + 2 + (j >> 3)] |= (lo >> 4) << (j & 7);
          out[at + 4 + (j >> 3)] |= (hi >> 4) << (j & 7);
        }
      }
    },
  };
}

/** Q4_1 and Q5_1: affine, min m and step d = (max − min)/(2^bits − 1). */
function affine(bits: 4 | 5): BlockCodec {
  const top = (1 << bits) - 1;
  const qsAt = bits === 4 ? 4 : 8;
  return {
    elements: 32,
    bytes: qsAt + 16,
    decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
      const d = readHalf(src, at);
      const m = readHalf(src, at + 2);
      for (let j = 0; j < 16; j++) {
        const b = src[at + qsAt + j]!;
        let lo = b & 15;
        let hi = b >> 4;
        if (bits === 5) {
          lo |= ((src[at + 4 + (j >> 3)]! >> (j & 7)) & 1) << 4;
          hi |= ((src[at + 6 + (j >> 3)]! >> (j & 7)) & 1) << 4;
        }
        out[outAt + j] = lo * d + m;
        out[outAt + j + 16] = hi * d + m;
      }
    },
    encode(x: Float32Array, out: Uint8Array, at: number): void {
      checkFinite(x, 0);
      let min = Infinity;
      let max = -Infinity;
      for (let j = 0; j < 32; j++) {
        min = Math.min(min, x[j]!);
        max = Math.max(max, x[j]!);
      }
      const d = f(f(max - min) / top);
      const id = d !== 0 ? f(1 / d) : 0;
      writeHalf(out, at, d, `Q${bits}_1 scale`);
      writeHalf(out, at + 2, min, `Q${bits}_1 minimum`);
      const q = (v: number): number => Math.min(top, Math.trunc(f(f(f(v - min) * id) + 0.5)));
      if (bits === 5) out.fill(0, at + 4, at + 8);
      for (let j = 0; j < 16; j++) {
        const lo = q(x[j]!);
        const hi = q(x[j + 16]!);
        out[at + qsAt + j] = (lo & 15) | ((hi & 15) << 4);
        if (bits === 5) {
          out[at + 4 + (j >> 3)] |= (lo >> 4) << (j & 7);
          out[at + 6 + (j >> 3)] |= (hi >> 4) << (j & 7);
        }
      }
    },
  };
}

export const q4_0 = symmetric(4);
export const q5_0 = symmetric(5);
export const q4_1 = affine(4);
export const q5_1 = affine(5);
