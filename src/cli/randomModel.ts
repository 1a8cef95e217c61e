/** `dseek random-model`: a random-weight GGUF with a real model's shapes, for benchmarks. */
import type { Command } from 'commander';
import { isConvertType } from '../formats/convert.js';
import { InvalidInputError } from '../errors.js';
import { RANDOM_MODEL_PRESETS, writeRandomModel } from '../model/randomModel.js';
import { parseInteger } from './args.js';

export function registerRandomModelCommand(program: Command): void {
  program
    .command('random-model')
    .description('write a random-weight GGUF with the real shapes (current llama.cpp layout), for benchmarks')
    .argument('<out>', 'output .gguf file')
    .requiredOption('--like <name>', `shapes to copy: ${Object.keys(RANDOM_MODEL_PRESETS).join(', ')}`)
    .option('-t, --type <type>', 'weight type: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m', 'q4_0')
    .option('--layers <n>', 'number of layers (default: the real model’s)')
    .action((out: string, flags: { like: string; type: string; layers?: string }) => {
      if (!isConvertType(flags.type)) throw new InvalidInputError('--type', `unsupported type "${flags.type}": use f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k or q4_k_m`);
      const t0 = performance.now();
      let last = -1;
      const bytes = writeRandomModel(out, {
        like: flags.like,
        type: flags.type,
        ...(flags.layers !== undefined ? { layers: parseInteger('--layers', flags.layers, 1) } : {}),
        onProgress: (done, total) => {
          const pct = Math.floor((100 * done) / total / 10) * 10;
          if (pct !== last) {
            last = pct;
            process.stderr.write(`random-model: ${pct} %\r`);
          }
        },
      });
      process.stderr.write(`random-model: wrote ${out} (${(bytes / 1e9).toFixed(2)} GB of weights) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    });
}
