/**
 * A context store thread (see storeLink.ts): opens the folder or Redis store, frames and checks
 * pages, and moves them. ThreadLink.start starts two from the engine's thread, one for lookups and
 * one for writes (`role`).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { FolderStore } from './folderStore.js';
import { RedisStore } from './redisStore.js';
import { encodePage, type DecodeResult } from './pageCodec.js';
import { InThreadLink, type FromStoreThread, type StoreThreadData, type ToStoreThread } from './storeLink.js';

const port = parentPort!;
const { spec, role } = workerData as StoreThreadData;
const post = (m: FromStoreThread, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
const log = (line: string) => post({ type: 'log', line });

/**
 * The writing thread's work (framing, SHA-256, the client's socket writes) must never slow a
 * decode step, and on a machine whose cores the kernels' pool keeps busy it would: at equal priority the
 * scheduler gives it an equal share. At nice 19 it gets ~1.5 % of a busy core (CFS weight 15 against
 * 1024) and the rest of the time the cores are idle: between steps, while JavaScript runs, and
 * whenever the engine waits. On Linux, setpriority(PRIO_PROCESS, tid) changes one thread only; the
 * thread id is what /proc/thread-self points at. Elsewhere the thread keeps the process's priority.
 */
function lowerThisThreadsPriority(): void {
  if (process.platform !== 'linux') return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, 19);
  } catch (err) {
    log(`context store thread: could not lower its priority (${err instanceof Error ? err.message : String(err)}); page writes run at the engine's priority`);
  }
}
if (role === 'writes') lowerThisThreadsPriority();

// Both threads connect; the reading one reports a store that cannot be reached (one line, not two).
const storeLog = role === 'reads' ? log : () => {};
const store = spec.kind === 'folder' ? new FolderStore({ dir: spec.dir, maxBytes: spec.maxBytes, log }) : RedisStore.open(spec, storeLog);
// A Redis that answers within 2 s is connected before the engine reports ready; one that does not
// is not waited for (the engine serves uncached and the client keeps trying).
const connected = store instanceof RedisStore ? await store.waitConnected(2000) : true;
const link = new InThreadLink(store);
const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

port.on('message', (m: ToStoreThread) => {
  switch (m.type) {
    case 'fetch':
      link.fetch(m.keys, m.geometry).then(
        (results) => {
          // Each payload is copied here into an ArrayBuffer of its own (a Buffer from the client may
          // be a view into a larger shared one), which then crosses without another copy.
          const transfer: ArrayBuffer[] = [];
          const out: (DecodeResult | null)[] = results.map((r) => {
            if (!r || !r.ok) return r;
            const own = new Uint8Array(r.payload);
            transfer.push(own.buffer);
            return { ok: true, payload: own };
          });
          try {
            post({ type: 'fetched', id: m.id, results: out }, transfer);
          } catch (err) {
            post({ type: 'failed', id: m.id, message: `could not hand the pages over: ${message(err)}` });
          }
        },
        (err: unknown) => post({ type: 'failed', id: m.id, message: message(err) }),
      );
      return;
    case 'write': {
      let bytes: Uint8Array;
      try {
        bytes = encodePage({ ...m.geometry, key: m.key }, m.layers);
      } catch (err) {
        post({ type: 'failed', id: m.id, message: message(err) });
        return;
      }
      post({ type: 'copied', id: m.id });
      store.put(m.key, bytes).then(
        () => post({ type: 'written', id: m.id, bytes: bytes.byteLength, usage: store.usage() }),
        (err: unknown) => post({ type: 'failed', id: m.id, message: message(err) }),
      );
      return;
    }
    case 'delete':
      store.delete(m.key).catch(() => {});
      return;
    case 'probe':
      store.get([m.key]).then(
        () => post({ type: 'probed', id: m.id }),
        (err: unknown) => post({ type: 'failed', id: m.id, message: message(err) }),
      );
      return;
    case 'close':
      void store.close().finally(() => post({ type: 'closed' }));
      return;
  }
});

post({ type: 'ready', kind: store.kind, location: store.location, connected });
