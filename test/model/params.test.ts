import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig, readConfigFile } from '../../src/model/config.js';
import { cacheFootprint, countParameters, formatCount } from '../../src/model/params.js';
import { openSafetensors } from '../../src/formats/safetensors.js';
import { goldenModels, goldenRoot, repoRoot } from '../paths.js';

test('V2-Lite: 15.7 B total, about 2.4 B activated, 31,104 cache bytes per token', () => {
  const c = parseConfig(JSON.parse(readFileSync(join(repoRoot, 'test/data/deepseek-v2-lite/config.json'), 'utf8')));
  const p = countParameters(c);
  assert.equal(formatCount(p.total), '15.7 B');
  assert.ok(p.activated > 2.4e9 && p.activated < 2.5e9, String(p.activated));
  const cache = cacheFootprint(c);
  assert.equal(cache.mlaElements * 2, 31_104);
  assert.equal(cache.mhaElements * 2, 276_480);
  assert.equal(cache.equivalentGqaGroups, 2.25);
});

test('parameter count equals the elements stored in each golden checkpoint', () => {
  for (const name of goldenModels) {
    const dir = join(goldenRoot, name);
    const source = openSafetensors(dir);
    let stored = 0;
    for (const n of source.names()) stored += source.describe(n)!.shape.reduce((a, b) => a * b, 1);
    source.close();
    assert.equal(countParameters(readConfigFile(dir)).total, stored, name);
  }
});

test('formatCount keeps three significant digits', () => {
  assert.equal(formatCount(15_706_484_224), '15.7 B');
  assert.equal(formatCount(2_451_435_008), '2.45 B');
  assert.equal(formatCount(100_000_000), '100 M');
  assert.equal(formatCount(999), '999');
});
