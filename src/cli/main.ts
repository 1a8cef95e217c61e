/**
 * The `dseek` command (contracts in shared/DESIGN.md). Every command exits non-zero with a
 * one-line cause on bad input.
 */
import { createInterface } from 'node:readline';
import { Command, CommanderError } from 'commander';
import { DseekError, InvalidInputError } from '../errors.js';
import { loadModel as loadWeightsSync, type LoadedModel } from '../model/load.js';
import { loadModel, type ChatMessage, type GenerateOptions, type GenerationResult, type GenerationStream, type Model } from '../index.js';
import { formatInspectReport, inspectModel } from './inspect.js';
import { registerServeCommand } from './serve.js';
import { registerBenchCommand } from './bench.js';
import { inspectGguf, registerConvertCommand } from './convert.js';
import { registerRandomModelCommand } from './randomModel.js';
import { registerTrainCommand } from './train.js';
import { parseInteger, parseTokenList, repackFromFlags, resolveModelPath, samplingFromFlags, type RepackFlags, type SamplingFlags } from './args.js';
import { parseCacheType } from '../cache/pagePool.js';

interface ModelFlags extends RepackFlags {
  model?: string;
  cacheType?: string;
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
    .option('--cache-type <type>', 'latent cache storage: f32 (default here), f16 or q8 (8-bit blocks, 53 % of f16)')
    .option('-c, --ctx-size <n>', 'context window in tokens (default: the model’s)')
    .option('--no-repack', "keep weights in the file's rows (no kernel-owned layout)")
    .option('--repack-cache-size <MiB>', 'cap of the repacked-weights cache (~/.cache/dseek/repacked)');
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

/** The weights for `logits`, which reads the model's own forward pass rather than generating. */
async function loadWeights(flags: ModelFlags, precision: 'f32' | 'f64' = 'f32'): Promise<LoadedModel> {
  return loadWeightsSync(await resolveModelPath(flags.model), { precision, ...repackFromFlags(flags) });
}

/**
 * The model for the generation commands, through the library's loadModel: the same engine the
 * server and library users run (one sequence at a time here, the context the model allows unless
 * --ctx-size says less, and the f32 latent cache unless --cache-type says f16 or q8).
 */
async function openModel(flags: ModelFlags): Promise<Model> {
  const cacheType = parseCacheType(flags.cacheType ?? 'f32', '--cache-type');
  const path = await resolveModelPath(flags.model);
  return loadModel(path, {
    parallel: 1,
    ...repackFromFlags(flags),
    cacheType,
    contextSize: flags.ctxSize !== undefined ? parseInteger('--ctx-size', flags.ctxSize, 2) : Number.MAX_SAFE_INTEGER,
  });
}

/** Runs `body` with the model open, closing it (and its engine thread) however `body` ends. */
async function withModel(flags: ModelFlags, body: (model: Model) => Promise<void>): Promise<void> {
  const model = await openModel(flags);
  try {
    await body(model);
  } finally {
    await model.close(0);
  }
}

function generationOptions(flags: GenerationFlags, defaultMaxTokens: number): GenerateOptions {
  return {
    ...samplingFromFlags(flags),
    maxTokens: flags.maxTokens === undefined ? defaultMaxTokens : parseInteger('--max-tokens', flags.maxTokens, 1),
    ...(flags.stop ? { stop: flags.stop } : {}),
    ...(flags.ignoreEos ? { ignoreEos: true } : {}),
  };
}

function requireTokenizer(model: Model): void {
  if (!model.info.hasTokenizer) {
    throw new InvalidInputError('--model', `${model.info.path} has no tokenizer.json: text prompts need one (use \`dseek generate --tokens\`)`);
  }
}

function requireChatTemplate(model: Model): void {
  if (!model.info.hasChatTemplate) throw new InvalidInputError('--chat', 'this model’s tokenizer_config.json has no chat_template');
}

/** Writes each piece of text to stdout as it becomes final; resolves with the whole result. */
async function streamToStdout(stream: GenerationStream): Promise<GenerationResult> {
  for await (const delta of stream) if (delta.text) process.stdout.write(delta.text);
  return stream.result;
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
      const options = generationOptions(flags, 256);
      await withModel(flags, async (model) => {
        requireTokenizer(model);
        const messages: ChatMessage[] = [];
        if (flags.system) messages.push({ role: 'system', content: flags.system });
        messages.push({ role: 'user', content: prompt });
        if (flags.chat) requireChatTemplate(model);
        await streamToStdout(flags.chat ? model.chat(messages, { ...options, stream: true }) : model.generate(prompt, { ...options, stream: true }));
        process.stdout.write('\n');
      });
    });

  addSamplingFlags(addModelFlags(program.command('chat').description('interactive multi-turn chat in the terminal')), 512)
    .option('--system <text>', 'system message')
    .option('--usage', 'after each answer, print its token counts and prompt-cache hits to stderr')
    .action(async (flags: GenerationFlags & { system?: string; usage?: boolean }) => {
      const options = generationOptions(flags, 512);
      await withModel(flags, async (model) => {
        requireTokenizer(model);
        requireChatTemplate(model);
        const messages: ChatMessage[] = flags.system ? [{ role: 'system', content: flags.system }] : [];
        const rl = createInterface({ input: process.stdin, terminal: false });
        process.stdout.write(`dseek chat — ${model.info.path}. Empty line or Ctrl-D to quit, /reset to start over.\n> `);
        // Lines are read through the async iterator, which buffers them: piped input is not lost
        // while an answer is being generated.
        for await (const raw of rl) {
          const line = raw.trim();
          if (line === '') break;
          if (line === '/reset') {
            messages.splice(flags.system ? 1 : 0);
          } else {
            messages.push({ role: 'user', content: line });
            // The whole conversation is sent each turn, but the engine's prefix cache still holds
            // the latent pages of the turns before (prompt and answer): only the new turn is computed.
            const result = await streamToStdout(model.chat(messages, { ...options, stream: true }));
            process.stdout.write('\n');
            const u = result.usage;
            if (flags.usage) process.stderr.write(`[${u.promptTokens} prompt tokens, ${u.promptCacheHitTokens} from the cache; ${u.completionTokens} generated]\n`);
            // The template writes "Assistant: " + content: the answer's own leading space would double it.
            messages.push({ role: 'assistant', content: result.text.trimStart() });
          }
          process.stdout.write('> ');
        }
        rl.close();
        process.stdout.write('\n');
      });
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
      const cacheType = flags.cacheType !== undefined ? parseCacheType(flags.cacheType, '--cache-type') : undefined;
      const m = await loadWeights(flags, flags.f64 ? 'f64' : 'f32');
      const ctx = flags.ctxSize !== undefined ? parseInteger('--ctx-size', flags.ctxSize, 1) : undefined;
      const cache = m.model.createCache({ ...(cacheType ? { dtype: cacheType } : {}), ...(ctx ? { maxTokens: ctx } : {}) });
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
      const options = generationOptions(flags, 16);
      await withModel(flags, async (model) => {
        const stream = model.generate(prompt, { ...options, stream: true });
        for await (const delta of stream) if (!flags.json && delta.text) process.stdout.write(delta.text);
        const result = await stream.result;
        if (flags.json) {
          process.stdout.write(`${JSON.stringify({ prompt_tokens: prompt, tokens: result.tokens, text: result.text })}\n`);
        } else if (!model.info.hasTokenizer) {
          process.stdout.write(`${result.tokens.join(',')}\n`);
        } else {
          process.stdout.write('\n');
        }
      });
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
