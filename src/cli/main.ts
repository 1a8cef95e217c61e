/**
 * The `dseek` command (contracts in shared/DESIGN.md). Every command exits non-zero with a
 * one-line cause on bad input.
 */
import { createInterface } from 'node:readline';
import { Command, CommanderError, Option } from 'commander';
import { DseekError, InvalidInputError } from '../errors.js';
import { loadModel, type LoadedModel } from '../model/load.js';
import { generate, type GenerateOptions, type GenerationResult } from '../engine/generate.js';
import { renderChat, type ChatMessage } from '../tokenizer/chatTemplate.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { formatInspectReport, inspectModel } from './inspect.js';
import { registerServeCommand } from './serve.js';
import { registerBenchCommand } from './bench.js';
import { inspectGguf, registerConvertCommand } from './convert.js';
import { registerRandomModelCommand } from './randomModel.js';
import { registerTrainCommand } from './train.js';
import { parseInteger, parseTokenList, resolveModelPath, samplingFromFlags, type SamplingFlags } from './args.js';

interface ModelFlags {
  model?: string;
  cacheType?: 'f32' | 'f16';
  ctxSize?: string;
}

interface GenerationFlags extends SamplingFlags, ModelFlags {
  maxTokens?: string;
  stop?: string[];
  ignoreEos?: boolean;
}

function addModelFlags(cmd: Command): Command {
  return cmd
    .option('-m, --model <path>', 'Hugging Face model folder (config.json + *.safetensors); default: the bundled model')
    .addOption(new Option('--cache-type <type>', 'latent cache storage type').choices(['f32', 'f16']))
    .option('-c, --ctx-size <n>', 'context window in tokens (default: the model’s)');
}

function addSamplingFlags(cmd: Command, defaultMaxTokens: number): Command {
  return cmd
    .option('-n, --max-tokens <n>', `tokens to generate (default ${defaultMaxTokens})`)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (default 1)')
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1]')
    .option('--top-k <k>', 'keep only the k most likely tokens (0 = off)')
    .option('--min-p <p>', 'drop tokens below min-p × the top probability')
    .option('--repeat-penalty <r>', 'repetition penalty (1 = off)')
    .option('--frequency-penalty <f>', 'OpenAI frequency penalty in [-2, 2]')
    .option('--presence-penalty <f>', 'OpenAI presence penalty in [-2, 2]')
    .option('--seed <n>', 'random seed: the same seed gives the same output')
    .option('--stop <text...>', 'stop strings (not included in the output)')
    .option('--ignore-eos', 'keep generating past end-of-sequence tokens');
}

async function load(flags: ModelFlags, precision: 'f32' | 'f64' = 'f32'): Promise<LoadedModel> {
  return loadModel(await resolveModelPath(flags.model), { precision });
}

function generationOptions(flags: GenerationFlags, defaultMaxTokens: number): GenerateOptions {
  return {
    ...samplingFromFlags(flags),
    maxTokens: flags.maxTokens === undefined ? defaultMaxTokens : parseInteger('--max-tokens', flags.maxTokens),
    ...(flags.stop ? { stop: flags.stop } : {}),
    ...(flags.ignoreEos ? { ignoreEos: true } : {}),
    ...(flags.cacheType ? { cacheType: flags.cacheType } : {}),
    ...(flags.ctxSize !== undefined ? { contextLength: parseInteger('--ctx-size', flags.ctxSize, 1) } : {}),
  };
}

function requireTokenizer(m: LoadedModel): Tokenizer {
  if (!m.tokenizer) {
    throw new InvalidInputError('--model', `${m.path} has no tokenizer.json: text prompts need one (use \`dseek generate --tokens\`)`);
  }
  return m.tokenizer;
}

/** Run generation, writing each piece of text to stdout as it becomes final. */
function streamToStdout(m: LoadedModel, prompt: number[], options: GenerateOptions): GenerationResult {
  const it = generate(m.model, m.tokenizer, prompt, options);
  for (;;) {
    const step = it.next();
    if (step.done) return step.value;
    if (step.value.text) process.stdout.write(step.value.text);
  }
}

function chatPrompt(tokenizer: Tokenizer, messages: ChatMessage[]): number[] {
  if (!tokenizer.chatTemplate) {
    throw new InvalidInputError('--chat', 'this model’s tokenizer_config.json has no chat_template');
  }
  const text = renderChat(tokenizer.chatTemplate, messages, {
    bosToken: tokenizer.bosId !== null ? new TextDecoder().decode(tokenizer.tokenBytes(tokenizer.bosId)) : '',
    eosToken: tokenizer.eosId !== null ? new TextDecoder().decode(tokenizer.tokenBytes(tokenizer.eosId)) : '',
    addGenerationPrompt: true,
  });
  return tokenizer.encode(text);
}

