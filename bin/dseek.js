#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli/main.ts by `npm install` (prepare) or `npm run build`.
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    console.error('dseek: not built yet — run `npm run build` (npm install does this automatically)');
  } else {
    console.error(`dseek: ${err && err.message ? err.message : err}`);
  }
  process.exit(1);
});
