/** `dseek inspect M`: config, parameter counts, weight types and the MLA cache against MHA/GQA. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { readConfigFile, parseConfig, type ModelConfig } from '../model/config.js';
import { cacheFootprint, countParameters, formatCount } from '../model/params.js';
import { openSafetensors } from '../formats/safetensors.js';
import { ModelFormatError } from '../errors.js';
import { CACHE_TYPES, rowBytes, type CacheType } from '../cache/pagePool.js';
import { FAMILY_NAMES, supportedModelType } from '../model/registry.js';

export interface WeightTypeSummary {
  readonly dtype: string;
  readonly tensors: number;
  readonly elements: number;
  readonly bytes: number;
}

export interface InspectReport {
  readonly path: string;
  readonly config: ModelConfig;
  readonly parameters: ReturnType<typeof countParameters>;
  readonly cache: ReturnType<typeof cacheFootprint>;
  /** Bytes per token of each cache at 16 bits per element. */
  readonly cacheBytesPerToken: { readonly mla: number; readonly mha: number; readonly gqa: number };
  /** Bytes per token of dseek's latent cache (all layers) for each --cache-type. */
  readonly latentBytesPerToken: Readonly<Record<CacheType, number>>;
  /** null when only a config.json was given. */
  readonly weights: readonly WeightTypeSummary[] | null;
}

/** M is a model folder or a config.json file. */
export function inspectModel(path: string): InspectReport {
  if (!existsSync(path)) throw new ModelFormatError(path, 'no such file or folder');
  const isFolder = statSync(path).isDirectory();
  let config: ModelConfig;
  if (isFolder) config = readConfigFile(path);
  else if (basename(path).endsWith('.json')) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new ModelFormatError(path, `not valid JSON (${(err as Error).message})`);
    }
    config = parseConfig(json, path);
  } else throw new ModelFormatError(path, 'expected a model folder or a config.json');

  const folder = isFolder ? path : dirname(path);
  let weights: WeightTypeSummary[] | null = null;
  if (isFolder && hasWeights(folder)) {
    const source = openSafetensors(folder);
    try {
      const byType = new Map<string, { tensors: number; elements: number; bytes: number }>();
      for (const name of source.names()) {
        const info = source.describe(name)!;
        const elements = info.shape.reduce((a, b) => a * b, 1);
        const entry = byType.get(info.dtype) ?? { tensors: 0, elements: 0, bytes: 0 };
        entry.tensors++;
        entry.elements += elements;
        entry.bytes += elements * (info.dtype === 'f32' ? 4 : 2);
        byType.set(info.dtype, entry);
      }
      weights = [...byType].map(([dtype, e]) => ({ dtype, ...e }));
    } finally {
      source.close();
    }
  }
  const cache = cacheFootprint(config);
  return {
    path,
    config,
    parameters: countParameters(config),
    cache,
    cacheBytesPerToken: { mla: cache.mlaElements * 2, mha: cache.mhaElements * 2, gqa: cache.gqaElements * 2 },
    latentBytesPerToken: Object.fromEntries(
      CACHE_TYPES.map((t) => [t, config.numHiddenLayers * rowBytes(config.kvLoraRank + config.qkRopeHeadDim, t)]),
    ) as Record<CacheType, number>,
    weights,
  };
}

/** A folder with only config.json is fine for inspect; a folder with broken weights is an error. */
function hasWeights(folder: string): boolean {
  return readdirSync(folder).some((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'));
}

const n = (x: number): string => x.toLocaleString('en-US');

export function formatInspectReport(r: InspectReport): string {
  const c = r.config;
  const p = r.parameters;
  const lines = [
    `model: ${r.path}`,
    `architecture: ${c.modelType} (${FAMILY_NAMES[c.family]} family: ${supportedModelType(c.modelType)?.models ?? c.modelType})`,
    `layers ${c.numHiddenLayers}, hidden ${c.hiddenSize}, heads ${c.numAttentionHeads}, vocab ${c.vocabSize}, context ${c.maxPositionEmbeddings}`,
    `MLA: kv_lora_rank ${c.kvLoraRank}, q_lora_rank ${c.qLoraRank ?? 'none (q_proj)'}, head dims nope ${c.qkNopeHeadDim} / rope ${c.qkRopeHeadDim} / v ${c.vHeadDim}`,
    c.nRoutedExperts > 0
      ? `MoE: ${c.nRoutedExperts} routed experts (top-${c.numExpertsPerTok}, ${c.scoringFunc}, ${c.topkMethod}` +
        `${c.topkMethod === 'greedy' ? '' : `, ${c.topkGroup} of ${c.nGroup} groups`}), ${c.nSharedExperts} shared, ` +
        `first ${c.firstKDenseReplace} layer(s) dense, weights ${c.normTopkProb ? 'normalised, ' : ''}× ${c.routedScalingFactor}`
      : 'MoE: none (all layers dense)',
    c.ropeScaling
      ? `RoPE: theta ${c.ropeTheta}, YaRN factor ${c.ropeScaling.factor} over ${c.ropeScaling.originalMaxPositionEmbeddings}, mscale ${c.ropeScaling.mscale} / mscale_all_dim ${c.ropeScaling.mscaleAllDim}`
      : `RoPE: theta ${c.ropeTheta}, no scaling`,
    '',
    `parameters: ${formatCount(p.total)} total (${n(p.total)}), ${formatCount(p.activated)} activated per token (${n(p.activated)})`,
    `  embedding ${formatCount(p.embedding)}, attention ${formatCount(p.attention)}, dense FFN ${formatCount(p.denseFfn)}, ` +
      `routed experts ${formatCount(p.routedExperts)}, shared experts ${formatCount(p.sharedExperts)}, lm_head ${formatCount(p.lmHead)}`,
    '',
    'cache per token (16-bit elements, all layers):',
    `  MLA latent (kv_lora_rank + qk_rope_head_dim = ${c.kvLoraRank + c.qkRopeHeadDim} per layer): ${n(r.cacheBytesPerToken.mla)} bytes`,
    `  MHA equivalent (per head key ${c.qkNopeHeadDim + c.qkRopeHeadDim} + value ${c.vHeadDim}): ${n(r.cacheBytesPerToken.mha)} bytes` +
      ` (MLA is ${((100 * r.cache.mlaElements) / r.cache.mhaElements).toFixed(1)} %)`,
    `  GQA equivalent (${r.cache.gqaGroups} KV heads of ${c.vHeadDim}): ${n(r.cacheBytesPerToken.gqa)} bytes` +
      ` (MLA equals GQA with ${r.cache.equivalentGqaGroups.toFixed(2)} groups)`,
    `  dseek's latent cache by --cache-type: ${CACHE_TYPES.map((t) => `${t} ${n(r.latentBytesPerToken[t])}`).join(', ')} bytes` +
      ' (q8: Q8_0 blocks, 34 bytes per 32 values)',
  ];
  if (r.weights) {
    lines.push('', 'weights:');
    for (const w of r.weights) {
      lines.push(`  ${w.dtype}: ${n(w.tensors)} tensors, ${formatCount(w.elements)} elements, ${(w.bytes / 2 ** 20).toFixed(1)} MiB`);
    }
  }
  return lines.join('\n');
}
