/**
 * The chat page in a real browser: headless Chromium (Debian's package, driven by
 * playwright-core) against a real `dseek serve` on 127.0.0.1. The tests run in order on one page
 * and one conversation, as a person would use it: chat, stop, reload, paste HTML, look at the
 * status view, on a desktop and a phone-sized screen. Screenshots go to docs/screenshots/.
 *
 * The server runs on the reference kernels with one thread: slow enough that an answer is still
 * streaming when the test presses Esc.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { repoRoot } from '../paths.js';
import { metric, pageTestModel, serve, type Served } from './serve.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `no browser at ${CHROMIUM}: install Debian's chromium package (apt-get install chromium; .ci/run does) to run the chat page tests`;
const SHOTS = join(repoRoot, 'docs', 'screenshots');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const CANCELLED = 'dseek_cancellations_total{reason="client_disconnect"}';
const LONG_FIRST = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.';

let server: Served | undefined;
let context: BrowserContext | undefined;
let profile: string | undefined;
let page: Page;
const dialogs: string[] = [];
const pageErrors: string[] = [];

interface StatusJson {
  model: { moe_layers: number[]; routed_experts: number; shared_experts: number; context_length: number };
  latent_cache: { bytes_in_use: number };
  prompt_cache: { hit_tokens: number };
}

before(async () => {
  if (skip) return;
  server = await serve(pageTestModel(), ['--page-tokens', '16', '--backend', 'reference', '--threads', '1']);
  profile = mkdtempSync(join(tmpdir(), 'dseek-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    colorScheme: 'light',
    reducedMotion: 'reduce',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${server.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
});

after(async () => {
  await context?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function status(): Promise<StatusJson> {
  return (await (await fetch(`${server!.url}/v1/status`)).json()) as StatusJson;
}

/** Sets a settings field as a person would (type, then leave the field). */
async function setSetting(selector: string, value: string): Promise<void> {
  await page.fill(selector, value);
  await page.dispatchEvent(selector, 'change');
}

async function send(text: string): Promise<void> {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

/** Waits until the last answer has stopped streaming; returns its state. */
async function answerSettled(): Promise<string> {
  const handle = await page.waitForFunction(() => {
    const all = document.querySelectorAll('.msg.assistant');
    const last = all[all.length - 1];
    const state = last?.getAttribute('data-state');
    return state && state !== 'streaming' ? state : null;
  });
  return (await handle.jsonValue()) as string;
}

const lastAnswer = () => page.locator('.msg.assistant').last();
const lastUser = () => page.locator('.msg.user').last();

/** Records the length of the streaming answer's text at every DOM change. */
async function recordStreaming(): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __lengths: number[]; __observer?: MutationObserver };
    w.__lengths = [];
    w.__observer?.disconnect();
    w.__observer = new MutationObserver(() => {
      const all = document.querySelectorAll('.msg.assistant');
      const last = all[all.length - 1];
      if (last?.getAttribute('data-state') === 'streaming') w.__lengths.push(last.querySelector('.msg-body')?.textContent?.length ?? 0);
    });
    w.__observer.observe(document.getElementById('messages')!, { subtree: true, childList: true, characterData: true });
  });
}

async function streamedLengths(): Promise<number[]> {
  return page.evaluate(() => (window as unknown as { __lengths: number[] }).__lengths);
}

test('the page loads with the message box focused and the served model named', { skip, timeout: 60_000 }, async () => {
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'input');
  await page.waitForFunction(() => document.getElementById('model-name')?.textContent !== '…');
  assert.equal(await page.textContent('#model-name'), server!.model.split('/').pop());
  assert.equal(await page.isVisible('#welcome'), true);
  const css = await fetch(`${server!.url}/style.css`);
  assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
});

