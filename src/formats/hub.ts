/**
 * Hugging Face hub ids as models (`deepseek-ai/DeepSeek-V2-Lite-Chat`): the files dseek needs are
 * downloaded once into the cache (`$XDG_CACHE_HOME/dseek/hub/<org>--<name>`), with progress, resumed
 * with HTTP Range requests after an interruption, and used from there afterwards without the
 * network. `HF_ENDPOINT` points at another hub (a mirror, or a local test server); `HF_TOKEN`
 * authorises gated models.
 */
import { createWriteStream, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DseekError, InvalidInputError } from '../errors.js';

/** `org/name`: what the hub calls a repository id. A path that exists on disk is never one. */
export function isHubId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(s) && !s.includes('..') && !existsSync(s);
}

export class HubDownloadError extends DseekError {
  constructor(id: string, why: string) {
    super('hub_download', `could not download ${id}: ${why} (check the network, HF_ENDPOINT and HF_TOKEN, or pass a local folder or .gguf file)`);
  }
}

export interface HubOptions {
  readonly endpoint?: string;
  readonly cacheDir?: string;
  readonly token?: string;
  readonly signal?: AbortSignal;
  /** Called as bytes arrive: file name, bytes done and total (0 when unknown). */
  readonly onProgress?: (file: string, done: number, total: number) => void;
}

export function hubCacheDir(): string {
  return join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'dseek', 'hub');
}

/** Files of a repository that loading needs: config, weights (safetensors), tokenizer, template. */
function wanted(file: string): boolean {
  return (
    ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors.index.json'].includes(file) ||
    (file.endsWith('.safetensors') && !file.includes('/'))
  );
}

/** The local folder holding hub model `id`, downloading what is missing. */
export async function resolveHubModel(id: string, options: HubOptions = {}): Promise<string> {
  if (!isHubId(id)) throw new InvalidInputError('--model', `"${id}" is not a hub id (org/name)`);
  const endpoint = (options.endpoint ?? process.env['HF_ENDPOINT'] ?? 'https://huggingface.co').replace(/\/+$/, '');
  const dir = join(options.cacheDir ?? hubCacheDir(), id.replace('/', '--'));
  const marker = join(dir, '.complete');
  if (existsSync(marker)) return dir;
  const token = options.token ?? process.env['HF_TOKEN'];
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const get = async (url: string, extra: Record<string, string> = {}): Promise<Response> => {
    let res: Response;
    try {
      res = await fetch(url, { headers: { ...headers, ...extra }, redirect: 'follow', ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      throw new HubDownloadError(id, `${url}: ${(err as Error).message}`);
    }
    if (res.status === 401 || res.status === 403) throw new HubDownloadError(id, `${url} answered ${res.status}: the model is gated or private (set HF_TOKEN)`);
    if (res.status === 404) throw new HubDownloadError(id, `${url} answered 404: no such model or file`);
    if (!res.ok && res.status !== 206) throw new HubDownloadError(id, `${url} answered ${res.status}`);
    return res;
  };

  const info = (await (await get(`${endpoint}/api/models/${id}`)).json()) as { siblings?: Array<{ rfilename?: unknown }> };
  const files = (info.siblings ?? []).map((s) => s.rfilename).filter((f): f is string => typeof f === 'string' && wanted(f));
  if (!files.includes('config.json') || !files.some((f) => f.endsWith('.safetensors'))) {
    throw new HubDownloadError(id, 'the repository has no config.json and *.safetensors (for a GGUF repository, download the .gguf file you want and pass its path)');
  }
  mkdirSync(dir, { recursive: true });
  for (const file of files) {
    const target = join(dir, file);
    if (existsSync(target)) continue;
    const partial = `${target}.partial`;
    const have = existsSync(partial) ? statSync(partial).size : 0;
    const res = await get(`${endpoint}/${id}/resolve/main/${file}`, have > 0 ? { range: `bytes=${have}-` } : {});
    const resumed = res.status === 206;
    const length = Number(res.headers.get('content-length') ?? 0);
    const total = length ? (resumed ? have + length : length) : 0;
    const out = createWriteStream(partial, { flags: resumed ? 'a' : 'w' });
    let done = resumed ? have : 0;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        done += chunk.byteLength;
        options.onProgress?.(file, done, total);
      }
    } catch (err) {
      throw new HubDownloadError(id, `${file} broke off after ${done} bytes (run again to resume): ${(err as Error).message}`);
    } finally {
      await new Promise<void>((r) => out.end(() => r()));
    }
    if (total && done !== total) throw new HubDownloadError(id, `${file}: got ${done} of ${total} bytes (run again to resume)`);
    renameSync(partial, target);
  }
  writeFileSync(marker, `${new Date().toISOString()} ${endpoint}/${id}\n`);
  return dir;
}
