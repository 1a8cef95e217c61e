/**
 * Multi-head Latent Attention (DeepSeek-V2 paper §2.1, eq. 9–19; docs/SPEC.md §3).
 *
 * Per token t (paper symbols):
 *   c_t^Q  = W^DQ h_t, normalised            (q_a_proj + q_a_layernorm; Lite: absent)
 *   q_t    = W^UQ c_t^Q  (or q_proj h_t)      per head [q^C (nope, dn) | q^R (rope, dr)]   eq. 12–13
 *   [c_t^KV | k_t^R] = W^DKV h_t (kv_a_proj_with_mqa); c_t^KV normalised; k_t^R = RoPE(k_t^R)  eq. 9, 14
 *   k_h^C  = W^UK_h c^KV, v_h^C = W^UV_h c^KV  (kv_b_proj rows of head h)                    eq. 10–11
 *   o_h    = Σ_j softmax_j(scale · (q_h^C·k_h^C(j) + q_h^R·k^R(j))) v_h^C(j)                 eq. 16–18
 *   u_t    = W^O [o_1; …; o_H]                                                                eq. 19
 * Only [c^KV | k^R] is cached (576 values per token and layer for V2).
 *
 * Two equivalent forms:
 *  - expanded: decompress k^C, v^C of every cached token with kv_b_proj and run ordinary MHA
 *    (fewer FLOPs per query: prompt chunks);
 *  - absorbed (paper App. C / §2.1.2): fold W^UK into the query (q_lat,h = W^UK_hᵀ q_h^C), attend
 *    over the latent rows directly, apply W^UV after attention (reads only the latent cache:
 *    decoding).
 */
import type { Backend } from '../kernels/backend.js';
import { rowSlice, type Vec } from '../kernels/tensor.js';
import { batchRows, type LatentCache } from '../cache/latentCache.js';
import type { ModelConfig } from './config.js';
import type { RopeParams } from './rope.js';
import type { AttentionWeights } from './weights.js';
import type { Workspace } from './workspace.js';

export type AttentionForm = 'expanded' | 'absorbed';

/**
 * The original modeling code builds q_a_layernorm and kv_a_layernorm with the default eps 1e-6
 * rather than rms_norm_eps (docs/SPEC.md §2); identical for V2/V3, different only for eps-1e-5 models.
 */
const LATENT_NORM_EPS = 1e-6;

/** The MLA sizes every step needs, named as in the paper / docs/SPEC.md §3. */
export function mlaDims(c: ModelConfig) {
  const dn = c.qkNopeHeadDim;
  const dr = c.qkRopeHeadDim;
  const dc = c.kvLoraRank;
  return { H: c.numAttentionHeads, dn, dr, dv: c.vHeadDim, dq: dn + dr, dc, width: dc + dr };
}

export interface AttentionContext {
  readonly backend: Backend;
  readonly config: ModelConfig;
  readonly rope: RopeParams;
  readonly ws: Workspace;
}

/** A run of consecutive tokens of one sequence inside a batch. */
export interface SequenceSlice {
  /** Index of the slice's first token in the batch. */
  readonly start: number;
  readonly count: number;
  /** The sequence's cache; the slice's tokens take positions cache.length … cache.length+count−1. */
  readonly cache: LatentCache;
  readonly form: AttentionForm;
}

/**
 * out[T][d] = MLA(x[T][d]) for a batch of token slices, each continuing its own sequence, at
 * `positions`; appends every token's latent row to layer `layer` of its slice's cache (reserved
 * by the caller). Projections run once over the whole batch; attention runs per sequence.
 */
