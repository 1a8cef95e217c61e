/**
 * An independent, deliberately naive float64 implementation of the DeepSeek-V2/V3 forward pass,
 * written from docs/SPEC.md §2–§5 and §10 only (not from src/model/*). It follows the structure of the
 * original HF remote code (modeling_deepseek.py) rather than dseek's:
 *   - RoPE: each rope slice is permuted from interleaved to half-split order (even-indexed
 *     elements, then odd-indexed) and rotated with LLaMA `rotate_half` and duplicated cos/sin;
 *   - attention: the expanded MHA form (kv_b_proj decompresses every position's latent into
 *     per-head keys and values) with an explicit causal mask over the whole sequence, no cache;
 *   - routers: V2 code "normalise OR scale", V3 code "normalise (if norm_topk_prob) AND scale",
 *     −∞ masks for dropped groups, group score max (group_limited_greedy) or top-2 sum (noaux_tc,
 *     where e_score_correction_bias only influences the choice).
 * Everything is plain JS numbers / Float64Array. It is slow (O(T²) with full recomputation) and
 * meant only for tiny test models.
 */
import { openSafetensors } from '../../src/formats/safetensors.js';
import { bf16ToF32, f16ToF32 } from '../../src/kernels/tensor.js';

type Json = Record<string, unknown>;

/** Read every tensor of a safetensors file/folder into float64 arrays (row-major, HF names). */
export function readWeightsF64(path: string): Map<string, Float64Array> {
  const source = openSafetensors(path);
  try {
    const out = new Map<string, Float64Array>();
    for (const name of source.names()) {
      const t = source.get(name);
      const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      const n = t.shape.reduce((a, b) => a * b, 1);
      const values = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        switch (t.dtype) {
          case 'f32':
            values[i] = view.getFloat32(i * 4, true);
            break;
          case 'f16':
            values[i] = f16ToF32(view.getUint16(i * 2, true));
            break;
          case 'bf16':
            values[i] = bf16ToF32(view.getUint16(i * 2, true));
            break;
          default:
            throw new Error(`unexpected dtype ${String(t.dtype)} for ${name}`);
        }
      }
      out.set(name, values);
    }
    return out;
  } finally {
    source.close();
  }
}

// ------------------------------------------------------------------------------------------------
// config

function num(c: Json, key: string, fallback?: number): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new Error(`config: missing ${key}`);
    return fallback;
  }
  if (typeof v !== 'number') throw new Error(`config: ${key} is not a number`);
  return v;
}

interface NaiveConfig {
  v3: boolean;
  hidden: number;
  layers: number;
  heads: number;
  qLoraRank: number | null;
  kvLoraRank: number;
  nope: number;
  rope: number;
  vDim: number;
  vocab: number;
  intermediate: number;
  moeIntermediate: number;
  nRouted: number;
  nShared: number;
  topK: number;
  firstDense: number;
  moeFreq: number;
  topkMethod: string;
  nGroup: number;
  topkGroup: number;
  scoring: string;
  normTopk: boolean;
  routedScale: number;
  eps: number;
  tie: boolean;
  theta: number;
  yarn: null | {
    factor: number;
    original: number;
    betaFast: number;
    betaSlow: number;
    mscale: number;
    mscaleAllDim: number;
  };
}

