/**
 * The chat page's Markdown parser (web/markdown.js), run in Node: the tree it builds is all the
 * DOM builder ever sees, so no node of it may carry markup, and links only safe targets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../paths.js';

type Inline =
  | { type: 'text'; text: string }
  | { type: 'code'; text: string }
  | { type: 'br' }
  | { type: 'strong' | 'em' | 'del'; children: Inline[] }
  | { type: 'link'; href: string; children: Inline[] };
type Block =
  | { type: 'paragraph'; children: Inline[] }
  | { type: 'heading'; level: number; children: Inline[] }
  | { type: 'code'; lang: string; text: string }
  | { type: 'quote'; children: Block[] }
  | { type: 'list'; ordered: boolean; start: number; items: Block[][] }
  | { type: 'table'; align: ('left' | 'center' | 'right' | null)[]; head: Inline[][]; rows: Inline[][][] }
  | { type: 'hr' };
interface MarkdownModule {
  parseMarkdown(text: string): Block[];
  safeHref(url: string): string | null;
}

const md = (await import(pathToFileURL(join(repoRoot, 'web', 'markdown.js')).href)) as MarkdownModule;
const parse = md.parseMarkdown;

/** The text a block tree shows, with formatting as tags (for compact assertions). */
function show(blocks: Block[]): string {
  const inl = (xs: Inline[]): string =>
    xs
      .map((x) => {
        switch (x.type) {
          case 'text':
            return x.text;
          case 'code':
            return `<code>${x.text}</code>`;
          case 'br':
            return '<br>';
          case 'link':
            return `<a ${x.href}>${inl(x.children)}</a>`;
          default:
            return `<${x.type}>${inl(x.children)}</${x.type}>`;
        }
      })
      .join('');
  return blocks
    .map((b) => {
      switch (b.type) {
        case 'paragraph':
          return `<p>${inl(b.children)}</p>`;
        case 'heading':
          return `<h${b.level}>${inl(b.children)}</h${b.level}>`;
        case 'code':
          return `<pre ${b.lang}>${b.text}</pre>`;
        case 'quote':
          return `<quote>${show(b.children)}</quote>`;
        case 'list':
          return `<${b.ordered ? `ol ${b.start}` : 'ul'}>${b.items.map((i) => `<li>${show(i)}</li>`).join('')}</list>`;
        case 'table':
          return `<table>${b.head.map(inl).join('|')}/${b.rows.map((r) => r.map(inl).join('|')).join('/')}</table>`;
        case 'hr':
          return '<hr>';
      }
    })
    .join('');
}

/** Every link in a tree. */
function links(blocks: Block[]): string[] {
  const out: string[] = [];
  const inl = (xs: Inline[]) => {
    for (const x of xs) {
      if (x.type === 'link') out.push(x.href);
      if ('children' in x) inl(x.children);
    }
  };
  const blk = (bs: Block[]) => {
    for (const b of bs) {
      if (b.type === 'paragraph' || b.type === 'heading') inl(b.children);
      if (b.type === 'quote') blk(b.children);
      if (b.type === 'list') b.items.forEach(blk);
      if (b.type === 'table') [...b.head, ...b.rows.flat()].forEach(inl);
    }
  };
  blk(blocks);
  return out;
}

test('HTML stays text: script, img, iframe and entities are plain characters', () => {
  const text = '<script>alert(1)</script> <img src=x onerror=alert(2)> <iframe src=//evil> &lt;b&gt;';
  assert.deepEqual(parse(text), [{ type: 'paragraph', children: [{ type: 'text', text }] }]);
});

test('emphasis, strong, strike, inline code and escapes', () => {
  assert.equal(show(parse('**bold** and *it* and _it_ and ~~gone~~ and `a < b`')), '<p><strong>bold</strong> and <em>it</em> and <em>it</em> and <del>gone</del> and <code>a < b</code></p>');
  assert.equal(show(parse('snake_case_name and 2 * 3 * 4')), '<p>snake_case_name and 2 * 3 * 4</p>');
  assert.equal(show(parse('\\*not em\\* and `**not bold**`')), '<p>*not em* and <code>**not bold**</code></p>');
  assert.equal(show(parse('**bold with `code**` inside**')), '<p><strong>bold with <code>code**</code> inside</strong></p>');
  assert.equal(show(parse('unclosed **bold')), '<p>unclosed **bold</p>');
});

