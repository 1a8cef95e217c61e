/** Start `dseek serve` as a child process on 127.0.0.1 and wait for its URL (benchmarks and load runs). */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/dseek.js', import.meta.url));

export interface ServerProcess {
  readonly url: string;
  readonly proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

export async function startServe(args: string[]): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [bin, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dseek serve did not start in 120 s:\n${log}`)), 120_000);
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
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

/** A Prometheus gauge or counter from /metrics. */
export async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} ([0-9.e+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}
