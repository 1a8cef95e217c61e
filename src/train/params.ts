/**
 * The trainable parameters of a DeepSeek-V2/V3 model, named and shaped exactly as the Hugging Face
 * checkpoints that src/model/weights.ts loads (docs/SPEC.md §6.1; shapes [out, in]). All values live in one
 * flat buffer (and the gradients in another of the same layout), which keeps the optimizer, the
 * gradient norm and checkpoints to single loops and single writes.
 */
import { isMoeLayer, type ModelConfig } from '../model/config.js';
import { Rng } from '../engine/random.js';
import { allocVec, type TrainPrecision } from './ops.js';
import type { Vec } from '../kernels/tensor.js';

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** Normal(0, std) for matrices, ones for RMSNorm weights. */
  readonly init: 'normal' | 'ones';
  readonly std: number;
  /** Weight decay applies to matrices only (not to norm weights). */
  readonly decay: boolean;
  readonly offset: number;
  readonly size: number;
}

/**
 * Every parameter the config implies, in checkpoint order. Initialisation follows common practice
 * for pre-norm transformers (GPT-2, Radford et al. 2019): N(0, 0.02), with the projections that
 * write into the residual stream (o_proj, down_proj) scaled by 1/√(2·layers).
 */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const specs: ParamSpec[] = [];
  let offset = 0;
  const std = 0.02;
  const residualStd = std / Math.sqrt(2 * c.numHiddenLayers);
  const add = (name: string, shape: number[], init: 'normal' | 'ones', s = std): void => {
    const size = shape.reduce((a, b) => a * b, 1);
    specs.push({ name, shape, init, std: s, decay: init === 'normal' && shape.length === 2, offset, size });
    offset += size;
  };
  const d = c.hiddenSize;
  const H = c.numAttentionHeads;
  const dq = c.qkNopeHeadDim + c.qkRopeHeadDim;
  const swiglu = (prefix: string, width: number): void => {
    add(`${prefix}.gate_proj.weight`, [width, d], 'normal');
    add(`${prefix}.up_proj.weight`, [width, d], 'normal');
    add(`${prefix}.down_proj.weight`, [d, width], 'normal', residualStd);
  };
  add('model.embed_tokens.weight', [c.vocabSize, d], 'normal');
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    add(`${p}.input_layernorm.weight`, [d], 'ones');
    if (c.qLoraRank === null) {
      add(`${a}.q_proj.weight`, [H * dq, d], 'normal');
    } else {
      add(`${a}.q_a_proj.weight`, [c.qLoraRank, d], 'normal');
      add(`${a}.q_a_layernorm.weight`, [c.qLoraRank], 'ones');
      add(`${a}.q_b_proj.weight`, [H * dq, c.qLoraRank], 'normal');
    }
    add(`${a}.kv_a_proj_with_mqa.weight`, [c.kvLoraRank + c.qkRopeHeadDim, d], 'normal');
    add(`${a}.kv_a_layernorm.weight`, [c.kvLoraRank], 'ones');
    add(`${a}.kv_b_proj.weight`, [H * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank], 'normal');
    add(`${a}.o_proj.weight`, [d, H * c.vHeadDim], 'normal', residualStd);
    add(`${p}.post_attention_layernorm.weight`, [d], 'ones');
    if (isMoeLayer(c, l)) {
      add(`${p}.mlp.gate.weight`, [c.nRoutedExperts, d], 'normal');
      for (let e = 0; e < c.nRoutedExperts; e++) swiglu(`${p}.mlp.experts.${e}`, c.moeIntermediateSize);
      if (c.nSharedExperts > 0) swiglu(`${p}.mlp.shared_experts`, c.nSharedExperts * c.moeIntermediateSize);
    } else {
      swiglu(`${p}.mlp`, c.intermediateSize);
    }
  }
  add('model.norm.weight', [d], 'ones');
  add('lm_head.weight', [c.vocabSize, d], 'normal');
  return specs;
}

/** Parameters (or their gradients, or optimizer moments) in one flat buffer with named views. */
export class ParamSet {
  readonly flat: Vec;
  readonly size: number;
  private readonly views = new Map<string, Vec>();

  constructor(
    readonly specs: readonly ParamSpec[],
    precision: TrainPrecision,
    flat?: Vec,
  ) {
    const last = specs[specs.length - 1];
    this.size = last ? last.offset + last.size : 0;
    this.flat = flat ?? allocVec(precision, this.size);
    if (this.flat.length !== this.size) throw new RangeError(`ParamSet: buffer of ${this.flat.length} values, layout needs ${this.size}`);
    for (const s of specs) this.views.set(s.name, this.flat.subarray(s.offset, s.offset + s.size));
  }

  get(name: string): Vec {
    const v = this.views.get(name);
    if (!v) throw new RangeError(`no parameter named ${name}`);
    return v;
  }

  has(name: string): boolean {
    return this.views.has(name);
  }

  /** A new set with the same layout (zeros), e.g. for gradients. */
  like(precision: TrainPrecision): ParamSet {
    return new ParamSet(this.specs, precision);
  }
}

/** Fresh parameters drawn from a seeded generator: the same seed gives the same model. */
export function initParams(c: ModelConfig, seed: number, precision: TrainPrecision = 'f32'): ParamSet {
  const specs = paramSpecs(c);
  const set = new ParamSet(specs, precision);
  const rng = new Rng(seed);
  for (const s of specs) {
    const v = set.get(s.name);
    if (s.init === 'ones') {
      v.fill(1);
      continue;
    }
    // Box–Muller on the seeded uniform stream.
    for (let i = 0; i < s.size; i += 2) {
      const u1 = Math.max(rng.next(), 1e-300);
      const u2 = rng.next();
      const r = Math.sqrt(-2 * Math.log(u1)) * s.std;
      v[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < s.size) v[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
  }
  return set;
}

/** Parameter count of a config (all experts), and per token (shared + top-k routed experts; no input embedding). */
export function countParams(c: ModelConfig): { total: number; active: number } {
  let total = 0;
  let inactive = c.vocabSize * c.hiddenSize; // the embedding is a lookup
  for (const s of paramSpecs(c)) {
    total += s.size;
    const m = /\.mlp\.experts\.(\d+)\./.exec(s.name);
    if (m && Number(m[1]) >= c.numExpertsPerTok) inactive += s.size;
  }
  return { total, active: total - inactive };
}
