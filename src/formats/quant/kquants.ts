/**
 * The K-quants: 256-element super-blocks (QK_K) split into sub-blocks with their own quantised
 * scales. Layouts are ggml-common.h's `block_q*_K` structs (packed, little-endian halves):
 *
 *   Q2_K  84 B: scales[16], qs[64], d, dmin         16 sub-blocks of 16; x = d·sc·q − dmin·m,
 *               scales[j] = sc (low nibble) | m (high nibble), q 2 bits
 *   Q3_K 110 B: hmask[32], qs[64], scales[12], d    16 sub-blocks of 16; x = d·(sc − 32)·(q − 4·!hbit),
 *               sc 6 bits, q = 2 low bits + a high bit in hmask
 *   Q4_K 144 B: d, dmin, scales[12], qs[128]        8 sub-blocks of 32; x = d·sc·q − dmin·m,
 *               sc and m 6 bits each, packed 8+8 into 12 bytes (scaleMinK4); q 4 bits
 *   Q5_K 176 B: d, dmin, scales[12], qh[32], qs[128]  as Q4_K with a fifth bit per q in qh
 *   Q6_K 210 B: ql[128], qh[64], scales[16] int8, d   16 sub-blocks of 16; x = d·sc·(q − 32),
 *               q = 4 low bits in ql + 2 high bits in qh
 *
 * Where each element's bits live (e = 0..255 inside the super-block; this is the order of the
 * dequantisation loops in ggml-quants.c, `dequantize_row_q*_K`):
 *   Q2_K/Q3_K: half h = e>>7, shift s = (e>>5)&3, l = e&31: q bits at qs[32h + l] >> 2s;
 *              Q3_K's high bit is hmask[l] bit (4h + s); scale j = e>>4.
 *   Q4_K/Q5_K: chunk c = e>>6 of 64, l = e&31: low nibble of qs[32c + l] for the first 32 of the
 *              chunk, high nibble for the second; Q5_K's fifth bit is qh[l] bit (2c + ((e>>5)&1));
 *              scale j = e>>5.
 *   Q6_K:      half h = e>>7, quarter t = (e>>5)&3, l = e&31: low 4 bits from ql[64h + 32(t&1) + l]
 *              (low nibble for t < 2, high for t ≥ 2), high 2 bits are qh[32h + l] >> 2t;
 *              scale j = e>>4.
 *
 * Quantisers follow `quantize_row_q*_K_ref` (ggml-quants.c): per sub-block a scale (and min) by
 * the searches in ksearch.ts, then the super-block's scales quantised against their maximum, then
 * every element re-quantised to the nearest level of its decoded sub-block grid.
 */
import { checkFinite, nearestInt, readHalf, writeHalf, type BlockCodec, type OutVec } from './common.js';
import { affineScale, GROUP_MAX_EPS, symmetricScale, symmetricScaleRefined } from './ksearch.js';

const QK = 256;
const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);
const f = Math.fround;

/** Sub-block j's 6-bit scale and min in Q4_K/Q5_K's 12 packed bytes (`get_scale_min_k4`). */
export function scaleMinK4(src: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [src[at + j]! & 63, src[at + j + 4]! & 63];
  // Sub-blocks 4..7: low 4 bits in bytes 8..11, top 2 bits in the spare top bits of bytes 0..7.
  const b = src[at + j + 4]!;
  return [(b & 15) | ((src[at + j - 4]! >> 6) << 4), (b >> 4) | ((src[at + j]! >> 6) << 4)];
}

function packScaleMinK4(out: Uint8Array, at: number, j: number, sc: number, m: number): void {
  if (j < 4) {
    out[at + j] = sc;
    out[at + j + 4] = m;
  } else {
    out[at + j + 4] = (sc & 15) | ((m & 15) << 4);
    out[at + j - 4] |= (sc >> 4) << 6;
    out[at + j] |= (m >> 4) << 6;
  }
}

