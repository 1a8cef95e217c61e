/**
 * The reference backend: plain TypeScript, written for clarity. It is the oracle the native
 * kernels are tested against, so every loop says exactly what the operation means. JS numbers
 * are f64, so sums accumulate in f64 and round once when stored into an f32 Vec.
 */
import type { AttentionShape, Backend, SharedKvRows } from '../backend.js';
import { decodeRow, elementCount, f16ToF32, isFloatType, type Tensor, type Vec } from '../tensor.js';
import { blockSize } from '../../formats/quant/index.js';
import { q8RowBytes, q8Value } from '../q8Row.js';

function dims2(w: Tensor): [rows: number, cols: number] {
  const rows = w.shape[0]!;
  return [rows, elementCount(w.shape) / rows];
}

/** Reads weight row r into `row` (decoding 16-bit and block types on the fly; never the whole tensor). */
function rowDecoder(w: Tensor, cols: number): (r: number, row: Float64Array) => void {
  return (r, row) => decodeRow(w, r * cols, cols, row);
}

/** Copies query t's key row j into dst as numbers, found through the block table (backend.ts, SharedKvRows). */
function kvRowReader(kv: SharedKvRows): (t: number, j: number, dst: Float64Array) => void {
  const { segments, segmentPages, pageRows, width, blockTable, queryPages } = kv;
  const stride = kv.dtype === 'q8' ? q8RowBytes(width) : width;
  return (t, j, dst) => {
    const p = blockTable[queryPages[t]! + Math.floor(j / pageRows)];
    const segment = p === undefined || p < 0 ? undefined : segments[Math.floor(p / segmentPages)];
    if (!segment) throw new RangeError(`sharedKvAttention: query ${t} has no page for row ${j} in the block table or slab`);
    const o = ((p! % segmentPages) * pageRows + (j % pageRows)) * stride;
    if (kv.dtype === 'q8') for (let i = 0; i < width; i++) dst[i] = q8Value(segment as Uint8Array, o, i);
    else if (kv.dtype === 'f16') for (let i = 0; i < width; i++) dst[i] = f16ToF32(segment[o + i]!);
    else for (let i = 0; i < width; i++) dst[i] = segment[o + i]!;
  };
}

/**
 * x rounded to 8 bits per block as ggml quantises activations for integer dot products: blocks
 * of 32 (Q8_0) for the 32-element weight formats, of 256 (as Q8_K) for the K formats; per block
 * d = amax/127 in f32 and q = round-half-away(x/d) in [-127, 127]; returns d·q. n must be a
 * multiple of the block (rows of block-quantised weights always are).
 */
export function quantizeActivations(x: Vec, n: number, block: 32 | 256 = 32): Float64Array {
  const out = new Float64Array(n);
  const f = Math.fround;
  for (let b = 0; b < n; b += block) {
    let amax = 0;
    for (let i = 0; i < block; i++) amax = Math.max(amax, Math.abs(x[b + i]!));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    for (let i = 0; i < block; i++) {
      const v = f(x[b + i]! * id);
      const q = v < 0 ? -Math.round(-v) : Math.round(v);
      out[b + i] = q * d;
    }
  }
  return out;
}

/**
 * A query row against q8 latent rows, rounded as the rows' blocks are (32 values, the last one
 * short): d = amax/127 in f32 and q = round-half-away(x/d), in place as d·q. Over q8 rows the
 * scores are then sums of int8 products per block, as ggml quantises a query to the K cache's
 * vec_dot type (q8_0) and as the native kernels compute them with 8-bit dot-product instructions.
 */
export function quantizeQ8Query(x: Float64Array, width: number): void {
  const f = Math.fround;
  for (let b = 0; b < width; b += 32) {
    const end = Math.min(width, b + 32);
    let amax = 0;
    for (let i = b; i < end; i++) amax = Math.max(amax, Math.abs(f(x[i]!)));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    for (let i = b; i < end; i++) {
      const v = f(f(x[i]!) * id);
      x[i] = (v < 0 ? -Math.round(-v) : Math.round(v)) * d;
    }
  }
}

