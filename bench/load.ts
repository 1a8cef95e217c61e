/**
 * `npm run load`: 64 concurrent streaming clients against a real `dseek serve` on 127.0.0.1, a
 * third of which disconnect at a random point. Every completed response must equal the
 * single-client answer at temperature 0, no error other than the deliberate disconnects may
 * occur, and the latent-cache memory must return to its baseline. Bounded in requests and time;
 * loopback only.
 *
 *   npm run load -- [--model M] [--clients 64] [--requests 128] [--max-tokens 24] [--seconds 300]
 */
import OpenAI from 'openai';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe, metric } from '../test/serveProcess.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    clients: { type: 'string', default: '64' },
    requests: { type: 'string', default: '128' },
    'max-tokens': { type: 'string', default: '24' },
    seconds: { type: 'string', default: '300' },
    seed: { type: 'string', default: '1' },
  },
});
const defaultModel = fileURLToPath(new URL('../../models/default', import.meta.url));
const model = values.model ?? defaultModel;
if (!existsSync(model)) {
  console.error(`load: no model at ${model}: pass --model <folder or .gguf>`);
  process.exit(2);
}
const clients = Number(values.clients);
const total = Number(values.requests);
const maxTokens = Number(values['max-tokens']);
const deadline = Date.now() + Number(values.seconds) * 1000;
let seed = Number(values.seed) >>> 0 || 1;
const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);

const prompts = [
  'Tell me a short story about a lighthouse.',
  'What is the capital of France?',
  'Write a haiku about memory.',
  'Explain what a cache is to a child.',
  'List three colours of the sea.',
  'Why do cats purr?',
  'Describe the smell of rain.',
  'Give me a riddle.',
];

const server = await startServe(['--model', model, '--parallel', '16', '--queue', String(clients * 2), '--disk-cache-dir', mkdtempSync(join(tmpdir(), 'dseek-load-'))]).catch(
  (err: Error) => {
    console.error(`load: ${err.message.split('\n').filter(Boolean).slice(-1)[0]}`);
    process.exit(2);
  },
);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
const modelName = (await client.models.list()).data[0]!.id;

async function ask(prompt: string, signal?: AbortSignal, stopAfterChunks = Infinity): Promise<{ text: string; finish: string | null; aborted: boolean }> {
  const stream = await client.chat.completions.create(
    { model: modelName, messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens, temperature: 0, stream: true },
    { signal },
  );
  let text = '';
  let finish: string | null = null;
  let chunks = 0;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
    if (++chunks >= stopAfterChunks) return { text, finish, aborted: true };
  }
  return { text, finish, aborted: false };
}

try {
  // Reference answers, one client at a time; this also fills the prefix cache: the baseline.
  const expected = new Map<string, string>();
  for (const p of prompts) expected.set(p, (await ask(p)).text);
  const baseline = await metric(server.url, 'dseek_cache_bytes_in_use');

  let started = 0;
  let completed = 0;
  let disconnected = 0;
  let wrong = 0;
  const errors: string[] = [];
  const t0 = performance.now();
  let tokens = 0;
  const worker = async () => {
    while (started < total && Date.now() < deadline) {
      started++;
      const prompt = prompts[Math.floor(random() * prompts.length)]!;
      const leave = random() < 1 / 3;
      try {
        const r = await ask(prompt, undefined, leave ? 1 + Math.floor(random() * 6) : Infinity);
        if (r.aborted) {
          disconnected++;
          continue;
        }
        completed++;
        tokens += maxTokens;
        if (r.text !== expected.get(prompt)) {
          wrong++;
          if (wrong <= 3) errors.push(`wrong answer for "${prompt}": ${JSON.stringify(r.text)} ≠ ${JSON.stringify(expected.get(prompt))}`);
        }
      } catch (err) {
        errors.push(`request failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, worker));
  const seconds = (performance.now() - t0) / 1000;
  // Disconnected generations are cancelled at the next step: give the engine a moment to settle.
  let after = NaN;
  for (let i = 0; i < 50; i++) {
    after = await metric(server.url, 'dseek_cache_bytes_in_use');
    if (after === baseline && (await metric(server.url, 'dseek_running_sequences')) === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const cancelled = await metric(server.url, 'dseek_cancellations_total{reason="client_disconnect"}');
  console.log(`load: ${clients} clients, ${started} requests in ${seconds.toFixed(1)} s`);
  console.log(`  completed ${completed} (all compared with the single-client answer: ${wrong} differ)`);
  console.log(`  disconnected on purpose ${disconnected}; server counted ${cancelled} client disconnects`);
  console.log(`  generated ≈ ${tokens} tokens by completed requests: ${(tokens / seconds).toFixed(1)} tok/s aggregate`);
  console.log(`  latent cache in use: ${baseline} bytes before, ${after} bytes after`);
  for (const e of errors) console.log(`  ERROR ${e}`);
  const ok = wrong === 0 && errors.length === 0 && after === baseline && completed > 0;
  console.log(ok ? 'load: PASS' : 'load: FAIL');
  process.exitCode = ok ? 0 : 1;
} finally {
  await server.stop();
}
