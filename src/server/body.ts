/** Reading a JSON request body with a size cap; every refusal is an OpenAI-shaped 4xx. */
import type { IncomingMessage } from 'node:http';
import { badRequest, HttpError } from './httpError.js';

export const MAX_BODY_BYTES = 4 * 1024 * 1024;

/**
 * The 413 closes the connection: the rest of the body is never read (a chunked upload can be
 * any size), so the connection cannot carry another request.
 */
function tooLarge(): HttpError {
  return new HttpError(413, `the request body is larger than ${MAX_BODY_BYTES / (1024 * 1024)} MB`, 'invalid_request_error', null, 'request_too_large', { connection: 'close' });
}

export async function readJsonBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw badRequest(null, `the request body must be JSON sent with "Content-Type: application/json" (got ${type ? JSON.stringify(type) : 'no content type'})`, 'invalid_content_type');
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();

  const text = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // Listeners, not for-await: leaving a for-await loop early destroys the socket, and the
    // client should still get its 413. At the limit reading stops: the 413 goes out at once
    // with `connection: close`, and the server drops the connection after it instead of
    // reading the rest (a chunked body has no declared size to refuse up front).
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.pause();
      chunks.length = 0;
      reject(tooLarge());
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
  if (text.trim() === '') throw badRequest(null, 'the request body is empty: send a JSON object', 'invalid_json');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw badRequest(null, `the request body is not valid JSON (${e instanceof Error ? e.message : String(e)})`, 'invalid_json');
  }
}
