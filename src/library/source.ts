/**
 * Where a model comes from: a folder, a `.gguf` file, a hub id (downloaded once into the cache), or
 * the bundled default model. Also what the host thread reads without the weights (config,
 * tokenizer), so that bad input fails before a worker is started.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelFormatError } from '../errors.js';
import { isHubId, resolveHubModel } from '../formats/hub.js';
import { openGguf } from '../formats/gguf.js';
import { readConfigFile, type ModelConfig } from '../model/config.js';
import { configFromGguf } from '../model/ggufModel.js';

/** The bundled default model (shipped in models/ by the package). */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../../models/default', import.meta.url));

export interface ResolveOptions {
  readonly signal?: AbortSignal;
  /** Bytes of `file` downloaded so far, of `total` (0 when the server does not say). */
  readonly onDownload?: (file: string, done: number, total: number) => void;
}

/** The local path of a model source; undefined means the bundled model. */
export async function resolveModelSource(source: string | undefined, options: ResolveOptions = {}): Promise<string> {
  if (source === undefined) {
    if (existsSync(DEFAULT_MODEL_DIR)) return DEFAULT_MODEL_DIR;
    throw new ModelFormatError(DEFAULT_MODEL_DIR, 'no model given, and the bundled default model is not installed here: pass a folder, a .gguf file or a hub id');
  }
  // A path that exists wins over the hub-id reading of "org/name".
  if (existsSync(source) || !isHubId(source)) return resolve(source);
  return resolveHubModel(source, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onDownload ? { onProgress: options.onDownload } : {}),
  });
}

/** The config of a model folder or GGUF file, from its metadata alone. */
export function readModelConfig(path: string): ModelConfig {
  if (!existsSync(path)) {
    throw new ModelFormatError(path, 'no such file or folder: pass a Hugging Face model folder (config.json + *.safetensors), a .gguf file or a hub id');
  }
  if (statSync(path).isDirectory()) return readConfigFile(path);
  const file = openGguf(path);
  try {
    return configFromGguf(file);
  } finally {
    file.close();
  }
}
