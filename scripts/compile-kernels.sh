#!/usr/bin/env bash
# Compile-checks every CUDA kernel with nvcc, without a GPU: each src/backend/cuda/kernels/*.cu
# for sm_80 and for sm_90a, once per specialization listed in the file as
#   // nvcc-check: -DNAME=value ...
# (once with no defines when it lists none). A file for one architecture only says so with
#   // nvcc-targets: sm_90a
# and one specialization for it alone with
#   // nvcc-check-sm90a: -DNAME=value ...
# Fails on any compile error.
# Usage: scripts/compile-kernels.sh [-v]   -v prints registers, shared memory and spills per kernel.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kernels="$root/src/backend/cuda/kernels"
verbose=0
[ "${1:-}" = "-v" ] && verbose=1
command -v nvcc >/dev/null || { echo "nvcc not found (install the CUDA toolkit)" >&2; exit 1; }

# NVRTC compiles in JIT mode, where a generic lambda (`[&](auto ...)`) is a host function and an
# error, while nvcc accepts it: catch that here, since nvcc alone cannot.
if grep -nE '\[[&=]?\]\(([^)]*[(,] *)?(const )?auto' "$kernels"/*.cu "$kernels"/*.cuh >&2; then
  echo "generic lambdas above: NVRTC rejects them (use a functor with a template operator())" >&2
  exit 1
fi

# NVRTC has no host headers: math.h's INFINITY and NAN are undefined there (use NEG_INF, -NEG_INF).
if grep -nwE 'INFINITY|NAN' "$kernels"/*.cu "$kernels"/*.cuh >&2; then
  echo "host math macros above: NVRTC does not define them" >&2
  exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
jobs="$out/jobs"
: > "$jobs"
for cu in "$kernels"/*.cu; do
  name=$(basename "$cu" .cu)
  specs=$(sed -n 's|^// nvcc-check:||p' "$cu")
  [ -n "$specs" ] || specs=" "
  targets=("-arch=sm_80" "-gencode=arch=compute_90a,code=sm_90a")
  grep -q '^// nvcc-targets: sm_90a$' "$cu" && targets=("-gencode=arch=compute_90a,code=sm_90a")
  i=0
  while IFS= read -r defines; do
    for target in "${targets[@]}"; do
      tag=$(echo "$target" | grep -o 'sm_[0-9a-z]*' | tail -1)
      printf '%s\t%s\t%s\t%s\n' "$cu" "$target" "$defines" "$out/$name-$i-$tag.cubin" >> "$jobs"
    done
    i=$((i + 1))
  done <<< "$specs"
  while IFS= read -r defines; do
    printf '%s\t%s\t%s\t%s\n' "$cu" "-gencode=arch=compute_90a,code=sm_90a" "$defines" "$out/$name-$i-sm_90a.cubin" >> "$jobs"
    i=$((i + 1))
  done < <(sed -n 's|^// nvcc-check-sm90a:||p' "$cu")
done

compile_one() {
  local cu=$1 target=$2 defines=$3 cubin=$4
  # shellcheck disable=SC2086
  if ! nvcc -cubin -std=c++17 $target $defines -I"$(dirname "$cu")" -Xptxas -v -o "$cubin" "$cu" > "$cubin.log" 2>&1; then
    echo "FAILED: nvcc $target $defines $(basename "$cu")" >&2
    cat "$cubin.log" >&2
    return 1
  fi
  if grep -q "warning" "$cubin.log"; then
    echo "warning: $(basename "$cu") $target $defines" >&2
    grep "warning" "$cubin.log" >&2
  fi
}
export -f compile_one

status=0
tr '\t' '\037' < "$jobs" | xargs -P "$(nproc)" -d '\n' -I{} bash -c 'IFS=$'"'"'\037'"'"' read -r a b c d <<< "{}"; compile_one "$a" "$b" "$c" "$d"' || status=1
count=$(wc -l < "$jobs")
if [ "$status" -ne 0 ]; then
  echo "kernel compile check failed" >&2
  exit 1
fi

if [ "$verbose" -eq 1 ]; then
  while IFS=$'\t' read -r cu target defines cubin; do
    echo "== $(basename "$cu") $target $defines"
    if command -v cuobjdump >/dev/null; then
      cuobjdump --dump-resource-usage "$cubin" | grep -E "Function|REG|STACK|SHARED" || true
    else
      grep -E "Compiling entry|registers|spill" "$cubin.log" | sed 's/^ptxas info *: //'
    fi
  done < "$jobs"
fi
echo "compiled $count kernel builds OK ($(ls "$kernels"/*.cu | wc -l) files, sm_80 and sm_90a)"
