import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError } from '../../src/errors.js';
import { Rng } from '../../src/engine/random.js';
import { bf16ToF32, f16ToF32, f32ToF16 } from '../../src/kernels/tensor.js';
import {
  blockBytes, blockSize, dequantizeRow, dotRow, GGML_TYPE_ID, GGML_TYPES, ggmlTypeFromId, ggmlTypeName,
  quantizeRow, rowBytes, type GgmlType,
} from '../../src/formats/quant/index.js';
import { scaleMinK4, scaleQ3K } from '../../src/formats/quant/kquants.js';

const BLOCK_TYPES = GGML_TYPES.filter((t) => blockSize(t) > 1);
const K_TYPES: GgmlType[] = ['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'];
/** Half an f16 ulp relative to the value (normal range), and half the smallest subnormal. */
const F16_REL = 2 ** -11;
const F16_ABS = 2 ** -25;

function gaussian(rng: Rng): number {
  let u = 0;
  while (u === 0) u = rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

function randomRow(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => gaussian(rng) * scale);
}

function quantize(type: GgmlType, x: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(rowBytes(type, x.length));
  assert.equal(quantizeRow(type, x, out), out.length);
  return out;
}

function dequantize(type: GgmlType, bytes: Uint8Array, n: number): Float64Array {
  const out = new Float64Array(n);
  dequantizeRow(type, bytes, n, out);
  return out;
}

const half = (v: number): [number, number] => {
  const h = f32ToF16(v);
  return [h & 0xff, h >> 8];
};

describe('type table', () => {
  test('GGML type ids match docs/gguf.md', () => {
    assert.deepEqual(GGML_TYPE_ID, {
      f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, q2_k: 10, q3_k: 11, q4_k: 12, q5_k: 13, q6_k: 14, bf16: 30,
    });
    for (const t of GGML_TYPES) assert.equal(ggmlTypeFromId(GGML_TYPE_ID[t]), t);
    assert.equal(ggmlTypeFromId(16), undefined);
    assert.equal(ggmlTypeName(16), 'IQ2_XXS');
    assert.equal(ggmlTypeName(15), 'Q8_K');
    assert.equal(ggmlTypeName(1000), 'unknown');
  });

  test('block sizes and bytes are the ggml-common.h struct sizes', () => {
    const expected: Record<GgmlType, [number, number]> = {
      f32: [1, 4], f16: [1, 2], bf16: [1, 2], q8_0: [32, 34], q4_0: [32, 18], q4_1: [32, 20], q5_0: [32, 22], q5_1: [32, 24],
      q2_k: [256, 84], q3_k: [256, 110], q4_k: [256, 144], q5_k: [256, 176], q6_k: [256, 210],
    };
    for (const t of GGML_TYPES) assert.deepEqual([blockSize(t), blockBytes(t)], expected[t], t);
    assert.equal(rowBytes('q4_k', 512), 288);
    assert.equal(rowBytes('f16', 3), 6);
    assert.throws(() => rowBytes('q4_0', 48), InvalidInputError);
    assert.throws(() => rowBytes('q6_k', 128), /not a whole number of 256-element blocks/);
  });
});

/**
 * Decoders written the way the ggml-quants.c loops walk the bytes (moving pointers), as a second,
 * independently structured reading of the layouts to compare the library's index arithmetic with.
 */
