/**
 * Feed-forward blocks: the dense SwiGLU MLP and DeepSeekMoE (DeepSeek-V2 paper §2.2, eq. 20–22;
 * DeepSeek-V3 report §2.1.2; docs/SPEC.md §5).
 *
 *   y = SharedMLP(u) + Σ_{i ∈ TopK} g_i · Expert_i(u)
 *
 * Router math runs in the activation precision (f32 at least), with −∞ masks. The three gates:
 *  - softmax + greedy (V2-Lite): top-k of softmax scores;
 *  - softmax + group_limited_greedy (V2): keep the topk_group groups with the highest max score,
 *    then top-k inside them (device-limited routing, paper §2.2.2);
 *  - sigmoid + noaux_tc (V3): choose with score + e_score_correction_bias, group score = sum of the
 *    group's top-2 biased scores; mix with the unbiased scores (auxiliary-loss-free balancing).
 * Weights: V2 code normalises OR scales; V3 code normalises (if asked) AND scales.
 */
import type { Backend } from '../kernels/backend.js';
import { elementReader, type Vec } from '../kernels/tensor.js';
import type { ModelConfig } from './config.js';
import type { MoeWeights, SwiGluWeights } from './weights.js';
import type { Workspace } from './workspace.js';

export interface FfnContext {
  readonly backend: Backend;
  readonly config: ModelConfig;
  readonly ws: Workspace;
}

/** The experts each token chose in a layer: `experts[t·k + i]`, weights likewise. */
export interface Routing {
  readonly tokens: number;
  readonly k: number;
  readonly experts: Int32Array;
  readonly weights: Float64Array;
}

/** Observer for routing decisions (debugging a router, the chat page's expert heatmap). */
export type RoutingObserver = (layer: number, routing: Routing) => void;

/** out[T][d] = down(silu(gate x) · up x). */
export function swiglu(ctx: FfnContext, w: SwiGluWeights, x: Vec, tokens: number, out: Vec): void {
  const { backend, ws } = ctx;
  const width = w.gate.shape[0]!;
  const g = ws.get('ffn.gate', tokens * width);
  const u = ws.get('ffn.up', tokens * width);
  backend.matmul(g, x, w.gate, tokens);
  backend.matmul(u, x, w.up, tokens);
  backend.siluMul(g, g, u, tokens * width);
  backend.matmul(out, g, w.down, tokens);
}

/**
 * Choose experts and their mixing weights for each of `tokens` rows of x; with `forced`, take
 * those experts (`forced[t·k + i]`) instead of the top-k, weighted by this run's scores.
 */
