/**
 * A weight tensor as the kernels see it: raw bytes in their stored type plus a shape.
 * Kernels decode inside their loops (16-bit and block-quantised weights are never expanded to
 * f32 in memory).
 *
 * Shapes are row-major, outermost first, as torch/safetensors write them: a linear layer's
 * weight is [out, in] and `y = W x`. For block types (GGML Q8_0, Q4_K, …) the last dimension is
 * a whole number of blocks, so a row never splits a block.
 */
import { blockBytes, blockSize, dequantizeRow, type GgmlType } from '../formats/quant/index.js';
import { bf16ToF32, f16ToF32 } from './float16.js';

export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './float16.js';

/** Element types: the plain floats and GGML's block formats. */
export type DType = GgmlType;

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Exactly `tensorBytes(dtype, shape)` bytes. */
  readonly data: Uint8Array;
}

/** Activation vectors: f32 normally, f64 when a caller asks for a float64 reference run. */
export type Vec = Float32Array | Float64Array;

/** Bytes per element of the plain float types (block types have no per-element size). */
export function bytesPerElement(dtype: 'f32' | 'f16' | 'bf16'): number {
  return dtype === 'f32' ? 4 : 2;
}

export function isFloatType(dtype: DType): dtype is 'f32' | 'f16' | 'bf16' {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
}

/** Bytes that `count` consecutive elements (a whole number of blocks) occupy. */
export function spanBytes(dtype: DType, count: number): number {
  return (count / blockSize(dtype)) * blockBytes(dtype);
}

/** Bytes of a whole tensor. */
export function tensorBytes(dtype: DType, shape: readonly number[]): number {
  return spanBytes(dtype, elementCount(shape));
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
  const rowBytes = spanBytes(t.dtype, rowElems);
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

/**
 * A reader for element i of a tensor as a JS number, whatever its stored type. The reference
 * kernels use it so that they work on every dtype without expanding the weights.
 */
export function elementReader(t: Tensor): (i: number) => number {
  const { data } = t;
  if (!isFloatType(t.dtype)) throw new RangeError(`elementReader: ${t.dtype} is a block type; use decodeRow`);
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
 * Decode `count` elements starting at element `start` into `out` (f32 or f64). For block types
 * both must be whole blocks (rows always are). The reference kernels decode one weight row at a
 * time into a scratch row, never the whole tensor.
 */
export function decodeRow(t: Tensor, start: number, count: number, out: Vec): void {
  if (isFloatType(t.dtype)) {
    const read = elementReader(t);
    for (let i = 0; i < count; i++) out[i] = read(start + i);
    return;
  }
  const from = spanBytes(t.dtype, start);
  dequantizeRow(t.dtype, t.data.subarray(from, from + spanBytes(t.dtype, count)), count, out);
}
