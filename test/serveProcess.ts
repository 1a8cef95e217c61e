/**
 * `dseek serve` as a user starts it — the CLI on 127.0.0.1, port 0 — for end-to-end tests, the
 * chat-page tests and the load and serving scripts in bench/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/dseek.js', import.meta.url));

export interface ServerProcess {
  readonly url: string;
  readonly proc: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  /** SIGTERM, then wait for the exit. */
  stop(): Promise<void>;
}

export async function startServe(args: readonly string[], timeoutMs = 120_000): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [bin, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dseek serve did not start in ${timeoutMs / 1000} s:\n${log}`)), timeoutMs);
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
    url,
    proc,
    log: () => log,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

/** The value of one Prometheus sample, e.g. `dseek_cancellations_total{reason="client_disconnect"}`. */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? NaN : Number(line.slice(sample.length + 1));
}