export function buildProgram(): Command {
  const program = new Command('dseek')
    .description('DeepSeek-V2/V3 inference in TypeScript: exact MLA + DeepSeekMoE')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  addSamplingFlags(
    addModelFlags(program.command('run').description('generate text from a prompt, streamed to stdout').argument('<prompt>', 'the prompt text')),
    256,
  )
    .option('--chat', 'wrap the prompt in the model’s chat template')
    .option('--system <text>', 'system message (with --chat)')
    .action(async (prompt: string, flags: GenerationFlags & { chat?: boolean; system?: string }) => {
      if (prompt.length === 0) throw new InvalidInputError('prompt', 'empty: give some text to continue');
      const m = await load(flags);
      const tokenizer = requireTokenizer(m);
      const messages: ChatMessage[] = [];
      if (flags.system) messages.push({ role: 'system', content: flags.system });
      messages.push({ role: 'user', content: prompt });
      const tokens = flags.chat ? chatPrompt(tokenizer, messages) : tokenizer.encode(prompt);
      streamToStdout(m, tokens, generationOptions(flags, 256));
      process.stdout.write('\n');
    });

  addSamplingFlags(addModelFlags(program.command('chat').description('interactive multi-turn chat in the terminal')), 512)
    .option('--system <text>', 'system message')
    .action(async (flags: GenerationFlags & { system?: string }) => {
      const m = await load(flags);
      const tokenizer = requireTokenizer(m);
      const options = generationOptions(flags, 512);
      const messages: ChatMessage[] = flags.system ? [{ role: 'system', content: flags.system }] : [];
      chatPrompt(tokenizer, [{ role: 'user', content: 'check' }]); // fail early without a template
      const rl = createInterface({ input: process.stdin, terminal: false });
      process.stdout.write(`dseek chat — ${m.path}. Empty line or Ctrl-D to quit, /reset to start over.\n> `);
      // Lines are read through the async iterator, which buffers them: piped input is not lost
      // while an answer is being generated.
      for await (const raw of rl) {
        const line = raw.trim();
        if (line === '') break;
        if (line === '/reset') {
          messages.splice(flags.system ? 1 : 0);
        } else {
          messages.push({ role: 'user', content: line });
          const result = streamToStdout(m, chatPrompt(tokenizer, messages), options);
          process.stdout.write('\n');
          messages.push({ role: 'assistant', content: result.text });
        }
        process.stdout.write('> ');
      }
      rl.close();
      process.stdout.write('\n');
    });

  addModelFlags(program.command('logits').description('print the logits of every position as JSON'))
    .requiredOption('--tokens <ids>', 'comma-separated token ids, e.g. 0,17,42')
    .option('--f64', 'compute the whole forward pass in float64 (a reference run)')
    .option('--attention <form>', 'MLA form: auto, expanded or absorbed', 'auto')
    .action(async (flags: ModelFlags & { tokens: string; f64?: boolean; attention: string }) => {
      const tokens = parseTokenList('--tokens', flags.tokens);
      if (!['auto', 'expanded', 'absorbed'].includes(flags.attention)) {
        throw new InvalidInputError('--attention', `must be auto, expanded or absorbed, got ${flags.attention}`);
      }
      const m = await load(flags, flags.f64 ? 'f64' : 'f32');
      const ctx = flags.ctxSize !== undefined ? parseInteger('--ctx-size', flags.ctxSize, 1) : undefined;
      const cache = m.model.createCache({ ...(flags.cacheType ? { dtype: flags.cacheType } : {}), ...(ctx ? { maxTokens: ctx } : {}) });
      const logits = m.model.forward(tokens, cache, { logits: 'all', attention: flags.attention as 'auto' });
      const V = m.config.vocabSize;
      const rows: number[][] = [];
      for (let t = 0; t < tokens.length; t++) rows.push(Array.from(logits.subarray(t * V, (t + 1) * V)));
      process.stdout.write(`${JSON.stringify({ tokens, logits: rows })}\n`);
    });

  addSamplingFlags(addModelFlags(program.command('generate').description('generate from token ids')), 16)
    .requiredOption('--tokens <ids>', 'comma-separated prompt token ids')
    .option('--json', 'print {"prompt_tokens","tokens","text"} as JSON')
    .action(async (flags: GenerationFlags & { tokens: string; json?: boolean }) => {
      const prompt = parseTokenList('--tokens', flags.tokens);
      const m = await load(flags);
      const it = generate(m.model, m.tokenizer, prompt, generationOptions(flags, 16));
      let step = it.next();
      while (!step.done) {
        if (!flags.json && step.value.text) process.stdout.write(step.value.text);
        step = it.next();
      }
      const result = step.value;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ prompt_tokens: result.promptTokens, tokens: result.tokens, text: result.text })}\n`);
      } else if (!m.tokenizer) {
        process.stdout.write(`${result.tokens.join(',')}\n`);
      } else {
        process.stdout.write('\n');
      }
    });

  program
    .command('inspect')
    .description('config, total and activated parameters, weight types, MLA cache bytes against MHA/GQA')
    .argument('<model>', 'model folder, config.json or .gguf file')
    .option('--json', 'print the report as JSON')
    .action((path: string, flags: { json?: boolean }) => {
      if (path.endsWith('.gguf') && !flags.json) {
        process.stdout.write(`${inspectGguf(path)}\n`);
        return;
      }
      const report = inspectModel(path);
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInspectReport(report)}\n`);
    });

  registerServeCommand(program);
  registerBenchCommand(program);
  registerConvertCommand(program);
  registerRandomModelCommand(program);
  registerTrainCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; commander already printed its message for usage errors.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    if (err instanceof DseekError) {
      process.stderr.write(`dseek: ${err.message}\n`);
    } else {
      process.stderr.write(`dseek: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
      if (process.env['DSEEK_DEBUG'] && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    }
    process.exitCode = 1;
  }
}
