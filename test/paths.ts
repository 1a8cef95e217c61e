/** Paths the tests share. Tests compile to dist/test/…, so the repo root is found from this file. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** ../shared/golden beside the checkout: the reference models and their outputs. */
export const goldenRoot = join(repoRoot, '..', 'shared', 'golden');
export const goldenModels = ['lite', 'full', 'v3'] as const;
