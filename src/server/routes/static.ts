/**
 * The chat page: files under the web root, served at / (index.html) and /<file>. Read per request,
 * so the page can be edited while the server runs. Only plain files with a known type inside the
 * root are served: no directory listings, no dot-files, no `..` or encoded separators, no symlinks
 * out of the root; everything else is the same JSON 404 as any unknown URL.
 */
import { realpath, readFile, stat } from 'node:fs/promises';
import { extname, resolve, sep } from 'node:path';
import { HttpError } from '../httpError.js';
import type { Route, ServerContext } from '../types.js';

export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/**
 * The page loads only its own scripts and styles and talks only to this server; model output that
 * slipped past the renderer still could not run script or load anything from elsewhere.
 */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MAX_BYTES = 8 * 1024 * 1024;

/** Whether GET `path` may name a static file (the API and the server's own routes never do). */
export function isStaticPath(path: string): boolean {
  return !path.startsWith('/v1/') && path !== '/v1';
}

export function staticRoute(ctx: ServerContext): Route {
  return async (req) => {
    const file = await locate(ctx.webRoot, req.path);
    const type = CONTENT_TYPES[extname(file).toLowerCase()]!;
    const body = await readFile(file).catch(() => {
      throw notFound(req.method, req.path);
    });
    return {
      kind: 'text',
      status: 200,
      contentType: type,
      body,
      headers: {
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        ...(type.startsWith('text/html') && { 'content-security-policy': PAGE_CSP, 'x-frame-options': 'DENY' }),
      },
    };
  };
}

/** The file `path` names under `root`, or a 404 (the page's own 404 when / itself is missing). */
async function locate(root: string, path: string): Promise<string> {
  const rel = path === '/' ? ['index.html'] : segments(path);
  const missing = path === '/' ? pageMissing() : notFound('GET', path);
  if (rel === null || !(extname(rel[rel.length - 1]!).toLowerCase() in CONTENT_TYPES)) throw missing;
  try {
    const base = await realpath(root);
    const real = await realpath(resolve(base, ...rel));
    const info = await stat(real);
    if (!real.startsWith(base + sep) || !info.isFile() || info.size > MAX_BYTES) throw missing;
    return real;
  } catch {
    throw missing;
  }
}

/** The decoded path segments, or null when any is unsafe or hidden. */
function segments(path: string): string[] | null {
  const parts = path.split('/').slice(1);
  const out: string[] = [];
  for (const raw of parts) {
    let s: string;
    try {
      s = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (s === '' || s.startsWith('.') || /[/\\\0:]/.test(s)) return null;
    out.push(s);
  }
  return out.length > 0 ? out : null;
}

function notFound(method: string, path: string): HttpError {
  return new HttpError(404, `Invalid URL (${method} ${path})`, 'invalid_request_error');
}

function pageMissing(): HttpError {
  return new HttpError(404, 'no chat page is installed (web/index.html is missing); the API is under /v1', 'not_found_error', null, 'not_found');
}
