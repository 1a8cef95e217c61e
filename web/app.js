// @ts-check
/**
 * The chat page of `dseek serve`: multi-turn chat streamed token by token through the
 * OpenAI-compatible API, with per-answer figures (speed, time to first token, prompt tokens from
 * the cache, cost, expert routing) and a status view of the server's caches. Plain ES modules,
 * no build step; the conversation and settings live in localStorage.
 */
import { ApiError, getJson, streamChat } from './api.js';
import { calibrate, DEFAULT_TOKENS_PER_CHAR, dropOldestTurn, fitContext, lastMessageTokens, TOKENS_PER_MESSAGE } from './context.js';
import { duration, int, money, rate } from './format.js';
import { renderHeatmap, routedTokens } from './heatmap.js';
import { renderMarkdown } from './markdown.js';
import { renderStatus } from './status.js';

/** @typedef {import('./api.js').Usage} Usage */
/** @typedef {import('./api.js').Timings} Timings */
/** @typedef {import('./api.js').Routing} Routing */
/** @typedef {import('./status.js').Status} Status */
/** @typedef {import('./context.js').Message} Message */
/**
 * @typedef {{ state: 'streaming' | 'done' | 'stopped' | 'error', finish?: string | null, error?: string,
 *   usage?: Usage, timings?: Timings, routing?: Routing | null, dropped?: number, model?: string,
 *   client?: { ttft: number | null, tps: number | null, chunks: number } }} Meta
 * @typedef {{ id: string, role: 'user' | 'assistant', content: string, tokens?: number, meta?: Meta }} ChatMessage
 * @typedef {{ model: string, temperature: number | null, top_p: number | null, max_tokens: number | null,
 *   seed: number | null, system: string, apiKey: string, routing: boolean }} Settings
 */

const CHAT_KEY = 'dseek.chat.v1';
const SETTINGS_KEY = 'dseek.settings.v1';
const CALIBRATION_KEY = 'dseek.tokens-per-char.v1';
const STATUS_EVERY_MS = 2000;

/** @type {Settings} */
const DEFAULT_SETTINGS = { model: '', temperature: null, top_p: null, max_tokens: null, seed: null, system: '', apiKey: '', routing: true };

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function $(id, type) {
  const e = document.getElementById(id);
  if (!(e instanceof type)) throw new Error(`the page lacks #${id}`);
  return e;
}

const ui = {
  messages: $('messages', HTMLElement),
  welcome: $('welcome', HTMLElement),
  form: $('composer', HTMLFormElement),
  input: $('input', HTMLTextAreaElement),
  send: $('send', HTMLButtonElement),
  stop: $('stop', HTMLButtonElement),
  newChat: $('new-chat', HTMLButtonElement),
  toggleSettings: $('toggle-settings', HTMLButtonElement),
  settings: $('settings', HTMLElement),
  modelName: $('model-name', HTMLElement),
  chatView: $('chat-view', HTMLElement),
  statusView: $('status-view', HTMLElement),
  statusCards: $('status-cards', HTMLElement),
  statusUpdated: $('status-updated', HTMLElement),
  tabChat: $('tab-chat', HTMLAnchorElement),
  tabStatus: $('tab-status', HTMLAnchorElement),
  set: {
    model: $('set-model', HTMLSelectElement),
    temperature: $('set-temperature', HTMLInputElement),
    topP: $('set-top-p', HTMLInputElement),
    maxTokens: $('set-max-tokens', HTMLInputElement),
    seed: $('set-seed', HTMLInputElement),
    system: $('set-system', HTMLTextAreaElement),
    routing: $('set-routing', HTMLInputElement),
    apiKey: $('set-api-key', HTMLInputElement),
    reset: $('reset-settings', HTMLButtonElement),
  },
};

// ---------------------------------------------------------------- storage

/**
 * @template T
 * @param {string} key
 * @param {T} fallback
 * @returns {T}
 */
function load(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : /** @type {T} */ (JSON.parse(raw));
  } catch {
    return fallback;
  }
}

