/**
 * `dseek convert SRC OUT.gguf --type …` (HF folder → GGUF llama.cpp loads, formats/convert.ts) and
 * the GGUF half of `dseek inspect` (architecture, config, weight types with bits per weight).
 */
import type { Command } from 'commander';
import { InvalidInputError } from '../errors.js';
import { CONVERT_TYPES, convertToGguf, isConvertType, LLAMA_FTYPE_NAMES, type ConvertResult } from '../formats/convert.js';
import { openGguf, type GgufFile } from '../formats/gguf.js';
import { configFromGguf } from '../model/ggufModel.js';
import type { ModelConfig } from '../model/config.js';
import { countParameters, formatCount } from '../model/params.js';
import { FAMILY_NAMES, supportedModelType } from '../model/registry.js';

/** Where progress goes: process.stderr, or anything with `write` (tests). */
export interface ProgressSink {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(text: string): unknown;
}

const GIB = 2 ** 30;
const MIB = 2 ** 20;

function size(bytes: number, total = bytes): string {
  return total >= GIB ? `${(bytes / GIB).toFixed(2)} GiB` : `${(bytes / MIB).toFixed(1)} MiB`;
}

/**
 * Progress for `convert`: on a terminal a bar redrawn in place (at most ~10 times a second);
 * otherwise one line each time another 10 % of the bytes is written.
 */
