/** A bad GGUF gets a one-line error naming the problem, through the CLI as a user meets it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToGguf } from '../../src/formats/convert.js';
import { openGguf, writeGguf, type GgufValue } from '../../src/formats/gguf.js';
import { goldenRoot, repoRoot } from '../paths.js';

const dir = mkdtempSync(join(tmpdir(), 'dseek-gguf-errors-'));
const good = join(dir, 'lite.gguf');
convertToGguf(join(goldenRoot, 'lite'), good, { type: 'f32' });

/** Rewrite the good file with edited metadata and/or tensors. */
function variant(name: string, edit: { metadata?: (m: Array<[string, GgufValue]>) => void; drop?: string }): string {
  const f = openGguf(good);
  const metadata = [...f.metadata].map(([k, v]) => [k, v] as [string, GgufValue]).filter(([k]) => k !== 'general.alignment');
  edit.metadata?.(metadata);
  const tensors = f.tensors.filter((t) => t.name !== edit.drop).map((t) => ({ name: t.name, type: t.type, shape: t.shape, data: Uint8Array.from(f.readTensor(t.name).data) }));
  f.close();
  const out = join(dir, `${name}.gguf`);
  writeGguf(out, { metadata, tensors });
  return out;
}

const run = (model: string) => spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'logits', '--model', model, '--tokens', '0,5'], { encoding: 'utf8' });

test('the converted file itself works', () => {
  const r = run(good);
  assert.equal(r.status, 0, r.stderr);
});

const cases: Array<[string, () => string, RegExp]> = [
  ['another architecture', () => variant('llama', { metadata: (m) => m.forEach((e) => e[0] === 'general.architecture' && (e[1] = { type: 'string', value: 'llama' })) }), /general\.architecture.*llama/],
  ['a missing tensor', () => variant('missing', { drop: 'blk.1.ffn_up_exps.weight' }), /blk\.1\.ffn_up_exps\.weight.*missing/],
  ['a shape that disagrees with the metadata', () => variant('shape', { metadata: (m) => m.forEach((e) => e[0] === 'deepseek2.expert_feed_forward_length' && (e[1] = { type: 'u32', value: 33 })) }), /shape/],
  ['an unsupported tensor type', () => {
    // Patch the first tensor's type id in the header to 16 (IQ2_XXS).
    const bytes = readFileSync(good);
    const f = openGguf(good);
    const first = f.tensors[0]!;
    f.close();
    const nameBytes = Buffer.from(first.name);
    const at = bytes.indexOf(nameBytes) + nameBytes.length + 4 + 8 * first.dims.length;
    bytes.writeUInt32LE(16, at);
    const out = join(dir, 'type.gguf');
    writeFileSync(out, bytes);
    return out;
  }, /IQ2_XXS/],
  ['a truncated file', () => {
    const out = join(dir, 'truncated.gguf');
    const bytes = readFileSync(good);
    writeFileSync(out, bytes.subarray(0, bytes.length - 1000));
    return out;
  }, /lite|truncated|past the end|outside/i],
];

for (const [label, make, pattern] of cases) {
  test(`bad GGUF: ${label}`, () => {
    const r = run(make());
    assert.notEqual(r.status, 0);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
  });
}
