/**
 * Errors raised in the engine's worker thread arrive as EngineError (name, code, message and plain
 * fields survive the thread boundary, the class does not). The library gives callers the class
 * they can `instanceof`-check, with the same message and fields.
 */
import {
  AbortError,
  ContextLengthExceededError,
  DseekError,
  InvalidInputError,
  ModelClosedError,
  ModelFormatError,
  QueueFullError,
  TensorShapeError,
  UnsupportedConfigError,
} from '../errors.js';
import { CacheFullError } from '../cache/pagePool.js';
import { HubDownloadError } from '../formats/hub.js';
import { EngineError } from '../engine/workerEngine.js';

const CLASSES: Readonly<Record<string, { prototype: DseekError }>> = {
  ModelFormatError,
  UnsupportedConfigError,
  TensorShapeError,
  InvalidInputError,
  ContextLengthExceededError,
  QueueFullError,
  CacheFullError,
  HubDownloadError,
  AbortError,
  ModelClosedError,
};

export function reviveError(err: unknown): unknown {
  if (!(err instanceof EngineError)) return err;
  const cls = Object.hasOwn(CLASSES, err.originalName) ? CLASSES[err.originalName] : undefined;
  if (!cls) return err;
  // The constructors format their messages; the message here is already formatted, so the
  // instance is built from its prototype rather than by calling the constructor again.
  const revived = Object.create(cls.prototype) as DseekError;
  Object.assign(revived, err.fields, { message: err.message, code: err.code, name: err.originalName });
  Object.defineProperty(revived, 'stack', { value: `${err.originalName}: ${err.message}\n    at (dseek engine worker)`, configurable: true, writable: true });
  return revived;
}
