/** Paths the tests share. Tests compile to dist/test/…, so the repo root is found from this file. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

// Tests repack weights in memory (and so do the servers and CLIs they start, which inherit this):
// a test run must not fill the user's ~/.cache/dseek/repacked. The cache itself is tested with a
// folder of its own (test/cli/bench.test.ts).
process.env['DSEEK_REPACK_DIR'] ??= '';
/** test/golden: the reference models and their outputs (see its README.md), kept in the repo so a clone stands alone. */
export const goldenRoot = join(repoRoot, 'test', 'golden');
export const goldenModels = ['lite', 'full', 'v3'] as const;