/** @type {Settings} */
let settings = { ...DEFAULT_SETTINGS, ...load(SETTINGS_KEY, {}) };
/** @type {{ messages: ChatMessage[] }} */
const chat = { messages: sanitizeMessages(load(CHAT_KEY, { messages: [] }).messages) };
let tokensPerChar = load(CALIBRATION_KEY, DEFAULT_TOKENS_PER_CHAR);

/**
 * Keeps well-formed messages; an answer that was streaming when the page went away is "stopped".
 * @param {unknown} list
 * @returns {ChatMessage[]}
 */
function sanitizeMessages(list) {
  if (!Array.isArray(list)) return [];
  /** @type {ChatMessage[]} */
  const out = [];
  for (const m of list) {
    if (!m || typeof m !== 'object' || (m.role !== 'user' && m.role !== 'assistant') || typeof m.content !== 'string') continue;
    const msg = /** @type {ChatMessage} */ ({ id: typeof m.id === 'string' ? m.id : newId(), role: m.role, content: m.content });
    if (typeof m.tokens === 'number' && m.tokens > 0) msg.tokens = m.tokens;
    if (m.role === 'assistant') {
      const meta = /** @type {Meta} */ (m.meta && typeof m.meta === 'object' ? m.meta : { state: 'done' });
      if (meta.state === 'streaming') meta.state = 'stopped';
      msg.meta = meta;
    }
    out.push(msg);
  }
  return out;
}

/** Saves the conversation; when the browser's quota is full, older routing maps and then older turns give way. */
function saveChat() {
  for (let attempt = 0; attempt < 64; attempt++) {
    try {
      localStorage.setItem(CHAT_KEY, JSON.stringify({ messages: chat.messages }));
      return;
    } catch {
      const heavy = chat.messages.find((m, i) => i < chat.messages.length - 2 && m.meta?.routing);
      if (heavy?.meta) delete heavy.meta.routing;
      else if (chat.messages.length > 2) chat.messages.splice(0, 2);
      else return;
    }
  }
}

function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  } catch {
    /* private mode: settings last for this visit */
  }
}

