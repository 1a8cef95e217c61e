// @ts-check
/**
 * The status view: the latent cache (bytes in use against the budget), prefix sharing, the disk
 * context cache, prompt-cache hits since start, and the MLA saving measured on the live server —
 * the bytes the cached tokens take against an MHA or GQA cache of the same model.
 */
import { bytes, int, money, percent } from './format.js';

/**
 * GET /v1/status (src/server/routes/status.ts).
 * @typedef {{
 *   model: { id: string, context_length: number, backend: string | null, model_type: string | null, layers: number | null,
 *     moe_layers: number[] | null, routed_experts: number | null, shared_experts: number | null, experts_per_token: number | null,
 *     hidden_size: number | null, vocab_size: number | null, attention_heads: number | null, kv_lora_rank: number | null,
 *     q_lora_rank: number | null, qk_nope_head_dim: number | null, qk_rope_head_dim: number | null, v_head_dim: number | null,
 *     max_position_embeddings: number | null },
 *   engine: { running: number, queued: number },
 *   latent_cache: { bytes_in_use: number, bytes_budget: number, bytes_per_token: number, type?: string | null,
 *     cached_tokens: number, budget_tokens: number, shared_pages: number, prefix_cache_tokens: number },
 *   disk_cache: { bytes: number, files: number, hits: number, misses: number, hit_rate: number | null },
 *   prompt_cache: { hit_tokens: number, miss_tokens: number, hit_rate: number | null },
 *   mla: { cached_tokens: number, bytes_per_token: { mla: number, mha: number, gqa: number },
 *     bytes: { mla: number, mha: number, gqa: number }, mha_ratio: number | null, gqa_ratio: number | null,
 *     gqa_kv_heads: number, equivalent_gqa_kv_heads: number | null },
 *   totals: { completion_requests: number, prompt_tokens: number, completion_tokens: number,
 *     prompt_cache_hit_tokens: number, prompt_cache_miss_tokens: number, cost: { currency: string, total: number },
 *     cancellations: { client_disconnect: number, timeout: number, shutdown: number } },
 *   prices: { currency: string, input_cache_miss_per_million: number, input_cache_hit_per_million: number, output_per_million: number },
 *   uptime_s: number
 * }} Status
 */

/**
 * @param {string} tag
 * @param {string | null} className
 * @param {(Node | string)[]} [children]
 */
function h(tag, className, children = []) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  e.append(...children);
  return e;
}

/**
 * A labelled figure; `field` names it for tests and scripts (data-field).
 * @param {string} label
 * @param {string} value
 * @param {string} field
 * @param {string} [note]
 */
function figure(label, value, field, note) {
  const v = h('dd', null, [value]);
  v.dataset['field'] = field;
  const parts = [h('dt', null, [label]), v];
  if (note) parts.push(h('dd', 'note', [note]));
  return h('div', 'figure', parts);
}

/**
 * A horizontal bar: `value` of `max`, with a label and a figure.
 * @param {string} label
 * @param {number} value
 * @param {number} max
 * @param {string} text
 * @param {string} kind css modifier
 */
function bar(label, value, max, text, kind) {
  const fill = h('span', `bar-fill ${kind}`);
  fill.style.width = `${max > 0 ? Math.max(value > 0 ? 0.5 : 0, Math.min(100, (value / max) * 100)) : 0}%`;
  const row = h('div', 'bar-row', [h('span', 'bar-label', [label]), h('span', 'bar-track', [fill]), h('span', 'bar-value', [text])]);
  row.dataset['bar'] = kind;
  return row;
}

/**
 * @param {string} title
 * @param {string} id
 * @param {(Node | string)[]} children
 */
function card(title, id, children) {
  const c = h('section', 'card', [h('h2', null, [title]), ...children]);
  c.id = id;
  return c;
}

/**
 * Replaces the contents of `root` with the status cards.
 * @param {HTMLElement} root
 * @param {Status} s
 */