const walkers: Partial<Record<GgmlType, (b: Uint8Array) => number[]>> = {
  q2_k(b) {
    const d = f16ToF32(b[80]! | (b[81]! << 8));
    const dmin = f16ToF32(b[82]! | (b[83]! << 8));
    const y: number[] = [];
    let q = 16;
    let is = 0;
    for (let n = 0; n < 256; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (const off of [0, 16]) {
          const sc = b[is++]!;
          for (let l = 0; l < 16; l++) y.push(d * (sc & 15) * ((b[q + off + l]! >> shift) & 3) - dmin * (sc >> 4));
        }
      }
      q += 32;
    }
    return y;
  },
  q4_k(b) {
    const d = f16ToF32(b[0]! | (b[1]! << 8));
    const dmin = f16ToF32(b[2]! | (b[3]! << 8));
    const y: number[] = [];
    let q = 16;
    for (let is = 0; is < 8; is += 2) {
      const [s1, m1] = scaleMinK4(b, 4, is);
      const [s2, m2] = scaleMinK4(b, 4, is + 1);
      for (let l = 0; l < 32; l++) y.push(d * s1 * (b[q + l]! & 15) - dmin * m1);
      for (let l = 0; l < 32; l++) y.push(d * s2 * (b[q + l]! >> 4) - dmin * m2);
      q += 32;
    }
    return y;
  },
  q6_k(b) {
    const d = f16ToF32(b[208]! | (b[209]! << 8));
    const y = new Array<number>(256);
    let ql = 0;
    let qh = 128;
    let sc = 192;
    for (let n = 0; n < 256; n += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const s = (i: number): number => (b[sc + is + i]! << 24) >> 24;
        y[n + l] = d * s(0) * (((b[ql + l]! & 15) | ((b[qh + l]! & 3) << 4)) - 32);
        y[n + l + 32] = d * s(2) * (((b[ql + l + 32]! & 15) | (((b[qh + l]! >> 2) & 3) << 4)) - 32);
        y[n + l + 64] = d * s(4) * (((b[ql + l]! >> 4) | (((b[qh + l]! >> 4) & 3) << 4)) - 32);
        y[n + l + 96] = d * s(6) * (((b[ql + l + 32]! >> 4) | (((b[qh + l]! >> 6) & 3) << 4)) - 32);
      }
      ql += 64;
      qh += 32;
      sc += 8;
    }
    return y;
  },
};

