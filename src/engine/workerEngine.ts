/**
 * The Engine the server uses: the model and scheduler live in a worker thread (worker.ts); this
 * side turns messages into per-request async event streams, forwards cancellations, and keeps the
 * latest stats so that `stats()` answers without a round trip.
 */
import { Worker } from 'node:worker_threads';
import { DseekError } from '../errors.js';
import type { Engine, EngineEvent, EngineRequest, EngineStats } from './types.js';
import { EventStream } from './localEngine.js';
import type { EngineInfo, FromWorker, SerializedError, ToWorker, WorkerInit } from './workerProtocol.js';

/** An error raised in the worker, with its original name and code (queue_full, context_length_exceeded, …). */
export class EngineError extends DseekError {
  readonly originalName: string;
  /** The original error's plain fields (`field`, `file`, …). */
  readonly fields: Readonly<Record<string, string | number | boolean | null>>;
  constructor(e: SerializedError) {
    super(e.code, e.message);
    this.originalName = e.name;
    this.fields = e.fields ?? {};
  }
}

export class WorkerEngine implements Engine {
  private readonly streams = new Map<number, EventStream<EngineEvent>>();
  private nextId = 1;
  private latest: EngineStats;
  private closed: Promise<void> | null = null;
  private onClosed: (() => void) | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly info: EngineInfo,
    private readonly log: (line: string) => void,
    initialStats: EngineStats,
  ) {
    this.latest = initialStats;
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (err) => {
      this.log(`engine worker failed: ${err.message}`);
      for (const s of this.streams.values()) s.fail(new DseekError('engine_failed', `the engine stopped: ${err.message}`));
      this.streams.clear();
    });
  }

  /**
   * Start the worker and load the model there; rejects with the load error (e.g. a ModelFormatError's
   * message). Aborting `signal` stops the worker mid-load and rejects with the signal's reason.
   */
  static start(
    init: WorkerInit,
    log: (line: string) => void = () => {},
    signal?: AbortSignal,
    onRepack?: (done: number, total: number) => void,
  ): Promise<WorkerEngine> {
    signal?.throwIfAborted();
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        worker.off('message', onMessage);
        void worker.terminate();
        reject(signal!.reason);
      };
      const onMessage = (m: FromWorker) => {
        if (m.type === 'log') log(m.line);
        else if (m.type === 'progress') onRepack?.(m.done, m.total);
        else if (m.type === 'ready') {
          worker.off('message', onMessage);
          signal?.removeEventListener('abort', onAbort);
          resolve(new WorkerEngine(worker, m.info, log, m.stats));
        } else if (m.type === 'fatal') {
          worker.off('message', onMessage);
          signal?.removeEventListener('abort', onAbort);
          void worker.terminate();
          reject(new EngineError(m.error));
        }
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'event': {
        const s = this.streams.get(m.id);
        if (!s) return;
        s.push(m.event);
        if (m.event.type === 'done') {
          s.end();
          this.streams.delete(m.id);
        }
        return;
      }
      case 'error': {
        this.streams.get(m.id)?.fail(new EngineError(m.error));
        this.streams.delete(m.id);
        return;
      }
      case 'stats':
        this.latest = m.stats;
        return;
      case 'log':
        this.log(m.line);
        return;
      case 'closed':
        this.onClosed?.();
        return;
      default:
        return;
    }
  }

  private send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  generate(request: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    const stream = new EventStream<EngineEvent>();
    if (this.closed) {
      stream.fail(new DseekError('shutting_down', 'the server is shutting down'));
      return stream;
    }
    const id = this.nextId++;
    this.streams.set(id, stream);
    const cancel = () => {
      if (this.streams.has(id)) this.send({ type: 'cancel', id });
    };
    if (signal) {
      if (signal.aborted) {
        this.streams.delete(id);
        stream.fail(signal.reason ?? new Error('aborted'));
        return stream;
      }
      signal.addEventListener('abort', cancel, { once: true });
    }
    stream.onReturn = cancel;
    this.send({ type: 'submit', id, request });
    return stream;
  }

  stats(): EngineStats {
    return this.latest;
  }

  close(deadlineMs = 5000): Promise<void> {
    if (!this.closed) {
      this.closed = new Promise<void>((resolve) => {
        this.onClosed = resolve;
        this.send({ type: 'close', deadlineMs });
      }).then(() => this.worker.terminate().then(() => undefined));
    }
    return this.closed;
  }
}
