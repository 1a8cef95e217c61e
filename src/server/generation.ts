/**
 * One HTTP request's generation: n engine requests (the `n` choices) run concurrently, their
 * event streams merged into one sequence of per-choice updates. Aborting the request's signal
 * (client gone, timeout, shutdown) cancels every engine request at once and ends the choices
 * with what they have.
 */
import type { AnswerFinishReason, Engine, EngineEvent, EngineRequest, RoutingCounts, TokenLogprob, Usage } from '../engine/types.js';
import type { CancelReason } from './metrics.js';
import { ReasoningSplitter } from './reasoning.js';

export interface GenerationOptions {
  /** The model thinks first: count reasoning tokens (`opened`: the prompt opened `<think>`). */
  readonly thinking?: { readonly opened: boolean } | null;
}

/** OpenAI has no "cancelled": a request cut short reports `length` with what it has. */
export type OpenAiFinishReason = AnswerFinishReason;

export interface LogprobEntry {
  readonly chosen: TokenLogprob;
  readonly top: readonly TokenLogprob[];
}

export interface ChoiceState {
  readonly index: number;
  text: string;
  /** Token events seen; the engine's own usage count wins when it reports one. */
  tokens: number;
  readonly logprobs: LogprobEntry[];
  finishReason: OpenAiFinishReason | null;
  /** Waiting in the engine queue (a `queued` event and no `started` yet). */
  queued: boolean;
  /** The engine has begun processing the prompt. */
  started: boolean;
  cachedTokens: number;
  /** Generated tokens that went to reasoning (text before `</think>`), for usage.completion_tokens_details. */
  reasoningTokens: number;
  usage: Usage | null;
  /** performance.now() when this choice's first and latest tokens arrived (0: none yet). */
  firstTokenAt: number;
  lastTokenAt: number;
  /** The engine's own timings and routing counts, from its `done` event (null until then). */
  engineTimings: { readonly timeToFirstTokenS: number; readonly generationS: number } | null;
  /** Engine busy seconds this choice used (from `done`; 0 before). */
  busyS: number;
  routing: RoutingCounts | null;
}

export type Update =
  | { readonly kind: 'delta'; readonly choice: number; readonly text: string; readonly logprobs: readonly LogprobEntry[] }
  | { readonly kind: 'finish'; readonly choice: number; readonly reason: OpenAiFinishReason };

type Item =
  | { readonly choice: number; readonly event: EngineEvent }
  | { readonly choice: number; readonly error: unknown }
  | { readonly choice: number; readonly end: true };

export class Generation {
  readonly choices: ChoiceState[];
  /** Set when the request's signal ended generation early. */
  interruptedBy: CancelReason | null = null;
  private readonly items: Item[] = [];
  private wake: (() => void) | null = null;
  private readonly pending: Update[] = [];
  private readonly heard = new Set<number>();
  private readonly engineAbort = new AbortController();
  private firstToken = false;
  /** Per choice, when the model thinks: where its reasoning ends, to count reasoning tokens. */
  private readonly splitters: (ReasoningSplitter | null)[];
  /** Choices whose engine stream has ended (done, end or error). */
  private readonly settled = new Set<number>();

  constructor(
    engine: Engine,
    requests: readonly EngineRequest[],
    private readonly signal: AbortSignal,
    private readonly onFirstToken: () => void,
    options: GenerationOptions = {},
  ) {
    const thinking = options.thinking ?? null;
    this.splitters = requests.map(() => (thinking ? new ReasoningSplitter(thinking.opened) : null));
    this.choices = requests.map((_, index) => ({
      index,
      text: '',
      tokens: 0,
      logprobs: [],
      finishReason: null,
      queued: false,
      started: false,
      cachedTokens: 0,
      reasoningTokens: 0,
      usage: null,
      firstTokenAt: 0,
      lastTokenAt: 0,
      engineTimings: null,
      busyS: 0,
      routing: null,
    }));
    const stop = () => this.engineAbort.abort(signal.reason);
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
    requests.forEach((r, i) => void this.pump(engine, r, i));
  }

  private async pump(engine: Engine, request: EngineRequest, choice: number): Promise<void> {
    try {
      for await (const event of engine.generate(request, this.engineAbort.signal)) {
        this.push({ choice, event });
        if (event.type === 'done' || this.engineAbort.signal.aborted) break;
      }
      this.push({ choice, end: true });
    } catch (error) {
      this.push({ choice, error });
    }
  }

  /** Cancels engine requests still running, e.g. when writing the response failed half-way. */
  dispose(): void {
    if (this.settled.size < this.choices.length) this.engineAbort.abort();
  }

