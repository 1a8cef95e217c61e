/**
 * Parameter and cache-size arithmetic from a config alone (no weights needed): what `dseek
 * inspect` reports. Formulas: DeepSeek-V2 paper §2.1.4 Table 1 (KV cache per token) and the
 * weight shapes of docs/SPEC.md §6.1.
 */
import { isMoeLayer, latentWidth, type ModelConfig } from './config.js';
import type { Tensor } from '../kernels/tensor.js';
import type { ModelWeights, SwiGluWeights } from './weights.js';

export interface ParameterCounts {
  readonly total: number;
  /** Parameters used per token: all but the input embedding and the routed experts not chosen. */
  readonly activated: number;
  readonly embedding: number;
  readonly attention: number;
  readonly denseFfn: number;
  readonly routedExperts: number;
  readonly sharedExperts: number;
  readonly router: number;
  readonly norms: number;
  readonly lmHead: number;
}

export function countParameters(c: ModelConfig): ParameterCounts {
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
  const query = c.qLoraRank === null ? d * H * dq : d * c.qLoraRank + c.qLoraRank + c.qLoraRank * H * dq;
  const attentionPerLayer =
    query + d * latentWidth(c) + c.kvLoraRank + c.kvLoraRank * H * (c.qkNopeHeadDim + c.vHeadDim) + H * c.vHeadDim * d;
  const expert = 3 * d * c.moeIntermediateSize;

  let denseFfn = 0;
  let routedExperts = 0;
  let unchosenExperts = 0;
  let sharedExperts = 0;
  let router = 0;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    if (isMoeLayer(c, l)) {
      routedExperts += c.nRoutedExperts * expert;
      unchosenExperts += (c.nRoutedExperts - c.numExpertsPerTok) * expert;
      sharedExperts += c.nSharedExperts * expert;
      router += c.nRoutedExperts * d + (c.topkMethod === 'noaux_tc' ? c.nRoutedExperts : 0);
    } else {
      denseFfn += 3 * d * c.intermediateSize;
    }
  }
  const embedding = c.vocabSize * d;
  const lmHead = c.tieWordEmbeddings ? 0 : c.vocabSize * d;
  const norms = c.numHiddenLayers * 2 * d + d;
  const attention = c.numHiddenLayers * attentionPerLayer;
  const total = embedding + attention + denseFfn + routedExperts + sharedExperts + router + norms + lmHead;
  const activated = total - embedding - unchosenExperts + (c.tieWordEmbeddings ? embedding : 0);
  return { total, activated, embedding, attention, denseFfn, routedExperts, sharedExperts, router, norms, lmHead };
}

export interface CacheFootprint {
  /** Elements per token, all layers, for the MLA latent cache: (d_c + d_h^R)·l. */
  readonly mlaElements: number;
  /** The expanded cache MHA would keep for the same model: per head a (nope+rope) key and a value. */
  readonly mhaElements: number;
  /** GQA with `gqaGroups` key/value heads of v_head_dim: 2·n_g·d_h·l. */
  readonly gqaElements: number;
  readonly gqaGroups: number;
  /** The number of GQA groups whose cache equals MLA's (paper §2.1.4: 2.25 for V2). */
  readonly equivalentGqaGroups: number;
}

export function cacheFootprint(c: ModelConfig, gqaGroups = 8): CacheFootprint {
  const l = c.numHiddenLayers;
  const mlaElements = latentWidth(c) * l;
  const mhaElements = c.numAttentionHeads * (c.qkNopeHeadDim + c.qkRopeHeadDim + c.vHeadDim) * l;
  const gqaElements = 2 * gqaGroups * c.vHeadDim * l;
  return { mlaElements, mhaElements, gqaElements, gqaGroups, equivalentGqaGroups: mlaElements / (2 * c.vHeadDim * l) };
}

/** 15706484224 → "15.7 B" (three significant digits). */
export function formatCount(n: number): string {
  const units: Array<[number, string]> = [
    [1e12, 'T'],
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'K'],
  ];
  for (const [size, unit] of units) if (n >= size) return `${Number((n / size).toPrecision(3))} ${unit}`;
  return String(n);
}


/**
 * Weight bytes one decoded token reads: every attention and dense weight, the router, the shared
 * experts, k of the routed experts (an average expert's size), the final norm and lm_head, and one
 * embedding row. Decoding is bandwidth-bound, so bandwidth ÷ this is its ceiling in tokens/s.
 */
export function activeWeightBytes(c: ModelConfig, w: ModelWeights): number {
  const bytes = (t: Tensor | null): number => (t ? t.data.byteLength : 0);
  const swiglu = (s: SwiGluWeights | null): number => (s ? bytes(s.gate) + bytes(s.up) + bytes(s.down) : 0);
  let total = bytes(w.embed) / c.vocabSize + bytes(w.norm) + bytes(w.lmHead);
  for (const l of w.layers) {
    const a = l.attention;
    total += bytes(l.attnNorm) + bytes(l.ffnNorm);
    total += bytes(a.qProj) + bytes(a.qA) + bytes(a.qANorm) + bytes(a.qB) + bytes(a.kvA) + bytes(a.kvANorm);
    total += bytes(a.kvB) + bytes(a.kB) + bytes(a.vB) + bytes(a.o);
    total += swiglu(l.dense);
    if (l.moe) {
      const experts = l.moe.experts.reduce((n, e) => n + swiglu(e), 0);
      total += bytes(l.moe.router) + bytes(l.moe.choiceBias) + swiglu(l.moe.shared) + (experts * c.numExpertsPerTok) / c.nRoutedExperts;
    }
  }
  return total;
}
