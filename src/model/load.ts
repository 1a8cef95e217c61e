/**
 * Load a model for inference: one place that knows which inputs dseek accepts (the registry of
 * supported layouts) and turns them into a DeepseekModel plus its tokenizer.
 */
import { existsSync, statSync } from 'node:fs';
import { openSafetensors } from '../formats/safetensors.js';
import { openGguf } from '../formats/gguf.js';
import { configFromGguf, weightsFromGguf } from './ggufModel.js';
import { tokenizerFromGguf } from '../tokenizer/ggufTokenizer.js';
import { ModelFormatError } from '../errors.js';
import type { Backend } from '../kernels/backend.js';
import { selectBackend } from '../kernels/select.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { readConfigFile, type ModelConfig } from './config.js';
import { DeepseekModel } from './deepseek.js';
import { loadWeights, type ModelWeights } from './weights.js';
import type { Precision } from './workspace.js';
import { prepareModelWeights } from './prepare.js';
import type { PrepareReport } from '../kernels/backend.js';
import { defaultRepackDir } from '../kernels/native/index.js';

export interface LoadOptions {
  /** Kernels to run on (default: native if built, else the TypeScript reference). */
  readonly backend?: Backend;
  /** f64 runs the whole forward pass in float64 (a reference run); default f32. */
  readonly precision?: Precision;
  /** Cancels a long load between tensors. */
  readonly signal?: AbortSignal;
  /** false: keep weights in the file's rows (no repacking). Default true. */
  readonly repack?: boolean;
  /** Folder of repacked weights kept between runs (default ~/.cache/dseek/repacked; null: repack in memory). */
  readonly repackCacheDir?: string | null;
  /** Size cap of that folder in MiB. */
  readonly repackCacheMiB?: number;
  /** Repacking progress, in bytes. */
  readonly onRepackProgress?: (done: number, total: number) => void;
}

export interface LoadedModel {
  readonly path: string;
  readonly config: ModelConfig;
  readonly model: DeepseekModel;
  /** null when the checkpoint ships no tokenizer.json (token ids only). */
  readonly tokenizer: Tokenizer | null;
  /** What preparing the weights for the kernels did (repacked now, mapped from the cache, none). */
  readonly prepared: PrepareReport;
}

/** Weights in the backend's own layout (f64 runs use the reference kernels: nothing to prepare). */
function prepare(config: ModelConfig, weights: ModelWeights, backend: Backend, options: LoadOptions) {
  if ((options.precision ?? 'f32') === 'f64') {
    return { weights, report: { repacked: 0, repackedBytes: 0, source: 'none', seconds: 0, file: null } as PrepareReport };
  }
  const envDir = process.env['DSEEK_REPACK_DIR'];
  return prepareModelWeights(config, weights, backend, {
    repack: options.repack ?? !process.env['DSEEK_NO_REPACK'],
    cacheDir: options.repackCacheDir !== undefined ? options.repackCacheDir : envDir !== undefined ? envDir || null : defaultRepackDir(),
    ...(options.repackCacheMiB !== undefined ? { cacheMaxMiB: options.repackCacheMiB } : {}),
    ...(options.onRepackProgress ? { onProgress: options.onRepackProgress } : {}),
  });
}

/** Load a Hugging Face folder (config.json + *.safetensors [+ tokenizer.json]) or a deepseek2 GGUF file. */
export function loadModel(path: string, options: LoadOptions = {}): LoadedModel {
  if (!existsSync(path)) {
    throw new ModelFormatError(path, 'no such file or folder: pass a Hugging Face model folder (config.json + *.safetensors) or a .gguf file');
  }
  options.signal?.throwIfAborted();
  if (!statSync(path).isDirectory()) return loadGguf(path, options);
  const config = readConfigFile(path);
  const source = openSafetensors(path);
  try {
    const backend = options.backend ?? selectBackend();
    const loaded = loadWeights(config, source);
    options.signal?.throwIfAborted();
    const { weights, report } = prepare(config, loaded, backend, options);
    const model = new DeepseekModel(config, weights, backend, options.precision ?? 'f32');
    return { path, config, model, tokenizer: loadTokenizer(path), prepared: report };
  } finally {
    source.close();
  }
}

function loadGguf(path: string, options: LoadOptions): LoadedModel {
  const file = openGguf(path);
  try {
    const config = configFromGguf(file);
    const backend = options.backend ?? selectBackend();
    const loaded = weightsFromGguf(config, file);
    options.signal?.throwIfAborted();
    const { weights, report } = prepare(config, loaded, backend, options);
    const model = new DeepseekModel(config, weights, backend, options.precision ?? 'f32');
    return { path, config, model, tokenizer: tokenizerFromGguf(file), prepared: report };
  } finally {
    file.close();
  }
}

/** Just the tokenizer of a model folder or GGUF file (for a process that does not hold the weights). */
export function loadModelTokenizer(path: string): Tokenizer | null {
  if (!existsSync(path)) throw new ModelFormatError(path, 'no such file or folder');
  if (statSync(path).isDirectory()) return loadTokenizer(path);
  const file = openGguf(path);
  try {
    return tokenizerFromGguf(file);
  } finally {
    file.close();
  }
}

/** The context window a model allows, from its config alone. */
export function modelContextLength(path: string): number {
  if (statSync(path).isDirectory()) return readConfigFile(path).maxPositionEmbeddings;
  const file = openGguf(path);
  try {
    return configFromGguf(file).maxPositionEmbeddings;
  } finally {
    file.close();
  }
}
