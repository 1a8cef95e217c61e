/**
 * Continuous batching. Every step runs one batched forward pass over all running sequences:
 * one token for each decoding sequence plus prompt chunks (up to `chunkTokens` tokens in all),
 * so a long prompt is processed in pieces between other sequences' decode steps instead of
 * stalling them. Sequences join and leave the batch at every step. Prompt prefixes are taken
 * from the prefix cache in whole pages: from memory, else from the context store (a folder or
 * Redis), whose pages are asked for when a request is admitted and awaited in a fetching state
 * while the others keep stepping; pages to keep are written behind (contextCache.ts).
 */
import type { DeepseekModel, BatchItem } from '../model/deepseek.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { StreamingDetokenizer } from '../tokenizer/streamingDetokenizer.js';
import { LatentCache } from '../cache/latentCache.js';
import { CacheFullError, PagePool, rowBytes, type LatentCacheDType, type Page } from '../cache/pagePool.js';
import { PrefixCache } from '../cache/prefixCache.js';
import { ContextCache } from '../cache/contextCache.js';
import { ContextLengthExceededError, DseekError, EngineFaultError, InvalidInputError, ModelFileChangedError, QueueFullError } from '../errors.js';
import type { Vec } from '../kernels/tensor.js';
import { Sampler } from './sampler.js';
import { StopStringMatcher } from './stopStrings.js';
import { compileSchema, JsonConstraint } from './jsonConstraint.js';
import { isMoeLayer, latentWidth } from '../model/config.js';
import { cacheFootprint } from '../model/params.js';
import type { RoutingObserver } from '../model/moe.js';
import type { EngineEvent, EngineRequest, EngineStats, FinishReason, TokenLogprob } from './types.js';

export { QueueFullError };

export interface SchedulerOptions {
  /** Sequences decoding at once. */
  readonly maxSequences?: number;
  /** Requests waiting beyond the running ones before new ones are refused. */
  readonly maxQueue?: number;
  /** Prompt tokens processed per step across all sequences. */
  readonly chunkTokens?: number;
  /** Context window per sequence. */
  readonly contextLength?: number;
  readonly cacheType?: LatentCacheDType;
  /** Tokens per cache page (= prefix-cache unit). */
  readonly pageTokens?: number;
  /** Latent-cache memory budget in bytes (running sequences plus the prefix cache). */
  readonly cacheBudgetBytes?: number;
  /** Keep prompt prefixes in memory for reuse (default true). */
  readonly prefixCache?: boolean;
  /** Pages beyond memory: a folder or Redis (contextCache.ts). Needs the prefix cache. */
  readonly contextCache?: ContextCache | null;
  readonly log?: (line: string) => void;
  /**
   * Called before every step: throws ModelFileChangedError when a weight file changed on disk
   * (see model/fileGuard.ts). From then on every request fails with that error instead of being
   * computed from bytes that can no longer be trusted.
   */
  readonly checkModelFiles?: () => void;
}

/**
 * What the scheduler tells a request's owner: the engine's events, plus `error`, the end of a
 * request the engine failed on (the Engine implementations turn it into a rejected stream).
 */
export type SchedulerEvent = EngineEvent | { readonly type: 'error'; readonly error: DseekError };

type Sink = (event: SchedulerEvent) => void;

/** The ids that end a sequence: the config's eos ids and the tokenizer's. */
export function endOfSequenceIds(model: DeepseekModel, tokenizer: Tokenizer | null): Set<number> {
  const ids = new Set(model.config.eosTokenIds);
  if (tokenizer?.eosId !== null && tokenizer?.eosId !== undefined) ids.add(tokenizer.eosId);
  return ids;
}