export function multiHeadLatentAttention(
  ctx: AttentionContext,
  w: AttentionWeights,
  layer: number,
  x: Vec,
  positions: Int32Array,
  slices: readonly SequenceSlice[],
  out: Vec,
): void {
  const { backend, config: c, rope, ws } = ctx;
  const T = positions.length;
  const { H, dn, dr, dq, dv, dc, width } = mlaDims(c);

  // Queries [T][H][dn | dr].
  const q = ws.get('attn.q', T * H * dq);
  if (w.qProj) {
    backend.matmul(q, x, w.qProj, T);
  } else {
    const cq = ws.get('attn.cq', T * c.qLoraRank!);
    backend.matmul(cq, x, w.qA!, T);
    backend.rmsNorm(cq, cq, w.qANorm!, LATENT_NORM_EPS, T);
    backend.matmul(q, cq, w.qB!, T);
  }
  backend.ropeAdjacent(q, T * H, dq, dn, positions, H, rope.invFreq, rope.magnitude);

  // Latent rows [T][c^KV | k^R]: normalise the latent (not k^R), rotate k^R, cache both.
  const kv = ws.get('attn.kv', T * width);
  backend.matmul(kv, x, w.kvA, T);
  for (let t = 0; t < T; t++) {
    const latent = kv.subarray(t * width, t * width + dc);
    backend.rmsNorm(latent, latent, w.kvANorm, LATENT_NORM_EPS, 1);
  }
  backend.ropeAdjacent(kv, T, width, dc, positions, 1, rope.invFreq, rope.magnitude);
  for (const s of slices) {
    for (let t = s.start; t < s.start + s.count; t++) s.cache.writeRow(layer, positions[t]!, kv, t * width);
  }

  const o = ws.get('attn.o', T * H * dv);
  const shapeOf = (s: SequenceSlice): Shape => ({
    queries: s.count,
    heads: H,
    contextLengths: Int32Array.from({ length: s.count }, (_, i) => positions[s.start + i]! + 1),
    scale: rope.softmaxScale,
  });
  const absorbed = slices.filter((s) => s.form === 'absorbed');
  for (const s of slices) {
    if (s.form !== 'expanded') continue;
    const q1 = q.subarray(s.start * H * dq, (s.start + s.count) * H * dq);
    const o1 = o.subarray(s.start * H * dv, (s.start + s.count) * H * dv);
    expandedAttention(ctx, w, layer, q1, s.cache, shapeOf(s), o1);
  }
  if (absorbed.length > 0) {
    // Gather the absorbed slices' queries so the W^UK / W^UV products run once for all of them.
    const contiguous = absorbed.length === slices.length;
    const Ta = absorbed.reduce((n, s) => n + s.count, 0);
    const qa = contiguous ? q : ws.get('attn.q.absorbed', Ta * H * dq);
    const oa = contiguous ? o : ws.get('attn.o.absorbed', Ta * H * dv);
    const parts: AbsorbedPart[] = [];
    let offset = 0;
    for (const s of absorbed) {
      if (!contiguous) qa.set(q.subarray(s.start * H * dq, (s.start + s.count) * H * dq), offset * H * dq);
      parts.push({ offset: contiguous ? s.start : offset, cache: s.cache, shape: shapeOf(s) });
      offset += s.count;
    }
    absorbedAttention(ctx, w, layer, qa, Ta, parts, oa);
    if (!contiguous) {
      for (const [i, s] of absorbed.entries()) {
        const from = parts[i]!.offset * H * dv;
        o.set(oa.subarray(from, from + s.count * H * dv), s.start * H * dv);
      }
    }
  }
  backend.matmul(out, o, w.o, T);
}

interface AbsorbedPart {
  /** First query row of this sequence in the gathered absorbed batch. */
  readonly offset: number;
  readonly cache: LatentCache;
  readonly shape: Shape;
}

interface Shape {
  readonly queries: number;
  readonly heads: number;
  readonly contextLengths: Int32Array;
  readonly scale: number;
}

/** Decompress keys and values of the whole visible context with kv_b_proj, then plain MHA. */
function expandedAttention(
  ctx: AttentionContext,
  w: AttentionWeights,
  layer: number,
  q: Vec,
  cache: LatentCache,
  shape: Shape,
  o: Vec,
): void {
  const { backend, config: c, ws } = ctx;
  const { H, dn, dq, dv, dc, width } = mlaDims(c);
  const N = shape.contextLengths[shape.queries - 1]!;

  const rows = ws.get('attn.rows', N * width);
  cache.readRows(layer, 0, N, rows);
  const latents = ws.get('attn.latents', N * dc);
  backend.copyRows(latents, rows, N, dc, dc, width);
  // k_h(j) = [k^C_h(j) | k^R(j)] (the RoPE key is shared by every head); v_h(j) = v^C_h(j).
  const k = ws.get('attn.k', N * H * dq);
  const v = ws.get('attn.v', N * H * dv);
  // one call, not a subarray per (token, head): V2-Lite at 4,096 tokens had 74 K a layer
  backend.copyRows(k.subarray(dn), rows.subarray(dc), N, dq - dn, H * dq, width, H, dq);
  if (!w.kvB && backend.matmulTransposedHeads && backend.matmulHeads && w.uvGroup) {
    // Split layout, every head in one call each: W^UK_h's transposed product written at its place
    // in k (the first dn of each head's dq), W^UV_h's straight into v, one latent row for all heads.
    backend.matmulTransposedHeads(k, latents, w.kB!, H, N, dq);
    backend.matmulHeads(v, latents, N, dc, w.uvGroup, true);
  } else if (w.kvB) {
    // One product for all heads: kv_b_proj rows are [W^UK_h; W^UV_h] head after head.
    const kvb = ws.get('attn.kvb', N * H * (dn + dv));
    backend.matmul(kvb, latents, w.kvB, N);
    for (let j = 0; j < N; j++) {
      for (let h = 0; h < H; h++) {
        const src = (j * H + h) * (dn + dv);
        k.set(kvb.subarray(src, src + dn), (j * H + h) * dq);
        v.set(kvb.subarray(src + dn, src + dn + dv), (j * H + h) * dv);
      }
    }
  } else {
    // Split layout: k_b holds W^UK_hᵀ [dc × dn] per head, v_b holds W^UV_h [dv × dc].
    const kHead = ws.get('attn.k.h', N * dn);
    const vHead = ws.get('attn.v.h', N * dv);
    for (let h = 0; h < H; h++) {
      backend.matmulTransposed(kHead, latents, rowSlice(w.kB!, h * dc, dc), N);
      backend.matmul(vHead, latents, w.uvHeads?.[h] ?? rowSlice(w.vB!, h * dv, dv), N);
      for (let j = 0; j < N; j++) {
        k.set(kHead.subarray(j * dn, (j + 1) * dn), (j * H + h) * dq);
        v.set(vHead.subarray(j * dv, (j + 1) * dv), (j * H + h) * dv);
      }
    }
  }
  backend.attention(o, q, k, v, dq, dv, shape);
}

