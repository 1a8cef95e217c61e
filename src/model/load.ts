/**
 * Load a model for inference: one place that knows which inputs dseek accepts (the registry of
 * supported layouts) and turns them into a DeepseekModel plus its tokenizer.
 */
import { existsSync, statSync } from 'node:fs';
import { openSafetensors } from '../formats/safetensors.js';
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

/** Load a Hugging Face folder (config.json + *.safetensors [+ tokenizer.json]). */
export function loadModel(path: string, options: LoadOptions = {}): LoadedModel {
  if (!existsSync(path)) {
    throw new ModelFormatError(path, 'no such file or folder: pass a Hugging Face model folder (config.json + *.safetensors)');
  }
  if (!statSync(path).isDirectory()) {
    throw new ModelFormatError(
      path,
      path.endsWith('.gguf')
        ? 'GGUF files are not supported yet: pass a Hugging Face model folder (config.json + *.safetensors)'
        : 'not a model folder: pass a Hugging Face model folder (config.json + *.safetensors)',
    );
  }
  options.signal?.throwIfAborted();
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
