/**
 * The chat page's source, checked without a browser: its JavaScript type-checks under strict
 * TypeScript (JSDoc types, web/tsconfig.json), it fits the page's Content-Security-Policy (no
 * inline script or style), and it never hands text to an HTML parser.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../paths.js';

const WEB = join(repoRoot, 'web');
const run = promisify(execFile);

test('web/*.js type-checks (strict, checkJs)', { timeout: 120_000 }, async () => {
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = await run(process.execPath, [tsc, '-p', join(WEB, 'tsconfig.json')], { cwd: repoRoot }).catch((e: { stdout?: string; stderr?: string }) => e);
  assert.equal(`${result.stdout ?? ''}${result.stderr ?? ''}`.trim(), '');
});

test('index.html loads only files that exist, with no inline script or style (the CSP forbids them)', () => {
  const html = readFileSync(join(WEB, 'index.html'), 'utf8');
  const refs = [...html.matchAll(/(?:src|href)="([^"#]+)"/g)].map((m) => m[1]!);
  assert.ok(refs.includes('app.js') && refs.includes('style.css'));
  for (const ref of refs) assert.ok(existsSync(join(WEB, ref)), `${ref} exists`);
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline <script>');
  assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or event handler attributes');
});

test('no module writes HTML from strings (innerHTML, outerHTML, insertAdjacentHTML, document.write)', () => {
  for (const file of readdirSync(WEB).filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(join(WEB, file), 'utf8');
    assert.doesNotMatch(source, /\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser/, file);
  }
});
