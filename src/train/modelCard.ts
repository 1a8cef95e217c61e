/**
 * Export of a finished run: the Hugging Face folder (export.ts), the held-out perplexity of the
 * exported model as inference computes it (loadModel + DeepseekModel, the stored weight type)
 * against a unigram baseline on the same tokens, a few samples, and a README.md model card with the
 * recipe, the data and its license, and the loss curve.
 */
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, cpus } from 'node:os';
import { loadModel } from '../model/load.js';
import { loadModel as loadLibraryModel } from '../library/load.js';
import { crossEntropy } from './ops.js';
import { evalWindows, unigramNll } from './data.js';
import { exportModel, type ExportDType } from './export.js';
import { prepareData, type TrainOptions, type TrainResult } from './trainer.js';
import { countParams } from './params.js';
import type { StepRecord, EvalRecord } from './checkpoint.js';

export interface CorpusInfo {
  readonly name: string;
  readonly source: string;
  readonly license: string;
  /** A license/copyright text file copied next to the model as LICENSE-corpus.txt. */
  readonly licenseFile?: string;
  readonly description?: string;
}

export interface HeldOutPerplexity {
  readonly tokens: number;
  readonly bytes: number;
  /** Mean negative log-likelihood per token (nats). */
  readonly modelNll: number;
  readonly unigramNll: number;
}

/** Perplexity of a model folder on the held-out split, through the inference engine. */
export function heldOutPerplexity(modelDir: string, options: Pick<TrainOptions, 'dataPath' | 'valPath' | 'outDir'>, context: number, vocabSize: number): HeldOutPerplexity {
  const data = prepareData({ ...options, tokenizerDir: modelDir }, vocabSize, context);
  const loaded = loadModel(modelDir);
  const V = loaded.config.vocabSize;
  let sum = 0;
  let n = 0;
  let bytes = 0;
  const targets: number[] = [];
  for (const b of evalWindows(data.val, context, data.bos, 0)) {
    for (let i = 0; i < b.B; i++) {
      const inputs = Array.from(b.inputs.subarray(i * b.T, (i + 1) * b.T));
      const tg = b.targets.subarray(i * b.T, (i + 1) * b.T);
      const logits = loaded.model.forward(inputs, loaded.model.createCache({ maxTokens: b.T }), { logits: 'all' });
      sum += crossEntropy(logits, tg, b.T, V, null);
      n += b.T;
      for (const t of tg) {
        targets.push(t);
        bytes += t === data.eos ? 1 : data.tokenizer.tokenBytes(t).length;
      }
    }
  }
  return { tokens: n, bytes, modelNll: sum / n, unigramNll: unigramNll(data.train.tokens, V, targets) };
}

/** Greedy-free samples (seeded) from a model folder, for the card: the same engine users run, f32 cache. */
export async function sampleTexts(modelDir: string, prompts: readonly string[], maxTokens: number, seed: number): Promise<string[]> {
  const model = await loadLibraryModel(modelDir, { cacheType: 'f32', parallel: prompts.length });
  try {
    const results = await Promise.all(prompts.map((p, i) => model.generate(p, { maxTokens, temperature: 0.8, topP: 0.95, seed: seed + i })));
    return results.map((r, i) => prompts[i]! + r.text);
  } finally {
    await model.close(0);
  }
}

function asciiPlot(points: readonly { x: number; y: number }[], width = 60, height = 14): string {
  if (points.length === 0) return '';
  const ys = points.map((p) => p.y);
  const lo = Math.floor(Math.min(...ys) * 2) / 2;
  const hi = Math.ceil(Math.max(...ys) * 2) / 2;
  const xMax = Math.max(...points.map((p) => p.x));
  const grid = Array.from({ length: height }, () => Array<string>(width).fill(' '));
  for (const p of points) {
    const c = Math.min(width - 1, Math.round((p.x / xMax) * (width - 1)));
    const r = Math.min(height - 1, Math.round(((hi - p.y) / (hi - lo || 1)) * (height - 1)));
    grid[r]![c] = '*';
  }
  const lines = grid.map((row, r) => {
    const y = hi - ((hi - lo) * r) / (height - 1);
    return `${y.toFixed(2).padStart(6)} |${row.join('')}`;
  });
  lines.push(`${' '.repeat(7)}+${'-'.repeat(width)}`);
  lines.push(`${' '.repeat(8)}0${String(xMax).padStart(width - 1)}  step`);
  return lines.join('\n');
}

