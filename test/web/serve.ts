/**
 * `dseek serve` as a user starts it, for the chat page's end-to-end tests: the CLI on 127.0.0.1,
 * port 0, with the shipped default model when it is there (else the fixture model: random
 * weights and the real V3 tokenizer, gibberish that streams all the same).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { textModel } from '../fixtures.js';
import { repoRoot } from '../paths.js';
import { startServe } from '../serveProcess.js';

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
  const server = await startServe(['--model', model, '--disk-cache-dir', diskDir, ...extra], 60_000);
  return {
    proc: server.proc,
    url: server.url,
    model,
    log: server.log,
    stop: async () => {
      await server.stop();
      rmSync(diskDir, { recursive: true, force: true });
    },
  };
}

export { metric } from '../serveProcess.js';