/** p[j] = exp(p[j] − max) for j < n (stable softmax numerators); returns their sum. */
function expShifted(p: Float64Array, n: number, max: number): number {
  let sum = 0;
  for (let j = 0; j < n; j++) {
    p[j] = Math.exp(p[j]! - max);
    sum += p[j]!;
  }
  return sum;
}

export const referenceBackend: Backend = {
  name: 'reference',

  // The oracle reads weights as stored: preparing changes nothing.
  prepareAll(tensors) {
    return { weights: [...tensors], report: { repacked: 0, repackedBytes: 0, source: 'none', seconds: 0, file: null } };
  },

  matmul(y, x, w, tokens) {
    const [rows, cols] = dims2(w);
    const row = new Float64Array(cols);
    const decode = rowDecoder(w, cols);
    // Block-quantised weights multiply activations quantised to 8 bits per block of 32 (the
    // semantics of llama.cpp's integer dot products, which the native kernels implement).
    const xs = isFloatType(w.dtype) ? x : quantizeActivations(x, tokens * cols, blockSize(w.dtype) === 256 ? 256 : 32);
    for (let r = 0; r < rows; r++) {
      decode(r, row);
      for (let t = 0; t < tokens; t++) {
        const xo = t * cols;
        let sum = 0;
        for (let c = 0; c < cols; c++) sum += row[c]! * xs[xo + c]!;
        y[t * rows + r] = sum;
      }
    }
  },

  matmulTransposed(y, x, w, tokens) {
    const [rows, cols] = dims2(w);
    const row = new Float64Array(cols);
    const acc = new Float64Array(tokens * cols);
    const decode = rowDecoder(w, cols);
    for (let r = 0; r < rows; r++) {
      decode(r, row);
      for (let t = 0; t < tokens; t++) {
        const xr = x[t * rows + r]!;
        const ao = t * cols;
        for (let c = 0; c < cols; c++) acc[ao + c] += row[c]! * xr;
      }
    }
    for (let i = 0; i < tokens * cols; i++) y[i] = acc[i]!;
  },

  rmsNorm(y, x, weight, eps, tokens) {
    const dim = elementCount(weight.shape);
    const wRow = new Float64Array(dim);
    decodeRow(weight, 0, dim, wRow);
    for (let t = 0; t < tokens; t++) {
      const o = t * dim;
      let sumSq = 0;
      for (let i = 0; i < dim; i++) sumSq += x[o + i]! * x[o + i]!;
      const inv = 1 / Math.sqrt(sumSq / dim + eps);
      for (let i = 0; i < dim; i++) y[o + i] = x[o + i]! * inv * wRow[i]!;
    }
  },

  ropeAdjacent(x, rows, stride, offset, positions, rowsPerPosition, invFreq, magnitude) {
    const pairs = invFreq.length;
    // cos and sin once per position, for all the rows (heads) at it: a prompt's queries are
    // 16–128 rows per position; 512 tokens × 16 heads took 3.1 ms instead of 7.6 (AMD EPYC Zen 3).
    const cos = new Float64Array(pairs);
    const sin = new Float64Array(pairs);
    const per = Math.max(1, Math.floor(rowsPerPosition));
    for (let r0 = 0; r0 < rows; r0 += per) {
      const pos = positions[r0 / per]!;
      for (let i = 0; i < pairs; i++) {
        const angle = pos * invFreq[i]!;
        cos[i] = Math.cos(angle) * magnitude;
        sin[i] = Math.sin(angle) * magnitude;
      }
      for (let r = r0; r < Math.min(rows, r0 + per); r++) {
        const base = r * stride + offset;
        for (let i = 0; i < pairs; i++) {
          const a = x[base + 2 * i]!;
          const b = x[base + 2 * i + 1]!;
          x[base + 2 * i] = a * cos[i]! - b * sin[i]!;
          x[base + 2 * i + 1] = a * sin[i]! + b * cos[i]!;
        }
      }
    }
  },

  softmax(x, offset, n) {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, x[offset + i]!);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(x[offset + i]! - max);
      x[offset + i] = e;
      sum += e;
    }
    for (let i = 0; i < n; i++) x[offset + i] = x[offset + i]! / sum;
  },

  siluMul(y, gate, up, n) {
    for (let i = 0; i < n; i++) {
      const g = gate[i]!;
      y[i] = (g / (1 + Math.exp(-g))) * up[i]!;
    }
  },

  add(y, x, n) {
    for (let i = 0; i < n; i++) y[i] = y[i]! + x[i]!;
  },

  copyRows(dst, src, rows, width, dstStride, srcStride, repeat = 1, repeatStride = 0) {
    for (let r = 0; r < rows; r++) {
      const from = r * srcStride;
      for (let j = 0; j < repeat; j++) {
        const to = r * dstStride + j * repeatStride;
        for (let i = 0; i < width; i++) dst[to + i] = src[from + i]!;
      }
    }
  },

  attention(out, q, k, v, keyWidth, valueWidth, shape) {
    const { queries, heads, contextLengths, scale } = shape;
    const p = new Float64Array(Math.max(0, ...contextLengths));
    for (let t = 0; t < queries; t++) {
      const n = contextLengths[t]!;
      for (let h = 0; h < heads; h++) {
        const qo = (t * heads + h) * keyWidth;
        let max = -Infinity;
        for (let j = 0; j < n; j++) {
          const ko = (j * heads + h) * keyWidth;
          let dot = 0;
          for (let i = 0; i < keyWidth; i++) dot += q[qo + i]! * k[ko + i]!;
          p[j] = dot * scale;
          if (p[j]! > max) max = p[j]!;
        }
        const sum = expShifted(p, n, max);
        const oo = (t * heads + h) * valueWidth;
        for (let i = 0; i < valueWidth; i++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += p[j]! * v[(j * heads + h) * valueWidth + i]!;
          out[oo + i] = acc / sum;
        }
      }
    }
  },

  sharedKvAttention(out, qa, qb, kv, valueWidth, shape) {
    const { queries, heads, contextLengths, scale } = shape;
    const width = kv.width;
    const ropeWidth = width - valueWidth;
    const readRow = kvRowReader(kv);
    const row = new Float64Array(width);
    const query = new Float64Array(width);
    const acc = new Float64Array(valueWidth);
    const p = new Float64Array(Math.max(0, ...contextLengths));
    for (let t = 0; t < queries; t++) {
      const n = contextLengths[t]!;
      for (let h = 0; h < heads; h++) {
        const ao = (t * heads + h) * valueWidth;
        const bo = (t * heads + h) * ropeWidth;
        for (let i = 0; i < valueWidth; i++) query[i] = qa[ao + i]!;
        for (let i = 0; i < ropeWidth; i++) query[valueWidth + i] = qb[bo + i]!;
        if (kv.dtype === 'q8') quantizeQ8Query(query, width);
        let max = -Infinity;
        for (let j = 0; j < n; j++) {
          readRow(t, j, row);
          let dot = 0;
          for (let i = 0; i < width; i++) dot += query[i]! * row[i]!;
          p[j] = dot * scale;
          if (p[j]! > max) max = p[j]!;
        }
        const sum = expShifted(p, n, max);
        acc.fill(0);
        for (let j = 0; j < n; j++) {
          readRow(t, j, row);
          for (let i = 0; i < valueWidth; i++) acc[i] += p[j]! * row[i]!;
        }
        for (let i = 0; i < valueWidth; i++) out[ao + i] = acc[i]! / sum;
      }
    }
  },

  topK(idx, idxOffset, x, offset, n, k) {
    // Selection by repeated scans: k is small (experts per token, groups), n is at most a few hundred.
    const taken = new Uint8Array(n);
    for (let s = 0; s < k; s++) {
      let best = -1;
      for (let i = 0; i < n; i++) {
        if (taken[i]) continue;
        if (best < 0 || x[offset + i]! > x[offset + best]!) best = i;
      }
      taken[best] = 1;
      idx[idxOffset + s] = best;
    }
  },
};
