#!/usr/bin/env bash
# Prepares .gpu/ for the GPU host (see ../shared/gpu/README.md) within the 64 MiB the device tool
# carries, the repo's models and fixtures included: Node 22 runs the .ts sources with its own type
# stripping (no tsx/esbuild), its binary loses its symbols, and only the packages the engine and
# backends import at run time travel, and the benchmark results' schema (the HTTP server's and the
# plots' packages stay behind: `keel serve` and `keel bench plot` are not run there).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
version=${NODE_VERSION:-22.23.3}
engine_packages="koffi @huggingface/tokenizers @huggingface/jinja cli-progress zod"

NODE_VERSION=$version GPU_EXTRA_DEPS="" bash ../shared/gpu/pack.sh >/dev/null
if [ ! -f .gpu/stripped ] || ! grep -q "$version" .gpu/stripped; then
  tmp=$(mktemp)
  xz -dc ".gpu/node-$version.xz" > "$tmp" && strip "$tmp" && xz -9 -T0 -c "$tmp" > ".gpu/node-$version.xz"
  rm -f "$tmp"; echo "$version" > .gpu/stripped
fi
stamp="$(sha1sum package-lock.json | cut -c1-12) $engine_packages"
if [ "$(cat .gpu/engine.stamp 2>/dev/null)" != "$stamp" ]; then
  tmp=$(mktemp -d)
  specs=$(node -e "const p=require('./package.json').dependencies;console.log(process.argv.slice(1).map(n=>n+'@'+p[n]).join(' '))" $engine_packages)
  (cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund $specs >/dev/null 2>&1)
  rm -rf .gpu/node_modules && mv "$tmp/node_modules" .gpu/node_modules && rm -rf "$tmp"
  # zod ships its TypeScript sources, maps and declarations; node needs none of them.
  find .gpu/node_modules/zod \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.map' \) -delete
  find .gpu/node_modules/zod -type d -name src -prune -exec rm -rf {} +
  echo "$stamp" > .gpu/engine.stamp
fi
du -sh .gpu | sed 's/^/carry size: /'
