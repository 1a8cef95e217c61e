/**
 * `dseek serve` as a user starts it, for the chat page's end-to-end tests: the CLI on 127.0.0.1,
 * port 0, with the shipped default model when it is there (else the fixture model: random
 * weights and the real V3 tokenizer, gibberish that streams all the same).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { textModel } from '../fixtures.js';
import { repoRoot } from '../paths.js';

export interface Served {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly model: string;
  log(): string;
  stop(): Promise<void>;
}

/** models/default when it has been shipped (config, weights and tokenizer), else the fixture model. */
export function pageTestModel(): string {
  const shipped = join(repoRoot, 'models', 'default');
  const complete = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].every((f) => existsSync(join(shipped, f)));
  return complete ? shipped : textModel();
}

export async function serve(model: string, extra: readonly string[] = []): Promise<Served> {
  const diskDir = mkdtempSync(join(tmpdir(), 'dseek-web-disk-'));
  const proc = spawn(process.execPath, [join(repoRoot, 'bin/dseek.js'), 'serve', '--model', model, '--port', '0', '--disk-cache-dir', diskDir, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  proc.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dseek serve did not start within 60 s:\n${log}`)), 60_000);
    proc.stderr!.on('data', () => {
      const m = /listening on (http:\/\/[^\s]+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dseek serve exited with ${code}:\n${log}`));
    });
  });
  return {
    proc,
    url,
    model,
    log: () => log,
    stop: async () => {
      await new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      });
      rmSync(diskDir, { recursive: true, force: true });
    },
  };
}

/** The value of one Prometheus sample, e.g. `dseek_cancellations_total{reason="client_disconnect"}`. */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? NaN : Number(line.slice(sample.length + 1));
}