export function renderStatus(root, s) {
  const lc = s.latent_cache;
  const m = s.model;
  const mla = s.mla;
  const perLayer = m.kv_lora_rank !== null && m.qk_rope_head_dim !== null ? m.kv_lora_rank + m.qk_rope_head_dim : null;

  const cache = card('Latent cache (MLA)', 'card-cache', [
    bar('in use', lc.bytes_in_use, lc.bytes_budget, `${bytes(lc.bytes_in_use)} of ${bytes(lc.bytes_budget)}`, 'use'),
    h('dl', 'figures', [
      figure('bytes in use', bytes(lc.bytes_in_use), 'cache-bytes-in-use'),
      figure('budget', bytes(lc.bytes_budget), 'cache-bytes-budget', `${int(lc.budget_tokens)} tokens`),
      figure('tokens cached', int(lc.cached_tokens), 'cached-tokens', 'in whole pages'),
      figure(
        'per token',
        bytes(lc.bytes_per_token),
        'bytes-per-token',
        perLayer !== null && m.layers !== null
          ? `${perLayer} values × ${m.layers} layers (latent ${m.kv_lora_rank} + RoPE key ${m.qk_rope_head_dim})${lc.type ? ` in ${lc.type}` : ''}`
          : undefined,
      ),
    ]),
  ]);

  const tokens = mla.cached_tokens;
  const basis = tokens > 0 ? mla.bytes : mla.bytes_per_token;
  const most = Math.max(basis.mla, basis.mha, basis.gqa);
  const saving = card('The MLA saving, measured now', 'card-mla', [
    h('p', 'lead', [
      tokens > 0
        ? `The ${int(tokens)} tokens in the cache take ${bytes(mla.bytes.mla)}. The same tokens would take:`
        : 'Nothing is cached yet; per token, the cache of each kind takes:',
    ]),
    bar('MLA latent', basis.mla, most, bytes(basis.mla), 'mla'),
    bar(`GQA, ${mla.gqa_kv_heads} KV heads`, basis.gqa, most, `${bytes(basis.gqa)}${mla.gqa_ratio !== null ? ` · ${mla.gqa_ratio}×` : ''}`, 'gqa'),
    bar(`MHA${m.attention_heads !== null ? `, ${m.attention_heads} heads` : ''}`, basis.mha, most, `${bytes(basis.mha)}${mla.mha_ratio !== null ? ` · ${mla.mha_ratio}×` : ''}`, 'mha'),
    h('dl', 'figures', [
      figure('MHA would need', mla.mha_ratio !== null ? `${mla.mha_ratio}×` : '–', 'mha-ratio', tokens > 0 ? bytes(mla.bytes.mha) : `${bytes(mla.bytes_per_token.mha)} per token`),
      figure('GQA would need', mla.gqa_ratio !== null ? `${mla.gqa_ratio}×` : '–', 'gqa-ratio', tokens > 0 ? bytes(mla.bytes.gqa) : `${bytes(mla.bytes_per_token.gqa)} per token`),
      figure('MLA ≈ GQA with', mla.equivalent_gqa_kv_heads !== null ? `${mla.equivalent_gqa_kv_heads} KV heads` : '–', 'equivalent-gqa-heads', 'the same bytes per token'),
    ]),
  ]);

  const sharing = card('Prefix sharing', 'card-prefix', [
    h('dl', 'figures', [
      figure('shared pages', int(lc.shared_pages), 'shared-pages', 'held by more than one sequence or by the prefix tree'),
      figure('prefix-cache tokens', int(lc.prefix_cache_tokens), 'prefix-cache-tokens', 'kept for reuse by later prompts'),
      figure('running · queued', `${s.engine.running} · ${s.engine.queued}`, 'engine-load'),
    ]),
  ]);

  const dc = s.disk_cache;
  const disk = card('Disk context cache', 'card-disk', [
    bar('hit rate', dc.hits, dc.hits + dc.misses, percent(dc.hit_rate), 'hit'),
    h('dl', 'figures', [
      figure('size', bytes(dc.bytes), 'disk-bytes', `${int(dc.files)} file${dc.files === 1 ? '' : 's'}`),
      figure('hit rate', percent(dc.hit_rate), 'disk-hit-rate', `${int(dc.hits)} hits, ${int(dc.misses)} misses`),
    ]),
  ]);

  const pc = s.prompt_cache;
  const t = s.totals;
  const prompts = card('Prompt cache since start', 'card-prompt', [
    bar('from cache', pc.hit_tokens, pc.hit_tokens + pc.miss_tokens, percent(pc.hit_rate), 'hit'),
    h('dl', 'figures', [
      figure('prompt tokens from cache', int(pc.hit_tokens), 'prompt-hit-tokens'),
      figure('computed', int(pc.miss_tokens), 'prompt-miss-tokens'),
      figure('requests', int(t.completion_requests), 'requests', `${int(t.completion_tokens)} tokens generated`),
      figure('cost', money(t.cost.total, t.cost.currency), 'total-cost', `at ${money(s.prices.input_cache_miss_per_million, s.prices.currency)} / ${money(s.prices.input_cache_hit_per_million, s.prices.currency)} / ${money(s.prices.output_per_million, s.prices.currency)} per 1M miss / hit / output tokens`),
      figure('stopped by the client', int(t.cancellations.client_disconnect), 'cancellations'),
    ]),
  ]);

  const moe = m.moe_layers;
  const model = card('Model', 'card-model', [
    h('dl', 'figures', [
      figure('name', m.id, 'model-id', m.model_type ?? undefined),
      figure('layers', m.layers !== null ? String(m.layers) : '–', 'layers', moe && m.layers !== null ? `${m.layers - moe.length} dense, ${moe.length} MoE` : undefined),
      figure(
        'experts',
        m.routed_experts !== null ? `${m.routed_experts} routed + ${m.shared_experts ?? 0} shared` : '–',
        'experts',
        m.experts_per_token !== null ? `${m.experts_per_token} routed per token` : undefined,
      ),
      figure('attention', m.attention_heads !== null ? `MLA, ${m.attention_heads} heads` : '–', 'attention', m.kv_lora_rank !== null ? `kv_lora_rank ${m.kv_lora_rank}, RoPE ${m.qk_rope_head_dim}, v ${m.v_head_dim}` : undefined),
      figure('context', `${int(m.context_length)} tokens`, 'context', m.max_position_embeddings !== null ? `model: ${int(m.max_position_embeddings)}` : undefined),
      figure('kernels', m.backend ?? '–', 'backend'),
    ]),
  ]);

  root.replaceChildren(cache, saving, sharing, disk, prompts, model);
}