/**
 * Attend over the latent rows directly, with W^UK folded into the query and W^UV applied after.
 * q holds `T` query rows (possibly of several sequences, `parts`); each part attends to its own cache.
 */
function absorbedAttention(
  ctx: AttentionContext,
  w: AttentionWeights,
  layer: number,
  q: Vec,
  T: number,
  parts: readonly AbsorbedPart[],
  o: Vec,
): void {
  const { backend, config: c, ws } = ctx;
  const { H, dn, dr, dv, dq, dc } = mlaDims(c);

  const qLat = ws.get('attn.qlat', T * H * dc);
  const qRope = ws.get('attn.qrope', T * H * dr);
  backend.copyRows(qRope, q.subarray(dn), T * H, dr, dr, dq);
  // q_lat,h = W^UK_hᵀ q^C_h: W^UK_h is rows [h(dn+dv), h(dn+dv)+dn) of kv_b_proj, or k_b's head h already transposed.
  if (w.ukGroup && backend.matmulHeads) {
    backend.matmulHeads(qLat, q, T, dq, w.ukGroup); // q^C_h is the first dn of each head's dq values
  } else {
    const qNopeHead = ws.get('attn.qnope.h', T * dn);
    const qLatHead = ws.get('attn.qlat.h', T * dc);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) qNopeHead.set(q.subarray((t * H + h) * dq, (t * H + h) * dq + dn), t * dn);
      if (w.kvB) backend.matmulTransposed(qLatHead, qNopeHead, rowSlice(w.kvB, h * (dn + dv), dn), T);
      else backend.matmul(qLatHead, qNopeHead, w.ukHeads?.[h] ?? rowSlice(w.kB!, h * dc, dc), T);
      for (let t = 0; t < T; t++) qLat.set(qLatHead.subarray(t * dc, (t + 1) * dc), (t * H + h) * dc);
    }
  }

  // One latent attention call per run of adjacent parts on one page pool (a whole batch, when the
  // scheduler runs it): a block table into the pool's slab tells each query its sequence's pages.
  const oLat = ws.get('attn.olat', T * H * dc);
  for (let first = 0; first < parts.length; ) {
    const pool = parts[first]!.cache.pool;
    let end = first + 1;
    let queries = parts[first]!.shape.queries;
    while (end < parts.length && parts[end]!.cache.pool === pool && parts[end]!.offset === parts[first]!.offset + queries) {
      queries += parts[end]!.shape.queries;
      end++;
    }
    const run = parts.slice(first, end);
    const contextLengths = new Int32Array(queries);
    let at = 0;
    for (const part of run) {
      contextLengths.set(part.shape.contextLengths, at);
      at += part.shape.queries;
    }
    const from = parts[first]!.offset * H;
    const to = from + queries * H;
    backend.sharedKvAttention(
      oLat.subarray(from * dc, to * dc),
      qLat.subarray(from * dc, to * dc),
      qRope.subarray(from * dr, to * dr),
      batchRows(pool, layer, run.map((part) => ({ cache: part.cache, queries: part.shape.queries }))),
      dc,
      { queries, heads: H, contextLengths, scale: parts[first]!.shape.scale },
    );
    first = end;
  }

  // o_h = W^UV_h o_lat,h: W^UV_h is rows [h(dn+dv)+dn, (h+1)(dn+dv)) of kv_b_proj, or v_b's head h.
  if (w.uvGroup && backend.matmulHeads) {
    backend.matmulHeads(o, oLat, T, dc, w.uvGroup);
    return;
  }
  const oLatHead = ws.get('attn.olat.h', T * dc);
  const oHead = ws.get('attn.o.h', T * dv);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) oLatHead.set(oLat.subarray((t * H + h) * dc, (t * H + h + 1) * dc), t * dc);
    const wUV = w.uvHeads?.[h] ?? (w.kvB ? rowSlice(w.kvB, h * (dn + dv) + dn, dv) : rowSlice(w.vB!, h * dv, dv));
    backend.matmul(oHead, oLatHead, wUV, T);
    for (let t = 0; t < T; t++) o.set(oHead.subarray(t * dv, (t + 1) * dv), (t * H + h) * dv);
  }
}
