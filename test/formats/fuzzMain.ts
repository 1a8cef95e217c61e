/**
 * The big fuzz run: `node dist/test/formats/fuzzMain.js [--cases N] [--seed S] [--format gguf|safetensors|both]
 * [--save DIR] [--histogram]`. Prints one JSON line per format (with --histogram, then the most
 * common typed errors) and exits 1 when any case failed (failing inputs are copied to DIR when given).
 */
import { fuzzGguf, fuzzSafetensors, type FuzzResult } from './fuzzCore.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : fallback;
}

const cases = Number(arg('cases', '100000'));
const seed = Number(arg('seed', String(Date.now() % 1_000_000)));
const format = arg('format', 'both');
const save = arg('save', '');
if (!Number.isSafeInteger(cases) || cases < 1 || !Number.isSafeInteger(seed) || !['gguf', 'safetensors', 'both'].includes(format)) {
  console.error('usage: fuzzMain [--cases N] [--seed S] [--format gguf|safetensors|both] [--save DIR] [--histogram]');
  process.exit(2);
}
const histogram = process.argv.includes('--histogram') ? new Map<string, number>() : undefined;
const options = { ...(save === '' ? {} : { saveFailuresTo: save }), ...(histogram === undefined ? {} : { histogram }) };
const results: FuzzResult[] = [];
for (const f of format === 'both' ? ['gguf', 'safetensors'] : [format]) {
  const start = performance.now();
  const r = f === 'gguf' ? fuzzGguf(cases, seed, options) : fuzzSafetensors(cases, seed, options);
  results.push(r);
  console.log(JSON.stringify({ ...r, seconds: Number(((performance.now() - start) / 1000).toFixed(1)) }));
  if (histogram !== undefined) {
    for (const [shape, n] of [...histogram].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${String(n).padStart(8)}  ${shape}`);
    histogram.clear();
  }
}
process.exit(results.some((r) => r.failures > 0) ? 1 : 0);
