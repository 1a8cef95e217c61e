/**
 * Resumable training state: parameters, AdamW moments, router biases and the run's history, in
 * `<out>/checkpoint.json` plus one binary file named after its step. The binary is written first
 * and the JSON is renamed into place last, so a run killed at any moment leaves either the previous
 * checkpoint or the new one, never a mix.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync, openSync, writeSync, closeSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFormatError } from '../errors.js';
import type { ModelShape } from './shape.js';

/** The hyper-parameters that define a run (stored so that --resume continues the same run). */
export interface RunSettings {
  readonly shape: ModelShape;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly minLrRatio: number;
  readonly warmupSteps: number;
  readonly weightDecay: number;
  readonly clip: number;
  readonly seed: number;
  readonly biasUpdateSpeed: number;
  readonly evalEvery: number;
  readonly evalTokens: number;
  readonly checkpointEvery: number;
}

export interface StepRecord {
  readonly step: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  /** max/mean expert load, averaged over MoE layers (1 = perfectly balanced). */
  readonly imbalance: number;
}

export interface EvalRecord {
  readonly step: number;
  readonly loss: number;
}

export interface CheckpointMeta {
  readonly version: 1;
  /** Steps completed. */
  readonly step: number;
  readonly settings: RunSettings;
  readonly adamSteps: number;
  readonly history: readonly StepRecord[];
  readonly evals: readonly EvalRecord[];
  /** Wall-clock seconds spent training so far (all sessions of the run). */
  readonly seconds: number;
  readonly tokensSeen: number;
  /** Hash of the training (and held-out) text, so that a resume on other data is refused. */
  readonly dataDigest?: string;
  readonly binary: string;
  /** Float32 counts of each section of the binary. */
  readonly sections: { readonly params: number; readonly moments: number; readonly biases: readonly number[] };
}

export interface CheckpointState {
  readonly meta: CheckpointMeta;
  readonly params: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  readonly biases: (Float32Array | null)[];
}

const META = 'checkpoint.json';

function writeAll(path: string, parts: readonly Float32Array[]): void {
  const fd = openSync(path, 'w');
  try {
    for (const p of parts) {
      const bytes = new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 24));
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function saveCheckpoint(dir: string, state: Omit<CheckpointState, 'meta'> & { meta: Omit<CheckpointMeta, 'binary' | 'sections'> }): void {
  const binary = `checkpoint-${state.meta.step}.bin`;
  const parts = [state.params, state.m, state.v, ...state.biases.filter((b): b is Float32Array => b !== null)];
  writeAll(join(dir, `${binary}.tmp`), parts);
  renameSync(join(dir, `${binary}.tmp`), join(dir, binary));
  const previous = existsSync(join(dir, META)) ? readMeta(dir).binary : null;
  const meta: CheckpointMeta = {
    ...state.meta,
    binary,
    sections: { params: state.params.length, moments: state.m.length, biases: state.biases.map((b) => (b ? b.length : 0)) },
  };
  writeFileSync(join(dir, `${META}.tmp`), `${JSON.stringify(meta)}\n`);
  renameSync(join(dir, `${META}.tmp`), join(dir, META));
  if (previous && previous !== binary) rmSync(join(dir, previous), { force: true });
}

function readMeta(dir: string): CheckpointMeta {
  const path = join(dir, META);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as CheckpointMeta;
  } catch (e) {
    throw new ModelFormatError(path, `unreadable checkpoint (${e instanceof Error ? e.message : String(e)})`);
  }
}

export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, META));
}

export function loadCheckpoint(dir: string): CheckpointState {
  const meta = readMeta(dir);
  const path = join(dir, meta.binary);
  const buf = readFileSync(path);
  const { params, moments, biases } = meta.sections;
  const total = params + 2 * moments + biases.reduce((a, b) => a + b, 0);
  if (buf.byteLength !== total * 4) throw new ModelFormatError(path, `expected ${total * 4} bytes, found ${buf.byteLength}`);
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  let o = 0;
  const take = (n: number): Float32Array => {
    const v = all.slice(o, o + n);
    o += n;
    return v;
  };
  const p = take(params);
  const m = take(moments);
  const v = take(moments);
  const b = biases.map((n) => (n > 0 ? take(n) : null));
  return { meta, params: p, m, v, biases: b };
}