  private push(item: Item): void {
    if (!('event' in item) || item.event.type === 'done') this.settled.add(item.choice);
    this.items.push(item);
    this.wake?.();
  }

  /** Next item, or null once the request's signal has aborted. */
  private async take(): Promise<Item | null> {
    for (;;) {
      // An abort wins over buffered events: the client is gone or out of time.
      if (this.signal.aborted) return null;
      if (this.items.length > 0) return this.items.shift()!;
      await new Promise<void>((resolve) => {
        const done = () => {
          this.signal.removeEventListener('abort', done);
          this.wake = null;
          resolve();
        };
        this.wake = done;
        this.signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  /**
   * Waits until every choice has been heard from once, so that refusals (queue full, bad
   * request) surface before a streamed response commits to status 200. Throws what the engine
   * threw; returns early if the signal aborts.
   */
  async ready(): Promise<void> {
    while (this.heard.size < this.choices.length) {
      const item = await this.take();
      if (item === null) return this.interrupt();
      this.heard.add(item.choice);
      this.pending.push(...this.apply(item));
    }
  }

  /** Updates until every choice has finished. */
  async *updates(): AsyncGenerator<Update> {
    while (this.pending.length > 0) yield this.pending.shift()!;
    while (this.choices.some((c) => c.finishReason === null)) {
      const item = await this.take();
      if (item === null) {
        this.interrupt();
        break;
      }
      yield* this.apply(item);
    }
    while (this.pending.length > 0) yield this.pending.shift()!;
  }

  anyQueued(): boolean {
    return this.choices.some((c) => c.queued && c.finishReason === null);
  }

  /** Engine busy seconds of all choices. */
  busySeconds(): number {
    return this.choices.reduce((sum, c) => sum + c.busyS, 0);
  }

  reasoningTokens(): number {
    return this.choices.reduce((sum, c) => sum + c.reasoningTokens, 0);
  }

  completionTokens(): number {
    return this.choices.reduce((sum, c) => sum + (c.usage?.completionTokens ?? c.tokens), 0);
  }

  /** Ends every open choice with 'length' (OpenAI has no "cancelled"): what was generated stands. */
  private interrupt(): void {
    this.interruptedBy = (this.signal.reason as CancelReason | undefined) ?? 'client_disconnect';
    for (const c of this.choices) {
      if (c.finishReason !== null) continue;
      c.finishReason = 'length';
      this.pending.push({ kind: 'finish', choice: c.index, reason: 'length' });
    }
  }

  private apply(item: Item): Update[] {
    const c = this.choices[item.choice]!;
    if ('error' in item) {
      // One failed choice fails the request: stop the others rather than let them run unseen.
      this.engineAbort.abort();
      throw item.error;
    }
    if ('end' in item) return c.finishReason === null ? this.finish(c, 'length') : [];
    const e = item.event;
    switch (e.type) {
      case 'queued':
        c.queued = true;
        return [];
      case 'started':
        c.queued = false;
        c.started = true;
        c.cachedTokens = e.cachedTokens;
        return [];
      case 'token': {
        c.queued = false;
        c.started = true;
        c.tokens++;
        c.text += e.text;
        const splitter = this.splitters[item.choice];
        if (splitter && !splitter.answering) {
          splitter.push(e.text);
          // The token that closes the reasoning (`</think>`) is part of it.
          if (!splitter.answering || splitter.closedByThink) c.reasoningTokens++;
        }
        c.lastTokenAt = performance.now();
        if (c.firstTokenAt === 0) c.firstTokenAt = c.lastTokenAt;
        if (!this.firstToken) {
          this.firstToken = true;
          this.onFirstToken();
        }
        const logprobs = e.logprob ? [{ chosen: e.logprob, top: e.topLogprobs ?? [] }] : [];
        c.logprobs.push(...logprobs);
        return e.text || logprobs.length > 0 ? [{ kind: 'delta', choice: c.index, text: e.text, logprobs }] : [];
      }
      case 'done': {
        c.usage = e.usage;
        c.text += e.text;
        c.engineTimings = { timeToFirstTokenS: e.timeToFirstTokenS, generationS: e.generationS };
        c.busyS = e.busyS ?? 0;
        c.routing = e.routing ?? null;
        const delta: Update[] = e.text ? [{ kind: 'delta', choice: c.index, text: e.text, logprobs: [] }] : [];
        // The engine says 'cancelled' only when it was stopped from outside (its own close()).
        return [...delta, ...this.finish(c, e.finishReason === 'stop' ? 'stop' : 'length')];
      }
    }
  }

  private finish(c: ChoiceState, reason: OpenAiFinishReason): Update[] {
    c.finishReason = reason;
    c.queued = false;
    return [{ kind: 'finish', choice: c.index, reason }];
  }
}
