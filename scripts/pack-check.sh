#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then `npm install ./dseek-x.y.z.tgz` into an empty
# project outside the repository (its install script builds the native addon there), compile the
# examples/ (the README's library example among them) against the installed types with
# `strict: true`, and run them on the bundled model; `npx dseek run` too.
# Needs only the npm registry (dependencies of the tarball, typescript, @types/node; cache first).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/dseek-pack-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
step() { echo "pack-check: $*"; }

cd "$repo"
# A clean build, so that compiled files of deleted sources cannot ship; `npm pack` runs `prepare`.
rm -rf dist/src
step "npm pack"
npm pack --silent --pack-destination "$work" >/dev/null
tarball="$(ls "$work"/dseek-*.tgz)"
step "packed $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"

# What must ship, and what must not.
listing="$work/listing.txt"
tar -tzf "$tarball" >"$listing"
for f in package/package.json package/binding.gyp package/src/kernels/native/addon.c package/dist/src/index.js \
  package/dist/src/index.d.ts package/dist/src/engine/worker.js package/bin/dseek.js package/models/default/model.safetensors \
  package/models/default/tokenizer.json package/web/index.html package/README.md; do
  grep -qx "$f" "$listing" || { echo "pack-check: $f is missing from the tarball" >&2; exit 1; }
done
if grep -E '^package/(test|bench|dist/test|dist/bench|dist/examples|build|node_modules)/' "$listing" >/dev/null; then
  echo "pack-check: the tarball holds files that must not ship:" >&2
  grep -E '^package/(test|bench|dist/test|dist/bench|dist/examples|build|node_modules)/' "$listing" | head >&2
  exit 1
fi

app="$work/app"
mkdir "$app"
cd "$app"
cat >package.json <<'JSON'
{ "name": "dseek-pack-check", "version": "1.0.0", "private": true, "type": "module" }
JSON
ts_version="$(node -p "require('$repo/node_modules/typescript/package.json').version")"
types_version="$(node -p "require('$repo/node_modules/@types/node/package.json').version")"
step "npm install the tarball (builds the addon), typescript@$ts_version, @types/node@$types_version"
npm install --no-audit --no-fund --prefer-offline "$tarball" "typescript@$ts_version" "@types/node@$types_version"
if [ -e "$repo/build/Release/dseek_native.node" ]; then
  # The repository builds the addon here, so the installed package must have built it too.
  [ -e node_modules/dseek/build/Release/dseek_native.node ] || { echo 'pack-check: the installed package did not build its native addon' >&2; exit 1; }
fi

cp "$repo"/examples/*.ts .
cat >tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "es2022",
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "strict": true,
    "skipLibCheck": false,
    "types": ["node"],
    "outDir": "out"
  },
  "include": ["*.ts"]
}
JSON
step "tsc (strict) against the installed types"
npx tsc -p .
for example in out/*.js; do
  step "node $example"
  node "$example"
done
step "npx dseek run"
npx dseek run "And God said" -n 8 --seed 1
step "ok"