interface Sequence {
  readonly id: number;
  readonly request: EngineRequest;
  readonly sink: Sink;
  readonly submittedAt: number;
  /** Prompt (and, after a preemption, generated) tokens not yet in the cache. */
  pending: number[];
  /** Every token of the sequence so far: prompt then generated. */
  readonly tokens: number[];
  readonly generated: number[];
  cache: LatentCache | null;
  sampler: Sampler;
  detokenizer: StreamingDetokenizer | null;
  stops: StopStringMatcher;
  json: JsonConstraint | null;
  cachedTokens: number;
  /** Per MoE layer, tokens routed to each expert (when the request asked). */
  routing: number[][] | null;
  started: boolean;
  firstTokenAt: number;
  cancelled: boolean;
  /** Text held back by the stop matcher and detokenizer is delivered with `done`. */
  text: string;
  /** Seconds of forward passes this sequence's share of the steps it ran in took (see `busyS` in `done`). */
  busyS: number;
  /** Context-store lookup: not asked yet, waiting for pages (not admitted meanwhile), or over. */
  fetch: 'none' | 'pending' | 'done';
  /** Pages that came from the store: payloads of whole pages from page `from` on. */
  fetched: { readonly from: number; readonly payloads: readonly Uint8Array[] } | null;
}

export class Scheduler {
  readonly pool: PagePool;
  readonly contextLength: number;
  private readonly maxSequences: number;
  private readonly maxQueue: number;
  private readonly chunkTokens: number;
  private readonly prefix: PrefixCache | null;
  private readonly store: ContextCache | null;
  /** Queued sequences waiting for their pages from the store. */
  private fetching = 0;
  /** Called when a fetch ends, so that an idle loop steps again (SchedulerLoop sets it). */
  onWake: (() => void) | null = null;
  private readonly log: (line: string) => void;
  private readonly eos: Set<number>;
  private readonly validVocab: number;
  private readonly queue: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private nextId = 1;
  private promptHits = 0;
  private promptMisses = 0;
  /** The model's MoE layer indices, in order (rows of RoutingCounts). */
  private readonly moeLayers: number[];
  private readonly checkModelFiles: () => void;
  private faults = 0;
  /** Set once a weight file changed: every request fails with it from then on. */
  private broken: ModelFileChangedError | null = null;

  constructor(
    readonly model: DeepseekModel,
    readonly tokenizer: Tokenizer | null,
    options: SchedulerOptions = {},
  ) {
    const c = model.config;
    this.maxSequences = options.maxSequences ?? 16;
    this.maxQueue = options.maxQueue ?? 64;
    this.chunkTokens = options.chunkTokens ?? 256;
    this.contextLength = Math.min(options.contextLength ?? 4096, c.maxPositionEmbeddings);
    const width = c.kvLoraRank + c.qkRopeHeadDim;
    const dtype = model.precision === 'f64' ? 'f64' : (options.cacheType ?? 'f16');
    const pageTokens = options.pageTokens ?? 64;
    const pageBytes = c.numHiddenLayers * pageTokens * rowBytes(width, dtype);
    // Default budget: every running sequence at full context, plus as much again for prefixes.
    const budget = options.cacheBudgetBytes ?? 2 * this.maxSequences * Math.ceil(this.contextLength / pageTokens) * pageBytes;
    const maxPages = Math.floor(budget / pageBytes);
    if (maxPages < Math.ceil(this.contextLength / pageTokens)) {
      throw new InvalidInputError('cache budget', `${budget} bytes cannot hold one sequence of ${this.contextLength} tokens (${pageBytes} bytes per ${pageTokens}-token page)`);
    }
    this.pool = new PagePool({ layers: c.numHiddenLayers, width, pageTokens, dtype, maxPages });
    this.prefix = options.prefixCache === false ? null : new PrefixCache(this.pool);
    this.store = this.prefix ? (options.contextCache ?? null) : null;
    this.store?.attach(this.pool);
    if (this.prefix) this.pool.reclaim = (n) => this.reclaim(n);
    this.log = options.log ?? (() => {});
    this.eos = endOfSequenceIds(model, tokenizer);
    this.validVocab = tokenizer ? Math.min(tokenizer.vocabSize, c.vocabSize) : c.vocabSize;
    this.moeLayers = Array.from({ length: c.numHiddenLayers }, (_, l) => l).filter((l) => isMoeLayer(c, l));
    this.checkModelFiles = options.checkModelFiles ?? (() => {});
  }