function newId() {
  return typeof crypto.randomUUID === 'function' ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

// ---------------------------------------------------------------- server facts

/** @type {Status | null} */
let status = null;

/** @param {unknown} e */
function describe(e) {
  if (e instanceof ApiError) return e.status === 401 ? 'The server wants an API key: enter it in Settings.' : e.message;
  if (e instanceof TypeError) return `Could not reach the server (${e.message}). Is dseek serve still running?`;
  return e instanceof Error ? e.message : String(e);
}

async function loadModels() {
  try {
    const list = await getJson('/v1/models', settings.apiKey);
    const ids = /** @type {{ data: { id: string }[] }} */ (list).data.map((m) => m.id);
    ui.set.model.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (!ids.includes(settings.model)) settings.model = ids[0] ?? '';
    ui.set.model.value = settings.model;
    ui.modelName.textContent = settings.model || '–';
  } catch (e) {
    ui.modelName.textContent = e instanceof ApiError && e.status === 401 ? 'API key needed' : 'offline';
  }
}

/** @param {boolean} [render] */
async function loadStatus(render = false) {
  try {
    status = await getJson('/v1/status', settings.apiKey);
    if (render && status) {
      renderStatus(ui.statusCards, status);
      ui.statusUpdated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    }
  } catch (e) {
    if (render) ui.statusUpdated.textContent = describe(e);
  }
}

// ---------------------------------------------------------------- rendering

/** @type {Map<string, HTMLElement>} */
const rendered = new Map();

function renderAll() {
  for (const el of rendered.values()) el.remove();
  rendered.clear();
  chat.messages.forEach((m) => renderMessage(m));
  ui.welcome.hidden = chat.messages.length > 0;
}

/**
 * Builds or rebuilds one message's element.
 * @param {ChatMessage} m
 */
function renderMessage(m) {
  let el = rendered.get(m.id);
  if (!el) {
    el = document.createElement('article');
    el.className = `msg ${m.role}`;
    el.dataset['id'] = m.id;
    rendered.set(m.id, el);
    ui.messages.append(el);
  }
  el.dataset['state'] = m.meta?.state ?? 'done';
  const who = document.createElement('div');
  who.className = 'msg-role';
  who.textContent = m.role === 'user' ? 'You' : (m.meta?.model ?? 'model');
  const body = document.createElement('div');
  body.className = 'msg-body markdown';
  body.append(renderMarkdown(m.content));
  addCopyButtons(body);
  if (m.role === 'assistant' && m.meta?.state === 'streaming') {
    const caret = document.createElement('span');
    caret.className = 'caret';
    caret.setAttribute('aria-hidden', 'true');
    (body.lastElementChild ?? body).append(caret);
  }
  /** @type {HTMLElement[]} */
  const parts = [who, body];
  if (m.role === 'assistant' && m.meta) {
    parts.push(statsLine(m.meta));
    const routing = m.meta.routing;
    if (routing && routing.layers.length > 0 && m.meta.state !== 'streaming') parts.push(routingBlock(routing, isLastAnswer(m)));
    if (m.meta.state === 'error' && isLastAnswer(m)) {
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.className = 'retry';
      retry.textContent = 'Retry';
      retry.addEventListener('click', () => void generate(m));
      parts.push(retry);
    }
  }
  el.replaceChildren(...parts);
}

/** @param {ChatMessage} m */
function isLastAnswer(m) {
  return chat.messages[chat.messages.length - 1] === m;
}

/** @param {HTMLElement} body */
function addCopyButtons(body) {
  for (const pre of body.querySelectorAll('pre')) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy';
    button.textContent = 'Copy';
    button.setAttribute('aria-label', 'Copy the code');
    button.addEventListener('click', () => {
      const text = pre.querySelector('code')?.textContent ?? '';
      navigator.clipboard?.writeText(text).then(
        () => (button.textContent = 'Copied'),
        () => (button.textContent = 'Copy failed'),
      );
      setTimeout(() => (button.textContent = 'Copy'), 1500);
    });
    pre.append(button);
  }
}

/**
 * The figures under an answer.
 * @param {Meta} meta
 */
function statsLine(meta) {
  const line = document.createElement('div');
  line.className = 'msg-stats';
  /**
   * @param {string} key
   * @param {string} text
   * @param {string} title
   */
  const chip = (key, text, title) => {
    const c = document.createElement('span');
    c.className = `chip ${key}`;
    c.dataset['stat'] = key;
    c.textContent = text;
    c.title = title;
    line.append(c);
  };
  const t = meta.timings;
  const u = meta.usage;
  if (meta.state === 'streaming') chip('state', 'generating…', 'Esc stops');
  if (meta.state === 'stopped') chip('state', 'stopped', 'Stopped before the end: the server cancelled the generation');
  if (meta.state === 'error') chip('error', meta.error ?? 'failed', 'The request failed');
  const tps = t?.tokens_per_second ?? meta.client?.tps ?? null;
  if (tps !== null) chip('tps', `${rate(tps)} tok/s`, t?.tokens_per_second != null ? 'Decode speed after the first token (server)' : 'Decode speed measured in the browser');
  const ttft = t?.time_to_first_token_s ?? meta.client?.ttft ?? null;
  if (ttft !== null) chip('ttft', `first token ${duration(ttft)}`, 'Time to first token');
  if (u) {
    chip(
      'cache',
      `prompt ${int(u.prompt_tokens)}: ${int(u.prompt_cache_hit_tokens)} cached · ${int(u.prompt_cache_miss_tokens)} computed`,
      'Prompt tokens served from the latent prefix cache (memory or disk) vs computed now',
    );
    chip('tokens', `${int(u.completion_tokens)} tokens`, 'Tokens generated');
    chip(
      'cost',
      money(u.cost.total, u.cost.currency),
      `At the server's prices: prompt ${money(u.cost.input_cache_miss, u.cost.currency)} computed + ${money(u.cost.input_cache_hit, u.cost.currency)} cached, output ${money(u.cost.output, u.cost.currency)}`,
    );
  } else if (meta.client && meta.state !== 'streaming') {
    chip('tokens', `~${int(meta.client.chunks)} tokens`, 'Pieces received before the stop');
  }
  if (meta.finish === 'length' && meta.state === 'done') chip('finish', 'hit max tokens', 'The answer reached max_tokens or the end of the context');
  if (meta.dropped) chip('dropped', `${meta.dropped} earlier message${meta.dropped === 1 ? '' : 's'} left out`, 'Left out to fit the model’s context');
  return line;
}

