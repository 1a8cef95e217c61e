/** Choosing the kernels: native when the addon is built, else the TypeScript reference (said once). */
import type { Backend } from './backend.js';
import { referenceBackend } from './reference/index.js';
import { createNativeBackend, defaultThreads, nativeLoadError } from './native/index.js';
import { InvalidInputError } from '../errors.js';

export type BackendChoice = 'auto' | 'native' | 'reference';

let warned = false;

export function selectBackend(choice: BackendChoice = 'auto', threads = defaultThreads()): Backend {
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > 1024) {
    throw new InvalidInputError('threads', `must be an integer in [1, 1024], got ${threads}`);
  }
  if (choice === 'reference') return referenceBackend;
  const native = createNativeBackend(threads);
  if (native) return native;
  if (choice === 'native') {
    throw new InvalidInputError('backend', `the native kernels are unavailable: ${nativeLoadError()}`);
  }
  if (!warned) {
    warned = true;
    process.stderr.write(`dseek: native kernels unavailable (${nativeLoadError()}); running on the TypeScript reference backend\n`);
  }
  return referenceBackend;
}