function readConfig(c: Json): NaiveConfig {
  const rs = c['rope_scaling'];
  let yarn: NaiveConfig['yarn'] = null;
  if (rs !== null && rs !== undefined) {
    const r = rs as Json;
    const type = r['type'] ?? r['rope_type'];
    if (type !== 'yarn') throw new Error(`naive reference: unsupported rope_scaling type ${String(type)}`);
    yarn = {
      factor: num(r, 'factor'),
      original: num(r, 'original_max_position_embeddings'),
      betaFast: num(r, 'beta_fast', 32),
      betaSlow: num(r, 'beta_slow', 1),
      mscale: num(r, 'mscale', 1),
      mscaleAllDim: num(r, 'mscale_all_dim', 0),
    };
  }
  const qLora = c['q_lora_rank'];
  return {
    v3: c['model_type'] === 'deepseek_v3',
    hidden: num(c, 'hidden_size'),
    layers: num(c, 'num_hidden_layers'),
    heads: num(c, 'num_attention_heads'),
    qLoraRank: qLora === null || qLora === undefined ? null : (qLora as number),
    kvLoraRank: num(c, 'kv_lora_rank'),
    nope: num(c, 'qk_nope_head_dim'),
    rope: num(c, 'qk_rope_head_dim'),
    vDim: num(c, 'v_head_dim'),
    vocab: num(c, 'vocab_size'),
    intermediate: num(c, 'intermediate_size'),
    moeIntermediate: num(c, 'moe_intermediate_size', 0),
    nRouted: num(c, 'n_routed_experts', 0),
    nShared: num(c, 'n_shared_experts', 0),
    topK: num(c, 'num_experts_per_tok', 0),
    firstDense: num(c, 'first_k_dense_replace', 0),
    moeFreq: num(c, 'moe_layer_freq', 1),
    topkMethod: typeof c['topk_method'] === 'string' ? (c['topk_method'] as string) : 'greedy',
    nGroup: num(c, 'n_group', 1),
    topkGroup: num(c, 'topk_group', 1),
    scoring: typeof c['scoring_func'] === 'string' ? (c['scoring_func'] as string) : 'softmax',
    normTopk: c['norm_topk_prob'] === true,
    routedScale: num(c, 'routed_scaling_factor', 1),
    eps: num(c, 'rms_norm_eps', 1e-6),
    tie: c['tie_word_embeddings'] === true,
    theta: num(c, 'rope_theta', 10000),
    yarn,
  };
}

// ------------------------------------------------------------------------------------------------
// small dense helpers (row-major [out, in] weights)

function linear(w: Float64Array, x: ArrayLike<number>, outDim: number, inDim: number): Float64Array {
  if (w.length !== outDim * inDim) throw new Error(`weight has ${w.length} values, expected ${outDim}×${inDim}`);
  if (x.length !== inDim) throw new Error(`input has ${x.length} values, expected ${inDim}`);
  const y = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) {
    let s = 0;
    const base = o * inDim;
    for (let i = 0; i < inDim; i++) s += w[base + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i]! * inv * w[i]!;
  return y;
}

const silu = (v: number): number => v / (1 + Math.exp(-v));
const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

function swiglu(x: Float64Array, prefix: string, W: (n: string) => Float64Array, d: number, inter: number): Float64Array {
  const g = linear(W(`${prefix}.gate_proj.weight`), x, inter, d);
  const u = linear(W(`${prefix}.up_proj.weight`), x, inter, d);
  const a = new Float64Array(inter);
  for (let i = 0; i < inter; i++) a[i] = silu(g[i]!) * u[i]!;
  return linear(W(`${prefix}.down_proj.weight`), a, d, inter);
}

/** Indices of the k largest values (ties: lower index first), in descending value order. */
function topkIndices(values: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: values.length }, (_, i) => i);
  idx.sort((a, b) => values[b]! - values[a]! || a - b);
  return idx.slice(0, k);
}

// ------------------------------------------------------------------------------------------------
// RoPE, original remote-code style

function yarnM(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

interface RopeTables {
  /** [position][D] duplicated cos/sin ([f, f] concatenation), magnitude factor included. */
  cos: Float64Array[];
  sin: Float64Array[];
  softmaxScale: number;
}

function ropeTables(c: NaiveConfig, positions: number): RopeTables {
  const D = c.rope;
  const half = Math.floor(D / 2);
  const invFreq = new Float64Array(half);
  let magnitude = 1;
  let softmaxScale = 1 / Math.sqrt(c.nope + c.rope);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(c.theta, (2 * i) / D);
  if (c.yarn !== null) {
    const y = c.yarn;
    const corrDim = (rot: number): number => (D * Math.log(y.original / (rot * 2 * Math.PI))) / (2 * Math.log(c.theta));
    const low = Math.max(Math.floor(corrDim(y.betaFast)), 0);
    let high = Math.min(Math.ceil(corrDim(y.betaSlow)), D - 1);
    if (low === high) high += 0.001;
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
      const extrapolation = 1 - ramp; // weight of the original frequency
      const fExtra = invFreq[i]!;
      const fInter = fExtra / y.factor;
      invFreq[i] = fInter * (1 - extrapolation) + fExtra * extrapolation;
    }
    magnitude = yarnM(y.factor, y.mscale) / yarnM(y.factor, y.mscaleAllDim);
    if (y.mscaleAllDim) {
      const m = yarnM(y.factor, y.mscaleAllDim);
      softmaxScale *= m * m;
    }
  }
  const cos: Float64Array[] = [];
  const sin: Float64Array[] = [];
  for (let p = 0; p < positions; p++) {
    const cp = new Float64Array(2 * half);
    const sp = new Float64Array(2 * half);
    for (let i = 0; i < half; i++) {
      const angle = p * invFreq[i]!;
      cp[i] = cp[i + half] = Math.cos(angle) * magnitude;
      sp[i] = sp[i + half] = Math.sin(angle) * magnitude;
    }
    cos.push(cp);
    sin.push(sp);
  }
  return { cos, sin, softmaxScale };
}