  /** Queue a request; its events go to `sink`. Throws for a request that can never run. */
  submit(request: EngineRequest, sink: Sink): number {
    if (this.broken) throw this.broken;
    if (request.prompt.length === 0) throw new InvalidInputError('prompt', 'empty: give at least one token');
    for (const id of request.prompt) {
      if (!Number.isInteger(id) || id < 0 || id >= this.model.config.vocabSize) {
        throw new InvalidInputError('prompt', `token id ${id} is outside the vocabulary [0, ${this.model.config.vocabSize})`);
      }
    }
    if (request.prompt.length >= this.contextLength) {
      throw new ContextLengthExceededError(request.prompt.length + 1, this.contextLength);
    }
    if (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1) {
      throw new InvalidInputError('max_tokens', `must be an integer ≥ 1, got ${request.maxTokens}`);
    }
    if (request.stop?.length && !this.tokenizer) throw new InvalidInputError('stop', 'stop strings need a tokenizer');
    // Requests beyond the free running slots wait; at most maxQueue of them.
    const freeSlots = Math.max(0, this.maxSequences - this.running.length);
    if (this.queue.length >= this.maxQueue + freeSlots) throw new QueueFullError(this.maxQueue);
    const seq: Sequence = {
      id: this.nextId++,
      request,
      sink,
      submittedAt: performance.now(),
      pending: [...request.prompt],
      tokens: [...request.prompt],
      generated: [],
      cache: null,
      sampler: new Sampler(request.sampling, this.validVocab),
      detokenizer: this.tokenizer ? new StreamingDetokenizer(this.tokenizer, { skipSpecial: true }) : null,
      stops: new StopStringMatcher([...(request.stop ?? [])]),
      json: request.jsonSchema !== undefined ? new JsonConstraint(compileSchema(request.jsonSchema), { compact: true }) : request.jsonMode ? new JsonConstraint() : null,
      cachedTokens: 0,
      routing: request.routing ? this.moeLayers.map(() => new Array<number>(this.model.config.nRoutedExperts).fill(0)) : null,
      started: false,
      firstTokenAt: 0,
      cancelled: false,
      text: '',
      busyS: 0,
      fetch: 'none',
      fetched: null,
    };
    this.queue.push(seq);
    sink({ type: 'queued', position: this.queue.length - 1 });
    return seq.id;
  }

  /** Cancel a request: it ends with finish reason `cancelled` at the next step, its pages freed. */
  cancel(id: number): void {
    const q = this.queue.findIndex((s) => s.id === id);
    if (q >= 0) {
      const [seq] = this.queue.splice(q, 1);
      this.finish(seq!, 'cancelled');
      return;
    }
    const seq = this.running.find((s) => s.id === id);
    if (seq) seq.cancelled = true;
  }

  /** Anything outstanding, including requests waiting for the context store (drain waits for these). */
  hasWork(): boolean {
    return this.queue.length > 0 || this.running.length > 0;
  }

  /** Whether a step could do something now: false while every queued request waits for its pages. */
  canStep(): boolean {
    return this.running.length > 0 || (this.queue.length > this.fetching && this.fetching < this.maxSequences);
  }

  /** Finish the context store's queued writes (up to `deadlineMs`) and close it (shutdown). */
  closeStore(deadlineMs: number): Promise<void> {
    return this.store ? this.store.close(deadlineMs) : Promise.resolve();
  }

  /** Resolves once queued context-store writes are written or dropped (tests, shutdown). */
  storeIdle(): Promise<void> {
    return this.store ? this.store.idle() : Promise.resolve();
  }

  /**
   * Pages the pool needs back: unused prefixes first; failing that, the writes queued for the
   * store give their pages up (dropped, counted) and the prefixes they held are evicted.
   */
  private reclaim(needed: number): number {
    if (!this.prefix) return 0;
    let freed = this.prefix.evict(needed);
    if (freed < needed && this.store && this.store.shed() > 0) freed += this.prefix.evict(needed - freed);
    return freed;
  }