export function routeTokens(ctx: FfnContext, w: MoeWeights, x: Vec, tokens: number, forced?: Int32Array): Routing {
  const { backend, config: c, ws } = ctx;
  const E = c.nRoutedExperts;
  const k = c.numExpertsPerTok;
  const scores = ws.get('moe.scores', tokens * E);
  backend.matmul(scores, x, w.router, tokens);
  const choice = ws.get('moe.choice', E);
  const groupScores = ws.get('moe.groups', c.nGroup);
  const groupIdx = new Int32Array(c.topkGroup);
  const pair = new Int32Array(2);
  const bias = w.choiceBias ? elementReader(w.choiceBias) : null;
  const perGroup = E / c.nGroup;
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);

  for (let t = 0; t < tokens; t++) {
    const o = t * E;
    if (c.scoringFunc === 'softmax') backend.softmax(scores, o, E);
    else for (let e = 0; e < E; e++) scores[o + e] = 1 / (1 + Math.exp(-scores[o + e]!));
    for (let e = 0; e < E; e++) choice[e] = scores[o + e]! + (bias ? bias(e) : 0);

    if (c.topkMethod !== 'greedy' && c.nGroup > 1) {
      for (let g = 0; g < c.nGroup; g++) {
        if (c.topkMethod === 'group_limited_greedy') {
          let max = -Infinity;
          for (let i = 0; i < perGroup; i++) max = Math.max(max, choice[g * perGroup + i]!);
          groupScores[g] = max;
        } else {
          backend.topK(pair, 0, choice, g * perGroup, perGroup, 2);
          groupScores[g] = choice[g * perGroup + pair[0]!]! + choice[g * perGroup + pair[1]!]!;
        }
      }
      backend.topK(groupIdx, 0, groupScores, 0, c.nGroup, c.topkGroup);
      for (let g = 0; g < c.nGroup; g++) {
        if (groupIdx.includes(g)) continue;
        for (let i = 0; i < perGroup; i++) choice[g * perGroup + i] = -Infinity;
      }
    }
    if (forced) experts.set(forced.subarray(t * k, (t + 1) * k), t * k);
    else backend.topK(experts, t * k, choice, 0, E, k);

    let sum = 0;
    for (let i = 0; i < k; i++) {
      const s = scores[o + experts[t * k + i]!]!; // unbiased score
      weights[t * k + i] = s;
      sum += s;
    }
    const normalise = k > 1 && c.normTopkProb;
    const scale = c.family === 'deepseek_v3' || !normalise ? c.routedScalingFactor : 1;
    for (let i = 0; i < k; i++) {
      weights[t * k + i] = (normalise ? weights[t * k + i]! / (sum + 1e-20) : weights[t * k + i]!) * scale;
    }
  }
  return { tokens, k, experts, weights };
}

/**
 * DeepSeekMoE: each chosen expert runs once over all the tokens that chose it (gathered into one
 * batch), its output scattered back with the gate weight; then the shared experts over all tokens.
 */
export function moeForward(
  ctx: FfnContext,
  w: MoeWeights,
  x: Vec,
  tokens: number,
  out: Vec,
  layer: number,
  observer?: RoutingObserver,
  forcedExperts?: Int32Array,
): void {
  const { config: c, ws } = ctx;
  const d = c.hiddenSize;
  if (forcedExperts && forcedExperts.length !== tokens * c.numExpertsPerTok) {
    throw new RangeError(`forced experts for layer ${layer}: ${forcedExperts.length} entries, expected ${tokens} tokens × ${c.numExpertsPerTok}`);
  }
  const routing = routeTokens(ctx, w, x, tokens, forcedExperts);
  observer?.(layer, routing);

  // One native operation for the routed and shared experts, when the backend prepared one.
  const { backend } = ctx;
  if (w.fused && backend.expertsForward && x instanceof Float32Array && out instanceof Float32Array) {
    backend.expertsForward(out, x, tokens, routing.k, routing.experts, Float32Array.from(routing.weights), w.fused);
    return;
  }

  const byExpert: number[][] = Array.from({ length: c.nRoutedExperts }, () => []);
  for (let i = 0; i < tokens * routing.k; i++) byExpert[routing.experts[i]!]!.push(i);

  const acc = ws.get('moe.acc', tokens * d);
  acc.fill(0);
  for (let e = 0; e < c.nRoutedExperts; e++) {
    const slots = byExpert[e]!;
    if (slots.length === 0) continue;
    const n = slots.length;
    const xe = ws.get('moe.x', n * d);
    for (let s = 0; s < n; s++) {
      const t = Math.floor(slots[s]! / routing.k);
      xe.set(x.subarray(t * d, (t + 1) * d), s * d);
    }
    const ye = ws.get('moe.y', n * d);
    swiglu(ctx, w.experts[e]!, xe, n, ye);
    for (let s = 0; s < n; s++) {
      const t = Math.floor(slots[s]! / routing.k);
      const g = routing.weights[slots[s]!]!;
      for (let i = 0; i < d; i++) acc[t * d + i] += g * ye[s * d + i]!;
    }
  }
  if (w.shared) {
    swiglu(ctx, w.shared, x, tokens, out);
    for (let i = 0; i < tokens * d; i++) out[i] = out[i]! + acc[i]!;
  } else {
    out.set(acc);
  }
}
