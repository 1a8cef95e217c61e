/**
 * `dseek train` as a separate process, for the kill-and-resume test: registers the train command on
 * a bare program (as src/cli/main.ts does) and runs argv. Does nothing unless argv[2] is "train", so
 * that a test runner that picks up this file runs it harmlessly.
 */
import { Command } from 'commander';
import { registerTrainCommand } from '../../src/cli/train.js';

if (process.argv[2] === 'train') {
  const program = new Command('dseek').exitOverride();
  registerTrainCommand(program);
  program.parse(process.argv.slice(2), { from: 'user' });
}