test('fenced code keeps its text verbatim; an unclosed fence runs to the end (streaming)', () => {
  assert.equal(show(parse('before\n```js\nif (a < b) { x = "<b>"; }\n```\nafter')), '<p>before</p><pre js>if (a < b) { x = "<b>"; }</pre><p>after</p>');
  assert.equal(show(parse('```python\ndef f():\n    return 1')), '<pre python>def f():\n    return 1</pre>');
  assert.equal(show(parse('~~~\n```\nstill code\n~~~')), '<pre >```\nstill code</pre>');
  // The info string becomes a class name: only safe characters survive.
  const odd = parse('```c"onclick=x\n1\n```')[0];
  assert.ok(odd?.type === 'code' && /^[a-z0-9+#-]*$/.test(odd.lang) && odd.text === '1', JSON.stringify(odd));
  assert.deepEqual(parse('``` <script>\n1\n```')[0], { type: 'code', lang: 'script', text: '1' });
});

test('links keep only http, https and mailto targets', () => {
  const tree = parse('[a](https://example.com/x) [b](javascript:alert(1)) [c](data:text/html,<script>) [d](mailto:me@example.com) [e](/relative) see https://dseek.dev/page.');
  assert.deepEqual(links(tree), ['https://example.com/x', 'mailto:me@example.com', 'https://dseek.dev/page']);
  assert.equal(show(tree).includes('javascript'), false);
  assert.equal(md.safeHref('JaVaScRiPt:alert(1)'), null);
  assert.equal(md.safeHref(' javascript:alert(1)'), null);
  assert.equal(md.safeHref('https://example.com/"onmouseover="x'), 'https://example.com/%22onmouseover=%22x');
});

test('headings, lists, quotes, tables, rules and line breaks', () => {
  assert.equal(show(parse('# Title\ntext\nmore text')), '<h1>Title</h1><p>text<br>more text</p>');
  assert.equal(show(parse('- one\n- two\n  - nested\n- three')), '<ul><li><p>one</p></li><li><p>two</p><ul><li><p>nested</p></li></list></li><li><p>three</p></li></list>');
  assert.equal(show(parse('3. c\n4. d')), '<ol 3><li><p>c</p></li><li><p>d</p></li></list>');
  assert.equal(show(parse('> quoted **text**\n> more')), '<quote><p>quoted <strong>text</strong><br>more</p></quote>');
  assert.equal(show(parse('| a | b |\n|:--|--:|\n| 1 | `x\\|y` |\n| 2 | 3 |')), '<table>a|b/1|<code>x|y</code>/2|3</table>');
  assert.equal(show(parse('a\n\n---\n\nb')), '<p>a</p><hr><p>b</p>');
  assert.equal(show(parse('    indented code\n    more')), '<pre >indented code\nmore</pre>');
});

test('hostile input: deep nesting and long runs parse quickly and stay bounded', () => {
  const deep = '> '.repeat(500) + '*'.repeat(2000) + '['.repeat(2000) + '`'.repeat(500);
  const started = performance.now();
  const tree = parse(deep);
  assert.ok(performance.now() - started < 2000);
  assert.ok(JSON.stringify(tree).length > 0);
  const nested = '**'.repeat(300) + 'x' + '**'.repeat(300);
  assert.ok(JSON.stringify(parse(nested)).includes('x'));
});

test('no node type outside the renderer’s list, for any input', () => {
  const allowed = new Set(['paragraph', 'heading', 'code', 'quote', 'list', 'table', 'hr', 'text', 'br', 'strong', 'em', 'del', 'link']);
  const pieces = ['<', '>', '*', '_', '`', '```', '[', ']', '(', ')', 'javascript:', 'https://a.b/', '\n', '\n\n', '|', '-', '# ', '> ', '1. ', ' ', 'x', '~~', '\\'];
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let n = 0; n < 300; n++) {
    const text = Array.from({ length: 40 }, () => pieces[Math.floor(rand() * pieces.length)]).join('');
    const json = JSON.stringify(parse(text));
    for (const m of json.matchAll(/"type":"([a-z]+)"/g)) assert.ok(allowed.has(m[1]!), `${m[1]} from ${JSON.stringify(text)}`);
    for (const m of json.matchAll(/"href":"([^"]*)"/g)) assert.match(m[1]!, /^(https?|mailto):/, text);
  }
});