describe('hand-built blocks decode as the spec says', () => {
  test('Q8_0: d then 32 int8', () => {
    const b = new Uint8Array(34);
    [b[0], b[1]] = half(0.5);
    for (let j = 0; j < 32; j++) b[2 + j] = (j * 8 - 128) & 0xff;
    assert.deepEqual([...dequantize('q8_0', b, 32)], Array.from({ length: 32 }, (_, j) => (j * 8 - 128) * 0.5));
  });

  test('Q4_0: element j in the low nibble of qs[j], element j+16 in the high nibble', () => {
    const b = new Uint8Array(18);
    [b[0], b[1]] = half(2);
    for (let j = 0; j < 16; j++) b[2 + j] = j | ((15 - j) << 4);
    const want = [...Array.from({ length: 16 }, (_, j) => (j - 8) * 2), ...Array.from({ length: 16 }, (_, j) => (7 - j) * 2)];
    assert.deepEqual([...dequantize('q4_0', b, 32)], want);
  });

  test('Q4_1: q·d + m', () => {
    const b = new Uint8Array(20);
    [b[0], b[1]] = half(0.5);
    [b[2], b[3]] = half(-1);
    b[4] = 0xf3; // element 0 = 3, element 16 = 15
    const y = dequantize('q4_1', b, 32);
    assert.equal(y[0], 0.5);
    assert.equal(y[16], 6.5);
    assert.equal(y[1], -1);
  });

  test('Q5_0 / Q5_1: the fifth bit of element i is bit i of qh (little-endian u32)', () => {
    const qh = 0x80000001 | 0x00020000 | 0x00000100; // elements 0, 8, 17, 31
    const b0 = new Uint8Array(22);
    [b0[0], b0[1]] = half(1);
    new DataView(b0.buffer).setUint32(2, qh >>> 0, true);
    for (let j = 0; j < 16; j++) b0[6 + j] = 0x11 * (j & 15); // low and high nibble both j
    const y0 = dequantize('q5_0', b0, 32);
    for (let i = 0; i < 32; i++) {
      const q = (i & 15) | (((qh >>> i) & 1) << 4);
      assert.equal(y0[i], q - 16, `q5_0 element ${i}`);
    }
    const b1 = new Uint8Array(24);
    [b1[0], b1[1]] = half(0.25);
    [b1[2], b1[3]] = half(10);
    new DataView(b1.buffer).setUint32(4, qh >>> 0, true);
    b1.set(b0.subarray(6), 8);
    const y1 = dequantize('q5_1', b1, 32);
    for (let i = 0; i < 32; i++) {
      const q = (i & 15) | (((qh >>> i) & 1) << 4);
      assert.equal(y1[i], q * 0.25 + 10, `q5_1 element ${i}`);
    }
  });

  test('Q2_K: 4-bit scale/min pairs, 2-bit quants four to a byte 32 apart', () => {
    const b = new Uint8Array(84);
    [b[80], b[81]] = half(1);
    [b[82], b[83]] = half(1);
    b[5] = 0x23; // sub-block 5 (elements 80..95): scale 3, min 2
    b[16 + 21] = 0x30; // qs[21] bits 4-5 → element 2·32 + 21 = 85 has q = 3
    const y = dequantize('q2_k', b, 256);
    assert.equal(y[85], 3 * 3 - 2);
    assert.equal(y[84], -2);
    assert.equal(y[21], 0);
    const rng = new Rng(11);
    for (let i = 0; i < 84; i++) b[i] = rng.nextUint32() & 0xff;
    [b[80], b[81]] = half(0.75);
    [b[82], b[83]] = half(-0.125);
    assert.deepEqual([...dequantize('q2_k', b, 256)], walkers.q2_k!(b));
  });

  test('Q3_K: 6-bit scales split 4+2 over 12 bytes, high bit of each quant in hmask', () => {
    const b = new Uint8Array(110);
    [b[108], b[109]] = half(1);
    // Sub-block 9's scale field 0b110100 = 52 (52 − 32 = 20): low 4 bits in the high nibble of
    // scales[1], top 2 bits at bits 4-5 of scales[9]. Every other field is 0 (scale −32).
    b[96 + 1] = 0x40;
    b[96 + 9] = 0x30;
    assert.equal(scaleQ3K(b, 96, 9), 52);
    assert.equal(scaleQ3K(b, 96, 1), 0);
    // Element 150 (half 1, shift 0, l = 22): low bits qs[32 + 22], high bit hmask[22] bit 4.
    b[32 + 54] = 0b10;
    b[22] = 1 << 4;
    const y = dequantize('q3_k', b, 256);
    assert.equal(y[150], 20 * 2);
    assert.equal(y[22], -32 * -4); // hmask bit 0 clear: q − 4
    assert.equal(y[151], 20 * -4);
    // A full scale check: field j = j + 16 for every sub-block.
    b.fill(0);
    [b[108], b[109]] = half(1);
    for (let j = 0; j < 16; j++) {
      const v = j + 16;
      b[96 + (j < 8 ? j : j - 8)] |= (v & 15) << (j < 8 ? 0 : 4);
      b[96 + 8 + (j & 3)] |= (v >> 4) << (2 * (j >> 2));
    }
    b.fill(0xff, 0, 32); // every high bit set: q = low bits = 0
    b.fill(0x55, 32, 96); // every low pair = 1
    const z = dequantize('q3_k', b, 256);
    for (let e = 0; e < 256; e++) assert.equal(z[e], (e >> 4) - 16, `element ${e}`);
  });

  test('Q4_K: sub-blocks 4..7 keep their top scale/min bits in bytes 0..7', () => {
    const b = new Uint8Array(144);
    [b[0], b[1]] = half(1);
    [b[2], b[3]] = half(1);
    const s = 4; // scales start
    b[s + 0] = 1; // sub-block 0: scale 1, min 0
    b[s + 1] = 2 | 0x80; // sub-block 1: scale 2; top bits 0b10 belong to sub-block 5's scale
    b[s + 5] = 0xc0; // sub-block 1: min 0; top bits 0b11 belong to sub-block 5's min
    b[s + 9] = 0x5b; // sub-block 5: scale low 0b1011, min low 0b0101
    assert.deepEqual(scaleMinK4(b, s, 5), [0b101011, 0b110101]);
    assert.deepEqual(scaleMinK4(b, s, 1), [2, 0]);
    b[16 + 3] = 0x2f; // element 3 (sub-block 0) = 15, element 35 (sub-block 1) = 2
    b[16 + 64 + 7] = 0x90; // chunk 2: element 135 (sub-block 4) = 0, element 167 (sub-block 5) = 9
    const y = dequantize('q4_k', b, 256);
    assert.equal(y[3], 15);
    assert.equal(y[35], 4);
    assert.equal(y[167], 43 * 9 - 53);
    assert.equal(y[160], -53);
    assert.equal(y[135], 0);
    const rng = new Rng(12);
    for (let i = 4; i < 144; i++) b[i] = rng.nextUint32() & 0xff;
    assert.deepEqual([...dequantize('q4_k', b, 256)], walkers.q4_k!(b));
  });

  test('Q5_K: the fifth bit of chunk c comes from qh bits 2c (first 32) and 2c+1 (second 32)', () => {
    const b = new Uint8Array(176);
    [b[0], b[1]] = half(1);
    b[4 + 3] = 5; // sub-block 3 (elements 96..127): scale 5, min 0
    b[48 + 32 + 4] = 0x70; // chunk 1, l = 4, high nibble → element 100
    b[16 + 4] = 0x08; // qh[4] bit 3 = 2·1 + 1
    const y = dequantize('q5_k', b, 256);
    assert.equal(y[100], 5 * (7 + 16));
    assert.equal(y[101], 0);
    // Every qh bit set, every nibble 0, all scales 1: each element is 16.
    b.fill(0);
    [b[0], b[1]] = half(1);
    for (let j = 0; j < 4; j++) b[4 + j] = 1;
    b[4 + 8] = b[4 + 9] = b[4 + 10] = b[4 + 11] = 0x01;
    b.fill(0xff, 16, 48);
    assert.deepEqual([...dequantize('q5_k', b, 256)], new Array(256).fill(16));
  });

  test('Q6_K: ql holds 4 low bits (two quarters per byte), qh 2 high bits (four quarters per byte)', () => {
    const b = new Uint8Array(210);
    [b[208], b[209]] = half(0.25);
    b[192 + 0] = 1;
    b[192 + 1] = 3;
    b[192 + 5] = 0xfe; // −2
    b[192 + 12] = 127;
    b[19] = 0xa0; // element 83 (quarter 2, l = 19) low bits 10; element 19 low bits 0
    b[128 + 19] = 0b0010_0000; // element 83 high bits 2
    b[64 + 8] = 0x53; // half 1: element 200 (quarter 2, l = 8) low bits 5; element 136 low bits 3
    b[128 + 32 + 8] = 0x30; // element 200 high bits 3
    const y = dequantize('q6_k', b, 256);
    assert.equal(y[0], 0.25 * 1 * -32);
    assert.equal(y[19], 0.25 * 3 * -32);
    assert.equal(y[83], 0.25 * -2 * (10 + 32 - 32));
    assert.equal(y[200], 0.25 * 127 * (5 + 48 - 32));
    assert.equal(y[136]! + 0, 0); // scale 8 is 0 (the product is −0)
    const rng = new Rng(13);
    for (let i = 0; i < 208; i++) b[i] = rng.nextUint32() & 0xff;
    assert.deepEqual([...dequantize('q6_k', b, 256)], walkers.q6_k!(b));
  });

  test('F16 / BF16 / F32 are little-endian', () => {
    assert.deepEqual([...dequantize('f16', Uint8Array.of(0x00, 0x3c, 0x00, 0xc0), 2)], [1, -2]);
    assert.deepEqual([...dequantize('bf16', Uint8Array.of(0x80, 0x3f, 0x40, 0xc0), 2)], [1, -3]);
    assert.deepEqual([...dequantize('f32', Uint8Array.of(0, 0, 0x80, 0x3f), 1)], [1]);
  });
});

