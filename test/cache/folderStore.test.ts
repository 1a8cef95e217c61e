/**
 * The folder store: asynchronous reads and writes, a size cap over every file in the folder
 * (whoever wrote it) with least-recently-used eviction, and two `dseek serve` processes sharing
 * one folder, each hitting the other's pages.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import OpenAI from 'openai';
import { FolderStore } from '../../src/cache/folderStore.js';
import { textModel } from '../fixtures.js';
import { startServe, type ServerProcess } from '../serveProcess.js';

const scratch = mkdtempSync(join(tmpdir(), 'dseek-folder-store-'));
const live: ServerProcess[] = [];
after(async () => {
  await Promise.all(live.map((s) => s.stop()));
  rmSync(scratch, { recursive: true, force: true });
});

test('what one FolderStore writes, another on the same folder reads; missing keys are null', async () => {
  const dir = join(scratch, 'two-stores');
  const one = new FolderStore({ dir, maxBytes: 1 << 20 });
  const two = new FolderStore({ dir, maxBytes: 1 << 20 });
  await one.put('ns:aa', Uint8Array.from([1, 2, 3]));
  const [found, missing] = await two.get(['ns:aa', 'ns:bb']);
  assert.deepEqual([...found!], [1, 2, 3]);
  assert.equal(missing, null);
  await two.delete('ns:aa');
  assert.deepEqual(await one.get(['ns:aa']), [null]);
  await Promise.all([one.close(), two.close()]);
});

test('the size cap counts files other processes wrote and removes the least recently used first', async () => {
  const dir = join(scratch, 'cap');
  const other = new FolderStore({ dir, maxBytes: 1 << 30 });
  const page = new Uint8Array(1000);
  for (const k of ['a', 'b', 'c']) await other.put(`ns:${k}`, page);
  // Read order makes b the oldest, then c, then a.
  const t = Date.now() / 1000;
  utimesSync(join(dir, 'ns-b.dskc'), t - 30, t - 30);
  utimesSync(join(dir, 'ns-c.dskc'), t - 20, t - 20);
  utimesSync(join(dir, 'ns-a.dskc'), t - 10, t - 10);
  const capped = new FolderStore({ dir, maxBytes: 3500 });
  await capped.put('ns:d', page); // 4 files, 4000 bytes: one must go
  assert.deepEqual(readdirSync(dir).sort(), ['ns-a.dskc', 'ns-c.dskc', 'ns-d.dskc']);
  assert.deepEqual(capped.usage(), { bytes: 3000, entries: 3 });
  await Promise.all([other.close(), capped.close()]);
});

test('two dseek serve processes on one folder store hit each other’s pages, both ways', async () => {
  const model = textModel();
  const dir = join(scratch, 'shared');
  const serve = async () => {
    const s = await startServe(['--model', model, '--page-tokens', '16', '--context-store', dir], 60_000);
    live.push(s);
    return s;
  };
  const [a, b] = await Promise.all([serve(), serve()]);
  const ask = async (s: ServerProcess, prompt: string) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
    const r = await client.completions.create({ model: basename(model), prompt, max_tokens: 4, temperature: 0 });
    return { text: r.choices[0]!.text, hit: (r.usage as unknown as { prompt_cache_hit_tokens: number }).prompt_cache_hit_tokens };
  };
  const waitForFiles = async (n: number) => {
    const until = Date.now() + 20_000;
    while (readdirSync(dir).filter((f) => f.endsWith('.dskc')).length < n) {
      if (Date.now() > until) throw new Error('pages were not written');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const p1 = 'In the beginning was the folder, and the folder was shared. '.repeat(6);
  const p2 = 'Another prompt entirely, answered first by the second server. '.repeat(6);
  const a1 = await ask(a, p1);
  assert.equal(a1.hit, 0);
  await waitForFiles(4);
  const before = readdirSync(dir).length;
  const b1 = await ask(b, p1);
  assert.ok(b1.hit >= 64, `B hits A's pages (${b1.hit})`);
  assert.equal(b1.text, a1.text);
  const b2 = await ask(b, p2);
  assert.equal(b2.hit, 0);
  await waitForFiles(before + 4);
  const a2 = await ask(a, p2);
  assert.ok(a2.hit >= 64, `A hits B's pages (${a2.hit})`);
  assert.equal(a2.text, b2.text);
});
