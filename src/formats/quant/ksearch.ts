/**
 * Scale (and minimum) searches for the K-quants' sub-blocks: the three searches ggml-quants.c's
 * reference quantisers (`quantize_row_q{2..6}_K_ref`) use, re-derived here as the least-squares
 * problems they solve. Arithmetic is in f64 (ggml's is f32), so in rare near-ties an element may
 * round the other way than ggml's; every result is a valid block either way.
 *
 * All three fit x ≈ scale·l (+ min) with integer levels l and pick, among a few candidate grids,
 * the fit of least weighted error:
 *  - symmetricScale: l ∈ [−nmax, nmax−1], weights x², 19 grids around the one that maps the
 *    element of largest magnitude to −nmax (`make_qx_quants`, rmse_type 1, no importance weights).
 *  - symmetricScaleRefined: the same start, then up to five passes moving single levels while
 *    that improves the fit (`make_q3_quants` with do_rmse).
 *  - affineScale: l ∈ [0, nmax] with min ≤ 0, each grid refitted by weighted least squares for
 *    both scale and min (`make_qkx2_quants`).
 */
import { nearestInt } from './common.js';

/** Below this the reference treats a group as all zeros (GROUP_MAX_EPS). */
export const GROUP_MAX_EPS = 1e-15;

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);
/** Scratch levels (sub-blocks are at most 32 elements; the quantisers are never re-entered). */
const levels = new Int32Array(32);
const aux = new Uint8Array(32);

/**
 * Symmetric levels for x[from, from+n): writes L[i] = l + nmax ∈ [0, 2·nmax) and returns the scale
 * (negative when the largest-magnitude element is positive: it maps to l = −nmax).
 */
export function symmetricScale(x: Float32Array, from: number, n: number, nmax: number, L: Uint8Array): number {
  let max = 0;
  for (let i = from; i < from + n; i++) if (Math.abs(x[i]!) > Math.abs(max)) max = x[i]!;
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, from, from + n);
    return 0;
  }
  // Least squares with weights w = x² for a fixed grid: scale = Σw·x·l / Σw·l², and the fit is
  // better the larger (Σw·x·l)² / Σw·l².
  let scale = 0;
  let best = -1;
  for (let step = 0; step <= 18; step++) {
    // First the grid of nmax levels itself, then nmax + 0.1·k for k = −9..−1, 1..9 (the reference's order).
    const k = step === 0 ? 0 : step <= 9 ? step - 10 : step - 9;
    const iscale = -(nmax + 0.1 * k) / max;
    let sumlx = 0;
    let suml2 = 0;
    for (let i = from; i < from + n; i++) {
      const v = x[i]!;
      const l = clamp(nearestInt(iscale * v), -nmax, nmax - 1);
      const w = v * v;
      sumlx += w * v * l;
      suml2 += w * l * l;
    }
    if (step === 0 || (suml2 > 0 && sumlx * sumlx > best * suml2)) {
      for (let i = from; i < from + n; i++) L[i] = clamp(nearestInt(iscale * x[i]!), -nmax, nmax - 1) + nmax;
      scale = suml2 !== 0 ? sumlx / suml2 : 0;
      best = scale * sumlx;
    }
  }
  return scale;
}

/** Like symmetricScale's first grid, then coordinate descent on single levels (Q3_K). */
export function symmetricScaleRefined(x: Float32Array, from: number, n: number, nmax: number, L: Uint8Array): number {
  let max = 0;
  for (let i = from; i < from + n; i++) if (Math.abs(x[i]!) > Math.abs(max)) max = x[i]!;
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, from, from + n);
    return 0;
  }
  const iscale = -nmax / max;
  const l = levels;
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[from + i]!;
    l[i] = clamp(nearestInt(iscale * v), -nmax, nmax - 1);
    const w = v * v;
    sumlx += w * v * l[i]!;
    suml2 += w * l[i]! * l[i]!;
  }
  for (let pass = 0; pass < 5; pass++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[from + i]!;
      const w = v * v;
      // The best level for element i given everyone else's levels and the implied scale.
      let slx = sumlx - w * v * l[i]!;
      if (slx <= 0) continue;
      let sl2 = suml2 - w * l[i]! * l[i]!;
      const next = clamp(nearestInt((v * sl2) / slx), -nmax, nmax - 1);
      if (next === l[i]) continue;
      slx += w * v * next;
      sl2 += w * next * next;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        l[i] = next;
        sumlx = slx;
        suml2 = sl2;
        changed++;
      }
    }
    if (changed === 0) break;
  }
  for (let i = 0; i < n; i++) L[from + i] = l[i]! + nmax;
  return suml2 > 0 ? sumlx / suml2 : 0;
}

/**
 * Affine levels for x[from, from+n): x ≈ scale·l − min with l ∈ [0, nmax] and min ≥ 0 (the block
 * stores the subtracted minimum). Tries nstep+1 grids (nmax + rmin + rdelta·k levels over the
 * range), refits scale and min by weighted least squares for each, and keeps the best by weighted
 * squared (or, with mad, absolute) error. Writes L and returns [scale, min].
 */
export function affineScale(
  x: Float32Array,
  from: number,
  n: number,
  nmax: number,
  weights: Float64Array,
  L: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  mad: boolean,
): [number, number] {
  let lo = x[from]!;
  let hi = x[from]!;
  let sumW = 0;
  let sumX = 0;
  for (let i = 0; i < n; i++) {
    const v = x[from + i]!;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
    sumW += weights[i]!;
    sumX += weights[i]! * v;
  }
  if (lo > 0) lo = 0; // only a non-positive offset is stored
  if (hi === lo) {
    L.fill(0, from, from + n);
    return [0, -lo];
  }
  let iscale = nmax / (hi - lo);
  let scale = 1 / iscale;
  let min = lo;
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const v = x[from + i]!;
    const l = clamp(nearestInt(iscale * (v - lo)), 0, nmax);
    L[from + i] = l;
    const diff = scale * l + lo - v;
    bestError += weights[i]! * (mad ? Math.abs(diff) : diff * diff);
  }
  for (let k = 0; k <= nstep; k++) {
    iscale = (rmin + rdelta * k + nmax) / (hi - lo);
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[from + i]!;
      const l = clamp(nearestInt(iscale * (v - lo)), 0, nmax);
      aux[i] = l;
      const w = weights[i]!;
      sumL += w * l;
      sumL2 += w * l * l;
      sumXL += w * l * v;
    }
    // Normal equations of min Σw(s·l + m − x)² over (s, m).
    const D = sumW * sumL2 - sumL * sumL;
    if (D <= 0) continue;
    let s = (sumW * sumXL - sumX * sumL) / D;
    let m = (sumL2 * sumX - sumL * sumXL) / D;
    if (m > 0) {
      m = 0;
      s = sumXL / sumL2;
    }
    let e = 0;
    for (let i = 0; i < n; i++) {
      const diff = s * aux[i]! + m - x[from + i]!;
      e += weights[i]! * (mad ? Math.abs(diff) : diff * diff);
    }
    if (e < bestError) {
      L.set(aux.subarray(0, n), from);
      bestError = e;
      scale = s;
      min = m;
    }
  }
  return [scale, -min];
}
