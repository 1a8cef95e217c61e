/**
 * A weight tensor as the kernels see it: raw bytes in their stored type plus a shape.
 * Kernels convert element by element (16-bit types are never expanded to f32 in memory).
 *
 * Shapes are row-major, outermost first, as torch/safetensors write them: a linear layer's
 * weight is [out, in] and `y = W x`.
 */
export type DType = 'f32' | 'f16' | 'bf16';

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Exactly `elementCount(shape) × bytesPerElement(dtype)` bytes. */
  readonly data: Uint8Array;
}

/** Activation vectors: f32 normally, f64 when a caller asks for a float64 reference run. */
export type Vec = Float32Array | Float64Array;

export function bytesPerElement(dtype: DType): number {
  return dtype === 'f32' ? 4 : 2;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Rows [start, start+count) of a 2-D (or higher: rows = first dim) tensor, as a view over the
 * same bytes. Used for per-head slices of kv_b_proj and per-expert slices of stacked experts.
 */
export function rowSlice(t: Tensor, start: number, count: number): Tensor {
  const rows = t.shape[0]!;
  if (start < 0 || count < 0 || start + count > rows) {
    throw new RangeError(`rowSlice [${start}, ${start + count}) outside ${rows} rows`);
  }
  const rowElems = elementCount(t.shape.slice(1));
  const rowBytes = rowElems * bytesPerElement(t.dtype);
  return {
    dtype: t.dtype,
    shape: [count, ...t.shape.slice(1)],
    data: t.data.subarray(start * rowBytes, (start + count) * rowBytes),
  };
}

/** A tensor with a different shape of the same element count (no copy). */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  if (elementCount(shape) !== elementCount(t.shape)) {
    throw new RangeError(`cannot reshape [${t.shape.join(', ')}] to [${shape.join(', ')}]`);
  }
  return { dtype: t.dtype, shape: [...shape], data: t.data };
}

/** A f32 tensor over a copy of `values` (tests, and small derived weights). */
export function tensorFromF32(values: ArrayLike<number>, shape: readonly number[]): Tensor {
  const f = Float32Array.from(values as ArrayLike<number>);
  if (f.length !== elementCount(shape)) throw new RangeError('tensorFromF32: length does not match shape');
  return { dtype: 'f32', shape: [...shape], data: new Uint8Array(f.buffer) };
}

// --- 16-bit float conversion (IEEE 754 binary16; bfloat16 = top half of a binary32) ---

const f16Table = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24; // subnormal
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  return table;
})();

/** The f32 value of an IEEE half given as its 16 bits. */
export function f16ToF32(bits: number): number {
  return f16Table[bits & 0xffff]!;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The f32 value of a bfloat16 given as its 16 bits. */
export function bf16ToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** Round to the nearest IEEE half (ties to even), returning its 16 bits. */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / NaN
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // may carry into the exponent: still correct
  return sign | half;
}

/** Round to the nearest bfloat16 (ties to even), returning its 16 bits. */
export function f32ToBf16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/**
 * A reader for element i of a tensor as a JS number, whatever its stored type. The reference
 * kernels use it so that they work on every dtype without expanding the weights.
 */
export function elementReader(t: Tensor): (i: number) => number {
  const { data } = t;
  switch (t.dtype) {
    case 'f32': {
      if (data.byteOffset % 4 === 0) {
        const f = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
        return (i) => f[i]!;
      }
      const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
      return (i) => dv.getFloat32(i * 4, true);
    }
    case 'f16':
    case 'bf16': {
      const conv = t.dtype === 'f16' ? f16ToF32 : bf16ToF32;
      if (data.byteOffset % 2 === 0) {
        const u = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
        return (i) => conv(u[i]!);
      }
      const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
      return (i) => conv(dv.getUint16(i * 2, true));
    }
  }
}

/**
 * Decode `count` elements starting at element `start` into `out` (f32 or f64). The reference
 * kernels decode one weight row at a time into a scratch row, never the whole tensor.
 */
export function decodeRow(t: Tensor, start: number, count: number, out: Vec): void {
  const read = elementReader(t);
  for (let i = 0; i < count; i++) out[i] = read(start + i);
}