test('a message streams its answer token by token, with speed, cache, cost and a routing heatmap', { skip, timeout: 120_000 }, async () => {
  await setSetting('#set-max-tokens', '24');
  await setSetting('#set-temperature', '0');
  await recordStreaming();
  await send(LONG_FIRST);
  assert.equal(await answerSettled(), 'done');
  const lengths = await streamedLengths();
  const distinct = new Set(lengths.filter((n) => n > 0));
  assert.ok(distinct.size >= 2, `the answer should grow piece by piece while streaming; saw lengths ${JSON.stringify(lengths)}`);

  const a = lastAnswer();
  assert.ok(((await a.locator('.msg-body').textContent()) ?? '').length > 0);
  assert.match((await a.locator('[data-stat="tps"]').textContent()) ?? '', /^[\d.]+ tok\/s$/);
  assert.match((await a.locator('[data-stat="ttft"]').textContent()) ?? '', /^first token \d/);
  assert.match((await a.locator('[data-stat="cache"]').textContent()) ?? '', /^prompt \d+: \d+ cached · \d+ computed$/);
  assert.match((await a.locator('[data-stat="cost"]').textContent()) ?? '', /\$\d/);
  assert.match((await a.locator('[data-stat="tokens"]').textContent()) ?? '', /^\d+ tokens$/);

  const s = await status();
  const fig = a.locator('details.routing[open] figure.heatmap');
  assert.equal(await fig.getAttribute('data-layers'), String(s.model.moe_layers.length));
  assert.equal(await fig.getAttribute('data-experts'), String(s.model.routed_experts));
  assert.equal(await fig.getAttribute('data-shared'), String(s.model.shared_experts));
  assert.ok(Number(await fig.getAttribute('data-tokens')) > 0);
  const box = await fig.locator('canvas').boundingBox();
  assert.ok(box && box.width > 50 && box.height > 10, `the heatmap is drawn: ${JSON.stringify(box)}`);
  assert.match((await fig.locator('canvas').getAttribute('aria-label')) ?? '', /^Expert routing of \d+ generated tokens over \d+ MoE layers/);
  // Pointing at a routed expert's cell reads out its figures.
  await fig.locator('canvas').hover({ position: { x: box.width - 4, y: box.height - 4 } });
  assert.match((await fig.locator('.heatmap-readout').textContent()) ?? '', /^MoE layer \d+ · expert \d+: \d+ of \d+ tokens/);
});

test('Shift+Enter adds a line, Enter sends; the second turn reuses the cached prefix', { skip, timeout: 120_000 }, async () => {
  const users = await page.locator('.msg.user').count();
  await page.fill('#input', 'line one');
  await page.press('#input', 'Shift+Enter');
  await page.type('#input', 'line two');
  assert.equal(await page.inputValue('#input'), 'line one\nline two');
  assert.equal(await page.locator('.msg.user').count(), users, 'Shift+Enter must not send');
  await page.press('#input', 'Enter');
  assert.equal(await page.inputValue('#input'), '');
  assert.equal(await page.locator('.msg.user').count(), users + 1);
  assert.equal(await lastUser().locator('.msg-body br').count(), 1);
  assert.equal(await answerSettled(), 'done');
  const cache = (await lastAnswer().locator('[data-stat="cache"]').textContent()) ?? '';
  const hit = Number(/: (\d+) cached/.exec(cache)?.[1]);
  assert.ok(hit > 0, `the first turn's pages come from the prefix cache: ${cache}`);
});

test('Esc stops an answer mid-stream and the server cancels the generation', { skip, timeout: 120_000 }, async () => {
  const before = await metric(server!.url, CANCELLED);
  await setSetting('#set-max-tokens', '120');
  await setSetting('#set-temperature', '1');
  let state = '';
  // A model may end an answer on its own before the key press lands; then ask again.
  for (let attempt = 0; attempt < 3 && state !== 'stopped'; attempt++) {
    await send('Tell me a long story about the sea.');
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('.msg.assistant');
      const last = all[all.length - 1];
      return last?.getAttribute('data-state') !== 'streaming' || (last.querySelector('.msg-body')?.textContent ?? '').length > 0;
    });
    await page.keyboard.press('Escape');
    state = await answerSettled();
  }
  assert.equal(state, 'stopped', 'the answer was still streaming when Esc was pressed');
  assert.equal(await lastAnswer().locator('[data-stat="state"]').textContent(), 'stopped');
  assert.equal(await page.isVisible('#stop'), false);
  assert.equal(await page.isVisible('#send'), true);
  let after = before;
  for (let i = 0; i < 50 && after <= before; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await metric(server!.url, CANCELLED);
  }
  assert.ok(after > before, `${CANCELLED} went from ${before} to ${after}`);
});

