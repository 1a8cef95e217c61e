/** The text paths of the CLI (tokenizer, chat template, streaming, stop strings) on a model with the real V3 tokenizer. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { textModel } from '../fixtures.js';
import { repoRoot } from '../paths.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';

const model = textModel();
const dseek = (args: string[], input?: string) => {
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin/dseek.js'), ...args], { encoding: 'utf8', input, timeout: 60_000 });
  // A process killed by a signal has no status: the signal goes into stderr, so an assertion on the code names it.
  return { code: r.status, stdout: r.stdout, stderr: r.signal ? `killed by ${r.signal}\n${r.stderr}` : r.stderr };
};

test('generate --json: text is the decoded tokens; the same seed gives the same output', () => {
  const args = ['generate', '--model', model, '--tokens', '0,100,200', '-n', '6', '--seed', '9', '--temperature', '0.9', '--json'];
  const a = dseek(args);
  const b = dseek(args);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  const out = JSON.parse(a.stdout) as { tokens: number[]; text: string };
  assert.equal(out.tokens.length, 6);
  const tokenizer = loadTokenizer(model)!;
  assert.equal(out.text, tokenizer.decode(out.tokens, { skipSpecial: true }));
});

test('run --chat streams an answer; --stop cuts it before the stop string', () => {
  const r = dseek(['run', '--model', model, '--chat', '--system', 'Be brief.', 'Hello', '-n', '12', '--seed', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.trim().length > 0);
  const full = dseek(['run', '--model', model, 'The cat', '-n', '12', '--seed', '4']).stdout.replace(/\n$/, '');
  const stop = full.trim().slice(2, 3);
  const cut = dseek(['run', '--model', model, 'The cat', '-n', '12', '--seed', '4', '--stop', stop]).stdout.replace(/\n$/, '');
  assert.equal(cut, full.slice(0, full.indexOf(stop)));
});

test('chat answers every line of piped input and keeps the conversation', () => {
  const r = dseek(['chat', '--model', model, '-n', '4', '--seed', '2'], 'Hello\nAnd then?\n/reset\nAgain\n');
  assert.equal(r.code, 0, r.stderr);
  // One prompt per line read, plus the first.
  assert.equal(r.stdout.split('> ').length - 1, 5);
});

test('chat keeps the conversation in the prefix cache: the second turn reads the first from it (--usage)', () => {
  // The bundled model (64-token pages): a first turn of more than a page, then a second question.
  const r = dseek(['chat', '-n', '48', '--temperature', '0', '--usage', '--system', 'Thou art a scribe of the book of Genesis.'], 'Tell me of the creation of the heaven and the earth.\nAnd then?\n');
  assert.equal(r.code, 0, r.stderr);
  const turns = [...r.stderr.matchAll(/\[(\d+) prompt tokens, (\d+) from the cache; (\d+) generated\]/g)].map((m) => m.slice(1).map(Number));
  assert.equal(turns.length, 2, r.stderr);
  assert.equal(turns[0]![1], 0);
  assert.ok(turns[1]![1]! >= 64, `second turn: ${turns[1]![1]} of ${turns[1]![0]} prompt tokens from the cache`);
});
