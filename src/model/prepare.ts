/**
 * Hands every weight that a product reads to the backend once, at load, so that it can keep
 * them in its own layout (Backend.prepareAll): the native backend's interleaved row groups,
 * cached on disk. Per-head slices that the absorbed attention multiplies every step are prepared
 * as weights of their own (a slice of a prepared weight would be the stored rows again).
 */
import type { Backend, PrepareOptions, PrepareReport } from '../kernels/backend.js';
import { rowSlice, type Tensor } from '../kernels/tensor.js';
import type { ModelConfig } from './config.js';
import type { AttentionWeights, LayerWeights, ModelWeights, MoeWeights, SwiGluWeights } from './weights.js';

/** The same weights with products' operands prepared by `backend`. */
export function prepareModelWeights(
  c: ModelConfig,
  w: ModelWeights,
  backend: Backend,
  options: PrepareOptions & { readonly fuseExperts?: boolean } = {},
): { weights: ModelWeights; report: PrepareReport } {
  const list: Tensor[] = [];
  const others: Tensor[] = [w.embed, w.norm];
  // Collect in a fixed order, remembering where each goes; `take` hands back the prepared one.
  const add = (t: Tensor): number => list.push(t) - 1;
  const dn = c.qkNopeHeadDim;
  const dv = c.vHeadDim;
  const dc = c.kvLoraRank;
  const H = c.numAttentionHeads;
  const swigluIds = (s: SwiGluWeights) => ({ gate: add(s.gate), up: add(s.up), down: add(s.down) });

  const plans = w.layers.map((layer) => {
    const a = layer.attention;
    others.push(layer.attnNorm, layer.ffnNorm, a.kvANorm);
    if (a.qANorm) others.push(a.qANorm);
    if (a.kvB) others.push(a.kvB); // read transposed (W^UK) and decompressed in prefill: stays in rows
    if (a.kB) others.push(a.kB);
    const attention = {
      qProj: a.qProj ? add(a.qProj) : -1,
      qA: a.qA ? add(a.qA) : -1,
      qB: a.qB ? add(a.qB) : -1,
      kvA: add(a.kvA),
      o: add(a.o),
      uv: Array.from({ length: H }, (_, h) => add(a.kvB ? rowSlice(a.kvB, h * (dn + dv) + dn, dv) : rowSlice(a.vB!, h * dv, dv))),
      uk: a.kB ? Array.from({ length: H }, (_, h) => add(rowSlice(a.kB!, h * dc, dc))) : null,
    };
    const moe = layer.moe
      ? {
          router: add(layer.moe.router),
          experts: layer.moe.experts.map(swigluIds),
          shared: layer.moe.shared ? swigluIds(layer.moe.shared) : null,
        }
      : null;
    if (layer.moe?.choiceBias) others.push(layer.moe.choiceBias);
    const dense = layer.dense ? swigluIds(layer.dense) : null;
    return { attention, moe, dense };
  });
  const lmHead = add(w.lmHead);

  const { weights: prepared, report } = backend.prepareAll(list, { ...options, others });
  const take = (i: number): Tensor => prepared[i]!;
  const swiglu = (ids: { gate: number; up: number; down: number }): SwiGluWeights => ({
    gate: take(ids.gate),
    up: take(ids.up),
    down: take(ids.down),
  });

  const layers: LayerWeights[] = w.layers.map((layer, l) => {
    const p = plans[l]!;
    const a = layer.attention;
    const uvHeads = p.attention.uv.map(take);
    const ukHeads = p.attention.uk?.map(take);
    const uvGroup = backend.prepareHeads?.(uvHeads) ?? null;
    const ukGroup = ukHeads ? (backend.prepareHeads?.(ukHeads) ?? null) : null;
    const attention: AttentionWeights = {
      ...a,
      qProj: p.attention.qProj >= 0 ? take(p.attention.qProj) : null,
      qA: p.attention.qA >= 0 ? take(p.attention.qA) : null,
      qB: p.attention.qB >= 0 ? take(p.attention.qB) : null,
      kvA: take(p.attention.kvA),
      o: take(p.attention.o),
      uvHeads,
      ...(ukHeads ? { ukHeads } : {}),
      ...(uvGroup ? { uvGroup } : {}),
      ...(ukGroup ? { ukGroup } : {}),
    };
    let moe: MoeWeights | null = null;
    if (layer.moe && p.moe) {
      const experts = p.moe.experts.map(swiglu);
      const shared = p.moe.shared ? swiglu(p.moe.shared) : null;
      const fused = options.fuseExperts === false ? null : (backend.prepareExperts?.(experts, shared) ?? null);
      moe = { ...layer.moe, router: take(p.moe.router), experts, shared, ...(fused ? { fused } : {}) };
    }
    return { ...layer, attention, moe, dense: p.dense ? swiglu(p.dense) : null };
  });
  return { weights: { ...w, layers, lmHead: take(lmHead) }, report };
}