test('the conversation survives a reload', { skip, timeout: 60_000 }, async () => {
  const snapshot = () =>
    page.$$eval('.msg', (els) => els.map((e) => `${e.className}|${e.getAttribute('data-state')}|${e.querySelector('.msg-body')?.textContent ?? ''}`));
  const before = await snapshot();
  assert.ok(before.length >= 6);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.deepEqual(await snapshot(), before);
  assert.equal(await page.isVisible('#welcome'), false);
  assert.equal(await lastAnswer().getAttribute('data-state'), 'stopped');
  assert.ok((await page.locator('.msg.assistant details.routing figure.heatmap').count()) >= 2, 'routing maps are kept');
  assert.equal(await page.inputValue('#set-max-tokens'), '120', 'settings are kept');
});

test('HTML in a message shows as text and Markdown as formatting; nothing runs', { skip, timeout: 120_000 }, async () => {
  await setSetting('#set-max-tokens', '16');
  await setSetting('#set-temperature', '0');
  const evil = 'Is <script>alert(1)</script> safe? **bold** and _soft_ <img src=x onerror=alert(2)>\n\n```js\nconst x = 1 < 2;\n```';
  await send(evil);
  const u = lastUser();
  await u.waitFor();
  assert.equal(await u.locator('strong').textContent(), 'bold');
  assert.equal(await u.locator('em').textContent(), 'soft');
  assert.equal(await u.locator('pre code').textContent(), 'const x = 1 < 2;');
  assert.equal(await u.locator('pre code').getAttribute('class'), 'language-js');
  const text = (await u.locator('.msg-body').textContent()) ?? '';
  assert.ok(text.includes('<script>alert(1)</script>'), text);
  assert.ok(text.includes('<img src=x onerror=alert(2)>'), text);
  assert.equal(await answerSettled(), 'done');
  assert.equal(await page.locator('#messages script, #messages img, #messages iframe').count(), 0);
  assert.deepEqual(dialogs, []);
});

test('screenshots of the chat and status views at desktop and phone widths', { skip, timeout: 120_000 }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const shot = async (name: string) => {
    const path = join(SHOTS, `${name}.png`);
    await page.screenshot({ path });
    assert.ok(statSync(path).size > 5_000, `${path} was written`);
  };
  await page.evaluate(() => document.getElementById('messages')!.scrollTo(0, 1e9));
  await shot('chat-desktop');

  await page.click('#tab-status');
  await page.waitForSelector('#card-mla', { state: 'visible' });
  await shot('status-desktop');

  await page.setViewportSize(PHONE);
  await page.click('#tab-chat');
  // On a phone the settings start hidden; the button opens them over the chat and Esc closes them.
  await page.waitForFunction(() => getComputedStyle(document.getElementById('settings')!).visibility === 'hidden');
  await page.click('#toggle-settings');
  await page.waitForFunction(() => getComputedStyle(document.getElementById('settings')!).visibility === 'visible');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => getComputedStyle(document.getElementById('settings')!).visibility === 'hidden');
  await page.focus('#input');
  await page.evaluate(() => document.getElementById('messages')!.scrollTo(0, 1e9));
  assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= PHONE.width, 'nothing overflows the phone width');
  await shot('chat-phone');

  await page.click('#tab-status');
  await page.waitForSelector('#card-mla', { state: 'visible' });
  assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= PHONE.width);
  await shot('status-phone');
  await page.setViewportSize(DESKTOP);
  await page.click('#tab-chat');
});

