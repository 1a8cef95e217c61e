/**
 * Server metrics in the Prometheus text exposition format (version 0.0.4). Hand-written rather
 * than a client library: a few counters and two histograms do not justify a dependency.
 */
import type { EngineStats } from '../engine/types.js';

export type CancelReason = 'client_disconnect' | 'timeout' | 'shutdown';

const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private total = 0;
  constructor(readonly buckets: readonly number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(x: number): void {
    this.buckets.forEach((b, i) => {
      if (x <= b) this.counts[i]!++;
    });
    this.sum += x;
    this.total++;
  }
  lines(name: string, labels: string): string[] {
    const sep = labels ? ',' : '';
    const out = this.buckets.map((b, i) => `${name}_bucket{${labels}${sep}le="${b}"} ${this.counts[i]}`);
    out.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${this.total}`);
    const braces = labels ? `{${labels}}` : '';
    out.push(`${name}_sum${braces} ${this.sum}`, `${name}_count${braces} ${this.total}`);
    return out;
  }
}

export interface MetricsTotals {
  /** Finished chat and text completion requests (any status). */
  readonly completionRequests: number;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly promptCacheHitTokens: number;
  readonly promptCacheMissTokens: number;
  readonly cost: number;
  readonly currency: string;
  readonly cancellations: Readonly<Record<CancelReason, number>>;
}

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly cancellations = new Map<CancelReason, number>();
  private readonly durations = new Map<string, Histogram>();
  private readonly ttft = new Histogram(TTFT_BUCKETS);
  private promptTokens = 0;
  private completionTokens = 0;
  private cacheHitTokens = 0;
  private cacheMissTokens = 0;
  private cost = 0;
  private machineCost = 0;
  private machineSeconds = 0;
  /** Tokens the engine computed for requests with a machine cost: prompt misses and generated tokens. */
  private machineTokens = 0;

  constructor(private readonly currency: string) {}

  /** One finished HTTP exchange; `route` is the matched route pattern (bounded label values). */
  request(route: string, status: number, seconds: number): void {
    const key = `route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    let h = this.durations.get(route);
    if (!h) this.durations.set(route, (h = new Histogram(DURATION_BUCKETS)));
    h.observe(seconds);
  }

  firstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }

  tokens(prompt: number, completion: number, cacheHit: number, cacheMiss: number, cost: number): void {
    this.promptTokens += prompt;
    this.completionTokens += completion;
    this.cacheHitTokens += cacheHit;
    this.cacheMissTokens += cacheMiss;
    this.cost += cost;
  }

  /** A response's machine share (--machine-cost-per-hour): cost, busy seconds, tokens computed. */
  machine(cost: number, seconds: number, tokens: number): void {
    this.machineCost += cost;
    this.machineSeconds += seconds;
    this.machineTokens += tokens;
  }

  /** Running totals since start, for GET /v1/status. */
  totals(): MetricsTotals {
    let requests = 0;
    for (const [key, n] of this.requests) if (/route="\/v1\/(chat\/)?completions"/.test(key)) requests += n;
    return {
      completionRequests: requests,
      promptTokens: this.promptTokens,
      completionTokens: this.completionTokens,
      promptCacheHitTokens: this.cacheHitTokens,
      promptCacheMissTokens: this.cacheMissTokens,
      cost: this.cost,
      currency: this.currency,
      cancellations: { client_disconnect: this.cancellations.get('client_disconnect') ?? 0, timeout: this.cancellations.get('timeout') ?? 0, shutdown: this.cancellations.get('shutdown') ?? 0 },
    };
  }

  cancelled(reason: CancelReason): void {
    this.cancellations.set(reason, (this.cancellations.get(reason) ?? 0) + 1);
  }

  render(stats: EngineStats | null): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    metric('dseek_http_requests_total', 'counter', 'HTTP requests by route and status code.', [...this.requests].map(([k, v]) => `dseek_http_requests_total{${k}} ${v}`));
    metric('dseek_prompt_tokens_total', 'counter', 'Prompt tokens billed.', [`dseek_prompt_tokens_total ${this.promptTokens}`]);
    metric('dseek_completion_tokens_total', 'counter', 'Generated tokens billed.', [`dseek_completion_tokens_total ${this.completionTokens}`]);
    metric('dseek_prompt_cache_hit_tokens_total', 'counter', 'Prompt tokens served from the prefix cache.', [`dseek_prompt_cache_hit_tokens_total ${this.cacheHitTokens}`]);
    metric('dseek_prompt_cache_miss_tokens_total', 'counter', 'Prompt tokens computed (not in the prefix cache).', [`dseek_prompt_cache_miss_tokens_total ${this.cacheMissTokens}`]);
    metric('dseek_cost_total', 'counter', 'Summed cost of all responses at the configured price table.', [`dseek_cost_total{currency="${this.currency}"} ${this.cost}`]);
    if (this.machineTokens > 0 || this.machineSeconds > 0) {
      metric('dseek_machine_busy_seconds_total', 'counter', "Engine forward-pass seconds used by responses, each step shared by the requests' tokens in it.", [`dseek_machine_busy_seconds_total ${this.machineSeconds}`]);
      metric('dseek_machine_cost_total', 'counter', 'Summed machine cost of responses at --machine-cost-per-hour.', [`dseek_machine_cost_total{currency="${this.currency}"} ${this.machineCost}`]);
      metric('dseek_machine_cost_per_million_tokens', 'gauge', 'Machine cost per million tokens computed (prompt misses plus generated), as achieved since start.', [
        `dseek_machine_cost_per_million_tokens{currency="${this.currency}"} ${this.machineTokens > 0 ? (this.machineCost / this.machineTokens) * 1e6 : 0}`,
      ]);
    }
    metric('dseek_cancellations_total', 'counter', 'Requests aborted before the end, by cause.', (['client_disconnect', 'timeout', 'shutdown'] as const).map((r) => `dseek_cancellations_total{reason="${r}"} ${this.cancellations.get(r) ?? 0}`));
    if (stats) {
      metric('dseek_queue_depth', 'gauge', 'Sequences waiting in the engine queue.', [`dseek_queue_depth ${stats.queued}`]);
      metric('dseek_running_sequences', 'gauge', 'Sequences the engine is running.', [`dseek_running_sequences ${stats.running}`]);
      metric('dseek_cache_bytes_in_use', 'gauge', 'Latent-cache bytes in use.', [`dseek_cache_bytes_in_use ${stats.cacheBytesInUse}`]);
      metric('dseek_cache_bytes_budget', 'gauge', 'Latent-cache byte budget.', [`dseek_cache_bytes_budget ${stats.cacheBytesBudget}`]);
      metric('dseek_cache_bytes_per_token', 'gauge', 'Latent-cache bytes per cached token (all layers), by storage type (--cache-type).', [
        `dseek_cache_bytes_per_token${stats.cacheType ? `{type="${stats.cacheType}"}` : ''} ${stats.cacheBytesPerToken}`,
      ]);
      metric('dseek_prefix_cache_tokens', 'gauge', 'Tokens held in the prefix cache.', [`dseek_prefix_cache_tokens ${stats.prefixCacheTokens}`]);
      metric('dseek_engine_faults_total', 'counter', 'Engine steps that failed with an exception (their requests got a 500).', [`dseek_engine_faults_total ${stats.engineFaults}`]);
      metric('dseek_engine_healthy', 'gauge', '1 while the engine can serve; 0 once a model file changed on disk (restart needed).', [`dseek_engine_healthy ${stats.unhealthy === null ? 1 : 0}`]);
      const cs = stats.contextStore;
      if (cs) {
        // The shared context cache, as this replica sees it: every replica reports its own view.
        const store = `store="${cs.kind}"`;
        metric('dseek_context_store_up', 'gauge', '1 while the context store answers; 0 after an error or timeout, until it answers again.', [`dseek_context_store_up{${store}} ${cs.up ? 1 : 0}`]);
        metric('dseek_context_store_state_changes_total', 'counter', 'Context store up/down transitions (each logged once).', [`dseek_context_store_state_changes_total{${store}} ${cs.stateChanges}`]);
        metric('dseek_context_store_lookups_total', 'counter', 'Prompts whose pages were asked for, and those skipped while the store was down.', [
          `dseek_context_store_lookups_total{${store},result="asked"} ${cs.lookups}`,
          `dseek_context_store_lookups_total{${store},result="skipped"} ${cs.lookupsSkipped}`,
        ]);
        metric('dseek_context_store_pages_total', 'counter', 'Pages asked of the context store, by outcome (rejected: failed the header or checksum check, never served).', [
          `dseek_context_store_pages_total{${store},result="hit"} ${cs.hitPages}`,
          `dseek_context_store_pages_total{${store},result="miss"} ${cs.missPages}`,
          `dseek_context_store_pages_total{${store},result="rejected"} ${cs.rejectedPages}`,
        ]);
        metric('dseek_context_store_timeouts_total', 'counter', 'Lookups that ran past --context-store-timeout (computed instead).', [`dseek_context_store_timeouts_total{${store}} ${cs.timeouts}`]);
        metric('dseek_context_store_errors_total', 'counter', 'Context store operations that failed.', [`dseek_context_store_errors_total{${store}} ${cs.errors}`]);
        metric('dseek_context_store_writes_total', 'counter', 'Pages written behind to the context store, and writes dropped (queue full, pages needed back, store down).', [
          `dseek_context_store_writes_total{${store},result="written"} ${cs.writes}`,
          `dseek_context_store_writes_total{${store},result="dropped"} ${cs.writesDropped}`,
        ]);
        metric('dseek_context_store_written_bytes_total', 'counter', 'Bytes written to the context store.', [`dseek_context_store_written_bytes_total{${store}} ${cs.writeBytes}`]);
        metric('dseek_context_store_write_thread_seconds_total', 'counter', 'Engine-thread time spent copying pages out for the store (the only write cost an engine step can see).', [`dseek_context_store_write_thread_seconds_total{${store}} ${cs.writeThreadMs / 1000}`]);
        metric('dseek_context_store_pending_writes', 'gauge', 'Pages queued or in flight to the context store.', [`dseek_context_store_pending_writes{${store}} ${cs.pendingWrites}`]);
        if (cs.bytes !== null) metric('dseek_context_store_bytes', 'gauge', 'Bytes of pages in the folder store (every process sharing it).', [`dseek_context_store_bytes{${store}} ${cs.bytes}`]);
      }
    }
    metric('dseek_time_to_first_token_seconds', 'histogram', 'Time from request arrival to the first generated token.', this.ttft.lines('dseek_time_to_first_token_seconds', ''));
    metric('dseek_request_duration_seconds', 'histogram', 'Time from request arrival to the end of the response, by route.', [...this.durations].flatMap(([route, h]) => h.lines('dseek_request_duration_seconds', `route="${route}"`)));
    return out.join('\n') + '\n';
  }
}
