#!/usr/bin/env node
/**
 * Prepares the training corpus of the shipped model: the King James Version of the Bible (1611,
 * public domain), from Debian's `bible-kjv` package (the text ships in `bible-kjv-text`; the
 * `bible` program prints it).
 *
 *   node scripts/prepare-corpus.mjs [--out tmp/corpus]
 *
 * Installs the package with apt-get when the `bible` program is missing (as root, or through sudo),
 * dumps Genesis 1:1 – Revelation 22:21 one verse per line, drops the verse references, and writes
 *   <out>/kjv.txt          one chapter per document (documents separated by a blank line)
 *   <out>/LICENSE-corpus.txt  the text's status and the package's copyright file
 * The held-out split is made by the trainer (every 20th chapter).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const outIndex = args.indexOf('--out');
const out = outIndex >= 0 ? args[outIndex + 1] : 'tmp/corpus';

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function install() {
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const prefix = asRoot ? [] : have('sudo') ? ['sudo'] : null;
  if (!prefix) throw new Error('the `bible` program is missing and apt-get needs root: run `sudo apt-get install bible-kjv`');
  const run = (argv) => {
    console.error(`prepare-corpus: ${[...prefix, ...argv].join(' ')}`);
    execFileSync(prefix.length ? prefix[0] : argv[0], prefix.length ? argv : argv.slice(1), {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  };
  try {
    run(['apt-get', 'install', '-y', '--no-install-recommends', 'bible-kjv']);
  } catch {
    run(['apt-get', 'update']);
    run(['apt-get', 'install', '-y', '--no-install-recommends', 'bible-kjv']);
  }
}

if (!have('bible')) install();

// -f turns pretty-printing off: one verse per line, "Ge1:1 In the beginning …".
const raw = execFileSync('bible', ['-f', 'Gen1:1-Rev22:21'], { encoding: 'utf8', maxBuffer: 64 << 20 });
const chapters = [];
let current = null;
let key = '';
let verses = 0;
for (const line of raw.split('\n')) {
  const m = /^(\S+?)(\d+):(\d+) (.*)$/.exec(line.trim());
  if (!m) continue;
  const [, book, chapter, , text] = m;
  const k = `${book}${chapter}`;
  if (k !== key) {
    current = [];
    chapters.push(current);
    key = k;
  }
  current.push(text.replace(/\s+/g, ' ').trim());
  verses++;
}
if (verses < 31000) throw new Error(`expected the whole KJV (31,102 verses), got ${verses}`);

mkdirSync(out, { recursive: true });
const text = `${chapters.map((c) => c.join('\n')).join('\n\n')}\n`;
writeFileSync(join(out, 'kjv.txt'), text);

const copyright = ['/usr/share/doc/bible-kjv-text/copyright', '/usr/share/doc/bible-kjv/copyright'].find((p) => existsSync(p));
writeFileSync(
  join(out, 'LICENSE-corpus.txt'),
  [
    'Corpus: the King James Version (Authorized Version) of the Bible, 1611 text as distributed in',
    "Debian's bible-kjv-text package (Bible Retrieval System, Chip Chapin), printed by its `bible` program.",
    'The KJV text is in the public domain (its copyright has long expired; the package says so below).',
    '',
    copyright ? readFileSync(copyright, 'utf8') : '(package copyright file not found)',
  ].join('\n'),
);
writeFileSync(
  join(out, 'corpus-info.json'),
  `${JSON.stringify(
    {
      name: 'The King James Version of the Bible (1611)',
      description: `the complete Authorized Version, ${verses.toLocaleString('en-US')} verses in ${chapters.length.toLocaleString('en-US')} chapters (${(text.length / 1e6).toFixed(1)} MB of text), one chapter per document and one verse per line, verse references removed`,
      source: "Debian package `bible-kjv-text` (printed with `bible -f Gen1:1-Rev22:21` from package `bible-kjv`), prepared by `scripts/prepare-corpus.mjs`",
      license: 'public domain (the 1611 translation is long out of copyright, as the package states)',
      licenseFile: join(out, 'LICENSE-corpus.txt'),
    },
    null,
    2,
  )}\n`,
);
console.error(`prepare-corpus: ${verses} verses in ${chapters.length} chapters, ${(text.length / 1e6).toFixed(2)} MB → ${join(out, 'kjv.txt')}`);
