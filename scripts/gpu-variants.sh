#!/usr/bin/env bash
# A/B of code variants in one device call, on one machine: each variant is a directory of files at
# their repository paths, copied over the tree for its run and taken back out after. `base` is the
# tree as it is. Make variants here before the call (untracked files travel with the tree), e.g.
#   scripts/gpu-variants.sh make s25 6c2ea63 src scripts   # src/ and scripts/ as of a commit
#   mkdir -p variants/fast/src/... && cp my-edit.cu variants/fast/src/...   # one file changed
# and on the GPU host, after `source .gpu/env.sh` as gpu-run.sh does:
#   VARIANTS="base s25" scripts/gpu-variants.sh run node scripts/profile-decode-step.ts --model bench/configs/qwen3-30b-a3b
# Each run's output goes to $OUT/variants/<variant>.log (the variant's name is also $VARIANT
# for the command) and the last 12 lines are printed; everything under $OUT/variants comes back
# as one tarball. Remove variants/ when done: it is not part of the product.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=variants

case "${1:-}" in
  make) # name, commit, paths...
    name=$2 rev=$3
    shift 3
    rm -rf "$dir/$name" && mkdir -p "$dir/$name"
    git archive "$rev" "$@" | tar -x -C "$dir/$name"
    # Only what differs from the tree travels (the call's carry is nearly full with .gpu).
    (cd "$dir/$name" && find . -type f | sed 's|^\./||') | while read -r f; do cmp -s "$dir/$name/$f" "$f" && rm "$dir/$name/$f"; done
    find "$dir/$name" -type d -empty -delete
    echo "$dir/$name: $(find "$dir/$name" -type f 2>/dev/null | wc -l) files of $rev that differ from the tree, $(du -sk "$dir/$name" 2>/dev/null | cut -f1) KB" ;;
  run) # command...
    shift
    out=${OUT:-/tmp/keel-gpu}/variants
    saved=$(mktemp -d)
    mkdir -p "$out"
    for v in ${VARIANTS:?set VARIANTS, e.g. \"base fast\"}; do
      files=()
      if [ "$v" != base ]; then
        [ -d "$dir/$v" ] || { echo "[$v] no $dir/$v"; continue; }
        mapfile -t files < <(cd "$dir/$v" && find . -type f | sed 's|^\./||')
        for f in "${files[@]}"; do
          # A file the variant adds is removed again afterwards; one it replaces is put back.
          if [ -f "$f" ]; then mkdir -p "$saved/$(dirname "$f")" && cp "$f" "$saved/$f"; fi
          mkdir -p "$(dirname "$f")" && cp "$dir/$v/$f" "$f"
        done
      fi
      VARIANT=$v "$@" > "$out/$v.log" 2>&1
      echo "[$v] rc=$?"
      tail -12 "$out/$v.log" | sed "s/^/[$v] /"
      for f in "${files[@]}"; do
        if [ -f "$saved/$f" ]; then cp "$saved/$f" "$f"; else rm -f "$f"; fi
      done
      rm -rf "${saved:?}"/*
    done
    tar czf "$out.tgz" -C "$(dirname "$out")" variants && rm -rf "$out" ;;
  *) echo "usage: scripts/gpu-variants.sh make NAME COMMIT PATHS... | VARIANTS=\"base NAME...\" scripts/gpu-variants.sh run COMMAND..." >&2
     exit 2 ;;
esac