export function progressReporter(sink: ProgressSink): {
  update: (done: number, total: number, tensor: string, bytes: { readonly done: number; readonly total: number }) => void;
  finish: () => void;
} {
  let lastDraw = 0;
  let lastDecile = 0;
  let drawn = false;
  return {
    update(done, total, tensor, bytes) {
      const fraction = bytes.total > 0 ? bytes.done / bytes.total : done / total;
      const percent = Math.floor(fraction * 100);
      const counts = `${done}/${total} tensors, ${size(bytes.done, bytes.total)} / ${size(bytes.total)}`;
      if (sink.isTTY) {
        const now = Date.now();
        if (done < total && now - lastDraw < 100) return;
        lastDraw = now;
        const width = 24;
        const filled = Math.round(fraction * width);
        let line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(percent).padStart(3)}%  ${counts}  ${tensor}`;
        const columns = sink.columns ?? 100;
        if (line.length > columns - 1) line = `${line.slice(0, columns - 2)}…`;
        sink.write(`\r${line}\x1b[K`);
        drawn = true;
      } else {
        const decile = done >= total ? 10 : Math.min(9, Math.floor(fraction * 10));
        if (decile <= lastDecile) return;
        lastDecile = decile;
        sink.write(`convert: ${String(decile * 10).padStart(3)}% (${counts}) ${tensor}\n`);
      }
    },
    finish() {
      if (drawn) sink.write('\n');
      drawn = false;
    },
  };
}

export interface ConvertFlags {
  readonly type?: string;
  readonly legacyLayout?: boolean;
  readonly name?: string;
}

/** Run a conversion with progress on `sink`; returns what was written. Bad input throws a DseekError. */
export function runConvert(src: string, out: string, flags: ConvertFlags, sink: ProgressSink = process.stderr): ConvertResult {
  const type = flags.type ?? 'f16';
  if (!isConvertType(type)) throw new InvalidInputError('--type', `unsupported ${JSON.stringify(type)}: choose one of ${CONVERT_TYPES.join(', ')}`);
  const progress = progressReporter(sink);
  try {
    return convertToGguf(src, out, {
      type,
      layout: flags.legacyLayout ? 'legacy' : 'current',
      ...(flags.name !== undefined ? { name: flags.name } : {}),
      onProgress: progress.update,
    });
  } finally {
    progress.finish();
  }
}

/** Adds `dseek convert SRC OUT.gguf [--type T] [--legacy-layout] [--name N]` to the program. */
export function registerConvertCommand(program: Command): Command {
  return program
    .command('convert')
    .description('convert a Hugging Face folder to a GGUF file that llama.cpp loads (architecture deepseek2)')
    .argument('<src>', 'Hugging Face model folder (config.json + *.safetensors [+ tokenizer.json])')
    .argument('<out>', 'the .gguf file to write (replaced if it exists)')
    .option('-t, --type <type>', `weight type: ${CONVERT_TYPES.join(', ')} (q4_k_m is llama.cpp's Q4_K_M mixture)`, 'f16')
    .option('--legacy-layout', 'write one attn_kv_b per layer (llama.cpp before 2025-04, ik_llama.cpp) instead of attn_k_b + attn_v_b')
    .option('--name <name>', 'general.name (default: the folder name)')
    .action((src: string, out: string, flags: ConvertFlags) => {
      const r = runConvert(src, out, flags);
      const elements = r.tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
      process.stdout.write(
        `${r.path}: ${r.tensors.length} tensors, ${size(r.fileBytes)}, ${((8 * r.dataBytes) / elements).toFixed(2)} bits/weight, ` +
          `${LLAMA_FTYPE_NAMES[r.fileType] ?? r.fileType} (${r.layout} MLA layout${r.preTokenizer ? `, tokenizer ${r.preTokenizer}` : ', placeholder vocabulary'})\n`,
      );
    });
}

// --- inspect ------------------------------------------------------------------------------------

export interface GgufTypeSummary {
  readonly type: string;
  readonly tensors: number;
  readonly elements: number;
  readonly bytes: number;
  readonly bitsPerWeight: number;
}

export interface GgufInspectReport {
  readonly path: string;
  readonly version: number;
  readonly architecture: string | null;
  readonly name: string | null;
  readonly fileType: number | null;
  readonly metadataKeys: number;
  /** `current` (attn_k_b + attn_v_b), `legacy` (attn_kv_b), or null when neither is present. */
  readonly mlaLayout: 'current' | 'legacy' | null;
  /** The config the metadata describes; null when it is not a deepseek2 file dseek can read. */
  readonly config: ModelConfig | null;
  /** Why config is null. */
  readonly configError: string | null;
  readonly parameters: ReturnType<typeof countParameters> | null;
  readonly tokenizer: {
    readonly model: string;
    readonly pre: string | null;
    readonly tokens: number;
    readonly bosId: number | null;
    readonly eosId: number | null;
    readonly chatTemplate: boolean;
  } | null;
  /** Per GGML type, largest share first. */
  readonly types: readonly GgufTypeSummary[];
  readonly tensors: number;
  readonly elements: number;
  readonly bytes: number;
  readonly bitsPerWeight: number;
}

function tokenizerSummary(file: GgufFile): GgufInspectReport['tokenizer'] {
  const model = file.typedKey('tokenizer.ggml.model', 'string');
  if (model === undefined) return null;
  const tokens = file.typedKey('tokenizer.ggml.tokens', 'array');
  return {
    model,
    pre: file.typedKey('tokenizer.ggml.pre', 'string') ?? null,
    tokens: tokens?.value.length ?? 0,
    bosId: file.typedKey('tokenizer.ggml.bos_token_id', 'u32') ?? null,
    eosId: file.typedKey('tokenizer.ggml.eos_token_id', 'u32') ?? null,
    chatTemplate: file.typedKey('tokenizer.chat_template', 'string') !== undefined,
  };
}

/** Read a GGUF file's header (no tensor data) into a report. */
export function inspectGgufReport(path: string): GgufInspectReport {
  const file = openGguf(path);
  try {
    let config: ModelConfig | null = null;
    let configError: string | null = null;
    try {
      config = configFromGguf(file);
    } catch (e) {
      configError = e instanceof Error ? e.message : String(e);
    }
    const byType = new Map<string, { tensors: number; elements: number; bytes: number }>();
    for (const t of file.tensors) {
      const e = byType.get(t.type) ?? { tensors: 0, elements: 0, bytes: 0 };
      e.tensors++;
      e.elements += t.elementCount;
      e.bytes += t.byteSize;
      byType.set(t.type, e);
    }
    const types = [...byType]
      .map(([type, e]) => ({ type, ...e, bitsPerWeight: (8 * e.bytes) / e.elements }))
      .sort((a, b) => b.bytes - a.bytes);
    const elements = types.reduce((s, t) => s + t.elements, 0);
    const bytes = types.reduce((s, t) => s + t.bytes, 0);
    const has = (name: string) => file.tensor(name) !== undefined;
    return {
      path,
      version: file.version,
      architecture: file.typedKey('general.architecture', 'string') ?? null,
      name: file.typedKey('general.name', 'string') ?? null,
      fileType: file.typedKey('general.file_type', 'u32') ?? null,
      metadataKeys: file.metadata.size,
      mlaLayout: has('blk.0.attn_k_b.weight') ? 'current' : has('blk.0.attn_kv_b.weight') ? 'legacy' : null,
      config,
      configError,
      parameters: config ? countParameters(config) : null,
      tokenizer: tokenizerSummary(file),
      types,
      tensors: file.tensors.length,
      elements,
      bytes,
      bitsPerWeight: elements > 0 ? (8 * bytes) / elements : 0,
    };
  } finally {
    file.close();
  }
}

const n = (x: number): string => x.toLocaleString('en-US');

export function formatGgufInspectReport(r: GgufInspectReport): string {
  const lines = [
    `model: ${r.path} (GGUF v${r.version}, ${r.metadataKeys} metadata keys, ${r.tensors} tensors)`,
    `architecture: ${r.architecture ?? 'missing'}${r.name ? `, name ${JSON.stringify(r.name)}` : ''}` +
      `${r.fileType !== null ? `, file type ${LLAMA_FTYPE_NAMES[r.fileType] ?? r.fileType}` : ''}` +
      `${r.mlaLayout ? `, MLA layout ${r.mlaLayout === 'current' ? 'current (attn_k_b + attn_v_b)' : 'legacy (attn_kv_b)'}` : ''}`,
  ];
  const c = r.config;
  if (c) {
    lines.push(
      `model type: ${c.modelType} (${FAMILY_NAMES[c.family]} family: ${supportedModelType(c.modelType)?.models ?? c.modelType})`,
      `layers ${c.numHiddenLayers}, hidden ${c.hiddenSize}, heads ${c.numAttentionHeads}, vocab ${c.vocabSize}, context ${c.maxPositionEmbeddings}`,
      `MLA: kv_lora_rank ${c.kvLoraRank}, q_lora_rank ${c.qLoraRank ?? 'none (attn_q)'}, head dims nope ${c.qkNopeHeadDim} / rope ${c.qkRopeHeadDim} / v ${c.vHeadDim}`,
      c.nRoutedExperts > 0
        ? `MoE: ${c.nRoutedExperts} routed experts (top-${c.numExpertsPerTok}, ${c.scoringFunc}, ${c.topkMethod}` +
            `${c.nGroup > 1 ? `, ${c.topkGroup} of ${c.nGroup} groups` : ''}), ${c.nSharedExperts} shared, ` +
            `first ${c.firstKDenseReplace} layer(s) dense, weights ${c.normTopkProb ? 'normalised, ' : ''}× ${c.routedScalingFactor}`
        : 'MoE: none (all layers dense)',
      c.ropeScaling
        ? `RoPE: theta ${c.ropeTheta}, YaRN factor ${c.ropeScaling.factor} over ${c.ropeScaling.originalMaxPositionEmbeddings}, mscale_all_dim ${+c.ropeScaling.mscaleAllDim.toPrecision(6)}`
        : `RoPE: theta ${c.ropeTheta}, no scaling`,
    );
    if (r.parameters) lines.push(`parameters: ${formatCount(r.parameters.total)} total, ${formatCount(r.parameters.activated)} activated per token`);
  } else if (r.configError) {
    lines.push(`config: not readable by dseek (${r.configError})`);
  }
  const t = r.tokenizer;
  lines.push(
    t
      ? `tokenizer: ${t.model}${t.pre ? ` / ${t.pre}` : ''}, ${n(t.tokens)} tokens, bos ${t.bosId ?? 'none'}, eos ${t.eosId ?? 'none'}, chat template ${t.chatTemplate ? 'yes' : 'no'}`
      : `tokenizer: none${c && (c.bosTokenId !== null || c.eosTokenIds.length > 0) ? ` (bos ${c.bosTokenId ?? 'none'}, eos ${c.eosTokenIds[0] ?? 'none'})` : ''}`,
    '',
    'weights:',
    `  ${'type'.padEnd(6)} ${'tensors'.padStart(7)} ${'elements'.padStart(10)} ${'size'.padStart(12)} ${'bits/weight'.padStart(11)}`,
  );
  for (const w of r.types) {
    lines.push(`  ${w.type.padEnd(6)} ${String(w.tensors).padStart(7)} ${formatCount(w.elements).padStart(10)} ${size(w.bytes).padStart(12)} ${w.bitsPerWeight.toFixed(2).padStart(11)}`);
  }
  lines.push(`  ${'total'.padEnd(6)} ${String(r.tensors).padStart(7)} ${formatCount(r.elements).padStart(10)} ${size(r.bytes).padStart(12)} ${r.bitsPerWeight.toFixed(2).padStart(11)}`);
  return lines.join('\n');
}

/** `dseek inspect file.gguf`: the formatted report. */
export function inspectGguf(path: string): string {
  return formatGgufInspectReport(inspectGgufReport(path));
}