// --- Error bounds -----------------------------------------------------------------------------

/**
 * The error bound the layout implies for element i of a block of `x`, for the 32-element formats
 * (the f16 scale adds |q|·(d·2^-11 + 2^-25) to the rounding error):
 *   Q8_0        d/2,  d = amax/127
 *   Q4_0/Q5_0   d/2,  d = amax/8 (16); elements clipped at the top level (x/d past 7.5 resp.
 *               15.5 on the side opposite the largest element) up to d
 *   Q4_1/Q5_1   d/2,  d = (max − min)/15 (31), plus the f16 rounding of the stored min
 */
function legacyBound(type: GgmlType, x: Float32Array, i: number): number {
  let amax = 0;
  let max = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of x) {
    if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const slack = (levels: number, d: number): number => levels * (d * F16_REL + F16_ABS) + 1e-6 * d;
  switch (type) {
    case 'q8_0': {
      const d = amax / 127;
      return d / 2 + slack(127, d);
    }
    case 'q4_0':
    case 'q5_0': {
      const h = type === 'q4_0' ? 8 : 16;
      const d = amax / h;
      const clipped = max !== 0 && (x[i]! * -h) / max > h - 0.5;
      return (clipped ? d : d / 2) + slack(h, d);
    }
    default: {
      const top = type === 'q4_1' ? 15 : 31;
      const d = (hi - lo) / top;
      return d / 2 + slack(top, d) + Math.abs(lo) * F16_REL + F16_ABS;
    }
  }
}

