// @ts-check
/**
 * A small Markdown renderer that cannot inject HTML: text is parsed into a tree of plain objects
 * (parseMarkdown, testable without a DOM), and the tree is built into DOM nodes with
 * createElement and text nodes only (renderMarkdown). No string of model output ever reaches an
 * HTML parser (no innerHTML), so `<script>` or `<img onerror>` in an answer stays visible text.
 * Links keep only http:, https: and mailto: targets.
 *
 * Covered: paragraphs (single newlines are line breaks, as in chat), ATX headings, fenced code
 * blocks (an unclosed fence runs to the end, so a streaming answer renders as it arrives),
 * indented code, block quotes, ordered and unordered lists (nested by indentation), GFM tables,
 * thematic breaks; inline code, **strong**, *emphasis*, ~~strike~~, [links](https://…),
 * bare https:// URLs and backslash escapes.
 */

/**
 * @typedef {{ type: 'text', text: string }
 *   | { type: 'code', text: string }
 *   | { type: 'br' }
 *   | { type: 'strong' | 'em' | 'del', children: Inline[] }
 *   | { type: 'link', href: string, children: Inline[] }} Inline
 * @typedef {{ type: 'paragraph', children: Inline[] }
 *   | { type: 'heading', level: number, children: Inline[] }
 *   | { type: 'code', lang: string, text: string }
 *   | { type: 'quote', children: Block[] }
 *   | { type: 'list', ordered: boolean, start: number, items: Block[][] }
 *   | { type: 'table', align: ('left' | 'center' | 'right' | null)[], head: Inline[][], rows: Inline[][][] }
 *   | { type: 'hr' }} Block
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const BULLET = /^( *)([-*+])[ \t]+(.*)$/;
const ORDERED = /^( *)(\d{1,9})[.)][ \t]+(.*)$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const TABLE_RULE = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

/**
 * @param {string} text
 * @returns {Block[]}
 */
export function parseMarkdown(text) {
  return parseBlocks(text.replace(/\r\n?/g, '\n').split('\n'), 0);
}

/**
 * @param {string[]} lines
 * @param {number} depth nesting depth (quotes and lists), bounded so hostile input cannot recurse deeply
 * @returns {Block[]}
 */
function parseBlocks(lines, depth) {
  /** @type {Block[]} */
  const out = [];
  /** @type {string[]} */
  let para = [];
  const flush = () => {
    if (para.length > 0) out.push({ type: 'paragraph', children: parseInline(para.join('\n').trim(), 0) });
    para = [];
  };
  let i = 0;
  while (i < lines.length) {
    const line = /** @type {string} */ (lines[i]);
    const fence = FENCE.exec(line);
    if (fence) {
      flush();
      const marker = /** @type {string} */ (fence[1]);
      const body = [];
      i++;
      while (i < lines.length) {
        const l = /** @type {string} */ (lines[i]);
        const closing = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(l);
        if (closing && closing[1]?.[0] === marker[0] && closing[1].length >= marker.length) break;
        body.push(l);
        i++;
      }
      i++; // the closing fence (or past the end)
      out.push({ type: 'code', lang: sanitizeLang(fence[2] ?? ''), text: body.join('\n') });
      continue;
    }
    if (line.trim() === '') {
      flush();
      i++;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flush();
      out.push({ type: 'heading', level: /** @type {string} */ (heading[1]).length, children: parseInline((heading[2] ?? '').trim(), 0) });
      i++;
      continue;
    }
    if (HR.test(line) && !(para.length > 0 && /^ {0,3}-+\s*$/.test(line))) {
      flush();
      out.push({ type: 'hr' });
      i++;
      continue;
    }
    if (para.length === 0 && /^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(/** @type {string} */ (lines[i])) || /** @type {string} */ (lines[i]).trim() === '')) {
        body.push(/** @type {string} */ (lines[i]).replace(/^( {4}|\t)/, ''));
        i++;
      }
      while (body.length > 0 && /** @type {string} */ (body[body.length - 1]).trim() === '') body.pop();
      out.push({ type: 'code', lang: '', text: body.join('\n') });
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const body = [];
      while (i < lines.length && QUOTE.test(/** @type {string} */ (lines[i]))) {
        body.push(/** @type {RegExpExecArray} */ (QUOTE.exec(/** @type {string} */ (lines[i])))[1] ?? '');
        i++;
      }
      out.push(depth < 8 ? { type: 'quote', children: parseBlocks(body, depth + 1) } : { type: 'paragraph', children: parseInline(body.join('\n'), 0) });
      continue;
    }
    const listStart = BULLET.exec(line) ?? ORDERED.exec(line);
    if (listStart && (para.length === 0 || /^\s*$/.test(/** @type {string} */ (listStart[1])))) {
      flush();
      i = parseList(lines, i, depth, out);
      continue;
    }
    if (para.length === 0 && line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(/** @type {string} */ (lines[i + 1])) && /** @type {string} */ (lines[i + 1]).includes('-')) {
      const head = splitRow(line);
      const rule = splitRow(/** @type {string} */ (lines[i + 1]));
      if (head.length === rule.length) {
        i += 2;
        /** @type {Inline[][][]} */
        const rows = [];
        while (i < lines.length && /** @type {string} */ (lines[i]).includes('|') && /** @type {string} */ (lines[i]).trim() !== '') {
          const cells = splitRow(/** @type {string} */ (lines[i]));
          rows.push(head.map((_, c) => parseInline(cells[c] ?? '', 0)));
          i++;
        }
        out.push({
          type: 'table',
          align: rule.map((r) => (r.startsWith(':') && r.endsWith(':') ? 'center' : r.endsWith(':') ? 'right' : r.startsWith(':') ? 'left' : null)),
          head: head.map((h) => parseInline(h, 0)),
          rows,
        });
        continue;
      }
    }
    para.push(line);
    i++;
  }
  flush();
  return out;
}