/** Mean training loss over consecutive buckets of `every` steps. */
function buckets(history: readonly StepRecord[], every: number): { step: number; loss: number }[] {
  const out: { step: number; loss: number }[] = [];
  for (let i = 0; i < history.length; i += every) {
    const part = history.slice(i, i + every);
    out.push({ step: part[part.length - 1]!.step, loss: part.reduce((a, r) => a + r.loss, 0) / part.length });
  }
  return out;
}

export interface CardInput {
  readonly result: TrainResult;
  readonly heldOut: HeldOutPerplexity;
  readonly samples: readonly string[];
  readonly dtype: ExportDType;
  readonly corpus?: CorpusInfo;
  readonly command?: string;
  readonly sizeBytes: number;
}

export function modelCard(input: CardInput): string {
  const { result, heldOut, samples, corpus } = input;
  const s = result.settings;
  const sh = s.shape;
  const { total, active } = countParams(result.config);
  const ppl = Math.exp(heldOut.modelNll);
  const uni = Math.exp(heldOut.unigramNll);
  const bpb = (heldOut.modelNll * heldOut.tokens) / Math.LN2 / heldOut.bytes;
  const every = Math.max(1, Math.round(result.history.length / 30));
  const curve = buckets(result.history, every);
  const evals = new Map<number, EvalRecord>(result.evals.map((e) => [e.step, e]));
  const tableRows = buckets(result.history, Math.max(1, Math.round(result.history.length / 10))).map((b) => {
    const e = evals.get(b.step);
    return `| ${b.step} | ${b.loss.toFixed(3)} | ${e ? `${e.loss.toFixed(3)} (ppl ${Math.exp(e.loss).toFixed(1)})` : ''} |`;
  });
  const evalRows = result.evals.map((e) => `| ${e.step} | ${e.loss.toFixed(3)} | ${Math.exp(e.loss).toFixed(1)} |`);
  const tokPerSec = result.tokensSeen / result.seconds;
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const minutes = (result.seconds / 60).toFixed(1);
  return `---
license: mit
language: en
library_name: dseek
tags: [deepseek_v3, mla, moe, tiny]
---

# dseek default model: a tiny DeepSeek-architecture model trained on ${corpus?.name ?? 'a text corpus'}

A DeepSeek-V3-architecture model of ${(total / 1e6).toFixed(1)} M parameters (${(active / 1e6).toFixed(1)} M active per token) —
Multi-head Latent Attention and DeepSeekMoE with shared and routed experts — trained from scratch by
\`dseek train\` on two CPU cores in ${minutes} minutes. It ships with dseek so that \`dseek run\`,
\`dseek chat\` and \`dseek serve\` work offline out of the box, and it demonstrates end to end that the
inference engine computes what the trainer learned. It writes text in the style of its corpus; it
knows nothing else and follows no instructions.

## Architecture (config.json, \`model_type: deepseek_v3\`)

| | |
|---|---|
| layers | ${sh.layers} (${sh.denseLayers} dense, ${sh.layers - sh.denseLayers} MoE) |
| hidden size | ${sh.hiddenSize} |
| attention | MLA: ${sh.heads} heads, kv_lora_rank ${sh.kvLoraRank}, qk_nope ${sh.qkNopeHeadDim} + qk_rope ${sh.qkRopeHeadDim}, v ${sh.vHeadDim}, ${sh.qLoraRank === null ? 'plain q_proj' : `q_lora_rank ${sh.qLoraRank}`}; RoPE θ ${sh.ropeTheta}, no YaRN |
| latent cache | ${sh.kvLoraRank + sh.qkRopeHeadDim} values per token and layer (MHA would cache ${sh.heads * (sh.qkNopeHeadDim + sh.qkRopeHeadDim + sh.vHeadDim)}) |
| dense FFN | SwiGLU, width ${sh.intermediateSize} |
| MoE | ${sh.routedExperts} routed experts (top-${sh.expertsPerToken}) + ${sh.sharedExperts} shared, width ${sh.moeIntermediateSize}; sigmoid gate, \`noaux_tc\`, normalised top-k weights |
| vocabulary | ${sh.vocabSize} (byte-level BPE trained on the corpus; BOS ${sh.bosTokenId}, EOS ${sh.eosTokenId}) |
| context | ${sh.context} tokens |
| parameters | ${total.toLocaleString('en-US')} total, ${active.toLocaleString('en-US')} active per token (excluding the input embedding) |
| weights | ${input.dtype.toUpperCase()} safetensors (router bias F32), ${(input.sizeBytes / 1e6).toFixed(1)} MB in this folder |

## Data

${corpus ? `**${corpus.name}** — ${corpus.description ?? ''}\n\nSource: ${corpus.source}. License: ${corpus.license}${corpus.licenseFile ? '; the package\'s copyright notice is in `LICENSE-corpus.txt`' : ''}.` : 'See the training command below.'}

Documents are separated by blank lines, lines are the sampling anchors: each training window is BOS
followed by ${sh.context - 1} tokens of text starting at a random line. Every 20th document is held out
for evaluation (${heldOut.tokens.toLocaleString('en-US')} held-out tokens).

## Training recipe

- Tokenizer: byte-level BPE trained by \`dseek train\` on the training split (GPT-2-style split regex,
  ${sh.vocabSize} tokens = 2 special + 256 bytes + merges), chat template of DeepSeek-V2-Chat
  (\`User: …\\n\\nAssistant: …<eos>\`).
- Objective: next-token cross-entropy; forward and backward passes written by hand in dseek
  (\`src/train/\`), gradients checked against finite differences for every layer type.
- Optimiser: AdamW (Loshchilov & Hutter 2019), β = (0.9, 0.95), ε 1e-8, weight decay ${s.weightDecay} on matrices;
  peak learning rate ${s.lr}, ${s.warmupSteps} warm-up steps, cosine decay to ${s.minLrRatio} × peak; gradient-norm clip ${s.clip}.
- Batch: ${s.batchSize} × ${sh.context} tokens, ${s.steps} steps (${result.tokensSeen.toLocaleString('en-US')} tokens seen); seed ${s.seed}.
- Load balancing: DeepSeek-V3's auxiliary-loss-free strategy (V3 report §2.1.2): after every step each
  expert's \`e_score_correction_bias\` moves by γ = ${s.biasUpdateSpeed} towards balance (−γ if overloaded,
  +γ if underloaded); the bias only affects which experts are chosen, never the mixing weights, and no
  balance loss enters the gradient. Final max/mean expert load: ${result.history[result.history.length - 1]?.imbalance.toFixed(2) ?? '?'}.
- Hardware: ${availableParallelism()} × ${cpu}, native SIMD kernels; ${minutes} minutes of training
  (${tokPerSec.toFixed(0)} tokens/s), shared with other work on the machine.
- Reproduce: \`npm run train:default\` (corpus preparation, tokenizer, training, export, this card).
${input.command ? `  Command: \`${input.command}\`\n` : ''}
## Results