/**
 * For the K-quants the guarantee is per element: it decodes to the nearest level of its
 * sub-block's decoded grid {step·q + offset : q = 0..nmax}.
 */
function kGrid(type: GgmlType, b: Uint8Array, e: number): { step: number; offset: number; nmax: number } {
  const h = (at: number): number => f16ToF32(b[at]! | (b[at + 1]! << 8));
  switch (type) {
    case 'q2_k': {
      const sc = b[e >> 4]!;
      return { step: h(80) * (sc & 15), offset: -h(82) * (sc >> 4), nmax: 3 };
    }
    case 'q3_k': {
      const step = h(108) * (scaleQ3K(b, 96, e >> 4) - 32);
      return { step, offset: -4 * step, nmax: 7 };
    }
    case 'q4_k':
    case 'q5_k': {
      const [sc, m] = scaleMinK4(b, 4, e >> 5);
      return { step: h(0) * sc, offset: -h(2) * m, nmax: type === 'q4_k' ? 15 : 31 };
    }
    default: {
      const step = h(208) * ((b[192 + (e >> 4)]! << 24) >> 24);
      return { step, offset: -32 * step, nmax: 63 };
    }
  }
}

function checkBlockBounds(type: GgmlType, x: Float32Array, label: string): void {
  const n = x.length;
  const bytes = quantize(type, x);
  const y = dequantize(type, bytes, n);
  const bs = blockSize(type);
  for (let b = 0; b < n / bs; b++) {
    const block = x.subarray(b * bs, (b + 1) * bs);
    const raw = bytes.subarray(b * blockBytes(type), (b + 1) * blockBytes(type));
    for (let i = 0; i < bs; i++) {
      const e = b * bs + i;
      const err = Math.abs(y[e]! - x[e]!);
      if (K_TYPES.includes(type)) {
        const { step, offset, nmax } = kGrid(type, raw, i);
        let nearest = Infinity;
        for (let q = 0; q <= nmax; q++) nearest = Math.min(nearest, Math.abs(step * q + offset - x[e]!));
        assert.ok(err <= nearest + 1e-9 * (Math.abs(x[e]!) + Math.abs(step)), `${type} ${label} element ${e}: error ${err} but a level is ${nearest} away`);
      } else {
        const bound = legacyBound(type, block, i);
        assert.ok(err <= bound, `${type} ${label} element ${e}: x=${x[e]} decoded ${y[e]} error ${err} > bound ${bound}`);
      }
    }
  }
}

/** Relative RMS error on N(0, 1) rows, measured with this quantiser (seed 5, 64 super-blocks). */
const RMS_LIMIT: Partial<Record<GgmlType, number>> = {
  // measured: q8_0 0.0054, q4_0 0.087, q4_1 0.078, q5_0 0.043, q5_1 0.038,
  //           q2_k 0.298, q3_k 0.152, q4_k 0.072, q5_k 0.036, q6_k 0.018
  q8_0: 0.006, q4_0: 0.095, q4_1: 0.085, q5_0: 0.047, q5_1: 0.041,
  q2_k: 0.32, q3_k: 0.165, q4_k: 0.078, q5_k: 0.04, q6_k: 0.02,
};

