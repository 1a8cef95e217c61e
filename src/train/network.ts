/**
 * The DeepSeek-V2/V3 decoder as a trainable function: a forward pass that keeps what the backward
 * pass needs, and the backward pass written out by hand for every layer type.
 *
 *   h⁰ = E[x]
 *   per layer l:  h ← h + MLA(RMSNorm(h))          (DeepSeek-V2 §2.1, expanded form: docs/SPEC.md §3.1)
 *                 h ← h + FFN_l(RMSNorm(h))        (dense SwiGLU, or DeepSeekMoE: docs/SPEC.md §5)
 *   logits = RMSNorm(h) · W_lmᵀ,   loss = mean cross-entropy of the next token
 *
 * The forward pass computes the function src/model/deepseek.ts computes for inference (the same
 * formulas, RoPE tables from src/model/rope.ts, the same router): a checkpoint saved from these
 * parameters gives the same logits under `DeepseekModel.forward` (test/train/parity.test.ts).
 *
 * Routing: DeepSeek-V3's sigmoid gate with `noaux_tc` selection (score + e_score_correction_bias
 * chooses, the unbiased scores mix; DeepSeek-V3 report §2.1.2). Top-k selection is not
 * differentiated (it is piecewise constant); gradients flow through the chosen experts' weights and
 * through the gate scores of the chosen experts. The bias is not a gradient-trained parameter: the
 * trainer moves it by the auxiliary-loss-free balancing rule from the expert loads returned here.
 */
import { mlaDims } from '../model/attention.js';
import { isMoeLayer, type ModelConfig } from '../model/config.js';
import { ropeParams } from '../model/rope.js';
import type { Vec } from '../kernels/tensor.js';
import { InvalidInputError, UnsupportedConfigError } from '../errors.js';
import {
  allocVec,
  crossEntropy,
  linear,
  linearBackward,
  rmsNorm,
  rmsNormBackward,
  rope,
  ropeTables,
  swigluBackward,
  swigluForward,
  transpose,
  type OpContext,
  type RopeTables,
  type SwiGluParams,
  type SwiGluSaved,
} from './ops.js';
import type { ParamSet } from './params.js';

/** The original code builds q_a_layernorm / kv_a_layernorm with eps 1e-6 (docs/SPEC.md §2; src/model/attention.ts). */
const LATENT_NORM_EPS = 1e-6;

/** Configs the trainer supports: what src/model runs, minus the routers it does not train. */
export function checkTrainable(c: ModelConfig): void {
  if (c.nRoutedExperts > 0) {
    if (c.scoringFunc !== 'sigmoid' || c.topkMethod !== 'noaux_tc') {
      throw new UnsupportedConfigError(
        'scoring_func/topk_method',
        `${c.scoringFunc}/${c.topkMethod}`,
        'dseek trains the DeepSeek-V3 router (sigmoid scores, noaux_tc with auxiliary-loss-free balancing)',
      );
    }
    if (c.family !== 'deepseek_v3') {
      throw new UnsupportedConfigError('model_type', c.modelType, 'MoE training uses the DeepSeek-V3 gate: model_type deepseek_v3');
    }
    if (c.nGroup !== 1) throw new UnsupportedConfigError('n_group', c.nGroup, 'training supports n_group = 1 (no device-limited routing)');
  }
  if (c.tieWordEmbeddings) throw new UnsupportedConfigError('tie_word_embeddings', true, 'DeepSeek models have an untied lm_head');
}

/** Per-layer expert loads of one forward pass: load[l][e] = tokens routed to expert e (null for dense layers). */
export type ExpertLoads = (Int32Array | null)[];

export interface ForwardResult {
  /** Summed cross-entropy over all target positions (nats). */
  readonly lossSum: number;
  readonly tokens: number;
  readonly expertLoads: ExpertLoads;
}

