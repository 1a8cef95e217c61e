#!/usr/bin/env node
/**
 * Retrains the shipped model (models/default) from scratch: corpus → tokenizer → training → export
 * → model card. Run through `npm run train:default` (which builds dist/ first).
 *
 *   node scripts/train-default.mjs [--resume] [extra dseek-train flags…]
 *
 * --resume continues a killed run from tmp/train-default/checkpoint.json; without it the run folder
 * is cleared first. Any other flag is passed to `dseek train` (e.g. --steps 200 for a quick try;
 * the defaults are the recipe of the shipped model).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(root);
const args = process.argv.slice(2);
const resume = args.includes('--resume');
const passthrough = args.filter((a) => a !== '--resume');
const runDir = 'tmp/train-default';

const started = Date.now();
if (!existsSync('tmp/corpus/kjv.txt') || !existsSync('tmp/corpus/corpus-info.json')) {
  execFileSync(process.execPath, ['scripts/prepare-corpus.mjs', '--out', 'tmp/corpus'], { stdio: 'inherit' });
}
if (!resume) rmSync(runDir, { recursive: true, force: true });

const { Command } = await import('commander');
const { registerTrainCommand } = await import('../dist/src/cli/train.js');
const program = new Command('dseek').exitOverride();
registerTrainCommand(program);
await program.parseAsync(
  [
    'train',
    '--data', 'tmp/corpus/kjv.txt',
    '--out', runDir,
    '--export', 'models/default',
    '--dtype', 'f16',
    '--corpus-info', 'tmp/corpus/corpus-info.json',
    ...(resume ? ['--resume'] : []),
    ...passthrough,
  ],
  { from: 'user' },
);
console.error(`train:default: done in ${((Date.now() - started) / 60000).toFixed(1)} min → models/default`);