  stats(): EngineStats {
    const bytesPerToken = this.pool.bytesPerPage / this.pool.pageTokens;
    const elementBytes = bytesPerToken / latentWidth(this.model.config) / this.model.config.numHiddenLayers;
    const footprint = cacheFootprint(this.model.config);
    const store = this.store ? this.store.stats() : null;
    return {
      running: this.running.length,
      queued: this.queue.length,
      cacheBytesInUse: this.pool.bytesInUse,
      cacheBytesBudget: this.pool.maxPages * this.pool.bytesPerPage,
      cacheBytesPerToken: bytesPerToken,
      cacheType: this.pool.dtype,
      cachedTokens: this.pool.pagesInUse * this.pool.pageTokens,
      sharedPages: this.pool.sharedPages,
      prefixCacheTokens: this.prefix ? this.prefix.tokens : 0,
      diskCacheBytes: store?.bytes ?? 0,
      diskCacheFiles: store?.entries ?? 0,
      diskCacheHits: store?.hitPages ?? 0,
      diskCacheMisses: store?.missPages ?? 0,
      contextStore: store,
      promptCacheHitTokens: this.promptHits,
      promptCacheMissTokens: this.promptMisses,
      mhaBytesPerToken: footprint.mhaElements * elementBytes,
      gqaBytesPerToken: footprint.gqaElements * elementBytes,
      engineFaults: this.faults,
      unhealthy: this.broken ? this.broken.message : null,
    };
  }

  /** One batched forward pass and its sampling. Returns false when there was nothing to do. */
  step(): boolean {
    for (const seq of [...this.running]) if (seq.cancelled) this.finish(seq, 'cancelled');
    if (!this.modelFilesIntact()) return false;
    this.admit();
    if (this.running.length === 0) return false;

    // Sequences with one token to run (decoding, or a prompt whose prefix came from the cache)
    // first, then prompt chunks within the token budget.
    const batch: Array<{ seq: Sequence; tokens: number[]; last: boolean }> = [];
    for (const seq of this.running) if (seq.pending.length === 1) batch.push({ seq, tokens: seq.pending, last: true });
    let budget = this.chunkTokens;
    for (const seq of this.running) {
      if (seq.pending.length <= 1 || budget <= 0) continue;
      const n = Math.min(seq.pending.length, budget);
      budget -= n;
      batch.push({ seq, tokens: seq.pending.slice(0, n), last: n === seq.pending.length });
    }
    if (batch.length === 0) return false;

    // Reserve cache pages; on a full budget, preempt the youngest sequence (it resumes later).
    for (let i = 0; i < batch.length; i++) {
      const item = batch[i]!;
      for (;;) {
        try {
          item.seq.cache!.reserve(item.tokens.length);
          break;
        } catch (err) {
          if (!(err instanceof CacheFullError) || this.running.length <= 1) throw err;
          const victim = this.preemptYoungest();
          const at = batch.findIndex((b) => b.seq === victim);
          if (at >= 0) batch.splice(at, 1);
          if (victim === item.seq) {
            i--;
            break;
          }
          if (at >= 0 && at < i) i--;
        }
      }
    }
    if (batch.length === 0) return true;

    const items: BatchItem[] = batch.map((b) => ({ tokens: b.tokens, cache: b.seq.cache!, logits: b.last ? 'last' : 'none' }));
    // Routing is counted for inputs that are generated tokens (the answer), per sequence that asked.
    const owners: Array<Sequence | null> = [];
    for (const b of batch) for (let i = 0; i < b.tokens.length; i++) owners.push(b.seq.routing && b.seq.generated.length > 0 && b.tokens.length === 1 ? b.seq : null);
    const onRouting: RoutingObserver | undefined = owners.some((o) => o)
      ? (layer, r) => {
          const row = this.moeLayers.indexOf(layer);
          for (let t = 0; t < r.tokens; t++) {
            const counts = owners[t]?.routing?.[row];
            if (counts) for (let i = 0; i < r.k; i++) counts[r.experts[t * r.k + i]!]!++;
          }
        }
      : undefined;
    let logits: Vec;
    try {
      const stepStart = performance.now();
      logits = this.model.forwardBatch(items, onRouting ? { onRouting } : {});
      // The step's time, shared by the tokens each sequence put into it (prompt chunks and decode alike).
      const stepS = (performance.now() - stepStart) / 1000;
      const stepTokens = batch.reduce((n, b) => n + b.tokens.length, 0);
      for (const b of batch) b.seq.busyS += (stepS * b.tokens.length) / stepTokens;
      // A file truncated during the step reads as zeros past its end (native/guard.c), never
      // as a crash; whatever the step computed from it is dropped.
      this.checkModelFiles();
    } catch (err) {
      if (!this.modelFilesIntact()) return true;
      this.fault(batch.map((b) => b.seq), err);
      return true;
    }
    const V = this.model.config.vocabSize;
    let row = 0;
    for (const b of batch) {
      const seq = b.seq;
      seq.pending = seq.pending.slice(b.tokens.length);
      if (!b.last) continue;
      const rowLogits = logits.subarray(row * V, (row + 1) * V);
      row++;
      try {
        if (seq.generated.length === 0 && seq.tokens.length === seq.request.prompt.length) this.rememberPrefix(seq);
        this.sampleNext(seq, rowLogits);
      } catch (err) {
        this.fault([seq], err);
      }
    }
    return true;
  }

