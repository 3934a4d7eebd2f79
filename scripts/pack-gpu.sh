#!/usr/bin/env bash
# Prepares .gpu/ for the GPU host (see ../shared/gpu/README.md) within the 64 MiB the device
# tool carries: Node 22 runs the .ts sources with its own type stripping, so the TypeScript
# loader (tsx, esbuild) and type-only packages stay behind, and the node binary loses its symbols.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
version=${NODE_VERSION:-22.23.3}
NODE_VERSION=$version GPU_EXTRA_DEPS="" bash ../shared/gpu/pack.sh >/dev/null
if [ ! -f .gpu/stripped ]; then
  tmp=$(mktemp)
  xz -dc ".gpu/node-$version.xz" > "$tmp" && strip "$tmp" && xz -9 -T0 -c "$tmp" > ".gpu/node-$version.xz"
  rm -f "$tmp"; touch .gpu/stripped
fi
rm -rf .gpu/node_modules/{tsx,esbuild,@esbuild,@types,typescript,@typescript,undici-types}
# zod ships its TypeScript sources, maps and declarations; node needs none of them.
find .gpu/node_modules/zod \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.map' \) -delete
find .gpu/node_modules/zod -type d -name src -prune -exec rm -rf {} +
du -sh .gpu | sed 's/^/carry size: /'
