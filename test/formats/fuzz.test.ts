import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzzGguf, fuzzSafetensors, type FuzzResult } from './fuzzCore.js';

// A bounded slice of the fuzzer (the full run: node dist/test/formats/fuzzMain.js --cases 100000).
const CASES = 2000;

function check(r: FuzzResult): void {
  assert.equal(r.ok + r.typed + r.failures, r.cases);
  assert.equal(r.failures, 0, `${r.failures} failures, e.g.\n${r.samples.join('\n')}`);
  // The mutations must actually reach the checks: most cases fail with a typed error.
  assert.ok(r.typed > r.cases / 2, `only ${r.typed} of ${r.cases} cases were rejected`);
}

test(`GGUF loader: ${CASES} mutated files, no crash, hang or untyped error`, () => {
  check(fuzzGguf(CASES, 1));
});

test(`safetensors loader: ${CASES} mutated files, no crash, hang or untyped error`, () => {
  check(fuzzSafetensors(CASES, 1));
});