Held-out perplexity of the shipped ${input.dtype.toUpperCase()} weights, computed by dseek's inference engine on
${heldOut.tokens.toLocaleString('en-US')} held-out tokens, against a unigram model (training-split token
frequencies, add-one smoothed) on the same tokens:

| model | perplexity | nats/token |
|---|---|---|
| **this model** | **${ppl.toFixed(2)}** | ${heldOut.modelNll.toFixed(3)} |
| unigram baseline | ${uni.toFixed(2)} | ${heldOut.unigramNll.toFixed(3)} |

That is ${(uni / ppl).toFixed(1)}× lower perplexity than the unigram baseline, ${bpb.toFixed(3)} bits per byte of text.

### Loss curve

Training loss (mean of every ${every} steps):

\`\`\`
${asciiPlot(curve.map((p) => ({ x: p.step, y: p.loss })))}
\`\`\`

| step | training loss | held-out loss |
|---|---|---|
${tableRows.join('\n')}

Held-out evaluations during training (on the first ${s.evalTokens || 'all'} held-out tokens only, an easier stretch than the
whole held-out set the table above uses):

| step | held-out loss | perplexity |
|---|---|---|
${evalRows.join('\n')}

## Samples

Temperature 0.8, top-p 0.95 (\`dseek run --temperature 0.8 --top-p 0.95 "<prompt>"\`):

${samples.map((t) => `> ${t.replace(/\n/g, '\n> ')}`).join('\n\n')}

## Limitations

A model of ${(total / 1e6).toFixed(1)} M parameters trained for ${minutes} minutes: it imitates the vocabulary,
phrasing and verse structure of its corpus but its text rarely makes sense beyond a clause or two, it
repeats itself, and it has seen no instructions or conversations (in chat mode it answers in the
corpus's style). Its context is ${sh.context} tokens; generation stops there.

## License

The model weights and code: MIT, as dseek. The training text: ${corpus?.license ?? 'see the corpus'}.
`;
}