interface AttentionSaved {
  readonly x: Vec; // normed input [N][d]
  readonly cqRaw: Vec | null; // q_a output before its norm
  readonly cq: Vec | null; // normed
  readonly cqInv: Float64Array | null;
  readonly q: Vec; // [N][H][dq], rope part rotated
  readonly cRaw: Vec; // latent before kv_a_layernorm [N][dc]
  readonly c: Vec; // normed latent [N][dc]
  readonly cInv: Float64Array;
  readonly kpe: Vec; // rotated shared RoPE key [N][dr]
  readonly kvb: Vec; // [N][H][dn+dv]
  readonly p: Vec; // attention probabilities [B][H][T][T]
  readonly o: Vec; // [N][H][dv]
}

interface MoeSaved {
  readonly x: Vec;
  readonly scores: Vec; // sigmoid scores [N][E]
  readonly experts: Int32Array; // [N][k]
  readonly weights: Float64Array; // [N][k]
  readonly slots: number[][]; // per expert: indices into experts[] (token·k + i)
  readonly expertSaved: (SwiGluSaved | null)[];
  readonly expertOut: (Vec | null)[];
  readonly shared: SwiGluSaved | null;
}

interface LayerSaved {
  readonly hIn: Vec;
  readonly attnInv: Float64Array;
  readonly attn: AttentionSaved;
  readonly hMid: Vec;
  readonly ffnInv: Float64Array;
  readonly ffnX: Vec;
  readonly dense: SwiGluSaved | null;
  readonly moe: MoeSaved | null;
}

/**
 * A model under training. `biases[l]` holds layer l's e_score_correction_bias (f32, as
 * checkpoints store it; null for dense layers).
 */
export class TrainableModel {
  readonly rope: RopeTables;
  readonly softmaxScale: number;
  private readonly c: ModelConfig;

  constructor(
    readonly config: ModelConfig,
    readonly params: ParamSet,
    readonly grads: ParamSet,
    readonly biases: (Float32Array | null)[],
    readonly ctx: OpContext,
    maxPositions: number,
  ) {
    checkTrainable(config);
    this.c = config;
    const r = ropeParams(config);
    this.rope = ropeTables(r.invFreq, r.magnitude, maxPositions);
    this.softmaxScale = r.softmaxScale;
  }

  private p(name: string): Vec {
    return this.params.get(name);
  }
  private g(name: string): Vec {
    return this.grads.get(name);
  }
  private swiglu(prefix: string, set: ParamSet): SwiGluParams {
    return { gate: set.get(`${prefix}.gate_proj.weight`), up: set.get(`${prefix}.up_proj.weight`), down: set.get(`${prefix}.down_proj.weight`) };
  }

  /**
   * Run B sequences of T tokens (`inputs` [B][T], each sequence at positions 0…T−1). With
   * `targets` [B][T] returns the summed loss; with `backward` also adds the gradient of the MEAN
   * loss (× `gradScale`, default 1/(B·T)) into `grads`. With `logitsOut` copies the logits [B·T][V].
   */
  run(
    inputs: Int32Array,
    B: number,
    T: number,
    options: { targets?: Int32Array; backward?: boolean; logitsOut?: Vec; gradScale?: number } = {},
  ): ForwardResult {
    const c = this.c;
    const { ctx } = this;
    const N = B * T;
    const d = c.hiddenSize;
    const V = c.vocabSize;
    if (inputs.length !== N) throw new InvalidInputError('inputs', `expected ${N} token ids, got ${inputs.length}`);
    if (T > this.rope.cos.length / this.rope.pairs) throw new InvalidInputError('T', `sequence length ${T} exceeds the RoPE table`);
    for (let i = 0; i < N; i++) {
      const id = inputs[i]!;
      if (!(id >= 0 && id < V)) throw new InvalidInputError('inputs', `token id ${id} is outside [0, ${V})`);
    }
    const backward = options.backward === true;
    const pos = new Int32Array(N);
    for (let n = 0; n < N; n++) pos[n] = n % T;

    // Embeddings.
    const embed = this.p('model.embed_tokens.weight');
    let h = allocVec(ctx.precision, N * d);
    for (let n = 0; n < N; n++) h.set(embed.subarray(inputs[n]! * d, (inputs[n]! + 1) * d), n * d);

    const saved: LayerSaved[] = [];
    const loads: ExpertLoads = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const pre = `model.layers.${l}`;
      const hIn = h;
      const x = allocVec(ctx.precision, N * d);
      const attnInv = new Float64Array(N);
      rmsNorm(x, hIn, this.p(`${pre}.input_layernorm.weight`), c.rmsNormEps, N, d, attnInv);
      const branch = allocVec(ctx.precision, N * d);
      const attn = this.attentionForward(l, x, B, T, pos, branch);
      const hMid = allocVec(ctx.precision, N * d);
      for (let i = 0; i < N * d; i++) hMid[i] = hIn[i]! + branch[i]!;
      const ffnX = allocVec(ctx.precision, N * d);
      const ffnInv = new Float64Array(N);
      rmsNorm(ffnX, hMid, this.p(`${pre}.post_attention_layernorm.weight`), c.rmsNormEps, N, d, ffnInv);
      let dense: SwiGluSaved | null = null;
      let moe: MoeSaved | null = null;
      if (isMoeLayer(c, l)) {
        moe = this.moeForward(l, ffnX, N, branch);
        const load = new Int32Array(c.nRoutedExperts);
        for (let e = 0; e < c.nRoutedExperts; e++) load[e] = moe.slots[e]!.length;
        loads.push(load);
      } else {
        dense = swigluForward(ctx, this.swiglu(`${pre}.mlp`, this.params), ffnX, N, d, c.intermediateSize, branch);
        loads.push(null);
      }
      const hOut = allocVec(ctx.precision, N * d);
      for (let i = 0; i < N * d; i++) hOut[i] = hMid[i]! + branch[i]!;
      if (backward) saved.push({ hIn, attnInv, attn, hMid, ffnInv, ffnX, dense, moe });
      h = hOut;
    }

