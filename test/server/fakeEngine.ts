/**
 * A deterministic stand-in for the real engine: answers with a fixed text (varied by seed),
 * tokenised by the real tokenizer, at a configurable pace, honouring maxTokens, stop strings,
 * logprobs and the AbortSignal. It records what it was asked and which requests were aborted.
 */
import type { Engine, EngineEvent, EngineRequest, EngineStats, TokenLogprob } from '../../src/engine/types.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';

export interface FakeEngineOptions {
  /** Delay before each token. Default 0. */
  tokenDelayMs?: number;
  /** Time spent queued before starting; a `queued` event is sent at the start. Default 0 (no queue). */
  queueMs?: number;
  /** Prompt tokens reported as prefix-cache hits (capped at the prompt length). Default 0. */
  cachedTokens?: number;
  /** Throw an error with this code from generate() (e.g. 'queue_full'). */
  refuseWith?: string;
  /** Throw a plain internal error after this many tokens. */
  failAfterTokens?: number;
  /** The answer text; default depends on the seed. */
  reply?: (request: EngineRequest) => string;
}

export const DEFAULT_REPLY = 'Hello! I am a fake engine. The quick brown fox jumps over the lazy dog.';

export function replyFor(request: EngineRequest): string {
  const seed = request.sampling.seed;
  return seed === undefined ? DEFAULT_REPLY : `Seed ${seed} says: ${DEFAULT_REPLY}`;
}

export class FakeEngine implements Engine {
  readonly requests: EngineRequest[] = [];
  /** Requests whose signal aborted before they ended. */
  readonly aborted: EngineRequest[] = [];
  private running = 0;
  private queued = 0;
  private abortWaiters: (() => void)[] = [];

  constructor(
    private readonly tokenizer: Tokenizer,
    public options: FakeEngineOptions = {},
  ) {}

  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    if (this.options.refuseWith) {
      throw Object.assign(new Error(`engine refused: ${this.options.refuseWith}`), { code: this.options.refuseWith });
    }
    this.requests.push(request);
    return this.run(request, signal ?? new AbortController().signal);
  }

  /** Resolves when the engine has seen `count` aborts in total. */
  waitForAborts(count: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.aborted.length >= count) resolve();
        else this.abortWaiters.push(check);
      };
      check();
    });
  }

  private async *run(request: EngineRequest, signal: AbortSignal): AsyncGenerator<EngineEvent> {
    let ended = false;
    signal.addEventListener(
      'abort',
      () => {
        if (ended) return;
        this.aborted.push(request);
        const waiters = this.abortWaiters;
        this.abortWaiters = [];
        waiters.forEach((w) => w());
      },
      { once: true },
    );
    const submitted = performance.now();
    const o = this.options;
    let phase: 'queued' | 'running' | null = null;
    try {
      if (o.queueMs) {
        phase = 'queued';
        this.queued++;
        yield { type: 'queued', position: this.queued - 1 };
        await sleep(o.queueMs, signal);
        if (signal.aborted) return;
        this.queued--;
      }
      phase = 'running';
      this.running++;
      const cached = Math.min(o.cachedTokens ?? 0, request.prompt.length);
      yield { type: 'started', promptTokens: request.prompt.length, cachedTokens: cached };
      const ids = this.tokenizer.encode((o.reply ?? replyFor)(request), { addBos: false });
      let text = '';
      let count = 0;
      let firstAt = 0;
      let finishReason: 'stop' | 'length' = 'stop';
      for (const id of ids) {
        if (count === request.maxTokens) {
          finishReason = 'length';
          break;
        }
        if (o.tokenDelayMs) await sleep(o.tokenDelayMs, signal);
        if (signal.aborted) return;
        if (o.failAfterTokens !== undefined && count === o.failAfterTokens) throw new Error('fake engine: simulated internal failure');
        if (count === 0) firstAt = performance.now();
        count++;
        const piece = this.tokenizer.decode([id]);
        const stopAt = firstStop(text + piece, request.stop ?? []);
        const emit = stopAt === null ? piece : (text + piece).slice(text.length, Math.max(text.length, stopAt));
        text += emit;
        yield { type: 'token', token: id, text: emit, ...this.logprobs(id, request.topLogprobs) };
        if (stopAt !== null) break;
      }
      ended = true;
      yield {
        type: 'done',
        finishReason,
        text: '',
        usage: { promptTokens: request.prompt.length, completionTokens: count, promptCacheHitTokens: cached, promptCacheMissTokens: request.prompt.length - cached },
        timeToFirstTokenS: (firstAt - submitted) / 1000,
        generationS: (performance.now() - firstAt) / 1000,
      };
    } finally {
      ended = true;
      if (phase === 'queued') this.queued--;
      if (phase === 'running') this.running--;
    }
  }

  private logprobs(id: number, top: number | undefined): { logprob?: TokenLogprob; topLogprobs?: TokenLogprob[] } {
    if (top === undefined) return {};
    const lp = (token: number, logprob: number): TokenLogprob => {
      const bytes = [...this.tokenizer.tokenBytes(token)];
      return { token, text: this.tokenizer.decode([token]), bytes, logprob };
    };
    return { logprob: lp(id, -0.25), topLogprobs: Array.from({ length: top }, (_, k) => lp(k === 0 ? id : 1000 + k, -0.25 - k)) };
  }

  stats(): EngineStats {
    return {
      running: this.running,
      queued: this.queued,
      cacheBytesInUse: 0,
      cacheBytesBudget: 1 << 30,
      cacheBytesPerToken: 31_104,
      cachedTokens: 0,
      sharedPages: 0,
      prefixCacheTokens: 0,
      diskCacheBytes: 0,
      diskCacheFiles: 0,
      diskCacheHits: 0,
      diskCacheMisses: 0,
      contextStore: null,
      promptCacheHitTokens: 0,
      promptCacheMissTokens: 0,
      mhaBytesPerToken: 276_480,
      gqaBytesPerToken: 110_592,
      engineFaults: 0,
      unhealthy: null,
    };
  }

  async close(): Promise<void> {}
}

function firstStop(text: string, stops: readonly string[]): number | null {
  let best: number | null = null;
  for (const s of stops) {
    const at = text.indexOf(s);
    if (at >= 0 && (best === null || at < best)) best = at;
  }
  return best;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
