// @ts-check
/**
 * The routing heatmap of one answer: a row per MoE layer, a column per expert; a cell's colour is
 * the share of the answer's tokens that layer routed to that expert. The shared experts (every
 * token goes through them) lead each row in their own colour, marked S. Drawn on a canvas, so
 * that DeepSeek-V3's 58 × 256 grid costs one element; pointing at a cell reads out its figures.
 */
import { int, percent } from './format.js';

/** @typedef {import('./api.js').Routing} Routing */

/** Light to dark: pale yellow → orange → magenta → deep violet. */
const RAMP = [
  [255, 247, 214],
  [253, 190, 110],
  [236, 112, 80],
  [180, 54, 122],
  [91, 24, 110],
];

/**
 * @param {number} v 0…1
 * @returns {string}
 */
export function rampColor(v) {
  const x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const t = x - i;
  const a = /** @type {number[]} */ (RAMP[i]);
  const b = /** @type {number[]} */ (RAMP[i + 1]);
  const c = a.map((ai, k) => Math.round(ai + (/** @type {number} */ (b[k]) - ai) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * Tokens the counts cover: the server says, or (top-k unknown) the busiest row's sum.
 * @param {Routing} r
 */
export function routedTokens(r) {
  if (r.tokens !== null && r.tokens !== undefined) return r.tokens;
  const k = r.experts_per_token ?? 1;
  return Math.max(0, ...r.counts.map((row) => row.reduce((a, b) => a + b, 0))) / k;
}

/**
 * The busiest cells, for the text summary.
 * @param {Routing} r
 * @param {number} n
 */
export function topCells(r, n) {
  /** @type {{ layer: number, expert: number, count: number }[]} */
  const cells = [];
  r.counts.forEach((row, i) => row.forEach((count, e) => cells.push({ layer: /** @type {number} */ (r.layers[i]), expert: e, count })));
  return cells.sort((a, b) => b.count - a.count).slice(0, n);
}

/**
 * A <figure> with the heatmap, its legend and a read-out line.
 * @param {Routing} r
 * @param {Document} [doc]
 * @returns {HTMLElement}
 */
export function renderHeatmap(r, doc = document) {
  const tokens = routedTokens(r);
  const fig = doc.createElement('figure');
  fig.className = 'heatmap';
  fig.dataset['layers'] = String(r.layers.length);
  fig.dataset['experts'] = String(r.routed_experts);
  fig.dataset['shared'] = String(r.shared_experts);
  fig.dataset['tokens'] = String(tokens);

  const canvas = doc.createElement('canvas');
  canvas.setAttribute('role', 'img');
  const busiest = topCells(r, 3)
    .filter((c) => c.count > 0)
    .map((c) => `layer ${c.layer} expert ${c.expert} (${percent(tokens > 0 ? c.count / tokens : 0)})`)
    .join(', ');
  canvas.setAttribute(
    'aria-label',
    `Expert routing of ${int(tokens)} generated tokens over ${r.layers.length} MoE layers × ${r.routed_experts} routed experts` +
      (r.shared_experts > 0 ? ` plus ${r.shared_experts} shared` : '') +
      (busiest ? `; busiest: ${busiest}` : ''),
  );
  const scroller = doc.createElement('div');
  scroller.className = 'heatmap-canvas';
  scroller.append(canvas);

  const max = Math.max(1e-9, ...r.counts.flat().map((c) => (tokens > 0 ? c / tokens : 0)));
  const legend = doc.createElement('div');
  legend.className = 'heatmap-legend';
  const ramp = doc.createElement('span');
  ramp.className = 'ramp';
  const lo = doc.createElement('span');
  lo.textContent = '0%';
  const hi = doc.createElement('span');
  hi.textContent = `${percent(max)} of tokens`;
  legend.append(lo, ramp, hi);
  if (r.shared_experts > 0) {
    const key = doc.createElement('span');
    key.className = 'shared-key';
    const swatch = doc.createElement('b');
    swatch.textContent = 'S';
    key.append(swatch, ` shared expert${r.shared_experts > 1 ? 's' : ''}: every token`);
    legend.append(key);
  }
  const readout = doc.createElement('output');
  readout.className = 'heatmap-readout';
  readout.textContent = 'Point at a cell for its figures.';

  fig.append(scroller, legend, readout);

  const layout = () => geometry(r, Math.max(120, scroller.clientWidth || 600));
  const draw = () => paint(canvas, r, tokens, max, layout());
  if (typeof ResizeObserver !== 'undefined') {
    let lastWidth = -1;
    new ResizeObserver(() => {
      if (scroller.clientWidth !== lastWidth) {
        lastWidth = scroller.clientWidth;
        draw();
      }
    }).observe(scroller);
  }
  requestAnimationFrame(draw);

  const point = (/** @type {PointerEvent} */ ev) => {
    const g = layout();
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left;
    const y = ev.clientY - rect.top - g.top;
    const row = Math.floor(y / g.cellH);
    if (row < 0 || row >= r.layers.length) return;
    const layer = r.layers[row];
    if (x >= g.left && x < g.left + r.shared_experts * g.cellW) {
      readout.textContent = `MoE layer ${layer} · shared expert: all ${int(tokens)} tokens`;
      return;
    }
    const e = Math.floor((x - g.routedLeft) / g.cellW);
    if (x < g.routedLeft || e < 0 || e >= r.routed_experts) return;
    const count = r.counts[row]?.[e] ?? 0;
    readout.textContent = `MoE layer ${layer} · expert ${e}: ${int(count)} of ${int(tokens)} tokens (${percent(tokens > 0 ? count / tokens : 0)})`;
  };
  canvas.addEventListener('pointermove', point);
  canvas.addEventListener('pointerdown', point);
  return fig;
}

/**
 * Cell sizes for a width: cells as large as fit (2–28 px wide), rows at least 5 px tall.
 * @param {Routing} r
 * @param {number} width
 */
function geometry(r, width) {
  const left = 44;
  const gap = r.shared_experts > 0 ? 6 : 0;
  const cols = r.shared_experts + r.routed_experts;
  const cellW = Math.max(2, Math.min(28, Math.floor((width - left - gap - 2) / Math.max(1, cols))));
  const cellH = Math.max(5, Math.min(22, cellW, r.layers.length > 24 ? 8 : 22));
  const top = cellW >= 14 ? 16 : 14;
  const routedLeft = left + r.shared_experts * cellW + gap;
  return { left, gap, cellW, cellH, top, routedLeft, width: routedLeft + r.routed_experts * cellW + 2, height: top + r.layers.length * cellH + 2 };
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {Routing} r
 * @param {number} tokens
 * @param {number} max
 * @param {ReturnType<typeof geometry>} g
 */
function paint(canvas, r, tokens, max, g) {
  const dpr = Math.min(3, globalThis.devicePixelRatio || 1);
  canvas.width = Math.round(g.width * dpr);
  canvas.height = Math.round(g.height * dpr);
  canvas.style.width = `${g.width}px`;
  canvas.style.height = `${g.height}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const style = getComputedStyle(canvas);
  const ink = style.getPropertyValue('--heat-ink').trim() || '#555';
  const sharedColor = style.getPropertyValue('--heat-shared').trim() || '#2f6fde';
  const empty = style.getPropertyValue('--heat-empty').trim() || '#f1f1f1';
  ctx.clearRect(0, 0, g.width, g.height);
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = ink;

  // Column labels: every expert when there is room, else every 8th / 16th / 32nd.
  const step = g.cellW >= 14 ? 1 : [4, 8, 16, 32, 64].find((s) => s * g.cellW >= 24) ?? 64;
  ctx.textAlign = 'center';
  for (let e = 0; e < r.routed_experts; e += step) ctx.fillText(String(e), g.routedLeft + (e + 0.5) * g.cellW, g.top / 2);
  if (r.shared_experts > 0) ctx.fillText('S', g.left + (r.shared_experts * g.cellW) / 2, g.top / 2);

  // Row labels: the model layer index of each MoE layer.
  ctx.textAlign = 'right';
  const rowStep = g.cellH >= 10 ? 1 : Math.ceil(12 / g.cellH);
  r.layers.forEach((layer, i) => {
    if (i % rowStep === 0) ctx.fillText(`L${layer}`, g.left - 6, g.top + (i + 0.5) * g.cellH);
  });

  const pad = g.cellW >= 6 ? 1 : 0;
  r.counts.forEach((row, i) => {
    const y = g.top + i * g.cellH;
    for (let s = 0; s < r.shared_experts; s++) {
      ctx.fillStyle = sharedColor;
      ctx.fillRect(g.left + s * g.cellW, y, g.cellW - pad, g.cellH - pad);
    }
    row.forEach((count, e) => {
      const share = tokens > 0 ? count / tokens : 0;
      ctx.fillStyle = count === 0 ? empty : rampColor(share / max);
      ctx.fillRect(g.routedLeft + e * g.cellW, y, g.cellW - pad, g.cellH - pad);
    });
  });
  if (r.shared_experts > 0 && g.cellW >= 12 && g.cellH >= 12) {
    ctx.fillStyle = '#fff';
    ctx.textAlign = 'center';
    ctx.font = 'bold 10px system-ui, sans-serif';
    r.layers.forEach((_, i) => {
      for (let s = 0; s < r.shared_experts; s++) ctx.fillText('S', g.left + (s + 0.5) * g.cellW - pad / 2, g.top + (i + 0.5) * g.cellH);
    });
  }
}
