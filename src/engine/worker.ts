/**
 * The engine's worker thread: loads the model and runs the scheduler loop here, so the HTTP
 * event loop never runs model code. Speaks a small message protocol with workerEngine.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadModel } from '../model/load.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { selectBackend } from '../kernels/select.js';
import { ContextCache } from '../cache/contextCache.js';
import { ThreadLink } from '../cache/storeLink.js';
import { Scheduler } from './scheduler.js';
import { ModelFileGuard } from '../model/fileGuard.js';
import { SchedulerLoop } from './localEngine.js';
import { serializeError, type WorkerInit, type ToWorker, type FromWorker } from './workerProtocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (m: FromWorker) => port.postMessage(m);
const log = (line: string) => post({ type: 'log', line });

try {
  let lastProgress = 0;
  const loaded = loadModel(init.modelPath, {
    backend: selectBackend(init.backend, init.threads),
    precision: 'f32',
    ...(init.repack !== undefined ? { repack: init.repack } : {}),
    ...(init.repackCacheMiB !== undefined ? { repackCacheMiB: init.repackCacheMiB } : {}),
    onRepackProgress: (done, total) => {
      const now = Date.now();
      if (done === total || now - lastProgress > 250) {
        lastProgress = now;
        post({ type: 'progress', phase: 'repack', done, total });
      }
    },
  });
  const p = loaded.prepared;
  if (p.source !== 'none') {
    const how = p.source === 'mapped' ? 'mapped from' : p.source === 'built' ? 'repacked into' : 'repacked in memory';
    log(`repacked weights: ${(p.repackedBytes / 1e9).toFixed(2)} GB ${how}${p.file ? ` ${p.file}` : ''} in ${p.seconds.toFixed(2)} s`);
  }
  const c = loaded.config;
  const cacheType = init.scheduler.cacheType ?? 'f16';
  const pageTokens = init.scheduler.pageTokens ?? 64;
  const spec = init.contextStore;
  // The store runs in a thread of its own: no engine step waits for its sockets or checksums.
  const started = spec === null ? null : await ThreadLink.start(spec, log);
  if (started && !started.connected) log(`context store ${started.link.location}: not reachable yet; serving uncached until it is`);
  const store = started ? started.link : null;
  const contextCache = store
    ? new ContextCache({
        link: store,
        // The weights' content, not their path: every replica and every copy names the same pages.
        fingerprint: modelFingerprint(init.modelPath),
        layers: c.numHiddenLayers,
        width: c.kvLoraRank + c.qkRopeHeadDim,
        pageTokens,
        dtype: cacheType,
        ...(init.contextStoreTimeoutMs !== undefined ? { fetchTimeoutMs: init.contextStoreTimeoutMs } : {}),
        log,
      })
    : null;
  // The files as loaded: a truncated, replaced or rewritten file is reported, never served.
  const guard = ModelFileGuard.forModel(init.modelPath);
  const scheduler = new Scheduler(loaded.model, loaded.tokenizer, { ...init.scheduler, contextCache, log, checkModelFiles: () => guard.check() });
  const loop = new SchedulerLoop(scheduler);
  // Between requests too, so that /health tells a balancer before a client finds out.
  let healthy = true;
  setInterval(() => {
    if (healthy && !scheduler.verifyModelFiles()) {
      healthy = false;
      post({ type: 'stats', stats: scheduler.stats() });
    }
  }, 1000).unref();
  // Writes behind and store state changes happen between steps, and after the last one: publish
  // them while idle too, so that /metrics shows what reached the store.
  if (contextCache) {
    let published = '';
    setInterval(() => {
      const now = JSON.stringify(contextCache.stats());
      if (now !== published) {
        published = now;
        post({ type: 'stats', stats: scheduler.stats() });
      }
    }, 250).unref();
  }
  /** The engine's request ids → the scheduler's. */
  const idMap = new Map<number, number>();
  let lastStats = 0;
  loop.afterStep = () => {
    const now = Date.now();
    if (now - lastStats > 100 || !scheduler.hasWork()) {
      lastStats = now;
      post({ type: 'stats', stats: scheduler.stats() });
    }
  };
  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') {
      try {
        const sid = scheduler.submit(m.request, (event) => {
          if (event.type === 'error') {
            idMap.delete(m.id);
            post({ type: 'error', id: m.id, error: { name: event.error.name, code: event.error.code, message: event.error.message } });
            return;
          }
          if (event.type === 'done') idMap.delete(m.id);
          post({ type: 'event', id: m.id, event });
        });
        idMap.set(m.id, sid);
      } catch (err) {
        post({ type: 'error', id: m.id, error: serializeError(err) });
      }
      loop.kick();
    } else if (m.type === 'cancel') {
      const sid = idMap.get(m.id);
      if (sid !== undefined) scheduler.cancel(sid);
      loop.kick();
    } else if (m.type === 'close') {
      void loop.drain(m.deadlineMs).then(() => post({ type: 'closed' }));
    }
  });
  post({
    type: 'ready',
    info: {
      backend: loaded.model.backend.name,
      contextLength: scheduler.contextLength,
      cacheBytesBudget: scheduler.pool.maxPages * scheduler.pool.bytesPerPage,
      cacheBytesPerToken: scheduler.pool.bytesPerPage / scheduler.pool.pageTokens,
      diskCacheDir: spec?.kind === 'folder' ? spec.dir : null,
      contextStore: store ? store.location : null,
    },
    stats: scheduler.stats(),
  });
} catch (err) {
  post({ type: 'fatal', error: serializeError(err) });
}
