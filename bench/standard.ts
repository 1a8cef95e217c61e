/**
 * `npm run bench`: the standard set. Random-weight GGUFs with DeepSeek-V2-Lite's exact shapes
 * (made once with `dseek random-model`, kept in ~/.cache/dseek/bench; Q4_K_M, the mix most hub GGUFs
 * use, rather than plain Q4_K), then `dseek bench` on each: pp512 and tg128 at an empty context,
 * then after 512 and 4,096 tokens of context (one repeat each there: every repeat prefills its
 * context again), 2 threads — the figures the kernels and long-context issues compare with
 * llama.cpp and ik_llama.cpp. Prints one table; `--json` the rows.
 *
 *   npm run bench -- [--types q4_0,q8_0,q4_k_m] [--layers 27] [--threads 2] [--quick] [--json]
 */
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from '../src/cli/bench.js';

const { values } = parseArgs({
  options: {
    types: { type: 'string', default: 'q4_0,q8_0,q4_k_m' },
    layers: { type: 'string' },
    threads: { type: 'string', default: '2' },
    quick: { type: 'boolean', default: false },
    depths: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const bin = fileURLToPath(new URL('../../bin/dseek.js', import.meta.url));
const cacheDir = join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'dseek', 'bench');
mkdirSync(cacheDir, { recursive: true });
const layers = values.layers ?? (values.quick ? '4' : '27');
const [pp, tg] = values.quick ? ['128', '32'] : ['512', '128'];
const depths = (values.depths ?? (values.quick ? '0' : '0,512,4096')).split(',').map(Number);

type Row = BenchResult & { file: string };
const rows: Row[] = [];
for (const type of values.types.split(',')) {
  const file = join(cacheDir, `v2-lite-${layers}L-${type}.gguf`);
  if (!existsSync(file)) {
    process.stderr.write(`bench: writing ${file}\n`);
    execFileSync(process.execPath, [bin, 'random-model', '--like', 'v2-lite', '--type', type, '--layers', layers, file], { stdio: 'inherit' });
  }
  for (const depth of depths) {
    const repeats = depth === 0 ? '3' : '1';
    const args = [bin, 'bench', '--model', file, '-p', pp, '-n', tg, '-d', String(depth), '-r', repeats, '--threads', values.threads, '--json'];
    process.stderr.write(`bench: ${type} pp${pp} + tg${tg}${depth ? ` after ${depth}` : ''}…\n`);
    const r = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 })) as Row;
    rows.push({ ...r, file: `V2-Lite ${layers}L ${type}`, depth });
  }
}
if (values.json) {
  console.log(JSON.stringify(rows));
} else {
  const f = (x: number | null, d = 1) => (x === null ? 'n/a' : x.toFixed(d));
  console.log(`| file | pp${pp} tok/s | tg${tg} tok/s | context | load s | peak RSS MB | bandwidth GB/s | decode ceiling tok/s | tg % of ceiling |`);
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.file} | ${f(r.pp_tok_s)} ± ${f(r.pp_tok_s_sd)} | ${f(r.tg_tok_s)} ± ${f(r.tg_tok_s_sd)} | ${r.depth} | ${f(r.load_s, 2)} | ${f(r.rss_mb, 0)} | ${f(r.bandwidth_gb_s)} | ${f(r.decode_ceiling_tok_s)} | ${f(r.tg_pct_of_ceiling)} |`,
    );
  }
}
