/** Shared fixtures for the training tests: tiny configs that train in milliseconds. */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../../src/engine/random.js';
import type { RunSettings } from '../../src/train/checkpoint.js';
import type { ModelShape } from '../../src/train/shape.js';

/** A tiny DeepSeek-V3-style config (sigmoid router, noaux_tc); `overrides` replace keys. */
export function tinyConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    vocab_size: 23,
    hidden_size: 8,
    intermediate_size: 12,
    moe_intermediate_size: 6,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    n_shared_experts: 1,
    n_routed_experts: 4,
    num_experts_per_tok: 2,
    routed_scaling_factor: 1.0,
    kv_lora_rank: 6,
    q_lora_rank: null,
    qk_rope_head_dim: 4,
    v_head_dim: 3,
    qk_nope_head_dim: 3,
    topk_method: 'noaux_tc',
    scoring_func: 'sigmoid',
    n_group: 1,
    topk_group: 1,
    norm_topk_prob: true,
    first_k_dense_replace: 1,
    moe_layer_freq: 1,
    hidden_act: 'silu',
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_scaling: null,
    bos_token_id: 0,
    eos_token_id: 1,
    tie_word_embeddings: false,
    ...overrides,
  };
}

const WORDS = ['and', 'the', 'lord', 'said', 'unto', 'moses', 'of', 'his', 'house', 'land', 'people', 'went', 'up', 'came', 'to', 'pass', 'that', 'he', 'they', 'children'];

/** A small synthetic corpus: `docs` documents of a few sentences, one per line; deterministic. */
export function syntheticCorpus(docs = 40, seed = 7): string {
  const rng = new Rng(seed);
  const out: string[] = [];
  for (let d = 0; d < docs; d++) {
    const lines: string[] = [];
    for (let l = 0; l < 4; l++) {
      const n = 4 + Math.floor(rng.next() * 6);
      const words: string[] = [];
      for (let i = 0; i < n; i++) words.push(WORDS[Math.floor(rng.next() * WORDS.length)]!);
      const s = words.join(' ');
      lines.push(`${s[0]!.toUpperCase()}${s.slice(1)}.`);
    }
    out.push(lines.join('\n'));
  }
  return `${out.join('\n\n')}\n`;
}

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `dseek-${prefix}-`));
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function writeCorpus(dir: string, docs = 40): string {
  const path = join(dir, 'corpus.txt');
  writeFileSync(path, syntheticCorpus(docs));
  return path;
}

export const TINY_SHAPE: ModelShape = {
  vocabSize: 300,
  hiddenSize: 16,
  layers: 2,
  heads: 2,
  qLoraRank: null,
  kvLoraRank: 8,
  qkNopeHeadDim: 4,
  qkRopeHeadDim: 4,
  vHeadDim: 4,
  intermediateSize: 24,
  denseLayers: 1,
  moeIntermediateSize: 8,
  routedExperts: 4,
  sharedExperts: 1,
  expertsPerToken: 2,
  context: 16,
  ropeTheta: 10000,
  bosTokenId: 0,
  eosTokenId: 1,
};

export function tinySettings(overrides: Partial<RunSettings> = {}): RunSettings {
  return {
    shape: TINY_SHAPE,
    steps: 6,
    batchSize: 4,
    lr: 1e-2,
    minLrRatio: 0.1,
    warmupSteps: 2,
    weightDecay: 0.1,
    clip: 1,
    seed: 5,
    biasUpdateSpeed: 1e-2,
    evalEvery: 3,
    evalTokens: 64,
    checkpointEvery: 2,
    ...overrides,
  };
}