describe('quantise → dequantise error', () => {
  const edgeCases = (n: number, rng: Rng): Array<[string, Float32Array]> => {
    const outlier = randomRow(rng, n, 0.01);
    outlier[17] = 1000;
    const negative = Float32Array.from({ length: n }, () => -1 - rng.next());
    const positive = Float32Array.from({ length: n }, () => 5 + rng.next());
    const sparse = Float32Array.from({ length: n }, () => (rng.next() < 0.1 ? gaussian(rng) : 0));
    const tiny = randomRow(rng, n, 1e-6); // f16 scales go subnormal
    return [
      ['zeros', new Float32Array(n)],
      ['outlier', outlier],
      ['negative-only', negative],
      ['positive-only', positive],
      ['constant', new Float32Array(n).fill(3.7)],
      ['constant negative', new Float32Array(n).fill(-0.02)],
      ['sparse', sparse],
      ['tiny', tiny],
      ['large', randomRow(rng, n, 300)],
    ];
  };

  for (const type of BLOCK_TYPES) {
    test(`${type}: within the layout's bound on random and edge-case blocks`, () => {
      const rng = new Rng(5);
      const n = 256 * 8;
      checkBlockBounds(type, randomRow(rng, n), 'gaussian');
      for (const [label, x] of edgeCases(n, rng)) checkBlockBounds(type, x, label);
      // All zeros decode to exact zeros.
      assert.ok(dequantize(type, quantize(type, new Float32Array(n)), n).every((v) => v === 0));
    });

    test(`${type}: RMS error on N(0,1) data`, () => {
      const rng = new Rng(5);
      const n = 256 * 64;
      const x = randomRow(rng, n);
      const y = dequantize(type, quantize(type, x), n);
      let se = 0;
      for (let i = 0; i < n; i++) se += (y[i]! - x[i]!) ** 2;
      const rms = Math.sqrt(se / n);
      assert.ok(rms <= RMS_LIMIT[type]!, `${type} rms ${rms} > ${RMS_LIMIT[type]}`);
    });
  }

  test('K-quants keep an outlier and the constant block accurately', () => {
    for (const type of K_TYPES) {
      const x = randomRow(new Rng(8), 256, 0.01);
      x[17] = 1000;
      const y = dequantize(type, quantize(type, x), 256);
      assert.ok(Math.abs(y[17]! - 1000) <= 1000 / 60, `${type} outlier decoded to ${y[17]}`);
      const c = dequantize(type, quantize(type, new Float32Array(256).fill(3.7)), 256);
      for (const v of c) assert.ok(Math.abs(v - 3.7) <= 3.7 * 0.02, `${type} constant decoded to ${v}`);
    }
  });

  test('f16 and bf16 round to nearest; f32 is exact', () => {
    const rng = new Rng(9);
    const x = randomRow(rng, 1000, 100);
    const f16 = dequantize('f16', quantize('f16', x), 1000);
    const bf16 = dequantize('bf16', quantize('bf16', x), 1000);
    const f32 = dequantize('f32', quantize('f32', x), 1000);
    for (let i = 0; i < 1000; i++) {
      assert.ok(Math.abs(f16[i]! - x[i]!) <= Math.abs(x[i]!) * F16_REL + F16_ABS);
      assert.ok(Math.abs(bf16[i]! - x[i]!) <= Math.abs(x[i]!) * 2 ** -8);
      assert.equal(f32[i], x[i]);
    }
  });
});

