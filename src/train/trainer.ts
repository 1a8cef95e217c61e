/**
 * The training loop of `dseek train`:
 *
 *  - tokenizer: a byte-level BPE trained on the training text (or one given), kept in <out>/tokenizer;
 *  - batches of B windows of T tokens from random line starts, seeded by (seed, step);
 *  - forward + hand-written backward (network.ts), global-norm clipping, AdamW (Loshchilov &
 *    Hutter 2019) with linear warm-up and cosine decay;
 *  - load balancing: DeepSeek-V3's auxiliary-loss-free strategy (DeepSeek-V3 report §2.1.2). After
 *    each step every MoE layer moves its per-expert bias b_i by γ·sign(mean load − load_i), so
 *    overloaded experts are chosen less and idle ones more. Chosen over DeepSeek-V2's expert-level
 *    balance loss (V2 §2.2.3, L_ExpBal = α₁ Σ f_i P_i) because it puts no interfering gradient
 *    into the language-modelling objective (V3 reports better models at equal balance), needs no
 *    α to tune, and is exactly what the inference router already computes (noaux_tc with
 *    e_score_correction_bias), so the trained biases ship as they are;
 *  - periodic evaluation on held-out text, resumable checkpoints, a progress line.
 *
 * Deterministic for a fixed seed on one machine: initialisation and batches come from seeded
 * generators, the native matmul gives each output to one thread (no racy reductions), and a
 * checkpoint holds the whole state, so a resumed run continues bit for bit.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { createNativeBackend, defaultThreads } from '../kernels/native/index.js';
import { InvalidInputError } from '../errors.js';
import { isMoeLayer, type ModelConfig } from '../model/config.js';
import { trainBpe, tokenizerConfigJson, tokenizerJson } from './bpe.js';
import { evalWindows, sampleBatch, splitDocuments, tokenizeDocuments, type TokenStream } from './data.js';
import { backendMatMul, jsMatMul, Scratch, type MatMul } from './ops.js';
import { countParams, initParams, ParamSet, paramSpecs } from './params.js';
import { TrainableModel } from './network.js';
import { AdamW, clipGradNorm, DEFAULT_ADAMW, learningRate } from './optimizer.js';
import {
  hasCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  type EvalRecord,
  type RunSettings,
  type StepRecord,
} from './checkpoint.js';
import { modelConfigOf, type ModelShape } from './shape.js';

export interface TrainOptions {
  readonly settings: RunSettings;
  /** Training text (documents separated by blank lines). */
  readonly dataPath: string;
  /** Held-out text; default: every 20th document of the training text is held out. */
  readonly valPath?: string;
  /** Output folder: tokenizer/, checkpoint.json + checkpoint-N.bin, log. */
  readonly outDir: string;
  /** Continue from <outDir>/checkpoint.json (its settings win over `settings`). */
  readonly resume?: boolean;
  /** Use this tokenizer folder instead of training one (its vocabulary sets vocab_size). */
  readonly tokenizerDir?: string;
  readonly threads?: number;
  /** 'native' (default when built) or 'js' loops. */
  readonly kernels?: 'auto' | 'native' | 'js';
  /** Progress lines (default: stderr). */
  readonly log?: (line: string) => void;
  readonly logEvery?: number;
  /** Stop after this many steps in this session (tests). */
  readonly stopAfter?: number;
  /** Whether stopping early writes a checkpoint (default true); false simulates a kill. */
  readonly saveOnStop?: boolean;
}

export interface TrainResult {
  readonly settings: RunSettings;
  readonly config: ModelConfig;
  readonly step: number;
  readonly history: readonly StepRecord[];
  readonly evals: readonly EvalRecord[];
  readonly seconds: number;
  readonly tokensSeen: number;
  readonly params: ParamSet;
  readonly biases: (Float32Array | null)[];
  readonly tokenizerDir: string;
  /** True when the run reached settings.steps. */
  readonly finished: boolean;
}

