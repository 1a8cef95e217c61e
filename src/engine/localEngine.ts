/**
 * Drives a Scheduler: steps it while there is work, yielding to the event loop between steps so
 * that new requests and cancellations are taken in at every step. Runs wherever it is created —
 * in the engine worker thread for the server (see workerEngine.ts), in-process for tests.
 */
import type { Engine, EngineEvent, EngineRequest, EngineStats } from './types.js';
import type { Scheduler } from './scheduler.js';

/** An async iterable fed by pushes; `fail` makes the consumer's next() reject. */
export class EventStream<T> implements AsyncIterable<T> {
  private readonly buffer: T[] = [];
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private ended = false;
  private error: unknown = null;
  /** Called when the consumer stops early (break / return). */
  onReturn: (() => void) | null = null;

  push(value: T): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve({ value, done: false });
    } else this.buffer.push(value);
  }

  end(): void {
    this.ended = true;
    if (this.waiting && this.buffer.length === 0) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  fail(err: unknown): void {
    this.error = err;
    this.ended = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.reject(err);
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift()!, done: false });
        if (this.error) return Promise.reject(this.error);
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
      },
      return: () => {
        if (!this.ended) this.onReturn?.();
        this.ended = true;
        this.buffer.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** Runs the scheduler loop in this thread. */
export class SchedulerLoop {
  private running = false;
  private closing = false;
  /** Called after each step (e.g. to publish stats). */
  afterStep: (() => void) | null = null;

  constructor(readonly scheduler: Scheduler) {
    // A request's pages arrived from the context store: step again if the loop went idle.
    scheduler.onWake = () => this.kick();
  }

  /** Start stepping if idle. */
  kick(): void {
    if (this.running || this.closing) return;
    this.running = true;
    setImmediate(() => this.tick());
  }

  private tick(): void {
    try {
      if (this.scheduler.canStep()) this.scheduler.step();
    } catch (err) {
      // The scheduler fails the requests of a step whose forward pass throws; this is the last
      // resort for a fault outside it. A bug is an error for the requests it hit — never a
      // silent cancellation that reaches clients as a short answer — and the loop goes on.
      this.scheduler.faultAll(err);
    }
    this.afterStep?.();
    // Requests waiting only for context-store pages do not keep the loop spinning: their fetch wakes it.
    if (this.scheduler.canStep() && !this.closing) setImmediate(() => this.tick());
    else this.running = false;
  }

  /** Wait until running work finishes, up to `deadlineMs`; then cancel what is left. */
  async drain(deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    while (this.scheduler.hasWork() && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    this.closing = true;
    this.scheduler.cancelAll();
    // Pages queued for the context store are written (or dropped) before the store is closed.
    await this.scheduler.closeStore(Math.max(1000, until - Date.now()));
  }
}

/** The Engine interface over a scheduler in this thread (tests, the CLI). */
export class LocalEngine implements Engine {
  private readonly loop: SchedulerLoop;

  constructor(readonly scheduler: Scheduler) {
    this.loop = new SchedulerLoop(scheduler);
  }

  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    const stream = new EventStream<EngineEvent>();
    if (signal?.aborted) {
      stream.fail(signal.reason ?? new Error('aborted'));
      return stream;
    }
    let id = 0;
    try {
      id = this.scheduler.submit(request, (event) => {
        if (event.type === 'error') {
          signal?.removeEventListener('abort', onAbort);
          stream.fail(event.error);
          return;
        }
        stream.push(event);
        if (event.type === 'done') {
          signal?.removeEventListener('abort', onAbort);
          stream.end();
        }
      });
    } catch (err) {
      stream.fail(err);
      return stream;
    }
    const onAbort = () => {
      this.scheduler.cancel(id);
      this.loop.kick();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.onReturn = onAbort;
    this.loop.kick();
    return stream;
  }

  stats(): EngineStats {
    return this.scheduler.stats();
  }

  async close(deadlineMs = 5000): Promise<void> {
    await this.loop.drain(deadlineMs);
  }
}