describe('already-quantised data', () => {
  test('f16, bf16: every non-NaN bit pattern survives dequantise → quantise', () => {
    for (const type of ['f16', 'bf16'] as const) {
      const bits = new Uint16Array(65536).map((_, i) => i);
      const bytes = new Uint8Array(bits.buffer);
      const values = new Float32Array(65536);
      dequantizeRow(type, bytes, 65536, values);
      const back = new Uint16Array(quantize(type, values).buffer);
      const toF32 = type === 'f16' ? f16ToF32 : bf16ToF32;
      for (let i = 0; i < 65536; i++) if (!Number.isNaN(toF32(i))) assert.equal(back[i], i, `${type} ${i.toString(16)}`);
    }
  });

  // Bit-exact by construction (argued in legacy.ts terms): the block's scale comes back exactly
  // from the decoded extreme (127·d/127, −8·d/−8, −16·d/−16 are exact in f32) and every decoded
  // value is an exact multiple of it — as long as the f16 scale is not 0 (tiny blocks whose scale
  // underflows decode to zeros, and those re-encode differently).
  for (const type of ['q8_0', 'q4_0', 'q5_0'] as const) {
    test(`${type}: dequantise → quantise gives identical bytes`, () => {
      const rng = new Rng(21);
      for (const scale of [1e-3, 1, 50, 1e3]) {
        const x = randomRow(rng, 32 * 200, scale);
        x.fill(-scale, 32, 64); // a constant block
        x[100] = scale * 100; // an outlier block
        for (let i = 128; i < 160; i++) x[i] = -Math.abs(x[i]!); // a negative-only block
        const bytes = quantize(type, x);
        const decoded = new Float32Array(x.length);
        dequantizeRow(type, bytes, x.length, decoded);
        assert.deepEqual(quantize(type, decoded), bytes, `${type} at scale ${scale}`);
      }
    });
  }

  // Q4_1/Q5_1 store the min in f16 and the quantiser subtracts it again in f32: the scale comes
  // back exactly only while |min| is small against 2^11·d. That holds for zero-centred weights;
  // a block like [1000, 1000.05] can re-encode to different (equally valid) bytes.
  for (const type of ['q4_1', 'q5_1'] as const) {
    test(`${type}: dequantise → quantise gives identical bytes for zero-centred data`, () => {
      const x = randomRow(new Rng(22), 32 * 400);
      const bytes = quantize(type, x);
      const decoded = new Float32Array(x.length);
      dequantizeRow(type, bytes, x.length, decoded);
      assert.deepEqual(quantize(type, decoded), bytes);
    });
  }

  // The K-quants re-run their scale search on the decoded values, which can settle on a different
  // grid (observed on N(0,1): Q3_K, Q5_K and Q6_K bytes change, Q2_K and Q4_K happened not to), so
  // no bit-exactness is promised. Re-encoding must not make the error against the original worse.
  test('K-quants: re-encoding decoded data keeps the error against the original', () => {
    for (const type of K_TYPES) {
      const n = 256 * 32;
      const x = randomRow(new Rng(23), n);
      const y1 = dequantize(type, quantize(type, x), n);
      const y2 = dequantize(type, quantize(type, Float32Array.from(y1)), n);
      let e1 = 0;
      let e2 = 0;
      for (let i = 0; i < n; i++) {
        e1 += (y1[i]! - x[i]!) ** 2;
        e2 += (y2[i]! - x[i]!) ** 2;
      }
      assert.ok(e2 <= e1 * 1.1, `${type}: re-encoded error ${Math.sqrt(e2 / n)} vs ${Math.sqrt(e1 / n)}`);
    }
  });
});

describe('row API', () => {
  test('dotRow is Σ dequant · x and Float32 output is the f32 rounding of the exact values', () => {
    const rng = new Rng(31);
    for (const type of GGML_TYPES) {
      const n = 512;
      const bytes = quantize(type, randomRow(rng, n));
      const x = randomRow(rng, n);
      const exact = dequantize(type, bytes, n);
      let want = 0;
      for (let i = 0; i < n; i++) want += exact[i]! * x[i]!;
      assert.ok(Math.abs(dotRow(type, bytes, x, n) - want) <= 1e-9 * n, type);
      const f32 = new Float32Array(n + 3);
      dequantizeRow(type, bytes, n, f32, 3);
      for (let i = 0; i < n; i++) assert.equal(f32[i + 3], Math.fround(exact[i]!), `${type} element ${i}`);
    }
  });

  test('bad arguments are InvalidInputError', () => {
    assert.throws(() => dequantizeRow('q4_0', new Uint8Array(17), 32, new Float32Array(32)), /need 18 bytes/);
    assert.throws(() => dequantizeRow('q4_0', new Uint8Array(18), 32, new Float32Array(32), 1), InvalidInputError);
    assert.throws(() => quantizeRow('q8_0', new Float32Array(32), new Uint8Array(33)), /need 34 bytes/);
    assert.throws(() => quantizeRow('q4_k', new Float32Array(255), new Uint8Array(144)), InvalidInputError);
  });

  test('block formats reject non-finite values and scales that overflow f16', () => {
    for (const type of BLOCK_TYPES) {
      const x = new Float32Array(blockSize(type) * 2);
      x[blockSize(type) + 3] = NaN;
      assert.throws(() => quantize(type, x), (e: unknown) => e instanceof InvalidInputError && /block 1 .*element .*NaN/.test(e.message));
      x[blockSize(type) + 3] = Infinity;
      assert.throws(() => quantize(type, x), InvalidInputError);
    }
    assert.throws(() => quantize('q4_0', new Float32Array(32).fill(1e6)), /does not fit an f16/);
    // Float types store what they are given.
    assert.ok(Number.isNaN(dequantize('f16', quantize('f16', [NaN]), 1)[0]));
    assert.equal(dequantize('bf16', quantize('bf16', [-Infinity]), 1)[0], -Infinity);
  });
});