/**
 * @param {Routing} r
 * @param {boolean} open
 */
function routingBlock(r, open) {
  const d = document.createElement('details');
  d.className = 'routing';
  d.open = open;
  const s = document.createElement('summary');
  const shared = r.shared_experts > 0 ? ` + ${r.shared_experts} shared` : '';
  s.textContent = `Expert routing · ${r.layers.length} MoE layer${r.layers.length === 1 ? '' : 's'} × ${r.routed_experts} experts${shared} · ${int(routedTokens(r))} tokens`;
  s.title = 'Counts cover the generated tokens that went back through the model: all but the last one';
  d.append(s, renderHeatmap(r));
  return d;
}

let renderQueued = false;
/** @type {ChatMessage | null} */
let renderTarget = null;
/** @param {ChatMessage} m */
function scheduleRender(m) {
  renderTarget = m;
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (!renderTarget) return;
    const stick = nearBottom();
    renderMessage(renderTarget);
    if (stick) scrollToBottom();
  });
}

function nearBottom() {
  const s = ui.messages;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ---------------------------------------------------------------- chatting

/** @type {AbortController | null} */
let controller = null;

/** @param {boolean} busy */
function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  document.body.classList.toggle('busy', busy);
}

async function send() {
  const text = ui.input.value.trim();
  if (!text || controller) return;
  ui.input.value = '';
  autosize();
  /** @type {ChatMessage} */
  const user = { id: newId(), role: 'user', content: text };
  /** @type {ChatMessage} */
  const answer = { id: newId(), role: 'assistant', content: '', meta: { state: 'streaming', model: settings.model } };
  chat.messages.push(user, answer);
  saveChat();
  renderAll();
  scrollToBottom();
  await generate(answer);
}

/** The request fields from the settings. */
function samplingFields() {
  /** @type {Record<string, unknown>} */
  const f = {};
  if (settings.model) f['model'] = settings.model;
  if (settings.temperature !== null) f['temperature'] = settings.temperature;
  if (settings.top_p !== null) f['top_p'] = settings.top_p;
  if (settings.max_tokens !== null) f['max_tokens'] = settings.max_tokens;
  if (settings.seed !== null) f['seed'] = settings.seed;
  if (settings.routing) f['dseek'] = { routing: true };
  return f;
}

/**
 * Streams the answer `answer` (an assistant message in chat.messages) for the turns before it.
 * @param {ChatMessage} answer
 */