/** Export a finished run to `dir` and write its model card. */
export async function exportTrainedModel(
  dir: string,
  result: TrainResult,
  options: Pick<TrainOptions, 'dataPath' | 'valPath' | 'outDir'> & {
    dtype: ExportDType;
    corpus?: CorpusInfo;
    prompts?: readonly string[];
    command?: string;
  },
): Promise<HeldOutPerplexity> {
  const tokenizer = JSON.parse(readFileSync(join(result.tokenizerDir, 'tokenizer.json'), 'utf8')) as object;
  const tokenizerConfig = JSON.parse(readFileSync(join(result.tokenizerDir, 'tokenizer_config.json'), 'utf8')) as object;
  exportModel(dir, result.settings.shape, result.params, result.biases, {
    dtype: options.dtype,
    tokenizer: { tokenizer, tokenizerConfig },
    metadata: { trained_by: 'dseek train', steps: String(result.step), seed: String(result.settings.seed) },
  });
  if (options.corpus?.licenseFile && existsSync(options.corpus.licenseFile)) {
    copyFileSync(options.corpus.licenseFile, join(dir, 'LICENSE-corpus.txt'));
  }
  const heldOut = heldOutPerplexity(dir, options, result.settings.shape.context, result.settings.shape.vocabSize);
  const prompts = options.prompts ?? ['And the LORD said', 'In the beginning', 'Blessed are'];
  const samples = await sampleTexts(dir, prompts, 60, result.settings.seed);
  const history = result.history.map((r) => ({ step: r.step, loss: Number(r.loss.toFixed(5)), lr: Number(r.lr.toPrecision(4)), grad_norm: Number(r.gradNorm.toFixed(4)), balance: Number(r.imbalance.toFixed(3)) }));
  writeFileSync(join(dir, 'training_log.json'), `${JSON.stringify({ settings: result.settings, seconds: Number(result.seconds.toFixed(1)), tokens_seen: result.tokensSeen, evals: result.evals, held_out: heldOut, history })}\n`);
  let sizeBytes = 0;
  for (const f of ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'training_log.json']) {
    if (existsSync(join(dir, f))) sizeBytes += readFileSync(join(dir, f)).byteLength;
  }
  const card = modelCard({ result, heldOut, samples, dtype: options.dtype, ...(options.corpus ? { corpus: options.corpus } : {}), ...(options.command ? { command: options.command } : {}), sizeBytes });
  writeFileSync(join(dir, 'README.md'), card);
  return heldOut;
}
