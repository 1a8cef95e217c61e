/**
 * The typed examples in examples/ (compiled with the rest by `tsc -p .`, strict) run to the end on
 * the bundled model and print what their comments promise. scripts/pack-check.sh compiles and
 * runs them again against the packed tarball in a project outside the repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

const expectations: Record<string, RegExp> = {
  quickstart: /\[(stop|length)\] \d+ prompt tokens \(\d+ from the cache\), \d+ generated, cost [\d.e-]+ USD/,
  batch: /\d+ tokens for 4 prompts in [\d.]+ s/,
  abort: /aborted: the call was aborted|finished before the deadline/,
  'mount-handler': /^200: /m,
};

for (const [name, pattern] of Object.entries(expectations)) {
  test(`examples/${name}.ts runs on the bundled model and prints its result`, () => {
    const r = spawnSync(process.execPath, [join(repoRoot, 'dist', 'examples', `${name}.js`)], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, pattern);
  });
}
