#!/usr/bin/env bash
# Fits the work tree and .gpu/ into the device call's 64 MiB carry, whose largest parts are the test
# fixtures and the shipped models (about 33 and 36 MB): `pack` writes the fixtures xz-compressed into
# .gpu/fixtures.tar.xz (about 23 MB; scripts/gpu-run.sh unpacks them there) and removes them and
# models/ from the work tree; `restore` brings both back from git, keeping the tarball for the next
# call; `clean` restores and deletes the tarball. Run `bash scripts/pack-gpu.sh` first. While packed,
# never `git commit -a`: the removals would be committed. GPU tests that load models/ (keel-tiny's)
# fail on the host while packed; for them, `pack-models` carries models/keel-tiny (19 MB) instead of
# any fixture (the tarball set aside as .gpu-fixtures.tar.xz until `restore`), so fixture-reading
# tests fail instead. Both also carry .gpu/node_modules as one xz tarball (8 MB of files become 1 MB),
# the tree set aside as .gpu-node_modules until `restore`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
paths=(test/fixtures models)
pack_node_modules() {
  [ -d .gpu/node_modules ] || return 0
  tar cf - -C .gpu node_modules | xz -9 -T0 > .gpu/node_modules.tar.xz
  rm -rf .gpu-node_modules && mv .gpu/node_modules .gpu-node_modules
}
unpack_node_modules() {
  [ -d .gpu-node_modules ] || return 0
  rm -rf .gpu/node_modules && mv .gpu-node_modules .gpu/node_modules && rm -f .gpu/node_modules.tar.xz
}
case ${1:?usage: gpu-carry.sh pack|repack|pack-models|restore|clean} in
  pack | repack)
    if [ -n "$(git status --porcelain -- "${paths[@]}" | grep -v '^ D')" ]; then
      echo "gpu-carry: uncommitted changes under ${paths[*]}: commit them first (restore checks these paths out from git)" >&2
      exit 1
    fi
    if [ "$1" = repack ] || [ ! -f .gpu/fixtures.tar.xz ]; then
      git checkout -- test/fixtures
      tar cf - -C test/fixtures . | xz -9 -T0 > .gpu/fixtures.tar.xz
    fi
    git ls-files test/fixtures | grep -vx test/fixtures/MANIFEST.json | xargs rm -f
    git ls-files models | xargs rm -f
    find "${paths[@]}" -type d -empty -delete 2>/dev/null || true
    mkdir -p test/fixtures
    pack_node_modules
    tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}') || true
    gpu=$(find .gpu -type f -printf '%s\n' | awk '{s += $1} END {print s}')
    echo "carry: $((tree + gpu)) bytes of $((64 * 1024 * 1024))" ;;
  pack-models)
    if [ -n "$(git status --porcelain -- "${paths[@]}" | grep -v '^ D')" ]; then
      echo "gpu-carry: uncommitted changes under ${paths[*]}: commit them first (restore checks these paths out from git)" >&2
      exit 1
    fi
    git ls-files test/fixtures | grep -vx test/fixtures/MANIFEST.json | xargs rm -f
    git ls-files models | grep -v '^models/keel-tiny/' | xargs rm -f
    find "${paths[@]}" -type d -empty -delete 2>/dev/null || true
    mkdir -p test/fixtures
    if [ -f .gpu/fixtures.tar.xz ]; then mv .gpu/fixtures.tar.xz .gpu-fixtures.tar.xz; fi
    pack_node_modules ;;
  restore) git checkout -- "${paths[@]}"; if [ -f .gpu-fixtures.tar.xz ]; then mv .gpu-fixtures.tar.xz .gpu/fixtures.tar.xz; fi
    unpack_node_modules ;;
  clean) git checkout -- "${paths[@]}"; rm -f .gpu/fixtures.tar.xz .gpu-fixtures.tar.xz; unpack_node_modules ;;
  *) echo "usage: gpu-carry.sh pack|repack|pack-models|restore|clean" >&2; exit 2 ;;
esac
