/**
 * The context-cache page format, separate from any I/O: the same bytes go to a folder, to Redis or
 * to any other ContextStore, and every reader checks them the same way before a page is served.
 *
 * Layout (little-endian): "DSKC" | u32 version | u32 header length | header JSON | payload (the
 * page's rows, layer by layer) | SHA-256 of everything before it.
 *
 * The header names the model's content fingerprint, the page's key (the chained hash of every
 * token up to the page's end, salted per tenant) and the page geometry with the rows' storage
 * type (f32, f16, q8 or f64), so a page written for another model, another prefix, another page
 * size or another cache type (a q8 page to an f16 cache) is rejected even if a store hands it
 * back under the right key. The checksum catches bit rot and truncation; it is not a signature: whoever
 * can write to the store can forge pages (see the README on trusting a shared store).
 *
 * Both functions are synchronous and cost a copy plus a SHA-256 of the page (≈2 ms for 2 MB): the
 * engine calls them in the context store's own thread (storeThread.ts), never in an engine step.
 */
import { createHash } from 'node:crypto';
import { rowBytes, type LatentCacheDType } from './pagePool.js';

const MAGIC = 'DSKC';
/** 2: the fingerprint is of the weights' content (1 hashed the file name too). */
export const PAGE_FORMAT_VERSION = 2;
const PREFIX_BYTES = 12;
const CHECKSUM_BYTES = 32;

/** What a page must say about itself to be served. */
export interface PageMeta {
  /** The model's content fingerprint (model/fingerprint.ts). */
  readonly fingerprint: string;
  /** The page's prefix key (PrefixCache's chained hash, salted). */
  readonly key: string;
  readonly layers: number;
  /** Values per token and layer: kv_lora_rank + qk_rope_head_dim. */
  readonly width: number;
  readonly pageTokens: number;
  readonly dtype: LatentCacheDType;
}

export type DecodeResult =
  | { readonly ok: true; /** The rows, layer by layer: a view into the input, not a copy. */ readonly payload: Uint8Array }
  | { readonly ok: false; /** Why the bytes were refused, for the log and the rejection counter. */ readonly problem: string };

/** Bytes of one page's rows: layers × pageTokens rows (q8: ggml Q8_0 blocks, rowBytes). */
export function payloadBytes(meta: Omit<PageMeta, 'key' | 'fingerprint'>): number {
  return meta.layers * meta.pageTokens * rowBytes(meta.width, meta.dtype);
}

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

/** One page's rows (one view per layer, as PagePool stores them) framed for a store. */
export function encodePage(meta: PageMeta, layers: readonly ArrayBufferView[]): Uint8Array {
  const header = new TextEncoder().encode(
    JSON.stringify({ fingerprint: meta.fingerprint, key: meta.key, layers: meta.layers, width: meta.width, pageTokens: meta.pageTokens, dtype: meta.dtype }),
  );
  const payload = layers.reduce((n, l) => n + l.byteLength, 0);
  if (payload !== payloadBytes(meta)) throw new RangeError(`page rows hold ${payload} bytes, the geometry says ${payloadBytes(meta)}`);
  // Not zero-filled: every byte is written below.
  const out: Uint8Array = Buffer.allocUnsafeSlow(PREFIX_BYTES + header.length + payload + CHECKSUM_BYTES);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < 4; i++) out[i] = MAGIC.charCodeAt(i);
  view.setUint32(4, PAGE_FORMAT_VERSION, true);
  view.setUint32(8, header.length, true);
  out.set(header, PREFIX_BYTES);
  let at = PREFIX_BYTES + header.length;
  for (const l of layers) {
    out.set(new Uint8Array(l.buffer, l.byteOffset, l.byteLength), at);
    at += l.byteLength;
  }
  out.set(sha256(out.subarray(0, at)), at);
  return out;
}

/** Check stored bytes against what the reader expects; the payload only if every check passes. */
export function decodePage(bytes: Uint8Array, expected: PageMeta): DecodeResult {
  const fail = (problem: string): DecodeResult => ({ ok: false, problem });
  if (bytes.length < PREFIX_BYTES + CHECKSUM_BYTES) return fail(`truncated (${bytes.length} bytes)`);
  if (String.fromCharCode(bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!) !== MAGIC) return fail('not a dseek context page (bad magic)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== PAGE_FORMAT_VERSION) return fail(`format version ${version}, expected ${PAGE_FORMAT_VERSION}`);
  const headerLength = view.getUint32(8, true);
  if (PREFIX_BYTES + headerLength + CHECKSUM_BYTES > bytes.length) return fail('truncated header');
  const body = bytes.subarray(0, bytes.length - CHECKSUM_BYTES);
  const sum = sha256(body);
  const stored = bytes.subarray(bytes.length - CHECKSUM_BYTES);
  for (let i = 0; i < CHECKSUM_BYTES; i++) if (sum[i] !== stored[i]) return fail('checksum mismatch (corrupt)');
  let header: Partial<PageMeta>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength))) as Partial<PageMeta>;
  } catch {
    return fail('header is not JSON');
  }
  if (header.fingerprint !== expected.fingerprint) return fail('written for another model (fingerprint differs)');
  if (header.key !== expected.key) return fail('written for another prefix (key differs)');
  if (header.layers !== expected.layers || header.width !== expected.width || header.pageTokens !== expected.pageTokens || header.dtype !== expected.dtype) {
    return fail('page geometry differs (layers, width, page tokens or type)');
  }
  const payload = body.subarray(PREFIX_BYTES + headerLength);
  if (payload.length !== payloadBytes(expected)) return fail(`payload is ${payload.length} bytes, expected ${payloadBytes(expected)}`);
  return { ok: true, payload };
}