/** Q3_K's sub-block j 6-bit scale field (stored biased by 32) from its 12 packed bytes. */
export function scaleQ3K(src: Uint8Array, at: number, j: number): number {
  const low = j < 8 ? src[at + j]! & 15 : src[at + j - 8]! >> 4;
  const high = (src[at + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3;
  return low | (high << 4);
}

function packScaleQ3K(out: Uint8Array, at: number, j: number, v: number): void {
  if (j < 8) out[at + j] |= v & 15;
  else out[at + j - 8] |= (v & 15) << 4;
  out[at + 8 + (j & 3)] |= (v >> 4) << (2 * (j >> 2));
}

/** Q2_K and Q3_K share the 2-bit packing: four elements 32 apart in one byte. */
function pack2(L: Uint8Array, out: Uint8Array, at: number): void {
  for (let h = 0; h < 2; h++) {
    for (let l = 0; l < 32; l++) {
      const e = 128 * h + l;
      out[at + 32 * h + l] = L[e]! | (L[e + 32]! << 2) | (L[e + 64]! << 4) | (L[e + 96]! << 6);
    }
  }
}

// Scratch for the quantisers (single-threaded, never re-entered).
const L = new Uint8Array(QK);
const scales = new Float64Array(16);
const mins = new Float64Array(16);
const weights = new Float64Array(32);

export const q2_k: BlockCodec = {
  elements: QK,
  bytes: 84,
  decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
    const d = readHalf(src, at + 80);
    const dmin = readHalf(src, at + 82);
    for (let e = 0; e < QK; e++) {
      const sc = src[at + (e >> 4)]!;
      const q = (src[at + 16 + 32 * (e >> 7) + (e & 31)]! >> (2 * ((e >> 5) & 3))) & 3;
      out[outAt + e] = d * (sc & 15) * q - dmin * (sc >> 4);
    }
  },
  encode(x: Float32Array, out: Uint8Array, at: number): void {
    checkFinite(x, 0);
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(x[16 * j + l]!);
      [scales[j], mins[j]] = affineScale(x, 16 * j, 16, 3, weights, L, -0.5, 0.1, 15, true);
      maxScale = Math.max(maxScale, scales[j]!);
      maxMin = Math.max(maxMin, mins[j]!);
    }
    // Sub-block scales and mins as 4-bit multiples of d = maxScale/15 and dmin = maxMin/15.
    const is = maxScale > 0 ? 15 / maxScale : 0;
    const im = maxMin > 0 ? 15 / maxMin : 0;
    for (let j = 0; j < 16; j++) out[at + j] = clamp(nearestInt(is * scales[j]!), 0, 15) | (clamp(nearestInt(im * mins[j]!), 0, 15) << 4);
    const d = writeHalf(out, at + 80, f(maxScale / 15), 'Q2_K scale');
    const dmin = writeHalf(out, at + 82, f(maxMin / 15), 'Q2_K min scale');
    for (let j = 0; j < 16; j++) {
      const dj = d * (out[at + j]! & 15);
      if (dj === 0) continue;
      const mj = dmin * (out[at + j]! >> 4);
      for (let l = 16 * j; l < 16 * j + 16; l++) L[l] = clamp(nearestInt((x[l]! + mj) / dj), 0, 3);
    }
    pack2(L, out, at + 16);
  },
};

export const q3_k: BlockCodec = {
  elements: QK,
  bytes: 110,
  decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
    const d = readHalf(src, at + 108);
    for (let e = 0; e < QK; e++) {
      const shift = (e >> 5) & 3;
      const l = e & 31;
      const low = (src[at + 32 + 32 * (e >> 7) + l]! >> (2 * shift)) & 3;
      const high = (src[at + l]! >> (4 * (e >> 7) + shift)) & 1;
      out[outAt + e] = d * (scaleQ3K(src, at + 96, e >> 4) - 32) * (low - (high ? 0 : 4));
    }
  },
  encode(x: Float32Array, out: Uint8Array, at: number): void {
    checkFinite(x, 0);
    let maxScale = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = symmetricScaleRefined(x, 16 * j, 16, 4, L);
      if (Math.abs(scales[j]!) > Math.abs(maxScale)) maxScale = scales[j]!;
    }
    out.fill(0, at, at + 110);
    let d = 0;
    if (maxScale !== 0) {
      // The largest-magnitude scale maps to −32: the 6-bit field then spans [−32, 31].
      const iscale = -32 / maxScale;
      for (let j = 0; j < 16; j++) packScaleQ3K(out, at + 96, j, clamp(nearestInt(iscale * scales[j]!), -32, 31) + 32);
      d = writeHalf(out, at + 108, f(1 / iscale), 'Q3_K scale');
    }
    for (let j = 0; j < 16; j++) {
      const dj = d * (scaleQ3K(out, at + 96, j) - 32);
      if (dj === 0) continue;
      for (let l = 16 * j; l < 16 * j + 16; l++) L[l] = clamp(nearestInt(x[l]! / dj), -4, 3) + 4;
    }
    // Levels 0..7: the high bit goes to hmask (element e → byte e&31, bit e>>5), the rest to qs.
    for (let e = 0; e < QK; e++) {
      if (L[e]! > 3) {
        out[at + (e & 31)] |= 1 << (e >> 5);
        L[e] = L[e]! - 4;
      }
    }
    pack2(L, out, at + 32);
  },
};