    const finalInv = new Float64Array(N);
    const hf = allocVec(ctx.precision, N * d);
    rmsNorm(hf, h, this.p('model.norm.weight'), c.rmsNormEps, N, d, finalInv);
    const logits = allocVec(ctx.precision, N * V);
    linear(ctx, logits, hf, this.p('lm_head.weight'), N, V, d);
    if (options.logitsOut) options.logitsOut.set(logits);
    if (!options.targets) return { lossSum: 0, tokens: N, expertLoads: loads };

    const dlogits = backward ? allocVec(ctx.precision, N * V) : null;
    const scale = options.gradScale ?? 1 / N;
    const lossSum = crossEntropy(logits, options.targets, N, V, dlogits, scale);
    if (!backward) return { lossSum, tokens: N, expertLoads: loads };

    // ---- backward ----
    const dhf = allocVec(ctx.precision, N * d);
    linearBackward(ctx, dlogits!, hf, this.p('lm_head.weight'), this.g('lm_head.weight'), dhf, N, V, d);
    let dh = allocVec(ctx.precision, N * d);
    rmsNormBackward(dh, dhf, h, this.p('model.norm.weight'), this.g('model.norm.weight'), finalInv, N, d);

    for (let l = c.numHiddenLayers - 1; l >= 0; l--) {
      const pre = `model.layers.${l}`;
      const s = saved[l]!;
      // h_out = h_mid + FFN(norm(h_mid)):  dh_mid = dh + norm'ᵀ FFN'ᵀ dh
      const dffnX = allocVec(ctx.precision, N * d);
      if (s.moe) this.moeBackward(l, s.moe, dh, N, dffnX);
      else swigluBackward(ctx, this.swiglu(`${pre}.mlp`, this.params), this.swiglu(`${pre}.mlp`, this.grads), s.dense!, dh, dffnX, d, c.intermediateSize, false);
      const dMid = dh; // the residual path passes dh through unchanged; add the branch's part
      rmsNormBackward(dMid, dffnX, s.hMid, this.p(`${pre}.post_attention_layernorm.weight`), this.g(`${pre}.post_attention_layernorm.weight`), s.ffnInv, N, d, true);
      // h_mid = h_in + MLA(norm(h_in))
      const dx = allocVec(ctx.precision, N * d);
      this.attentionBackward(l, s.attn, dMid, B, T, pos, dx);
      rmsNormBackward(dMid, dx, s.hIn, this.p(`${pre}.input_layernorm.weight`), this.g(`${pre}.input_layernorm.weight`), s.attnInv, N, d, true);
      dh = dMid;
    }
    const dEmbed = this.g('model.embed_tokens.weight');
    for (let n = 0; n < N; n++) {
      const o = inputs[n]! * d;
      for (let i = 0; i < d; i++) dEmbed[o + i] = dEmbed[o + i]! + dh[n * d + i]!;
    }
    return { lossSum, tokens: N, expertLoads: loads };
  }

  // ---- Multi-head Latent Attention --------------------------------------------------------------

  private attentionForward(l: number, x: Vec, B: number, T: number, pos: Int32Array, out: Vec): AttentionSaved {
    const c = this.c;
    const { ctx } = this;
    const a = `model.layers.${l}.self_attn`;
    const N = B * T;
    const d = c.hiddenSize;
    const { H, dn, dr, dq, dv, dc, width } = mlaDims(c);

    // Queries: q_proj, or q_a → RMSNorm → q_b; then RoPE on each head's last dr values.
    const q = allocVec(ctx.precision, N * H * dq);
    let cqRaw: Vec | null = null;
    let cq: Vec | null = null;
    let cqInv: Float64Array | null = null;
    if (c.qLoraRank === null) {
      linear(ctx, q, x, this.p(`${a}.q_proj.weight`), N, H * dq, d);
    } else {
      const r = c.qLoraRank;
      cqRaw = allocVec(ctx.precision, N * r);
      cq = allocVec(ctx.precision, N * r);
      cqInv = new Float64Array(N);
      linear(ctx, cqRaw, x, this.p(`${a}.q_a_proj.weight`), N, r, d);
      rmsNorm(cq, cqRaw, this.p(`${a}.q_a_layernorm.weight`), LATENT_NORM_EPS, N, r, cqInv);
      linear(ctx, q, cq, this.p(`${a}.q_b_proj.weight`), N, H * dq, r);
    }
    rope(q, N * H, dq, dn, pos, H, this.rope, false);

    // Latent [c | k_pe]: normalise c (not k_pe), rotate k_pe.
    const kv = ctx.scratch.get('attn.kv', N * width);
    linear(ctx, kv, x, this.p(`${a}.kv_a_proj_with_mqa.weight`), N, width, d);
    const cRaw = allocVec(ctx.precision, N * dc);
    const kpe = allocVec(ctx.precision, N * dr);
    for (let n = 0; n < N; n++) {
      cRaw.set(kv.subarray(n * width, n * width + dc), n * dc);
      kpe.set(kv.subarray(n * width + dc, (n + 1) * width), n * dr);
    }
    const cn = allocVec(ctx.precision, N * dc);
    const cInv = new Float64Array(N);
    rmsNorm(cn, cRaw, this.p(`${a}.kv_a_layernorm.weight`), LATENT_NORM_EPS, N, dc, cInv);
    rope(kpe, N, dr, 0, pos, 1, this.rope, false);

    // Expanded keys and values: kv_b rows per head are [W_UK (dn) ; W_UV (dv)].
    const kvb = allocVec(ctx.precision, N * H * (dn + dv));
    linear(ctx, kvb, cn, this.p(`${a}.kv_b_proj.weight`), N, H * (dn + dv), dc);

    // Softmax attention per sequence and head, as three matrix products: S = Q Kᵀ, P = softmax(S), O = P V.
    const p = allocVec(ctx.precision, B * H * T * T);
    const o = allocVec(ctx.precision, N * H * dv);
    const { Qh, Kh, Vt, Oh } = this.headBuffers(T);
    const scale = this.softmaxScale;
    for (let b = 0; b < B; b++) {
      for (let hd = 0; hd < H; hd++) {
        this.gatherHead(b, hd, T, q, kvb, kpe, Qh, Kh, null);
        for (let t = 0; t < T; t++) {
          const src = ((b * T + t) * H + hd) * (dn + dv) + dn;
          for (let i = 0; i < dv; i++) Vt[i * T + t] = kvb[src + i]!;
        }
        const P = p.subarray((b * H + hd) * T * T, (b * H + hd + 1) * T * T);
        ctx.mm.mm(P, Qh, Kh, T, T, dq);
        for (let t = 0; t < T; t++) {
          const row = t * T;
          let max = -Infinity;
          for (let j = 0; j <= t; j++) {
            const v = P[row + j]! * scale;
            P[row + j] = v;
            if (v > max) max = v;
          }
          let sum = 0;
          for (let j = 0; j <= t; j++) {
            const e = Math.exp(P[row + j]! - max);
            P[row + j] = e;
            sum += e;
          }
          for (let j = 0; j <= t; j++) P[row + j] = P[row + j]! / sum;
          for (let j = t + 1; j < T; j++) P[row + j] = 0;
        }
        ctx.mm.mm(Oh, P, Vt, T, dv, T);
        for (let t = 0; t < T; t++) o.set(Oh.subarray(t * dv, (t + 1) * dv), ((b * T + t) * H + hd) * dv);
      }
    }
    linear(ctx, out, o, this.p(`${a}.o_proj.weight`), N, d, H * dv);
    return { x, cqRaw, cq, cqInv, q, cRaw, c: cn, cInv, kpe, kvb, p, o };
  }

  private headBuffers(T: number): { Qh: Vec; Kh: Vec; Vt: Vec; Oh: Vec } {
    const c = this.c;
    const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
    const s = this.ctx.scratch;
    return { Qh: s.get('head.q', T * dq), Kh: s.get('head.k', T * dq), Vt: s.get('head.vt', c.vHeadDim * T), Oh: s.get('head.o', T * c.vHeadDim) };
  }

  /** Head hd of sequence b: Qh [T][dq], Kh [T][dq] = [k_nope | k_pe], optionally Vh [T][dv]. */
  private gatherHead(b: number, hd: number, T: number, q: Vec, kvb: Vec, kpe: Vec, Qh: Vec, Kh: Vec, Vh: Vec | null): void {
    const c = this.c;
    const H = c.numAttentionHeads;
    const dn = c.qkNopeHeadDim;
    const dr = c.qkRopeHeadDim;
    const dq = dn + dr;
    const dv = c.vHeadDim;
    for (let t = 0; t < T; t++) {
      const n = b * T + t;
      Qh.set(q.subarray((n * H + hd) * dq, (n * H + hd + 1) * dq), t * dq);
      const kb = (n * H + hd) * (dn + dv);
      Kh.set(kvb.subarray(kb, kb + dn), t * dq);
      Kh.set(kpe.subarray(n * dr, (n + 1) * dr), t * dq + dn);
      if (Vh) Vh.set(kvb.subarray(kb + dn, kb + dn + dv), t * dv);
    }
  }

  private attentionBackward(l: number, s: AttentionSaved, dout: Vec, B: number, T: number, pos: Int32Array, dx: Vec): void {
    const c = this.c;
    const { ctx } = this;
    const a = `model.layers.${l}.self_attn`;
    const N = B * T;
    const d = c.hiddenSize;
    const { H, dn, dr, dq, dv, dc, width } = mlaDims(c);
    const scale = this.softmaxScale;
    const sc = ctx.scratch;

    // out = o W_oᵀ
    const dO = allocVec(ctx.precision, N * H * dv);
    linearBackward(ctx, dout, s.o, this.p(`${a}.o_proj.weight`), this.g(`${a}.o_proj.weight`), dO, N, d, H * dv);

    const dQ = allocVec(ctx.precision, N * H * dq);
    const dKvb = allocVec(ctx.precision, N * H * (dn + dv));
    const dKpe = allocVec(ctx.precision, N * dr);
    const Qh = sc.get('bh.q', T * dq);
    const Kh = sc.get('bh.k', T * dq);
    const Vh = sc.get('bh.v', T * dv);
    const QhT = sc.get('bh.qT', dq * T);
    const KhT = sc.get('bh.kT', dq * T);
    const dOh = sc.get('bh.do', T * dv);
    const dOhT = sc.get('bh.doT', dv * T);
    const dP = sc.get('bh.dp', T * T);
    const dST = sc.get('bh.dsT', T * T);
    const PT = sc.get('bh.pT', T * T);
    const dQh = sc.get('bh.dq', T * dq);
    const dKh = sc.get('bh.dk', T * dq);
    const dVh = sc.get('bh.dv', T * dv);
    for (let b = 0; b < B; b++) {
      for (let hd = 0; hd < H; hd++) {
        this.gatherHead(b, hd, T, s.q, s.kvb, s.kpe, Qh, Kh, Vh);
        for (let t = 0; t < T; t++) dOh.set(dO.subarray(((b * T + t) * H + hd) * dv, ((b * T + t) * H + hd + 1) * dv), t * dv);
        const P = s.p.subarray((b * H + hd) * T * T, (b * H + hd + 1) * T * T);
        // dP = dO Vᵀ ; dV = Pᵀ dO
        ctx.mm.mm(dP, dOh, Vh, T, T, dv);
        transpose(PT, P, T, T);
        transpose(dOhT, dOh, T, dv);
        ctx.mm.mm(dVh, PT, dOhT, T, dv, T);
        // dS = P ⊙ (dP − Σ_j P dP) · scale (softmax backward; masked entries have P = 0)
        for (let t = 0; t < T; t++) {
          const row = t * T;
          let dot = 0;
          for (let j = 0; j <= t; j++) dot += P[row + j]! * dP[row + j]!;
          for (let j = 0; j <= t; j++) dP[row + j] = P[row + j]! * (dP[row + j]! - dot) * scale;
          for (let j = t + 1; j < T; j++) dP[row + j] = 0;
        }
        // dQ = dS K ; dK = dSᵀ Q
        transpose(KhT, Kh, T, dq);
        ctx.mm.mm(dQh, dP, KhT, T, dq, T);
        transpose(dST, dP, T, T);
        transpose(QhT, Qh, T, dq);
        ctx.mm.mm(dKh, dST, QhT, T, dq, T);
        for (let t = 0; t < T; t++) {
          const n = b * T + t;
          dQ.set(dQh.subarray(t * dq, (t + 1) * dq), (n * H + hd) * dq);
          const kb = (n * H + hd) * (dn + dv);
          dKvb.set(dKh.subarray(t * dq, t * dq + dn), kb);
          dKvb.set(dVh.subarray(t * dv, (t + 1) * dv), kb + dn);
          // k_pe is one key shared by every head: its gradient is the sum over heads.
          for (let i = 0; i < dr; i++) dKpe[n * dr + i] = dKpe[n * dr + i]! + dKh[t * dq + dn + i]!;
        }
      }
    }

    // kvb = c W_kvbᵀ ;  c = RMSNorm(c_raw) ;  k_pe = RoPE(kv[dc:])
    const dC = allocVec(ctx.precision, N * dc);
    linearBackward(ctx, dKvb, s.c, this.p(`${a}.kv_b_proj.weight`), this.g(`${a}.kv_b_proj.weight`), dC, N, H * (dn + dv), dc);
    const dCRaw = allocVec(ctx.precision, N * dc);
    rmsNormBackward(dCRaw, dC, s.cRaw, this.p(`${a}.kv_a_layernorm.weight`), this.g(`${a}.kv_a_layernorm.weight`), s.cInv, N, dc);
    rope(dKpe, N, dr, 0, pos, 1, this.rope, true);
    const dKv = sc.get('attn.dkv', N * width);
    for (let n = 0; n < N; n++) {
      dKv.set(dCRaw.subarray(n * dc, (n + 1) * dc), n * width);
      dKv.set(dKpe.subarray(n * dr, (n + 1) * dr), n * width + dc);
    }
    linearBackward(ctx, dKv, s.x, this.p(`${a}.kv_a_proj_with_mqa.weight`), this.g(`${a}.kv_a_proj_with_mqa.weight`), dx, N, width, d);

    // q = RoPE(x W_qᵀ) or RoPE(RMSNorm(x W_qaᵀ) W_qbᵀ)
    rope(dQ, N * H, dq, dn, pos, H, this.rope, true);
    if (c.qLoraRank === null) {
      linearBackward(ctx, dQ, s.x, this.p(`${a}.q_proj.weight`), this.g(`${a}.q_proj.weight`), dx, N, H * dq, d, true);
    } else {
      const r = c.qLoraRank;
      const dCq = allocVec(ctx.precision, N * r);
      linearBackward(ctx, dQ, s.cq!, this.p(`${a}.q_b_proj.weight`), this.g(`${a}.q_b_proj.weight`), dCq, N, H * dq, r);
      rmsNormBackward(dCq, dCq, s.cqRaw!, this.p(`${a}.q_a_layernorm.weight`), this.g(`${a}.q_a_layernorm.weight`), s.cqInv!, N, r);
      linearBackward(ctx, dCq, s.x, this.p(`${a}.q_a_proj.weight`), this.g(`${a}.q_a_proj.weight`), dx, N, r, d, true);
    }
  }

  // ---- DeepSeekMoE ------------------------------------------------------------------------------

  private moeForward(l: number, x: Vec, N: number, out: Vec): MoeSaved {
    const c = this.c;
    const { ctx } = this;
    const pre = `model.layers.${l}.mlp`;
    const d = c.hiddenSize;
    const E = c.nRoutedExperts;
    const k = c.numExpertsPerTok;
    const F = c.moeIntermediateSize;
    const bias = this.biases[l];
    if (!bias) throw new RangeError(`layer ${l} is a MoE layer but has no e_score_correction_bias`);

    // Router (src/model/moe.ts routeTokens): s = σ(W_g x) in f32; choose top-k of s + bias; mix with s.
    const scores = allocVec(ctx.precision, N * E);
    linear(ctx, scores, x, this.p(`${pre}.gate.weight`), N, E, d);
    const choice = allocVec(ctx.precision, E);
    const experts = new Int32Array(N * k);
    const weights = new Float64Array(N * k);
    const normalise = k > 1 && c.normTopkProb;
    for (let t = 0; t < N; t++) {
      const o = t * E;
      for (let e = 0; e < E; e++) scores[o + e] = 1 / (1 + Math.exp(-scores[o + e]!));
      for (let e = 0; e < E; e++) choice[e] = scores[o + e]! + bias[e]!;
      topK(experts, t * k, choice, E, k);
      let sum = 0;
      for (let i = 0; i < k; i++) sum += scores[o + experts[t * k + i]!]!;
      for (let i = 0; i < k; i++) {
        const s = scores[o + experts[t * k + i]!]!;
        weights[t * k + i] = (normalise ? s / (sum + 1e-20) : s) * c.routedScalingFactor;
      }
    }

    const slots: number[][] = Array.from({ length: E }, () => []);
    for (let i = 0; i < N * k; i++) slots[experts[i]!]!.push(i);
    const acc = allocVec(ctx.precision, N * d);
    const expertSaved: (SwiGluSaved | null)[] = [];
    const expertOut: (Vec | null)[] = [];
    for (let e = 0; e < E; e++) {
      const sl = slots[e]!;
      if (sl.length === 0) {
        expertSaved.push(null);
        expertOut.push(null);
        continue;
      }
      const n = sl.length;
      const xe = allocVec(ctx.precision, n * d);
      for (let j = 0; j < n; j++) {
        const t = Math.floor(sl[j]! / k);
        xe.set(x.subarray(t * d, (t + 1) * d), j * d);
      }
      const ye = allocVec(ctx.precision, n * d);
      expertSaved.push(swigluForward(ctx, this.swiglu(`${pre}.experts.${e}`, this.params), xe, n, d, F, ye));
      expertOut.push(ye);
      for (let j = 0; j < n; j++) {
        const t = Math.floor(sl[j]! / k);
        const g = weights[sl[j]!]!;
        for (let i = 0; i < d; i++) acc[t * d + i] = acc[t * d + i]! + g * ye[j * d + i]!;
      }
    }
    let shared: SwiGluSaved | null = null;
    if (c.nSharedExperts > 0) {
      shared = swigluForward(ctx, this.swiglu(`${pre}.shared_experts`, this.params), x, N, d, c.nSharedExperts * F, out);
      for (let i = 0; i < N * d; i++) out[i] = out[i]! + acc[i]!;
    } else {
      out.set(acc);
    }
    return { x, scores, experts, weights, slots, expertSaved, expertOut, shared };
  }

  /**
   * Backward of y = Shared(x) + Σ_{i∈S} w_i · Expert_i(x), with (V3 gate, DeepSeek-V3 §2.1.2)
   * w_i = ρ · s_i / Σ_{j∈S} s_j (or ρ·s_i without normalisation), s = σ(W_g x). For the chosen set S:
   *   ∂L/∂w_i = ⟨dy, Expert_i(x)⟩,  ∂L/∂s_i = ρ/Z · (∂L/∂w_i − Σ_j w_j/ρ · ∂L/∂w_j)  (Z = Σ_S s_j),
   *   ∂L/∂z_i = ∂L/∂s_i · s_i (1 − s_i);  experts outside S get no gradient (top-k is not differentiated).
   */
  private moeBackward(l: number, s: MoeSaved, dy: Vec, N: number, dx: Vec): void {
    const c = this.c;
    const { ctx } = this;
    const pre = `model.layers.${l}.mlp`;
    const d = c.hiddenSize;
    const E = c.nRoutedExperts;
    const k = c.numExpertsPerTok;
    const F = c.moeIntermediateSize;
    dx.fill(0);
    const dW = new Float64Array(N * k); // ∂L/∂w per (token, choice)
    for (let e = 0; e < E; e++) {
      const sl = s.slots[e]!;
      const saved = s.expertSaved[e];
      if (!saved) continue;
      const n = sl.length;
      const ye = s.expertOut[e]!;
      const dye = allocVec(ctx.precision, n * d);
      for (let j = 0; j < n; j++) {
        const slot = sl[j]!;
        const t = Math.floor(slot / k);
        const g = s.weights[slot]!;
        let dot = 0;
        for (let i = 0; i < d; i++) {
          dot += dy[t * d + i]! * ye[j * d + i]!;
          dye[j * d + i] = g * dy[t * d + i]!;
        }
        dW[slot] = dot;
      }
      const dxe = allocVec(ctx.precision, n * d);
      swigluBackward(ctx, this.swiglu(`${pre}.experts.${e}`, this.params), this.swiglu(`${pre}.experts.${e}`, this.grads), saved, dye, dxe, d, F, false);
      for (let j = 0; j < n; j++) {
        const t = Math.floor(sl[j]! / k);
        for (let i = 0; i < d; i++) dx[t * d + i] = dx[t * d + i]! + dxe[j * d + i]!;
      }
    }
    // Gate: gradient with respect to the router logits z.
    const dz = allocVec(ctx.precision, N * E);
    const normalise = k > 1 && c.normTopkProb;
    const rho = c.routedScalingFactor;
    for (let t = 0; t < N; t++) {
      let Z = 0;
      let mixed = 0;
      for (let i = 0; i < k; i++) {
        Z += s.scores[t * E + s.experts[t * k + i]!]!;
        mixed += (s.weights[t * k + i]! / rho) * dW[t * k + i]!;
      }
      for (let i = 0; i < k; i++) {
        const e = s.experts[t * k + i]!;
        const se = s.scores[t * E + e]!;
        const ds = normalise ? (rho / (Z + 1e-20)) * (dW[t * k + i]! - mixed) : rho * dW[t * k + i]!;
        dz[t * E + e] = ds * se * (1 - se);
      }
    }
    linearBackward(ctx, dz, s.x, this.p(`${pre}.gate.weight`), this.g(`${pre}.gate.weight`), dx, N, E, d, true);
    if (s.shared) {
      swigluBackward(ctx, this.swiglu(`${pre}.shared_experts`, this.params), this.swiglu(`${pre}.shared_experts`, this.grads), s.shared, dy, dx, d, c.nSharedExperts * F, true);
    }
  }
}

/** Indices of the k largest of x[0, n) into idx[off…], largest first, ties to the lower index (as the kernels' topK). */
function topK(idx: Int32Array, off: number, x: Vec, n: number, k: number): void {
  for (let s = 0; s < k; s++) {
    let best = -1;
    for (let i = 0; i < n; i++) {
      let taken = false;
      for (let j = 0; j < s; j++) if (idx[off + j] === i) taken = true;
      if (taken) continue;
      if (best < 0 || x[i]! > x[best]!) best = i;
    }
    idx[off + s] = best;
  }
}
