/**
 * Writes trained parameters as a Hugging Face model folder that `loadModel` reads unchanged:
 * config.json, model.safetensors (F32, F16 or BF16; e_score_correction_bias always F32, as the
 * released V3 checkpoints keep it) and, when given, the tokenizer files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../formats/safetensors.js';
import { f32ToBf16, f32ToF16, type Tensor, type Vec } from '../kernels/tensor.js';
import { isMoeLayer } from '../model/config.js';
import type { ParamSet } from './params.js';
import { hfConfig, modelConfigOf, type ModelShape } from './shape.js';

export type ExportDType = 'f32' | 'f16' | 'bf16';

function toTensor(v: Vec, shape: readonly number[], dtype: ExportDType): Tensor {
  if (dtype === 'f32') {
    const f = Float32Array.from(v);
    return { dtype, shape, data: new Uint8Array(f.buffer) };
  }
  const u = new Uint16Array(v.length);
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < v.length; i++) u[i] = conv(v[i]!);
  return { dtype, shape, data: new Uint8Array(u.buffer) };
}

/** The tensors of a checkpoint, named as docs/SPEC.md §6.1. */
export function checkpointTensors(
  shape: ModelShape,
  params: ParamSet,
  biases: readonly (Float32Array | null)[],
  dtype: ExportDType,
): Array<[string, Tensor]> {
  const c = modelConfigOf(shape);
  const list: Array<[string, Tensor]> = [];
  for (const s of params.specs) list.push([s.name, toTensor(params.get(s.name), s.shape, dtype)]);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    if (!isMoeLayer(c, l)) continue;
    const b = biases[l];
    if (!b) throw new RangeError(`layer ${l}: missing e_score_correction_bias`);
    list.push([`model.layers.${l}.mlp.gate.e_score_correction_bias`, toTensor(b, [c.nRoutedExperts], 'f32')]);
  }
  return list;
}

export interface TokenizerFiles {
  /** tokenizer.json, as an object. */
  readonly tokenizer: object;
  /** tokenizer_config.json, as an object. */
  readonly tokenizerConfig: object;
}

/** Write a model folder: config.json, model.safetensors and (optionally) the tokenizer files. */
export function exportModel(
  dir: string,
  shape: ModelShape,
  params: ParamSet,
  biases: readonly (Float32Array | null)[],
  options: { dtype: ExportDType; tokenizer?: TokenizerFiles; metadata?: Record<string, string> },
): void {
  mkdirSync(dir, { recursive: true });
  const config = { ...hfConfig(shape), torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[options.dtype] };
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  writeSafetensors(join(dir, 'model.safetensors'), checkpointTensors(shape, params, biases, options.dtype), {
    format: 'pt',
    ...options.metadata,
  });
  if (options.tokenizer) {
    writeFileSync(join(dir, 'tokenizer.json'), `${JSON.stringify(options.tokenizer.tokenizer)}\n`);
    writeFileSync(join(dir, 'tokenizer_config.json'), `${JSON.stringify(options.tokenizer.tokenizerConfig, null, 2)}\n`);
  }
}