/**
 * Permute interleaved → half-split (even-indexed then odd-indexed, i.e. view [D/2][2], transpose,
 * flatten), then x·cos + rotate_half(x)·sin. The output stays in the permuted order, exactly as the
 * original code leaves it; q and k get the same permutation so their dot products are unaffected.
 */
function applyRope(x: Float64Array, cos: Float64Array, sin: Float64Array): Float64Array {
  const D = x.length;
  const half = D / 2;
  const u = new Float64Array(D);
  for (let i = 0; i < half; i++) {
    u[i] = x[2 * i]!;
    u[i + half] = x[2 * i + 1]!;
  }
  const out = new Float64Array(D);
  for (let i = 0; i < D; i++) {
    const rotated = i < half ? -u[i + half]! : u[i - half]!;
    out[i] = u[i]! * cos[i]! + rotated * sin[i]!;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// MoE router + combine

/** The experts chosen from `scores` (+ `bias` for the choice), optionally group-limited. */
function selectExperts(
  c: NaiveConfig,
  scores: Float64Array,
  bias: Float64Array | null,
  grouped: boolean,
  groupRule: 'max' | 'top2sum',
  maskValue = -Infinity,
): number[] {
  const E = scores.length;
  const choice = Float64Array.from(scores);
  if (bias !== null) for (let e = 0; e < E; e++) choice[e] = choice[e]! + bias[e]!;
  if (!grouped) return topkIndices(choice, c.topK);
  const per = E / c.nGroup;
  const groupScore = new Float64Array(c.nGroup);
  for (let g = 0; g < c.nGroup; g++) {
    const members = Array.from(choice.subarray(g * per, (g + 1) * per));
    if (groupRule === 'max') groupScore[g] = Math.max(...members);
    else groupScore[g] = topkIndices(members, 2).reduce((sum, i) => sum + members[i]!, 0);
  }
  const keep = new Set(topkIndices(groupScore, c.topkGroup));
  const masked = new Float64Array(E);
  for (let e = 0; e < E; e++) masked[e] = keep.has(Math.floor(e / per)) ? choice[e]! : maskValue;
  return topkIndices(masked, c.topK);
}

/** What one token's router did in one MoE layer (diagnostics for tests). */
export interface RouteTrace {
  /** chosen experts, in descending order of their choice score */
  experts: number[];
  /** the final mixing weights, same order */
  weights: number[];
  /** what other (wrong) router variants would have chosen */
  alternatives: { ungrouped: number[]; otherGroupRule?: number[]; unbiased?: number[]; zeroMasked?: number[] };
}

/** Optional observer: called per MoE layer and token with the router's decision. */
export type NaiveRoutingObserver = (layer: number, token: number, route: RouteTrace) => void;

function moe(c: NaiveConfig, l: number, x: Float64Array, W: (n: string) => Float64Array, trace?: { route?: RouteTrace }): Float64Array {
  const d = c.hidden;
  const E = c.nRouted;
  const prefix = `model.layers.${l}.mlp`;
  const logits = linear(W(`${prefix}.gate.weight`), x, E, d);
  const scores = new Float64Array(E);
  if (c.scoring === 'softmax') {
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += scores[e] = Math.exp(logits[e]! - max);
    for (let e = 0; e < E; e++) scores[e] = scores[e]! / sum;
  } else if (c.scoring === 'sigmoid') {
    for (let e = 0; e < E; e++) scores[e] = sigmoid(logits[e]!);
  } else {
    throw new Error(`naive reference: unsupported scoring_func ${c.scoring}`);
  }

  const method = c.topkMethod;
  let bias: Float64Array | null = null;
  if (method === 'noaux_tc') bias = W(`${prefix}.gate.e_score_correction_bias`);
  else if (!['greedy', 'gready', 'group_limited_greedy'].includes(method)) throw new Error(`naive reference: unsupported topk_method ${method}`);
  const grouped = method === 'group_limited_greedy' || method === 'noaux_tc';
  const groupRule = method === 'noaux_tc' ? 'top2sum' : 'max';
  const idx = selectExperts(c, scores, bias, grouped, groupRule);
  if (trace !== undefined) {
    const alternatives: RouteTrace['alternatives'] = { ungrouped: selectExperts(c, scores, bias, false, groupRule) };
    if (grouped) alternatives.otherGroupRule = selectExperts(c, scores, bias, true, groupRule === 'max' ? 'top2sum' : 'max');
    if (bias !== null) alternatives.unbiased = selectExperts(c, scores, null, grouped, groupRule);
    if (grouped) alternatives.zeroMasked = selectExperts(c, scores, bias, true, groupRule, 0);
    trace.route = { experts: idx, weights: [], alternatives };
  }

  let weights = idx.map((e) => scores[e]!); // unbiased scores
  if (c.v3) {
    if (c.topK > 1 && c.normTopk) {
      const s = weights.reduce((a, b) => a + b, 0) + 1e-20;
      weights = weights.map((w) => w / s);
    }
    weights = weights.map((w) => w * c.routedScale);
  } else if (c.topK > 1 && c.normTopk) {
    const s = weights.reduce((a, b) => a + b, 0) + 1e-20;
    weights = weights.map((w) => w / s);
  } else {
    weights = weights.map((w) => w * c.routedScale);
  }

  if (trace?.route !== undefined) trace.route.weights = weights;
  const y = new Float64Array(d);
  idx.forEach((e, k) => {
    const out = swiglu(x, `${prefix}.experts.${e}`, W, d, c.moeIntermediate);
    for (let i = 0; i < d; i++) y[i] = y[i]! + weights[k]! * out[i]!;
  });
  if (c.nShared > 0) {
    const out = swiglu(x, `${prefix}.shared_experts`, W, d, c.nShared * c.moeIntermediate);
    for (let i = 0; i < d; i++) y[i] = y[i]! + out[i]!;
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// the model

/** Logits [T][vocab] for `tokens` (positions 0..T−1), computed from scratch in float64. */
export function naiveLogits(
  config: Record<string, unknown>,
  weights: Map<string, Float64Array>,
  tokens: number[],
  onRouting?: NaiveRoutingObserver,
): Float64Array {
  const c = readConfig(config);
  const W = (name: string): Float64Array => {
    const w = weights.get(name);
    if (w === undefined) throw new Error(`naive reference: missing tensor ${name}`);
    return w;
  };
  const T = tokens.length;
  const d = c.hidden;
  const H = c.heads;
  const dq = c.nope + c.rope;
  const latentEps = 1e-6; // q_a_layernorm / kv_a_layernorm use the default eps in the original code
  const rope = ropeTables(c, T);

  const embed = W('model.embed_tokens.weight');
  let h: Float64Array[] = tokens.map((t) => embed.slice(t * d, (t + 1) * d));

  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    // ---- attention (expanded MHA form, whole sequence, explicit causal mask)
    const a = h.map((x) => rmsNorm(x, W(`${p}.input_layernorm.weight`), c.eps));
    const q: Float64Array[][] = []; // [t][head] → dq, rope part already rotated (permuted order)
    const k: Float64Array[][] = [];
    const v: Float64Array[][] = [];
    for (let t = 0; t < T; t++) {
      let qFull: Float64Array;
      if (c.qLoraRank === null) {
        qFull = linear(W(`${p}.self_attn.q_proj.weight`), a[t]!, H * dq, d);
      } else {
        const cq = rmsNorm(linear(W(`${p}.self_attn.q_a_proj.weight`), a[t]!, c.qLoraRank, d), W(`${p}.self_attn.q_a_layernorm.weight`), latentEps);
        qFull = linear(W(`${p}.self_attn.q_b_proj.weight`), cq, H * dq, c.qLoraRank);
      }
      const kv = linear(W(`${p}.self_attn.kv_a_proj_with_mqa.weight`), a[t]!, c.kvLoraRank + c.rope, d);
      const latent = rmsNorm(kv.slice(0, c.kvLoraRank), W(`${p}.self_attn.kv_a_layernorm.weight`), latentEps);
      const kPe = applyRope(kv.slice(c.kvLoraRank), rope.cos[t]!, rope.sin[t]!);
      const kvb = linear(W(`${p}.self_attn.kv_b_proj.weight`), latent, H * (c.nope + c.vDim), c.kvLoraRank);
      const qt: Float64Array[] = [];
      const kt: Float64Array[] = [];
      const vt: Float64Array[] = [];
      for (let hd = 0; hd < H; hd++) {
        const qh = qFull.slice(hd * dq, (hd + 1) * dq);
        qh.set(applyRope(qh.slice(c.nope), rope.cos[t]!, rope.sin[t]!), c.nope);
        qt.push(qh);
        const base = hd * (c.nope + c.vDim);
        const kh = new Float64Array(dq);
        kh.set(kvb.subarray(base, base + c.nope), 0);
        kh.set(kPe, c.nope);
        kt.push(kh);
        vt.push(kvb.slice(base + c.nope, base + c.nope + c.vDim));
      }
      q.push(qt);
      k.push(kt);
      v.push(vt);
    }
    for (let t = 0; t < T; t++) {
      const concat = new Float64Array(H * c.vDim);
      for (let hd = 0; hd < H; hd++) {
        const scores = new Float64Array(T);
        for (let j = 0; j < T; j++) {
          let s = 0;
          for (let i = 0; i < dq; i++) s += q[t]![hd]![i]! * k[j]![hd]![i]!;
          scores[j] = s * rope.softmaxScale + (j > t ? -Infinity : 0); // causal mask
        }
        let max = -Infinity;
        for (const s of scores) max = Math.max(max, s);
        let sum = 0;
        for (let j = 0; j < T; j++) sum += scores[j] = Math.exp(scores[j]! - max);
        for (let j = 0; j < T; j++) {
          const pj = scores[j]! / sum;
          for (let i = 0; i < c.vDim; i++) concat[hd * c.vDim + i] = concat[hd * c.vDim + i]! + pj * v[j]![hd]![i]!;
        }
      }
      const o = linear(W(`${p}.self_attn.o_proj.weight`), concat, d, H * c.vDim);
      for (let i = 0; i < d; i++) h[t]![i] = h[t]![i]! + o[i]!;
    }
    // ---- feed-forward
    const isMoe = c.nRouted > 0 && l >= c.firstDense && l % c.moeFreq === 0;
    h = h.map((x, t) => {
      const f = rmsNorm(x, W(`${p}.post_attention_layernorm.weight`), c.eps);
      let y: Float64Array;
      if (isMoe) {
        const trace: { route?: RouteTrace } | undefined = onRouting ? {} : undefined;
        y = moe(c, l, f, W, trace);
        if (onRouting && trace?.route) onRouting(l, t, trace.route);
      } else y = swiglu(f, `${p}.mlp`, W, d, c.intermediate);
      const r = new Float64Array(d);
      for (let i = 0; i < d; i++) r[i] = x[i]! + y[i]!;
      return r;
    });
  }

  const head = c.tie ? embed : W('lm_head.weight');
  const out = new Float64Array(T * c.vocab);
  for (let t = 0; t < T; t++) {
    const f = rmsNorm(h[t]!, W('model.norm.weight'), c.eps);
    out.set(linear(head, f, c.vocab, d), t * c.vocab);
  }
  return out;
}

/** The softmax scale the naive reference uses (for diagnostics). */
export function naiveSoftmaxScale(config: Record<string, unknown>): number {
  return ropeTables(readConfig(config), 0).softmaxScale;
}