/** Held-out data split: every 20th document when no separate file is given. */
const HOLDOUT_EVERY = 20;

export interface PreparedData {
  readonly tokenizer: Tokenizer;
  readonly train: TokenStream;
  readonly val: TokenStream;
  readonly bos: number;
  readonly eos: number;
  readonly digest: string;
}

/** Read and tokenise the corpus with the run's tokenizer (training one into <outDir>/tokenizer if needed). */
export function prepareData(options: Pick<TrainOptions, 'dataPath' | 'valPath' | 'outDir' | 'tokenizerDir'>, vocabSize: number, context: number): PreparedData {
  const trainText = readFileSync(options.dataPath, 'utf8');
  let trainDocs = splitDocuments(trainText);
  let valDocs: string[];
  const hash = createHash('sha256').update(trainText);
  if (options.valPath) {
    const valText = readFileSync(options.valPath, 'utf8');
    hash.update('\0').update(valText);
    valDocs = splitDocuments(valText);
  } else {
    valDocs = trainDocs.filter((_, i) => i % HOLDOUT_EVERY === HOLDOUT_EVERY - 1);
    trainDocs = trainDocs.filter((_, i) => i % HOLDOUT_EVERY !== HOLDOUT_EVERY - 1);
  }
  if (trainDocs.length === 0 || valDocs.length === 0) {
    throw new InvalidInputError('--data', `${options.dataPath}: need training and held-out documents (separated by blank lines)`);
  }
  const tokDir = join(options.outDir, 'tokenizer');
  if (!existsSync(join(tokDir, 'tokenizer.json'))) {
    mkdirSync(tokDir, { recursive: true });
    if (options.tokenizerDir) {
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
        if (existsSync(join(options.tokenizerDir, f))) cpSync(join(options.tokenizerDir, f), join(tokDir, f));
      }
    } else {
      const bpe = trainBpe(trainDocs, { vocabSize });
      writeFileSync(join(tokDir, 'tokenizer.json'), `${JSON.stringify(tokenizerJson(bpe))}\n`);
      writeFileSync(join(tokDir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfigJson(bpe, context), null, 2)}\n`);
    }
  }
  const tokenizer = loadTokenizer(tokDir);
  if (!tokenizer) throw new InvalidInputError('--tokenizer', `${tokDir} has no tokenizer.json`);
  if (tokenizer.bosId === null || tokenizer.eosId === null) {
    throw new InvalidInputError('--tokenizer', 'the tokenizer needs bos_token and eos_token in tokenizer_config.json');
  }
  const encode = (t: string): number[] => tokenizer.encode(t, { addBos: false, parseSpecial: false });
  return {
    tokenizer,
    train: tokenizeDocuments(trainDocs, encode, tokenizer.eosId),
    val: tokenizeDocuments(valDocs, encode, tokenizer.eosId),
    bos: tokenizer.bosId,
    eos: tokenizer.eosId,
    digest: hash.digest('hex').slice(0, 16),
  };
}

function matMulFor(kind: TrainOptions['kernels'], threads: number): MatMul {
  if (kind === 'js') return jsMatMul;
  const native = createNativeBackend(threads);
  if (native) return backendMatMul(native);
  if (kind === 'native') throw new InvalidInputError('--kernels', 'the native kernels are not built (npm run build:native)');
  return jsMatMul;
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(sec).padStart(2, '0')}s`;
}

/** Mean held-out loss (nats/token) over `batches`, and the targets it covered. */
export function evaluate(model: TrainableModel, batches: ReturnType<typeof evalWindows>): { loss: number; tokens: number } {
  let sum = 0;
  let n = 0;
  for (const b of batches) {
    sum += model.run(b.inputs, b.B, b.T, { targets: b.targets }).lossSum;
    n += b.B * b.T;
  }
  return { loss: n > 0 ? sum / n : NaN, tokens: n };
}

/** Train (or resume) a run. Synchronous: it owns the thread until done or `stopAfter`. */
export function train(options: TrainOptions): TrainResult {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  mkdirSync(options.outDir, { recursive: true });
  const resuming = options.resume === true && hasCheckpoint(options.outDir);
  const checkpoint = resuming ? loadCheckpoint(options.outDir) : null;
  let settings: RunSettings = checkpoint ? checkpoint.meta.settings : options.settings;
  if (checkpoint && options.settings.steps !== checkpoint.meta.settings.steps) {
    // Extending (or shortening) a run is allowed; everything else comes from the checkpoint.
    settings = { ...settings, steps: options.settings.steps };
  }

  const data = prepareData(options, settings.shape.vocabSize, settings.shape.context);
  if (checkpoint?.meta.dataDigest !== undefined && checkpoint.meta.dataDigest !== data.digest) {
    throw new InvalidInputError('--resume', `the training text differs from the one ${options.outDir} was trained on (digest ${data.digest} ≠ ${checkpoint.meta.dataDigest})`);
  }
  if (data.tokenizer.vocabSize !== settings.shape.vocabSize) {
    if (checkpoint) throw new InvalidInputError('--resume', `tokenizer has ${data.tokenizer.vocabSize} tokens, checkpoint ${settings.shape.vocabSize}`);
    settings = { ...settings, shape: { ...settings.shape, vocabSize: data.tokenizer.vocabSize } };
  }
  const shape: ModelShape = { ...settings.shape, bosTokenId: data.bos, eosTokenId: data.eos };
  settings = { ...settings, shape };
  const config = modelConfigOf(shape);
  const T = shape.context;
  const B = settings.batchSize;

  const threads = options.threads ?? defaultThreads();
  const mm = matMulFor(options.kernels ?? 'auto', threads);
  const params = checkpoint ? new ParamSet(paramSpecs(config), 'f32', checkpoint.params) : initParams(config, settings.seed);
  const grads = params.like('f32');
  const biases: (Float32Array | null)[] = checkpoint
    ? checkpoint.biases
    : Array.from({ length: config.numHiddenLayers }, (_, l) => (isMoeLayer(config, l) ? new Float32Array(config.nRoutedExperts) : null));
  const model = new TrainableModel(config, params, grads, biases, { mm, scratch: new Scratch('f32'), precision: 'f32' }, T);
  const adam = new AdamW(params, { ...DEFAULT_ADAMW, weightDecay: settings.weightDecay });
  if (checkpoint) {
    adam.m.set(checkpoint.m);
    adam.v.set(checkpoint.v);
    adam.t = checkpoint.meta.adamSteps;
  }
  const history: StepRecord[] = checkpoint ? [...checkpoint.meta.history] : [];
  const evals: EvalRecord[] = checkpoint ? [...checkpoint.meta.evals] : [];
  let step = checkpoint ? checkpoint.meta.step : 0;
  let seconds = checkpoint ? checkpoint.meta.seconds : 0;
  let tokensSeen = checkpoint ? checkpoint.meta.tokensSeen : 0;
  const evalBatches = evalWindows(data.val, T, data.bos, settings.evalTokens);

  const { total, active } = countParams(config);
  log(
    `${resuming ? `resuming ${options.outDir} at step ${step}` : `training ${options.outDir}`}: ${(total / 1e6).toFixed(2)}M parameters (${(active / 1e6).toFixed(2)}M active), ` +
      `${shape.layers} layers × d ${shape.hiddenSize}, ${shape.routedExperts} experts (top-${shape.expertsPerToken}) + ${shape.sharedExperts} shared; ` +
      `${data.train.tokens.length} training / ${data.val.tokens.length} held-out tokens; kernels ${mm.name}`,
  );

  const save = (): void => {
    saveCheckpoint(options.outDir, {
      meta: { version: 1, step, settings, adamSteps: adam.t, history, evals, seconds, tokensSeen, dataDigest: data.digest },
      params: params.flat as Float32Array,
      m: adam.m,
      v: adam.v,
      biases,
    });
  };

  const schedule = { lr: settings.lr, warmupSteps: settings.warmupSteps, totalSteps: settings.steps, minLrRatio: settings.minLrRatio };
  const sessionStart = performance.now();
  let sessionSteps = 0;
  let windowTokens = 0;
  let windowStart = performance.now();
  const logEvery = options.logEvery ?? 10;
  while (step < settings.steps) {
    if (options.stopAfter !== undefined && sessionSteps >= options.stopAfter) break;
    const t0 = performance.now();
    const batch = sampleBatch(data.train, B, T, data.bos, settings.seed, step);
    grads.flat.fill(0);
    const result = model.run(batch.inputs, B, T, { targets: batch.targets, backward: true });
    const loss = result.lossSum / (B * T);
    if (!Number.isFinite(loss)) throw new Error(`loss became ${loss} at step ${step}: lower --lr`);
    const gradNorm = clipGradNorm(grads.flat, settings.clip);
    const lr = learningRate(schedule, step);
    adam.step(grads.flat, lr);
    // Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2): b_i ← b_i + γ·sign(mean load − load_i).
    let imbalance = 0;
    let moeLayers = 0;
    result.expertLoads.forEach((load, l) => {
      const bias = biases[l];
      if (!load || !bias) return;
      const mean = (B * T * config.numExpertsPerTok) / config.nRoutedExperts;
      let max = 0;
      for (let e = 0; e < load.length; e++) {
        bias[e] = bias[e]! + settings.biasUpdateSpeed * Math.sign(mean - load[e]!);
        max = Math.max(max, load[e]!);
      }
      imbalance += max / mean;
      moeLayers++;
    });
    step++;
    sessionSteps++;
    tokensSeen += B * T;
    windowTokens += B * T;
    seconds += (performance.now() - t0) / 1000;
    history.push({ step, loss, lr, gradNorm, imbalance: moeLayers > 0 ? imbalance / moeLayers : 1 });

    if (settings.evalEvery > 0 && (step % settings.evalEvery === 0 || step === settings.steps)) {
      const e0 = performance.now();
      const ev = evaluate(model, evalBatches);
      evals.push({ step, loss: ev.loss });
      seconds += (performance.now() - e0) / 1000;
      log(`step ${step}: held-out loss ${ev.loss.toFixed(4)} (perplexity ${Math.exp(ev.loss).toFixed(2)}) on ${ev.tokens} tokens`);
    }
    if (step % logEvery === 0 || step === settings.steps) {
      const now = performance.now();
      const tokPerSec = windowTokens / ((now - windowStart) / 1000);
      const perStep = (now - sessionStart) / 1000 / sessionSteps;
      const recent = history.slice(-logEvery);
      const meanLoss = recent.reduce((a, r) => a + r.loss, 0) / recent.length;
      log(
        `step ${step}/${settings.steps}  loss ${meanLoss.toFixed(4)}  lr ${lr.toExponential(2)}  |g| ${gradNorm.toFixed(2)}  ` +
          `balance ${history[history.length - 1]!.imbalance.toFixed(2)}  ${tokPerSec.toFixed(0)} tok/s  ` +
          `elapsed ${formatDuration(seconds)}  left ${formatDuration(perStep * (settings.steps - step))}`,
      );
      windowTokens = 0;
      windowStart = now;
    }
    if (settings.checkpointEvery > 0 && step % settings.checkpointEvery === 0) save();
  }
  if (step >= settings.steps || options.saveOnStop !== false) save();
  return {
    settings,
    config,
    step,
    history,
    evals,
    seconds,
    tokensSeen,
    params,
    biases,
    tokenizerDir: join(options.outDir, 'tokenizer'),
    finished: step >= settings.steps,
  };
}