/**
 * Parses the list starting at lines[start] into `out`; returns the index after it.
 * @param {string[]} lines
 * @param {number} start
 * @param {number} depth
 * @param {Block[]} out
 */
function parseList(lines, start, depth, out) {
  const first = /** @type {RegExpExecArray} */ (BULLET.exec(/** @type {string} */ (lines[start])) ?? ORDERED.exec(/** @type {string} */ (lines[start])));
  const ordered = !BULLET.test(/** @type {string} */ (lines[start]));
  const indent = /** @type {string} */ (first[1]).length;
  /** @type {string[][]} */
  const items = [];
  let i = start;
  while (i < lines.length) {
    const line = /** @type {string} */ (lines[i]);
    const m = ordered ? ORDERED.exec(line) : BULLET.exec(line);
    if (m && /** @type {string} */ (m[1]).length === indent) {
      items.push([m[3] ?? '']);
      i++;
      continue;
    }
    const current = items[items.length - 1];
    if (!current) break;
    if (line.trim() === '') {
      // A blank line ends the list unless the next line continues it (indented or another item).
      const next = lines[i + 1];
      const nextItem = next !== undefined && (ordered ? ORDERED.exec(next) : BULLET.exec(next));
      if (next !== undefined && ((nextItem && /** @type {string} */ (nextItem[1]).length === indent) || /^\s+\S/.test(next) && leading(next) > indent)) {
        current.push('');
        i++;
        continue;
      }
      break;
    }
    if (leading(line) > indent) {
      current.push(line.slice(Math.min(leading(line), indent + 2)));
      i++;
      continue;
    }
    // A lazy continuation of the item's paragraph, unless it starts another block.
    if (!BULLET.test(line) && !ORDERED.test(line) && !FENCE.test(line) && !HEADING.test(line) && !QUOTE.test(line) && !HR.test(line)) {
      current.push(line);
      i++;
      continue;
    }
    break;
  }
  out.push({
    type: 'list',
    ordered,
    start: ordered ? Number(/** @type {string} */ (first[2])) : 1,
    items: items.map((body) => (depth < 8 ? parseBlocks(body, depth + 1) : [{ type: 'paragraph', children: parseInline(body.join('\n'), 0) }])),
  });
  return i;
}

/** @param {string} line */
function leading(line) {
  return /** @type {string} */ (/^ */.exec(line)?.[0]).length;
}

/** @param {string} line */
function splitRow(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  /** @type {string[]} */
  const cells = [];
  let cell = '';
  for (let i = 0; i < s.length; i++) {
    const ch = /** @type {string} */ (s[i]);
    if (ch === '\\' && s[i + 1] === '|') {
      cell += '|';
      i++;
    } else if (ch === '|') {
      cells.push(cell.trim());
      cell = '';
    } else cell += ch;
  }
  cells.push(cell.trim());
  return cells;
}