async function generate(answer) {
  if (controller) return;
  const at = chat.messages.indexOf(answer);
  const turns = chat.messages.slice(0, at).filter((m) => m.role === 'user' || (m.meta?.state !== 'error' && m.content !== ''));
  /** @type {Message[]} */
  const history = turns.map((m) => (m.tokens ? { role: m.role, content: m.content, tokens: m.tokens } : { role: m.role, content: m.content }));
  /** @type {Message | null} */
  const system = settings.system.trim() ? { role: 'system', content: settings.system.trim() } : null;
  const context = status?.model.context_length ?? null;
  const reserve = settings.max_tokens ?? (context ? Math.min(1024, Math.floor(context / 4)) : 0);
  let messages = context ? fitContext(history, system, context - reserve, tokensPerChar).messages : [...(system ? [system] : []), ...history];

  answer.content = '';
  answer.meta = { state: 'streaming', model: settings.model };
  renderMessage(answer);
  const meta = answer.meta;
  const ctl = new AbortController();
  controller = ctl;
  setBusy(true);
  const t0 = performance.now();
  /** @type {number | null} */
  let first = null;
  let last = 0;
  let chunks = 0;
  try {
    for (;;) {
      try {
        // Only the API's own fields: `tokens` is the page's bookkeeping, and the server refuses unknown fields.
        const body = { ...samplingFields(), messages: messages.map(({ role, content }) => ({ role, content })), stream_options: { include_usage: true } };
        for await (const chunk of streamChat(body, settings.apiKey, ctl.signal)) {
          for (const c of chunk.choices ?? []) {
            const piece = c.delta?.content;
            if (piece) {
              answer.content += piece;
              chunks++;
              last = performance.now();
              first ??= last;
              scheduleRender(answer);
            }
            if (c.finish_reason) meta.finish = c.finish_reason;
          }
          if (chunk.usage) meta.usage = chunk.usage;
          if (chunk.timings) meta.timings = chunk.timings;
          if (chunk.routing !== undefined) meta.routing = chunk.routing;
        }
        meta.state = 'done';
        break;
      } catch (e) {
        // Too long for the context: leave out the oldest turn and ask again.
        if (e instanceof ApiError && e.code === 'context_length_exceeded' && answer.content === '') {
          const fewer = dropOldestTurn(messages);
          if (fewer) {
            messages = fewer;
            continue;
          }
        }
        throw e;
      }
    }
    // Remember what the server counted, for fitting later turns into the context.
    const question = turns[turns.length - 1];
    const counted = meta.usage ? lastMessageTokens(messages, meta.usage.prompt_tokens, tokensPerChar) : null;
    if (meta.usage && answer.content) answer.tokens = meta.usage.completion_tokens + TOKENS_PER_MESSAGE;
    if (question && counted !== null && !question.tokens) question.tokens = counted;
    const learned = question && counted !== null ? calibrate(question.content, counted) : null;
    if (learned !== null) {
      tokensPerChar = learned;
      try {
        localStorage.setItem(CALIBRATION_KEY, JSON.stringify(learned));
      } catch {
        /* quota: the estimate lasts for this visit */
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) meta.state = 'stopped';
    else {
      meta.state = 'error';
      meta.error = describe(e);
      if (e instanceof ApiError && e.status === 401) openSettings(true);
    }
  } finally {
    meta.client = {
      ttft: first !== null ? (first - t0) / 1000 : null,
      tps: first !== null && chunks > 1 && last > first ? (chunks - 1) / ((last - first) / 1000) : null,
      chunks,
    };
    const sent = messages.filter((m) => m.role !== 'system').length;
    meta.dropped = Math.max(0, history.length - sent);
    controller = null;
    setBusy(false);
    renderTarget = null;
    saveChat();
    const stick = nearBottom();
    renderAll();
    if (stick) scrollToBottom();
    if (location.hash === '#status') void loadStatus(true);
    else void loadStatus();
  }
}

function stop() {
  controller?.abort();
}

function newChat() {
  stop();
  chat.messages = [];
  saveChat();
  renderAll();
  ui.input.focus();
}

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, Math.round(window.innerHeight * 0.4))}px`;
}

// ---------------------------------------------------------------- settings

function showSettings() {
  ui.set.temperature.value = settings.temperature === null ? '' : String(settings.temperature);
  ui.set.topP.value = settings.top_p === null ? '' : String(settings.top_p);
  ui.set.maxTokens.value = settings.max_tokens === null ? '' : String(settings.max_tokens);
  ui.set.seed.value = settings.seed === null ? '' : String(settings.seed);
  ui.set.system.value = settings.system;
  ui.set.routing.checked = settings.routing;
  ui.set.apiKey.value = settings.apiKey;
  if (settings.model) ui.set.model.value = settings.model;
}

/**
 * A number field's value within its min/max, or null when empty or invalid.
 * @param {HTMLInputElement} input
 * @param {boolean} integer
 */
function numberOf(input, integer) {
  if (input.value.trim() === '') return null;
  const n = Number(input.value);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) return null;
  const min = input.min === '' ? -Infinity : Number(input.min);
  const max = input.max === '' ? Infinity : Number(input.max);
  return Math.min(max, Math.max(min, n));
}

function readSettings() {
  const keyChanged = ui.set.apiKey.value !== settings.apiKey;
  settings = {
    model: ui.set.model.value || settings.model,
    temperature: numberOf(ui.set.temperature, false),
    top_p: numberOf(ui.set.topP, false),
    max_tokens: numberOf(ui.set.maxTokens, true),
    seed: numberOf(ui.set.seed, true),
    system: ui.set.system.value,
    routing: ui.set.routing.checked,
    apiKey: ui.set.apiKey.value.trim(),
  };
  saveSettings();
  ui.modelName.textContent = settings.model || '–';
  if (keyChanged) {
    void loadModels();
    void loadStatus(location.hash === '#status');
  }
}

const wide = matchMedia('(min-width: 1000px)');
const phone = matchMedia('(max-width: 640px)');

function placeholder() {
  ui.input.placeholder = phone.matches ? 'Message' : 'Message (Enter to send, Shift+Enter for a new line)';
}

/** @param {boolean} open */
function openSettings(open) {
  if (wide.matches) document.body.classList.toggle('settings-hidden', !open);
  else document.body.classList.toggle('settings-open', open);
  ui.toggleSettings.setAttribute('aria-expanded', String(open));
  if (open && !wide.matches) ui.set.temperature.focus();
}

function settingsOpen() {
  return wide.matches ? !document.body.classList.contains('settings-hidden') : document.body.classList.contains('settings-open');
}

// ---------------------------------------------------------------- views

/** @type {ReturnType<typeof setInterval> | null} */
let statusTimer = null;

function route() {
  const onStatus = location.hash === '#status';
  ui.chatView.hidden = onStatus;
  ui.statusView.hidden = !onStatus;
  ui.toggleSettings.hidden = onStatus;
  document.body.classList.toggle('view-status', onStatus);
  ui.tabChat.toggleAttribute('aria-current', !onStatus);
  ui.tabStatus.toggleAttribute('aria-current', onStatus);
  if (onStatus) {
    ui.tabStatus.setAttribute('aria-current', 'page');
    void loadStatus(true);
    statusTimer ??= setInterval(() => void loadStatus(true), STATUS_EVERY_MS);
  } else {
    ui.tabChat.setAttribute('aria-current', 'page');
    if (statusTimer !== null) clearInterval(statusTimer);
    statusTimer = null;
    ui.input.focus();
  }
}

// ---------------------------------------------------------------- wiring

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  void send();
});
ui.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    void send();
  }
});
ui.input.addEventListener('input', autosize);
ui.stop.addEventListener('click', stop);
ui.newChat.addEventListener('click', newChat);
ui.toggleSettings.addEventListener('click', () => openSettings(!settingsOpen()));
ui.settings.addEventListener('change', readSettings);
ui.settings.addEventListener('input', (e) => {
  if (e.target instanceof HTMLTextAreaElement) readSettings();
});
ui.set.reset.addEventListener('click', () => {
  settings = { ...DEFAULT_SETTINGS, model: settings.model, apiKey: settings.apiKey };
  saveSettings();
  showSettings();
});
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  if (controller) {
    e.preventDefault();
    stop();
  } else if (!wide.matches && settingsOpen()) {
    openSettings(false);
    ui.toggleSettings.focus();
  }
});
window.addEventListener('hashchange', route);
wide.addEventListener('change', () => ui.toggleSettings.setAttribute('aria-expanded', String(settingsOpen())));
phone.addEventListener('change', placeholder);

placeholder();
showSettings();
ui.toggleSettings.setAttribute('aria-expanded', String(settingsOpen()));
renderAll();
scrollToBottom();
route();
void loadModels().then(showSettings);
void loadStatus(location.hash === '#status');
document.body.dataset['ready'] = 'true';
