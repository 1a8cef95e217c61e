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
import { loadWeights } from './weights.js';
import type { Precision } from './workspace.js';

export interface LoadOptions {
  /** Kernels to run on (default: native if built, else the TypeScript reference). */
  readonly backend?: Backend;
  /** f64 runs the whole forward pass in float64 (a reference run); default f32. */
  readonly precision?: Precision;
  /** Cancels a long load between tensors. */
  readonly signal?: AbortSignal;
}

export interface LoadedModel {
  readonly path: string;
  readonly config: ModelConfig;
  readonly model: DeepseekModel;
  /** null when the checkpoint ships no tokenizer.json (token ids only). */
  readonly tokenizer: Tokenizer | null;
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
    const weights = loadWeights(config, source);
    options.signal?.throwIfAborted();
    const model = new DeepseekModel(config, weights, options.backend ?? selectBackend(), options.precision ?? 'f32');
    return { path, config, model, tokenizer: loadTokenizer(path) };
  } finally {
    source.close();
  }
}

function loadGguf(path: string, options: LoadOptions): LoadedModel {
  const file = openGguf(path);
  try {
    const config = configFromGguf(file);
    const weights = weightsFromGguf(config, file);
    options.signal?.throwIfAborted();
    const model = new DeepseekModel(config, weights, options.backend ?? selectBackend(), options.precision ?? 'f32');
    return { path, config, model, tokenizer: tokenizerFromGguf(file) };
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
