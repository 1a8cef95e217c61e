/**
 * `dseek train`: train a small DeepSeek-architecture model (MLA + DeepSeekMoE) from text, and
 * optionally export it as a Hugging Face folder with a model card. See src/train/trainer.ts.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { InvalidInputError } from '../errors.js';
import { parseInteger, parseNumber } from './args.js';
import { train, type TrainResult } from '../train/trainer.js';
import { DEFAULT_SHAPE, type ModelShape } from '../train/shape.js';
import type { RunSettings } from '../train/checkpoint.js';
import { exportTrainedModel, type CorpusInfo } from '../train/modelCard.js';
import type { ExportDType } from '../train/export.js';

/** The default run: the recipe of the shipped model (models/default), sized for ~45 min on two cores. */
export const DEFAULT_SETTINGS: RunSettings = {
  shape: DEFAULT_SHAPE,
  steps: 800,
  batchSize: 8,
  lr: 2e-3,
  minLrRatio: 0.1,
  warmupSteps: 40,
  weightDecay: 0.1,
  clip: 1,
  seed: 1234,
  biasUpdateSpeed: 1e-2,
  evalEvery: 100,
  evalTokens: 16384,
  checkpointEvery: 50,
};

export interface TrainFlags {
  data: string;
  val?: string;
  out: string;
  resume?: boolean;
  tokenizer?: string;
  export?: string;
  dtype: string;
  corpusInfo?: string;
  threads?: string;
  kernels: string;
  logEvery?: string;
  steps?: string;
  batch?: string;
  lr?: string;
  minLrRatio?: string;
  warmup?: string;
  weightDecay?: string;
  clip?: string;
  seed?: string;
  biasUpdateSpeed?: string;
  evalEvery?: string;
  evalTokens?: string;
  checkpointEvery?: string;
  vocabSize?: string;
  hidden?: string;
  layers?: string;
  heads?: string;
  qLoraRank?: string;
  kvLoraRank?: string;
  nopeDim?: string;
  ropeDim?: string;
  vDim?: string;
  intermediate?: string;
  denseLayers?: string;
  moeIntermediate?: string;
  experts?: string;
  sharedExperts?: string;
  topK?: string;
  context?: string;
  ropeTheta?: string;
}

