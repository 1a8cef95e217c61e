/**
 * The context store's own thread (see storeLink.ts): opens the folder or Redis store, frames and
 * checks pages, and moves them. Started by ThreadLink.start from the engine's thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ContextStoreSpec } from './contextStore.js';
import { FolderStore } from './folderStore.js';
import { RedisStore } from './redisStore.js';
import { encodePage, type DecodeResult } from './pageCodec.js';
import { InThreadLink, type FromStoreThread, type ToStoreThread } from './storeLink.js';

const port = parentPort!;
const spec = workerData as ContextStoreSpec;
const post = (m: FromStoreThread, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
const log = (line: string) => post({ type: 'log', line });

const store = spec.kind === 'folder' ? new FolderStore({ dir: spec.dir, maxBytes: spec.maxBytes, log }) : RedisStore.open(spec, log);
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