test('the status view shows the latent cache, prefix sharing, the disk cache and the MLA saving', { skip, timeout: 60_000 }, async () => {
  await page.click('#tab-status');
  await page.waitForSelector('#card-mla', { state: 'visible' });
  assert.equal(await page.isVisible('#chat-view'), false);
  const field = async (name: string) => (await page.textContent(`[data-field="${name}"]`)) ?? '';
  const s = await status();
  assert.ok(s.latent_cache.bytes_in_use > 0);
  assert.match(await field('cache-bytes-in-use'), /^[\d.]+ (B|KiB|MiB|GiB)$/);
  assert.notEqual(await field('cache-bytes-in-use'), '0 B');
  assert.match(await field('cache-bytes-budget'), /^[\d.]+ (KiB|MiB|GiB)$/);
  assert.match(await field('shared-pages'), /^\d+$/);
  assert.match(await field('prefix-cache-tokens'), /^[\d,]+$/);
  assert.match(await field('disk-bytes'), /^[\d.]+ (B|KiB|MiB|GiB)$/);
  assert.match(await field('disk-hit-rate'), /^(\d+(\.\d)?%|–)$/);
  assert.match(await field('mha-ratio'), /^[\d.]+×$/);
  assert.match(await field('gqa-ratio'), /^[\d.]+×$/);
  assert.ok(Number((await field('prompt-hit-tokens')).replace(/,/g, '')) > 0);
  assert.ok(Number(await field('cancellations')) >= 1);
  // Three bars compare the cached tokens under MLA, GQA and MHA; MLA's is the shortest.
  const widths = await page.$$eval('#card-mla .bar-fill', (els) => els.map((e) => e.getBoundingClientRect().width));
  assert.equal(widths.length, 3);
  assert.ok(widths[0]! < widths[2]!, `MLA ${widths[0]} < MHA ${widths[2]}`);
  await page.click('#tab-chat');
  await page.waitForSelector('#chat-view', { state: 'visible' });
  assert.equal(await page.isVisible('#status-view'), false);
});

test('model output cannot inject HTML either (a scripted stream through the page)', { skip, timeout: 60_000 }, async () => {
  const chunk = (o: object) => `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 0, model: 'm', ...o })}\n\n`;
  const pieces = ['Here: <scr', 'ipt>alert(3)</script> ', '<img src=x onerror=alert(4)> ', '[click](javascript:alert(5)) ', '[ok](https://example.com/) ', '**strong**\n\n', '```html\n<b>x</b>\n```'];
  const body = [
    chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }),
    ...pieces.map((p) => chunk({ choices: [{ index: 0, delta: { content: p }, finish_reason: null }] })),
    chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }),
    chunk({
      choices: [],
      usage: { prompt_tokens: 10, completion_tokens: 7, total_tokens: 17, prompt_cache_hit_tokens: 0, prompt_cache_miss_tokens: 10, cost: { currency: 'USD', input_cache_miss: 0, input_cache_hit: 0, output: 0, total: 0.000001 } },
      timings: { prompt_tokens: 10, prompt_cache_hit_tokens: 0, prompt_cache_miss_tokens: 10, completion_tokens: 7, time_to_first_token_s: 0.01, generation_s: 0.01, tokens_per_second: 600, total_s: 0.02 },
      routing: { layers: [1, 2], routed_experts: 4, shared_experts: 2, experts_per_token: 2, tokens: 6, counts: [[6, 3, 3, 0], [1, 2, 4, 5]] },
    }),
    'data: [DONE]\n\n',
  ].join('');
  await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body }));
  try {
    await send('show me some html');
    assert.equal(await answerSettled(), 'done');
  } finally {
    await page.unroute('**/v1/chat/completions');
  }
  const a = lastAnswer();
  const text = (await a.locator('.msg-body').textContent()) ?? '';
  assert.ok(text.includes('<script>alert(3)</script>'), text);
  assert.ok(text.includes('<img src=x onerror=alert(4)>'), text);
  assert.equal(await a.locator('strong').textContent(), 'strong');
  assert.equal(await a.locator('pre code').textContent(), '<b>x</b>');
  assert.equal(await a.locator('a').count(), 1, 'only the https link is a link');
  assert.equal(await a.locator('a').getAttribute('href'), 'https://example.com/');
  assert.equal(await page.locator('#messages script, #messages img, .msg-body b, a[href^="javascript:"]').count(), 0);
  const fig = a.locator('figure.heatmap');
  assert.equal(await fig.getAttribute('data-layers'), '2');
  assert.equal(await fig.getAttribute('data-shared'), '2');
  assert.match((await a.locator('[data-stat="tps"]').textContent()) ?? '', /^600 tok\/s$/);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
});