/** A fence's info string as a CSS class suffix: letters, digits, + - # only. */
function sanitizeLang(/** @type {string} */ lang) {
  return lang.toLowerCase().replace(/[^a-z0-9+#-]/g, '').slice(0, 24);
}

const ESCAPABLE = '\\`*_{}[]()#+-.!|~<>"\'';
const URL_RE = /^https?:\/\/[^\s<>"'`]+/;

/**
 * @param {string} s
 * @param {number} depth
 * @returns {Inline[]}
 */
export function parseInline(s, depth) {
  /** @type {Inline[]} */
  const out = [];
  let text = '';
  const push = (/** @type {Inline} */ node) => {
    if (text) out.push({ type: 'text', text });
    text = '';
    out.push(node);
  };
  /** @type {Map<string, number[]> | null} */
  let closers = null;
  let i = 0;
  while (i < s.length) {
    const ch = /** @type {string} */ (s[i]);
    if (ch === '\\' && i + 1 < s.length && ESCAPABLE.includes(/** @type {string} */ (s[i + 1]))) {
      text += s[i + 1];
      i += 2;
      continue;
    }
    if (ch === '\n') {
      push({ type: 'br' });
      i++;
      continue;
    }
    if (ch === '`') {
      const run = /** @type {string} */ (/^`+/.exec(s.slice(i))?.[0]);
      const close = s.indexOf(run, i + run.length);
      if (close > 0) {
        let code = s.slice(i + run.length, close).replace(/\n/g, ' ');
        if (code.length > 2 && code.startsWith(' ') && code.endsWith(' ')) code = code.slice(1, -1);
        push({ type: 'code', text: code });
        i = close + run.length;
        continue;
      }
      text += run;
      i += run.length;
      continue;
    }
    if (depth < 16) {
      const emph = ch === '*' || ch === '_' || ch === '~' ? delimited(s, i, depth, (closers ??= closersOf(s))) : null;
      if (emph) {
        push(emph.node);
        i = emph.end;
        continue;
      }
      if (ch === '[') {
        const link = linkAt(s, i, depth);
        if (link) {
          for (const node of link.nodes) push(node);
          i = link.end;
          continue;
        }
      }
    }
    if ((ch === 'h' || ch === 'H') && (i === 0 || /[\s(]/.test(/** @type {string} */ (s[i - 1])))) {
      const m = URL_RE.exec(s.slice(i));
      if (m) {
        const url = m[0].replace(/[.,;:!?)]+$/, '');
        push({ type: 'link', href: url, children: [{ type: 'text', text: url }] });
        i += url.length;
        continue;
      }
    }
    text += ch;
    i++;
  }
  if (text) out.push({ type: 'text', text });
  return out;
}

/** @type {[string, 'strong' | 'em' | 'del'][]} */
const DELIMITERS = [
  ['**', 'strong'],
  ['__', 'strong'],
  ['~~', 'del'],
  ['*', 'em'],
  ['_', 'em'],
];

/**
 * Where each delimiter could close emphasis in `s`: after a non-space that is not a backslash,
 * and (single * or _) not doubled; `_` not inside a word. Computed once per string, so that a
 * text full of openers that never close costs linear time, not quadratic.
 * @param {string} s
 * @returns {Map<string, number[]>}
 */
function closersOf(s) {
  /** @type {Map<string, number[]>} */
  const out = new Map();
  for (const [d] of DELIMITERS) {
    /** @type {number[]} */
    const at = [];
    for (let j = s.indexOf(d, 1); j > 0; j = s.indexOf(d, j + 1)) {
      const before = /** @type {string} */ (s[j - 1]);
      const next = s[j + d.length];
      if (/\s/.test(before) || before === '\\') continue;
      if (d.length === 1 && (next === d || before === d)) continue;
      if (d[0] === '_' && next !== undefined && /[\p{L}\p{N}]/u.test(next)) continue;
      at.push(j);
    }
    out.set(d, at);
  }
  return out;
}

/**
 * Emphasis starting at s[i]: the delimiter must be followed by a non-space, and closed later by
 * the same delimiter preceded by a non-space (`_` only at word boundaries, so snake_case stays).
 * @param {string} s
 * @param {number} i
 * @param {number} depth
 * @param {Map<string, number[]>} closers
 * @returns {{ node: Inline, end: number } | null}
 */
function delimited(s, i, depth, closers) {
  for (const [d, type] of DELIMITERS) {
    if (!s.startsWith(d, i)) continue;
    const after = s[i + d.length];
    if (after === undefined || /\s/.test(after) || (d.length === 1 && after === d)) return null;
    if (d[0] === '_' && i > 0 && /[\p{L}\p{N}]/u.test(/** @type {string} */ (s[i - 1]))) return null;
    const at = /** @type {number[]} */ (closers.get(d));
    // The first candidate past the opener (binary search), then on while a code span straddles it.
    let lo = 0;
    let hi = at.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (/** @type {number} */ (at[mid]) < i + d.length + 1) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < at.length && k < lo + 64; k++) {
      const j = /** @type {number} */ (at[k]);
      const inner = s.slice(i + d.length, j);
      if ((inner.match(/`/g)?.length ?? 0) % 2 === 1) continue;
      return { node: { type, children: parseInline(inner, depth + 1) }, end: j + d.length };
    }
    return null;
  }
  return null;
}

/**
 * `[text](url)` at s[i]. A link with an unsafe target keeps its text, without the link.
 * @param {string} s
 * @param {number} i
 * @param {number} depth
 * @returns {{ nodes: Inline[], end: number } | null}
 */
function linkAt(s, i, depth) {
  let level = 0;
  let j = i;
  // Labels longer than this are not links: it bounds the scan, so a text of unmatched [ stays linear.
  const limit = Math.min(s.length, i + 500);
  for (; j < limit; j++) {
    if (s[j] === '\\') j++;
    else if (s[j] === '[') level++;
    else if (s[j] === ']' && --level === 0) break;
  }
  if (j >= limit || s[j + 1] !== '(') return null;
  const close = s.indexOf(')', j + 2);
  if (close < 0 || close > j + 2 + 2048) return null;
  const target = s.slice(j + 2, close).trim().replace(/^<(.*)>$/, '$1').split(/\s+/)[0] ?? '';
  const label = parseInline(s.slice(i + 1, j), depth + 1);
  const href = safeHref(target);
  return { nodes: href ? [{ type: 'link', href, children: label }] : label, end: close + 1 };
}

/**
 * The URL if it is http(s) or mailto, else null (javascript:, data:, relative paths…).
 * @param {string} url
 */
export function safeHref(url) {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' || u.protocol === 'mailto:' ? u.href : null;
  } catch {
    return null;
  }
}

