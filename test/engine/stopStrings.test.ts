import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopStringMatcher, MAX_STOP_STRINGS } from '../../src/engine/stopStrings.js';
import { InvalidInputError } from '../../src/errors.js';

/** Reference: text before the earliest-completed stop (tie → longer), or all of it. */
function expected(text: string, stops: string[]): { out: string; stopped: boolean } {
  let best: { start: number; end: number } | undefined;
  for (const s of stops) {
    const at = text.indexOf(s);
    if (at < 0) continue;
    const end = at + s.length;
    if (!best || end < best.end || (end === best.end && at < best.start)) best = { start: at, end };
  }
  return best ? { out: text.slice(0, best.start), stopped: true } : { out: text, stopped: false };
}

/** Stream `chunks` through a fresh matcher; also checks emitted text is always a prefix of `want`. */
function run(stops: string[], chunks: string[], want: string): { out: string; stopped: boolean } {
  const m = new StopStringMatcher(stops);
  let out = '';
  let stopped = false;
  for (const c of chunks) {
    const r = m.push(c);
    out += r.emit;
    assert.ok(want.startsWith(out), `emitted ${JSON.stringify(out)} is not a prefix of ${JSON.stringify(want)}`);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) out += m.flush();
  return { out, stopped };
}

/** Every way to cut `text` into non-empty chunks (2^(n-1) of them). */
function* chunkings(text: string): Generator<string[]> {
  const n = text.length;
  for (let mask = 0; mask < 1 << Math.max(0, n - 1); mask++) {
    const chunks: string[] = [];
    let from = 0;
    for (let i = 1; i < n; i++) {
      if (mask & (1 << (i - 1))) {
        chunks.push(text.slice(from, i));
        from = i;
      }
    }
    chunks.push(text.slice(from));
    yield chunks;
  }
}

const CASES: [string, string[]][] = [
  ['aab', ['ab']],
  ['xaaabaab', ['aab']],
  ['abababc', ['ababc']],
  ['hello world', ['xyz']],
  ['hello wor', ['world']], // partial match at the end, never completed
  ['say STOP now', ['STOP']],
  ['xxbarfoo', ['foo', 'bar']],
  ['abcde', ['abcd', 'bc']], // "bc" completes first
  ['zab', ['b', 'ab']], // same end: the longer one wins
  ['aaaaaaaaaaaa', ['aaab', 'b']],
  ['one\n\nUser: hi', ['\n\nUser:', '\nUser']],
  ['no stops at all', []],
  ['你好。世界', ['。']],
];

test('every chunking of the text gives the same output as the whole text', () => {
  for (const [text, stops] of CASES) {
    const want = expected(text, stops);
    for (const chunks of chunkings(text)) {
      assert.deepEqual(run(stops, chunks, want.out), want, `${JSON.stringify(chunks)} with ${JSON.stringify(stops)}`);
    }
  }
});

test('overlapping prefixes: stop "ab" in "aab" emits "a"', () => {
  const m = new StopStringMatcher(['ab']);
  assert.deepEqual(m.push('a'), { emit: '', stopped: false });
  assert.deepEqual(m.push('a'), { emit: 'a', stopped: false });
  assert.deepEqual(m.push('b'), { emit: '', stopped: true });
});

test('a stop spanning chunks is not emitted, nor anything after it', () => {
  const m = new StopStringMatcher(['<|end|>']);
  assert.deepEqual(m.push('Hello <|'), { emit: 'Hello ', stopped: false });
  assert.deepEqual(m.push('en'), { emit: '', stopped: false });
  assert.deepEqual(m.push('d|> trailing'), { emit: '', stopped: true });
  assert.deepEqual(m.push('more'), { emit: '', stopped: true });
  assert.equal(m.flush(), '');
});

test('held-back text is released once it cannot start a stop, or at flush', () => {
  const m = new StopStringMatcher(['abc']);
  assert.deepEqual(m.push('xab'), { emit: 'x', stopped: false });
  assert.deepEqual(m.push('d'), { emit: 'abd', stopped: false });
  assert.deepEqual(m.push('ab'), { emit: '', stopped: false });
  assert.equal(m.flush(), 'ab');
  assert.equal(m.flush(), '');
});

test('multiple stops: the first one in the text wins', () => {
  const m = new StopStringMatcher(['###', 'END']);
  assert.deepEqual(m.push('abc EN'), { emit: 'abc ', stopped: false });
  assert.deepEqual(m.push('D ###'), { emit: '', stopped: true });
});

test('no stop strings: everything is emitted immediately', () => {
  const m = new StopStringMatcher([]);
  assert.deepEqual(m.push('anything'), { emit: 'anything', stopped: false });
  assert.equal(m.flush(), '');
});

test('invalid stop lists throw InvalidInputError naming stop', () => {
  const isStop = (e: unknown) => e instanceof InvalidInputError && e.field === 'stop';
  assert.throws(() => new StopStringMatcher(['ok', '']), isStop);
  assert.throws(() => new StopStringMatcher(Array.from({ length: MAX_STOP_STRINGS + 1 }, (_, i) => `s${i}`)), isStop);
  assert.throws(() => new StopStringMatcher([1] as unknown as string[]), isStop);
  new StopStringMatcher(Array.from({ length: MAX_STOP_STRINGS }, (_, i) => `s${i}`));
});