  /**
   * A step failed with an exception: a bug or a kernel fault, not the requests' fault. The
   * sequences it ran end with an `internal_error` (their partly written cache pages are dropped,
   * never kept for reuse); the rest of the engine carries on.
   */
  private fault(seqs: readonly Sequence[], err: unknown): void {
    this.faults++;
    const ids = seqs.map((s) => s.id).join(', ');
    this.log(`engine fault: a step failed, ending request${seqs.length === 1 ? '' : 's'} ${ids} with an internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    for (const seq of seqs) this.fail(seq, new EngineFaultError());
  }

  /**
   * A step failed outside the forward pass (admission, cache bookkeeping): end every running
   * sequence with an internal error, since which one caused it is unknown. Queued requests stay.
   */
  faultAll(err: unknown): void {
    this.fault([...this.running], err);
  }

  /**
   * Check the weight files now (the worker does so every second, so that /health turns
   * unhealthy without waiting for a request). False once one changed.
   */
  verifyModelFiles(): boolean {
    return this.modelFilesIntact();
  }

  /** False (after failing every request) once a weight file has changed on disk. */
  private modelFilesIntact(): boolean {
    if (!this.broken) {
      try {
        this.checkModelFiles();
        return true;
      } catch (err) {
        if (!(err instanceof ModelFileChangedError)) throw err;
        this.broken = err;
        this.log(`engine stopped: ${err.message}`);
      }
    }
    for (const seq of [...this.running, ...this.queue]) this.fail(seq, this.broken);
    return false;
  }

  /** End a request with an error: no `done`, its pages released and not remembered. */
  private fail(seq: Sequence, error: DseekError): void {
    const r = this.running.indexOf(seq);
    if (r >= 0) this.running.splice(r, 1);
    const q = this.queue.indexOf(seq);
    if (q >= 0) this.queue.splice(q, 1);
    if (seq.cache) {
      seq.cache.release();
      seq.cache = null;
    }
    seq.sink({ type: 'error', error });
  }

  /** Cancel everything (shutdown). */
  cancelAll(): void {
    for (const seq of [...this.queue]) this.cancel(seq.id);
    for (const seq of this.running) seq.cancelled = true;
    for (const seq of [...this.running]) this.finish(seq, 'cancelled');
  }

  private admit(): void {
    let i = 0;
    while (i < this.queue.length && this.running.length < this.maxSequences) {
      const seq = this.queue[i]!;
      // A request whose pages may be in the store asks for them first and waits, unadmitted, while
      // the ones behind it go on (fetches count against the free slots, bounding what they hold).
      if (seq.fetch === 'pending' || (seq.fetch === 'none' && this.startFetch(seq))) {
        i++;
        continue;
      }
      // Admit only when its prompt fits beside the running sequences (after evicting cached
      // prefixes): otherwise admitting would only preempt someone. Alone, it always fits.
      const needed = Math.ceil((seq.pending.length + 1) / this.pool.pageTokens);
      const free = () => this.pool.maxPages - this.pool.pagesInUse;
      if (free() < needed && this.prefix) this.reclaim(needed - free());
      if (free() < needed && this.running.length > 0) break;
      const cache = new LatentCache({ maxTokens: this.contextLength, pool: this.pool });
      // Reuse whole pages of a cached prefix, always leaving ≥ 1 token to compute (for its logits).
      if (this.prefix && seq.cachedTokens === 0 && !seq.started) {
        const salt = seq.request.cacheSalt ?? '';
        const pages = this.prefix.lookup(seq.pending, seq.pending.length - 1, salt);
        this.adoptFetched(seq, pages, salt);
        if (pages.length > 0) {
          cache.adoptPrefix(pages);
          seq.cachedTokens = cache.length;
          seq.pending = seq.pending.slice(cache.length);
        }
      }
      seq.fetched = null;
      seq.cache = cache;
      this.queue.splice(i, 1);
      this.running.push(seq);
      if (!seq.started) {
        seq.started = true;
        this.promptHits += seq.cachedTokens;
        this.promptMisses += seq.request.prompt.length - seq.cachedTokens;
        seq.sink({ type: 'started', promptTokens: seq.request.prompt.length, cachedTokens: seq.cachedTokens });
      }
      this.queue.forEach((q, k) => q.sink({ type: 'queued', position: k }));
    }
  }

  /**
   * Ask the store for the prompt's pages that memory lacks. True when a fetch is now pending (the
   * sequence waits); false when there is nothing to ask (no store, a resumed sequence, all in memory).
   */
  private startFetch(seq: Sequence): boolean {
    if (!this.store || !this.prefix || seq.started) {
      seq.fetch = 'done';
      return false;
    }
    // Every slot is running or fetching: ask at a later step (the sequence keeps its place).
    if (this.running.length + this.fetching >= this.maxSequences) return true;
    seq.fetch = 'done';
    const salt = seq.request.cacheSalt ?? '';
    const limit = seq.pending.length - 1;
    const keys = this.prefix.pageKeys(seq.pending, limit, salt);
    const have = this.prefix.cachedPages(seq.pending, limit, salt);
    if (keys.length <= have) return false;
    seq.fetch = 'pending';
    this.fetching++;
    this.store.fetch(keys.slice(have), (payloads) => {
      seq.fetch = 'done';
      this.fetching--;
      if (!seq.cancelled && this.queue.includes(seq) && payloads.length > 0) seq.fetched = { from: have, payloads };
      this.onWake?.();
    });
    return true;
  }

  /**
   * Extend `pages` (the memory hit, retained for `seq`) with the pages fetched from the store,
   * when memory still reaches where they start; they join the prefix tree (not written back:
   * they came from the store). Stops early when the pool has no room (the rest is computed).
   */
  private adoptFetched(seq: Sequence, pages: Page[], salt: string): void {
    const f = seq.fetched;
    if (!f || !this.prefix || pages.length < f.from) return;
    const added: Page[] = [];
    for (const payload of f.payloads.slice(pages.length - f.from)) {
      let page: Page;
      try {
        page = this.pool.allocate();
      } catch {
        break;
      }
      ContextCache.fill(page, payload);
      added.push(page);
    }
    if (added.length === 0) return;
    pages.push(...added);
    this.prefix.insert(seq.pending.slice(0, pages.length * this.pool.pageTokens), pages, salt);
  }

  /** Give the youngest running sequence's pages back and queue it to resume (recomputing its tokens). */
  private preemptYoungest(): Sequence {
    const seq = this.running.pop()!;
    this.log(`cache full: preempting request ${seq.id} (${seq.tokens.length} tokens) to resume later`);
    seq.cache!.release();
    seq.cache = null;
    seq.pending = [...seq.tokens]; // prompt, generated tokens and the one sampled but not yet run
    this.queue.unshift(seq);
    return seq;
  }

  private sampleNext(seq: Sequence, logits: Vec): void {
    const r = seq.request;
    let token: number;
    try {
      token = seq.json ? this.sampleJson(seq, logits) : seq.sampler.sample(logits, seq.tokens);
    } catch (err) {
      if (err instanceof InvalidInputError && seq.json) {
        // No token continues the JSON: nothing valid can follow.
        this.finish(seq, 'stop');
        return;
      }
      throw err;
    }
    if (seq.generated.length === 0) seq.firstTokenAt = performance.now();
    seq.generated.push(token);
    seq.tokens.push(token);
    if (this.eos.has(token) && !r.ignoreEos) {
      this.finish(seq, 'stop');
      return;
    }
    const event: { type: 'token'; token: number; text: string; logprob?: TokenLogprob; topLogprobs?: TokenLogprob[] } = {
      type: 'token',
      token,
      text: '',
    };
    if (r.topLogprobs !== undefined) {
      const lp = this.logprobs(logits, token, r.topLogprobs);
      event.logprob = lp.chosen;
      event.topLogprobs = lp.top;
    }
    seq.json?.advance(this.tokenizer!.tokenBytes(token));
    let stopped = false;
    if (seq.detokenizer) {
      const piece = seq.stops.push(seq.detokenizer.push(token));
      event.text = piece.emit;
      seq.text += piece.emit;
      stopped = piece.stopped;
    }
    seq.sink(event);
    if (stopped || seq.json?.complete) this.finish(seq, 'stop', stopped);
    else if (seq.generated.length >= r.maxTokens || seq.tokens.length >= this.contextLength) this.finish(seq, 'length');
    else seq.pending = [token];
  }

  private sampleJson(seq: Sequence, logits: Vec): number {
    const tok = this.tokenizer!;
    const json = seq.json!;
    // End-of-sequence only once the output is a whole value (e.g. a top-level number); no other special token.
    return seq.sampler.sample(logits, seq.tokens, (id) => (tok.isSpecial(id) ? this.eos.has(id) && json.canEnd : json.accepts(tok.tokenBytes(id))));
  }

  /** log-softmax of the raw model logits (temperature 1, before penalties) over the valid vocabulary. */
  private logprobs(logits: Vec, chosen: number, top: number): { chosen: TokenLogprob; top: TokenLogprob[] } {
    const n = this.validVocab;
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(logits[i]! - max);
    const logZ = max + Math.log(sum);
    const entry = (id: number): TokenLogprob => {
      const bytes = this.tokenizer ? this.tokenizer.tokenBytes(id) : new Uint8Array();
      return { token: id, text: new TextDecoder().decode(bytes), bytes: Array.from(bytes), logprob: logits[id]! - logZ };
    };
    const best: number[] = [];
    for (let k = 0; k < top; k++) {
      let pick = -1;
      for (let i = 0; i < n; i++) {
        if (best.includes(i)) continue;
        if (pick < 0 || logits[i]! > logits[pick]!) pick = i;
      }
      if (pick < 0) break;
      best.push(pick);
    }
    return { chosen: entry(chosen), top: best.map(entry) };
  }

  /** New prefix-tree pages go to the store, queued and written behind (never inside this step). */
  private readonly writeBehind = (prefixHash: string, page: Page): void => {
    this.store?.write(prefixHash, page, this.pool);
  };

  /** Put the prompt's full pages into the prefix cache ("end of the user input" unit). */
  private rememberPrefix(seq: Sequence): void {
    if (!this.prefix || !seq.cache) return;
    this.prefix.insert(seq.tokens, seq.cache.pageList, seq.request.cacheSalt ?? '', this.writeBehind);
  }

  private finish(seq: Sequence, reason: FinishReason, stoppedByString = false): void {
    const i = this.running.indexOf(seq);
    if (i >= 0) this.running.splice(i, 1);
    let tail = '';
    if (seq.detokenizer && !stoppedByString && reason !== 'cancelled') {
      const rest = seq.stops.push(seq.detokenizer.flush());
      tail = rest.emit + (rest.stopped ? '' : seq.stops.flush());
    }
    if (seq.cache) {
      // "End of the model output" unit: the whole conversation so far, for the next turn.
      if (reason !== 'cancelled' && this.prefix) this.prefix.insert(seq.tokens.slice(0, seq.cache.length), seq.cache.pageList, seq.request.cacheSalt ?? '', this.writeBehind);
      seq.cache.release();
      seq.cache = null;
    }
    const now = performance.now();
    const promptTokens = seq.request.prompt.length;
    seq.sink({
      type: 'done',
      finishReason: reason,
      text: tail,
      usage: {
        promptTokens,
        completionTokens: seq.generated.length,
        promptCacheHitTokens: seq.cachedTokens,
        promptCacheMissTokens: promptTokens - seq.cachedTokens,
      },
      timeToFirstTokenS: seq.firstTokenAt ? (seq.firstTokenAt - seq.submittedAt) / 1000 : (now - seq.submittedAt) / 1000,
      generationS: seq.firstTokenAt ? (now - seq.firstTokenAt) / 1000 : 0,
      busyS: seq.busyS,
      ...(seq.routing
        ? { routing: { layers: this.moeLayers, experts: this.model.config.nRoutedExperts, sharedExperts: this.model.config.nSharedExperts, counts: seq.routing } }
        : {}),
    });
  }
}