/** Q4_K (bits 4) and Q5_K (bits 5): 8 sub-blocks of 32, 6-bit scales and mins. */
function kAffine(bits: 4 | 5): BlockCodec {
  const nmax = (1 << bits) - 1;
  const qsAt = bits === 4 ? 16 : 48;
  const name = `Q${bits}_K`;
  return {
    elements: QK,
    bytes: qsAt + 128,
    decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
      const d = readHalf(src, at);
      const dmin = readHalf(src, at + 2);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = scaleMinK4(src, at + 4, j);
        const dj = d * sc;
        const mj = dmin * m;
        const c = j >> 1;
        const high = j & 1;
        for (let l = 0; l < 32; l++) {
          const b = src[at + qsAt + 32 * c + l]!;
          let q = high ? b >> 4 : b & 15;
          if (bits === 5) q += ((src[at + 16 + l]! >> (2 * c + high)) & 1) << 4;
          out[outAt + 32 * j + l] = dj * q - mj;
        }
      }
    },
    encode(x: Float32Array, out: Uint8Array, at: number): void {
      checkFinite(x, 0);
      let maxScale = 0;
      let maxMin = 0;
      for (let j = 0; j < 8; j++) {
        // Weights favour the larger elements: rms of the sub-block + |x|.
        let sumX2 = 0;
        for (let l = 0; l < 32; l++) sumX2 += x[32 * j + l]! ** 2;
        const av = Math.sqrt(sumX2 / 32);
        for (let l = 0; l < 32; l++) weights[l] = av + Math.abs(x[32 * j + l]!);
        [scales[j], mins[j]] = bits === 4
          ? affineScale(x, 32 * j, 32, 15, weights, L, -1, 0.1, 20, false)
          : affineScale(x, 32 * j, 32, 31, weights, L, -0.5, 0.1, 15, false);
        maxScale = Math.max(maxScale, scales[j]!);
        maxMin = Math.max(maxMin, mins[j]!);
      }
      const is = maxScale > 0 ? 63 / maxScale : 0;
      const im = maxMin > 0 ? 63 / maxMin : 0;
      out.fill(0, at, at + qsAt + 128);
      for (let j = 0; j < 8; j++) {
        packScaleMinK4(out, at + 4, j, clamp(nearestInt(is * scales[j]!), 0, 63), clamp(nearestInt(im * mins[j]!), 0, 63));
      }
      const d = writeHalf(out, at, f(maxScale / 63), `${name} scale`);
      const dmin = writeHalf(out, at + 2, f(maxMin / 63), `${name} min scale`);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = scaleMinK4(out, at + 4, j);
        const dj = d * sc;
        if (dj === 0) continue;
        const mj = dmin * m;
        for (let l = 32 * j; l < 32 * j + 32; l++) L[l] = clamp(nearestInt((x[l]! + mj) / dj), 0, nmax);
      }
      for (let c = 0; c < 4; c++) {
        for (let l = 0; l < 32; l++) {
          const lo = L[64 * c + l]!;
          const hi = L[64 * c + 32 + l]!;
          out[at + qsAt + 32 * c + l] = (lo & 15) | ((hi & 15) << 4);
          if (bits === 5) out[at + 16 + l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
        }
      }
    },
  };
}

export const q4_k = kAffine(4);
export const q5_k = kAffine(5);

export const q6_k: BlockCodec = {
  elements: QK,
  bytes: 210,
  decode(src: Uint8Array, at: number, out: OutVec, outAt: number): void {
    const d = readHalf(src, at + 208);
    for (let e = 0; e < QK; e++) {
      const h = e >> 7;
      const t = (e >> 5) & 3;
      const l = e & 31;
      const b = src[at + 64 * h + 32 * (t & 1) + l]!;
      const low = t < 2 ? b & 15 : b >> 4;
      const high = (src[at + 128 + 32 * h + l]! >> (2 * t)) & 3;
      const sc = (src[at + 192 + (e >> 4)]! << 24) >> 24; // int8
      out[outAt + e] = d * sc * ((low | (high << 4)) - 32);
    }
  },
  encode(x: Float32Array, out: Uint8Array, at: number): void {
    checkFinite(x, 0);
    let maxScale = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = symmetricScale(x, 16 * j, 16, 32, L);
      if (Math.abs(scales[j]!) > Math.abs(maxScale)) maxScale = scales[j]!;
    }
    out.fill(0, at, at + 210);
    if (Math.abs(maxScale) < GROUP_MAX_EPS) return; // all (near) zero: d = 0
    // The largest-magnitude scale maps to −128; int8 scales then fit [−128, 127].
    const iscale = -128 / maxScale;
    const d = writeHalf(out, at + 208, f(1 / iscale), 'Q6_K scale');
    for (let j = 0; j < 16; j++) out[at + 192 + j] = clamp(nearestInt(iscale * scales[j]!), -128, 127) & 0xff;
    for (let j = 0; j < 16; j++) {
      const dj = d * ((out[at + 192 + j]! << 24) >> 24);
      if (dj === 0) continue;
      for (let l = 16 * j; l < 16 * j + 16; l++) L[l] = clamp(nearestInt(x[l]! / dj), -32, 31) + 32;
    }
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const e = 128 * h + l;
        out[at + 64 * h + l] = (L[e]! & 15) | ((L[e + 64]! & 15) << 4);
        out[at + 64 * h + 32 + l] = (L[e + 32]! & 15) | ((L[e + 96]! & 15) << 4);
        out[at + 128 + 32 * h + l] = (L[e]! >> 4) | ((L[e + 32]! >> 4) << 2) | ((L[e + 64]! >> 4) << 4) | ((L[e + 96]! >> 4) << 6);
      }
    }
  },
};
