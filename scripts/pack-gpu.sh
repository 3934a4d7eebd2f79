#!/usr/bin/env bash
# Prepares .gpu/ for the GPU host (see ../shared/gpu/README.md) within the 64 MiB the device tool
# carries, the repo's models and fixtures included: Node 22 runs the .ts sources with its own type
# stripping (no tsx/esbuild), its binary loses its symbols, and only the packages the engine and
# backends import at run time travel as installed trees. The HTTP server's packages and the OpenAI
# SDK its tests drive travel as one minified ESM file each (scripts/bundle-gpu-packages.mjs), so
# `keel serve` and test/server run there too; the plots' packages and playwright stay behind.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
version=${NODE_VERSION:-22.23.3}
engine_packages="koffi @huggingface/tokenizers @huggingface/jinja cli-progress zod @mlc-ai/web-xgrammar"
# Imported at run time by src/server and test/server (grep their imports when adding a package).
server_packages="fastify prom-client openai"

NODE_VERSION=$version GPU_EXTRA_DEPS="" bash ../shared/gpu/pack.sh >/dev/null
if [ ! -f .gpu/stripped ] || ! grep -q "$version" .gpu/stripped; then
  tmp=$(mktemp)
  xz -dc ".gpu/node-$version.xz" > "$tmp" && strip "$tmp" && xz -9 -T0 -c "$tmp" > ".gpu/node-$version.xz"
  rm -f "$tmp"; echo "$version" > .gpu/stripped
fi
# pack.sh reinstalls .gpu/node_modules whenever its own stamp changes: then ours are stale too.
stamp="$(sha1sum package-lock.json | cut -c1-12) $(cat .gpu/deps.stamp) $engine_packages"
if [ "$(cat .gpu/engine.stamp 2>/dev/null)" != "$stamp" ]; then
  tmp=$(mktemp -d)
  specs=$(node -e "const p=require('./package.json').dependencies;console.log(process.argv.slice(1).map(n=>n+'@'+p[n]).join(' '))" $engine_packages)
  (cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund $specs >/dev/null 2>&1)
  rm -rf .gpu/node_modules && mv "$tmp/node_modules" .gpu/node_modules && rm -rf "$tmp"
  # zod ships its TypeScript sources, maps and declarations; node needs none of them.
  find .gpu/node_modules/zod \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.map' \) -delete
  find .gpu/node_modules/zod -type d -name src -prune -exec rm -rf {} +
  # xgrammar's bundle carries a 1.2 MB source map: the tree has grown to within 2 MB of the limit.
  find .gpu/node_modules/@mlc-ai -name '*.map' -delete
  # koffi ships its C++ sources and headers for building from source, and a musl build beside the
  # glibc one that the host loads: its JavaScript and that prebuilt binary are all it runs.
  find .gpu/node_modules/koffi -type f ! -name '*.js' ! -name '*.cjs' ! -name package.json ! -name 'LICENSE*' -delete
  find .gpu/node_modules/koffi -type d -empty -delete
  rm -rf .gpu/node_modules/@koromix/koffi-linux-x64/musl_x64
  echo "$stamp" > .gpu/engine.stamp
  rm -f .gpu/server.stamp
fi
stamp="$(cat package-lock.json scripts/bundle-gpu-packages.mjs | sha1sum | cut -c1-12) $server_packages"
if [ "$(cat .gpu/server.stamp 2>/dev/null)" != "$stamp" ]; then
  node scripts/bundle-gpu-packages.mjs .gpu/node_modules $server_packages
  echo "$stamp" > .gpu/server.stamp
fi
# The host's copy of the tree has no trustworthy repository: results name the commit packed here.
{ echo "export KEEL_GIT_COMMIT=$(git rev-parse HEAD)"
  echo "export KEEL_GIT_DIRTY=$([ -z "$(git status --porcelain --untracked-files=no)" ] && echo 0 || echo 1)"; } > .gpu/source.sh
du -sh .gpu | sed 's/^/carry size: /'
