/**
 * GGUF conventions of llama.cpp's converter and model saver for `deepseek2` that dseek must read
 * as llama.cpp does: `attention.q_lora_rank = 0` (the saver's Lite files) or absent means no
 * q_lora; `expert_gating_func` absent (V2/V2.5 files from before the key) or 0 means softmax;
 * group counts 0 mean one group; absent `expert_weights_norm` / `expert_weights_scale` / yarn beta
 * keys take llama.cpp's defaults; and old files in the legacy MLA layout (`attn_kv_b`, no
 * `attn_k_b`/`attn_v_b`) without `expert_gating_func`. Each variant of the golden Lite model
 * must give the same logits as the converter's own file, and the golden logits.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToGguf } from '../../src/formats/convert.js';
import { openGguf, writeGguf, type GgufValue } from '../../src/formats/gguf.js';
import { loadModel } from '../../src/model/load.js';
import { referenceBackend } from '../../src/kernels/reference/index.js';
import { goldenRoot } from '../paths.js';

const dir = mkdtempSync(join(tmpdir(), 'dseek-gguf-conventions-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const golden = JSON.parse(readFileSync(join(goldenRoot, 'lite', 'golden.json'), 'utf8')) as { prompt_tokens: number[][]; logits_f64: number[][][] };
const tokens = golden.prompt_tokens[0]!;

const files = {
  current: join(dir, 'lite-current.gguf'),
  legacy: join(dir, 'lite-legacy.gguf'),
};
convertToGguf(join(goldenRoot, 'lite'), files.current, { type: 'f32' });
convertToGguf(join(goldenRoot, 'lite'), files.legacy, { type: 'f32', layout: 'legacy' });

type Meta = Array<[string, GgufValue]>;
const K = (name: string) => `deepseek2.${name}`;

/** The file rewritten with its metadata edited. */
function variant(from: string, name: string, edit: (m: Meta) => Meta): string {
  const f = openGguf(from);
  const metadata = edit([...f.metadata].map(([k, v]) => [k, v] as [string, GgufValue]).filter(([k]) => k !== 'general.alignment'));
  const tensors = f.tensors.map((t) => ({ name: t.name, type: t.type, shape: t.shape, data: Uint8Array.from(f.readTensor(t.name).data) }));
  f.close();
  const out = join(dir, `${name}.gguf`);
  writeGguf(out, { metadata, tensors });
  return out;
}
const without = (...keys: string[]) => (m: Meta) => m.filter(([k]) => !keys.map(K).includes(k));
const withU32 = (key: string, value: number) => (m: Meta) => [...m.filter(([k]) => k !== K(key)), [K(key), { type: 'u32', value }] as [string, GgufValue]];

function logits(path: string): Float32Array | Float64Array {
  const { model } = loadModel(path, { backend: referenceBackend });
  return Float64Array.from(model.forward(tokens, model.createCache(), { logits: 'all' }));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const baseline = logits(files.current);

test('the converter’s own file matches the golden logits (the reference for the variants below)', () => {
  assert.ok(maxDiff(baseline, golden.logits_f64[0]!.flat()) < 1e-4);
  const legacy = openGguf(files.legacy);
  assert.ok(legacy.tensor('blk.0.attn_kv_b.weight') && !legacy.tensor('blk.0.attn_k_b.weight'), 'the legacy file has attn_kv_b only');
  legacy.close();
});

const cases: Array<[string, () => string]> = [
  ['attention.q_lora_rank = 0 (llama.cpp’s model saver, Lite)', () => variant(files.current, 'qlora0', withU32('attention.q_lora_rank', 0))],
  ['attention.q_lora_rank absent', () => variant(files.current, 'qlora-absent', without('attention.q_lora_rank'))],
  ['expert_gating_func absent (V2/V2.5 files)', () => variant(files.current, 'gating-absent', without('expert_gating_func'))],
  ['expert_gating_func = 0 (none)', () => variant(files.current, 'gating0', withU32('expert_gating_func', 0))],
  ['expert_group_count = expert_group_used_count = 0', () => variant(files.current, 'groups0', (m) => withU32('expert_group_used_count', 0)(withU32('expert_group_count', 0)(m)))],
  ['expert_weights_norm, expert_weights_scale and the yarn beta keys absent', () =>
    variant(files.current, 'defaults', without('expert_weights_norm', 'expert_weights_scale', 'rope.scaling.yarn_beta_fast', 'rope.scaling.yarn_beta_slow'))],
  ['an old legacy-layout file (attn_kv_b, no attn_k_b/attn_v_b) without expert_gating_func', () => variant(files.legacy, 'old-v2', without('expert_gating_func', 'attention.q_lora_rank'))],
];

for (const [label, make] of cases) {
  test(`GGUF convention: ${label} loads and gives the converter file’s logits`, () => {
    const path = make();
    const got = logits(path);
    assert.ok(maxDiff(got, baseline) < 1e-5, `max |diff| ${maxDiff(got, baseline)}`);
    assert.equal(loadModel(path, { backend: referenceBackend }).config.qLoraRank, null);
  });
}

test('expert_gating_func = 3 is still refused, naming the key and the values allowed', () => {
  const path = variant(files.current, 'gating3', withU32('expert_gating_func', 3));
  assert.throws(() => loadModel(path, { backend: referenceBackend }), /deepseek2\.expert_gating_func = 3.*0 or 1 \(softmax\) or 2 \(sigmoid\)/);
});