/** Settings from flags over the defaults (each bad value names its flag). */
export function settingsFromFlags(f: TrainFlags): RunSettings {
  const int = (flag: string, v: string | undefined, fallback: number, min = 1): number => (v === undefined ? fallback : parseInteger(flag, v, min));
  const num = (flag: string, v: string | undefined, fallback: number, min = 0): number => {
    if (v === undefined) return fallback;
    const n = parseNumber(flag, v);
    if (n < min) throw new InvalidInputError(flag, `must be ≥ ${min}, got ${v}`);
    return n;
  };
  const d = DEFAULT_SETTINGS;
  const s = DEFAULT_SHAPE;
  const qLora = f.qLoraRank === undefined ? s.qLoraRank : parseInteger('--q-lora-rank', f.qLoraRank, 0) || null;
  const shape: ModelShape = {
    ...s,
    vocabSize: int('--vocab-size', f.vocabSize, s.vocabSize, 260),
    hiddenSize: int('--hidden', f.hidden, s.hiddenSize),
    layers: int('--layers', f.layers, s.layers),
    heads: int('--heads', f.heads, s.heads),
    qLoraRank: qLora,
    kvLoraRank: int('--kv-lora-rank', f.kvLoraRank, s.kvLoraRank),
    qkNopeHeadDim: int('--nope-dim', f.nopeDim, s.qkNopeHeadDim, 0),
    qkRopeHeadDim: int('--rope-dim', f.ropeDim, s.qkRopeHeadDim, 2),
    vHeadDim: int('--v-dim', f.vDim, s.vHeadDim),
    intermediateSize: int('--intermediate', f.intermediate, s.intermediateSize),
    denseLayers: int('--dense-layers', f.denseLayers, s.denseLayers, 0),
    moeIntermediateSize: int('--moe-intermediate', f.moeIntermediate, s.moeIntermediateSize),
    routedExperts: int('--experts', f.experts, s.routedExperts),
    sharedExperts: int('--shared-experts', f.sharedExperts, s.sharedExperts, 0),
    expertsPerToken: int('--top-k', f.topK, s.expertsPerToken),
    context: int('--context', f.context, s.context, 2),
    ropeTheta: num('--rope-theta', f.ropeTheta, s.ropeTheta, 1),
  };
  if (shape.qkRopeHeadDim % 2 !== 0) throw new InvalidInputError('--rope-dim', 'RoPE rotates pairs: must be even');
  if (shape.expertsPerToken > shape.routedExperts) throw new InvalidInputError('--top-k', `must be ≤ --experts (${shape.routedExperts})`);
  const settings: RunSettings = {
    shape,
    steps: int('--steps', f.steps, d.steps),
    batchSize: int('--batch', f.batch, d.batchSize),
    lr: num('--lr', f.lr, d.lr),
    minLrRatio: num('--min-lr-ratio', f.minLrRatio, d.minLrRatio),
    warmupSteps: int('--warmup', f.warmup, d.warmupSteps, 0),
    weightDecay: num('--weight-decay', f.weightDecay, d.weightDecay),
    clip: num('--clip', f.clip, d.clip),
    seed: int('--seed', f.seed, d.seed, 0),
    biasUpdateSpeed: num('--bias-update-speed', f.biasUpdateSpeed, d.biasUpdateSpeed),
    evalEvery: int('--eval-every', f.evalEvery, d.evalEvery, 0),
    evalTokens: int('--eval-tokens', f.evalTokens, d.evalTokens, 0),
    checkpointEvery: int('--checkpoint-every', f.checkpointEvery, d.checkpointEvery, 0),
  };
  if (settings.minLrRatio > 1) throw new InvalidInputError('--min-lr-ratio', 'must be in [0, 1]');
  return settings;
}