/**
 * Markdown → a DocumentFragment of elements and text nodes.
 * @param {string} text
 * @param {Document} [doc]
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text, doc = document) {
  const frag = doc.createDocumentFragment();
  for (const block of parseMarkdown(text)) frag.append(buildBlock(block, doc));
  return frag;
}

/**
 * @param {Block} b
 * @param {Document} doc
 * @returns {Node}
 */
function buildBlock(b, doc) {
  switch (b.type) {
    case 'paragraph':
      return el(doc, 'p', b.children.map((c) => buildInline(c, doc)));
    case 'heading':
      return el(doc, `h${Math.min(6, b.level + 2)}`, b.children.map((c) => buildInline(c, doc)));
    case 'code': {
      const pre = doc.createElement('pre');
      const code = doc.createElement('code');
      if (b.lang) {
        code.className = `language-${b.lang}`;
        pre.dataset['lang'] = b.lang;
      }
      code.textContent = b.text;
      pre.append(code);
      return pre;
    }
    case 'quote':
      return el(doc, 'blockquote', b.children.map((c) => buildBlock(c, doc)));
    case 'list': {
      const list = el(doc, b.ordered ? 'ol' : 'ul', b.items.map((item) => el(doc, 'li', item.map((c) => buildItemBlock(c, doc, item.length)))));
      if (b.ordered && b.start !== 1 && list instanceof HTMLOListElement) list.start = b.start;
      return list;
    }
    case 'table': {
      const table = doc.createElement('table');
      const row = (/** @type {Inline[][]} */ cells, /** @type {'th' | 'td'} */ tag) =>
        el(
          doc,
          'tr',
          cells.map((cell, c) => {
            const node = el(doc, tag, cell.map((x) => buildInline(x, doc)));
            const align = b.align[c];
            if (align && node instanceof HTMLElement) node.style.textAlign = align;
            return node;
          }),
        );
      table.append(el(doc, 'thead', [row(b.head, 'th')]), el(doc, 'tbody', b.rows.map((r) => row(r, 'td'))));
      const wrap = doc.createElement('div');
      wrap.className = 'table-wrap';
      wrap.append(table);
      return wrap;
    }
    case 'hr':
      return doc.createElement('hr');
  }
}

/** A list item of one paragraph is rendered tight (no <p>). */
function buildItemBlock(/** @type {Block} */ b, /** @type {Document} */ doc, /** @type {number} */ siblings) {
  if (b.type === 'paragraph' && siblings === 1) {
    const frag = doc.createDocumentFragment();
    frag.append(...b.children.map((c) => buildInline(c, doc)));
    return frag;
  }
  return buildBlock(b, doc);
}

/**
 * @param {Inline} n
 * @param {Document} doc
 * @returns {Node}
 */
function buildInline(n, doc) {
  switch (n.type) {
    case 'text':
      return doc.createTextNode(n.text);
    case 'br':
      return doc.createElement('br');
    case 'code': {
      const code = doc.createElement('code');
      code.textContent = n.text;
      return code;
    }
    case 'strong':
    case 'em':
    case 'del':
      return el(doc, n.type, n.children.map((c) => buildInline(c, doc)));
    case 'link': {
      const a = doc.createElement('a');
      a.href = n.href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
      a.append(...n.children.map((c) => buildInline(c, doc)));
      return a;
    }
  }
}

/**
 * @param {Document} doc
 * @param {string} tag
 * @param {Node[]} children
 */
function el(doc, tag, children) {
  const e = doc.createElement(tag);
  e.append(...children);
  return e;
}