/** Run `dseek train` with parsed flags (also used by scripts/train-default.mjs). */
export async function runTrainCommand(flags: TrainFlags): Promise<TrainResult> {
  const settings = settingsFromFlags(flags);
  if (!['f32', 'f16', 'bf16'].includes(flags.dtype)) throw new InvalidInputError('--dtype', `must be f32, f16 or bf16, got ${flags.dtype}`);
  if (!['auto', 'native', 'js'].includes(flags.kernels)) throw new InvalidInputError('--kernels', `must be auto, native or js, got ${flags.kernels}`);
  for (const [flag, path] of [['--data', flags.data], ['--val', flags.val]] as const) {
    if (path !== undefined && !(existsSync(path) && statSync(path).isFile())) {
      throw new InvalidInputError(flag, `${path} is not a readable file: give a UTF-8 text file (npm run prepare-corpus makes one)`);
    }
  }
  let corpus: CorpusInfo | undefined;
  if (flags.corpusInfo) {
    try {
      corpus = JSON.parse(readFileSync(flags.corpusInfo, 'utf8')) as CorpusInfo;
    } catch (e) {
      throw new InvalidInputError('--corpus-info', `${flags.corpusInfo}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const common = {
    dataPath: flags.data,
    ...(flags.val ? { valPath: flags.val } : {}),
    outDir: flags.out,
    ...(flags.threads ? { threads: parseInteger('--threads', flags.threads, 1) } : {}),
    kernels: flags.kernels as 'auto' | 'native' | 'js',
  };
  const result = train({
    ...common,
    settings,
    resume: flags.resume === true,
    ...(flags.tokenizer ? { tokenizerDir: flags.tokenizer } : {}),
    ...(flags.logEvery ? { logEvery: parseInteger('--log-every', flags.logEvery, 1) } : {}),
  });
  if (flags.export) {
    if (!result.finished) throw new InvalidInputError('--export', 'the run has not reached --steps');
    await exportTrainedModel(flags.export, result, { ...common, dtype: flags.dtype as ExportDType, ...(corpus ? { corpus } : {}) });
    process.stderr.write(`exported ${flags.export}\n`);
  }
  return result;
}

export function registerTrainCommand(program: Command): void {
  const d = DEFAULT_SETTINGS;
  const s = DEFAULT_SHAPE;
  program
    .command('train')
    .description('train a small DeepSeek-architecture model (MLA + DeepSeekMoE) on a text corpus')
    .requiredOption('--data <file>', 'training text: documents separated by blank lines')
    .option('--val <file>', 'held-out text (default: every 20th document of --data)')
    .option('--out <dir>', 'run folder: tokenizer, checkpoints', 'tmp/train')
    .option('--resume', 'continue from <out>/checkpoint.json (its settings are kept; --steps may extend the run)')
    .option('--tokenizer <dir>', 'use this tokenizer.json folder instead of training a byte-level BPE')
    .option('--export <dir>', 'when done, write a Hugging Face model folder with a model card here')
    .option('--dtype <type>', 'exported weight type: f16, bf16 or f32', 'f16')
    .option('--corpus-info <file>', 'JSON {name, source, license, licenseFile?, description?} for the model card')
    .option('--threads <n>', 'kernel threads (default: one per core)')
    .option('--kernels <kind>', 'auto, native or js', 'auto')
    .option('--log-every <n>', 'steps between progress lines (default 10)')
    .option('--steps <n>', `optimizer steps (default ${d.steps})`)
    .option('--batch <n>', `sequences per step (default ${d.batchSize})`)
    .option('--lr <x>', `peak learning rate (default ${d.lr})`)
    .option('--min-lr-ratio <x>', `cosine floor as a fraction of --lr (default ${d.minLrRatio})`)
    .option('--warmup <n>', `linear warm-up steps (default ${d.warmupSteps})`)
    .option('--weight-decay <x>', `AdamW decoupled weight decay (default ${d.weightDecay})`)
    .option('--clip <x>', `global gradient-norm clip, 0 = off (default ${d.clip})`)
    .option('--seed <n>', `seed for initialisation and batches (default ${d.seed})`)
    .option('--bias-update-speed <x>', `aux-loss-free balancing step γ (default ${d.biasUpdateSpeed})`)
    .option('--eval-every <n>', `steps between held-out evaluations, 0 = only at the end (default ${d.evalEvery})`)
    .option('--eval-tokens <n>', `held-out tokens per evaluation, 0 = all (default ${d.evalTokens})`)
    .option('--checkpoint-every <n>', `steps between checkpoints (default ${d.checkpointEvery})`)
    .option('--vocab-size <n>', `BPE vocabulary incl. BOS/EOS and 256 bytes (default ${s.vocabSize})`)
    .option('--hidden <n>', `hidden size (default ${s.hiddenSize})`)
    .option('--layers <n>', `decoder layers (default ${s.layers})`)
    .option('--heads <n>', `attention heads (default ${s.heads})`)
    .option('--q-lora-rank <n>', 'query low-rank width, 0 = plain q_proj (default 0)')
    .option('--kv-lora-rank <n>', `MLA latent width (default ${s.kvLoraRank})`)
    .option('--nope-dim <n>', `qk_nope_head_dim (default ${s.qkNopeHeadDim})`)
    .option('--rope-dim <n>', `qk_rope_head_dim (default ${s.qkRopeHeadDim})`)
    .option('--v-dim <n>', `v_head_dim (default ${s.vHeadDim})`)
    .option('--intermediate <n>', `dense SwiGLU width (default ${s.intermediateSize})`)
    .option('--dense-layers <n>', `leading dense layers, first_k_dense_replace (default ${s.denseLayers})`)
    .option('--moe-intermediate <n>', `expert SwiGLU width (default ${s.moeIntermediateSize})`)
    .option('--experts <n>', `routed experts (default ${s.routedExperts})`)
    .option('--shared-experts <n>', `shared experts (default ${s.sharedExperts})`)
    .option('--top-k <n>', `routed experts per token (default ${s.expertsPerToken})`)
    .option('--context <n>', `training context length (default ${s.context})`)
    .option('--rope-theta <x>', `RoPE base (default ${s.ropeTheta})`)
    .action(async (flags: TrainFlags) => {
      await runTrainCommand(flags);
    });
}
