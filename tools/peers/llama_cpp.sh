#!/usr/bin/env bash
# llama.cpp as a peer, on the GPU host (H100/H200: sm_90a; no network, no gguf package). From the repo root:
#
#   bash tools/peers/llama_cpp.sh [ARCH ...]      # ARCHs from bench/configs (default llama-3.1-8b)
#   bash tools/peers/llama_cpp.sh qwen3-30b-a3b deepseek-v2-lite     # both MoE models, one build
#
# Needs .llama-cpp/llama.cpp.tar.xz, a trimmed llama.cpp source made on the dev machine by
# tools/peers/pack_llama_cpp.sh (carry ".llama-cpp" in the device call), or LLAMA_CPP_SRC
# pointing at any llama.cpp checkout. Then, in $LLAMA_CPP_WORK (default /tmp/keel-llama-cpp):
#
# 1. unpacks the source and builds llama-bench and llama-batched-bench for one architecture,
#    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a (about 5 minutes on 16 cores), in the background
#    while the first ARCH's GGUF is written, and the next ones' as long as they fit beside it (on
#    the work directory's file system or /dev/shm); then, for each ARCH in turn:
# 2. tools/peers/write_gguf.py --random-from bench/configs/ARCH writes an F16 GGUF with random
#    weights straight from config.json (no checkpoint: Keel's dummy-weight scheme, a synthetic
#    vocabulary), streamed at disk speed. Its size is known first (--size-only): the file goes to
#    $LLAMA_CPP_GGUF_DIR (default $LLAMA_CPP_WORK) when that file system has room for it and
#    $LLAMA_CPP_MARGIN_GIB more (default 2: the build beside it grows), else to /dev/shm when that
#    has (not when LLAMA_CPP_GGUF_DIR is set); else the ARCH fails, its results saying how many GB
#    each place had. Qwen3-30B-A3B takes 61.1 GB, DeepSeek-V2-Lite 31.4, Llama-3.1-8B 16.1.
#    Threads write it (write_gguf.py --workers, default the cores up to 8): 61 GB took 47 s on
#    2 cores here. LLAMA_CPP_CHECKPOINT=DIR converts that Hugging Face checkpoint (config.json +
#    safetensors) instead, for a single ARCH;
# 3. llama-bench $LLAMA_BENCH_ARGS -fa 1 -ngl 99 -o json: flash attention on, every layer on
#    the GPU. Default for dense models "-p 512 -n 128 -d 0,8192" (prefill and decode on an empty
#    KV cache and after 8192 tokens), for MoE models (qwen3_moe, deepseek_v2) "-p 512 -n 128 -d 0"
#    (batch-1 decode tg128 and prefill pp512 at depth 0);
# 4. llama-batched-bench $LLAMA_BATCHED_ARGS -c N -b 2048 -ub 512 -fa on -ngl 99 --output-format
#    jsonl, N = max sequences x (max prompt + max generated): default "-npp 128 -ntg 128 -npl 1,64",
#    each of 1 and of 64 sequences prefills 128 tokens, then all decode 128 together (Keel's latency
#    workload at batch 1 and 64: --input-len 128 --output-len 128). LLAMA_BATCHED_ARGS=none skips it;
# 5. deletes the GGUF (the next ARCH needs the room), unless LLAMA_CPP_KEEP_GGUF=1: a kept GGUF
#    (in $LLAMA_CPP_GGUF_DIR or /dev/shm) and the binaries are reused by a later run on the machine.
#
# Every outcome is written as Keel results under $LLAMA_CPP_OUT_DIR (default bench/results): per
# ARCH one of suite llama-bench and one of suite llama-batched-bench (engine llama.cpp), with the
# figures when it ran, otherwise a failed result that says which step failed and why. The script
# exits 0 in every such case (2 for an ARCH with no config.json); the results are the report. Logs:
# $LLAMA_CPP_WORK/*.log; each step's start is printed with the seconds since the script began.
#
# Other settings: LLAMA_CPP_CUDA=OFF builds for the CPU (to check this script on a machine without
# a GPU), LLAMA_CPP_CONFIGS another directory of ARCH/config.json, LLAMA_CPP_JOBS the build's -j,
# LLAMA_CPP_SEED the random weights' seed (default 0).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -eq 0 ]; then set -- llama-3.1-8b; fi
archive=${LLAMA_CPP_ARCHIVE:-.llama-cpp/llama.cpp.tar.xz}
work=${LLAMA_CPP_WORK:-/tmp/keel-llama-cpp}
out_dir=${LLAMA_CPP_OUT_DIR:-bench/results}
configs=${LLAMA_CPP_CONFIGS:-bench/configs}
cuda=${LLAMA_CPP_CUDA:-ON}
jobs=${LLAMA_CPP_JOBS:-$(nproc)}
batched_args=${LLAMA_BATCHED_ARGS:--npp 128 -ntg 128 -npl 1,64}
if [ "$cuda" = ON ]; then backend=cuda; else backend=cpu; fi
build=$work/build-$backend
bench_bin=$build/bin/llama-bench
batched_bin=$build/bin/llama-batched-bench
margin=$(python3 -c 'import sys; print(int(float(sys.argv[1]) * 2**30))' "${LLAMA_CPP_MARGIN_GIB:-2}")
mkdir -p "$work" ${LLAMA_CPP_GGUF_DIR:+"$LLAMA_CPP_GGUF_DIR"}
for arch in "$@"; do
  [ -f "$configs/$arch/config.json" ] || { echo "no architecture $configs/$arch/config.json" >&2; exit 2; }
done
if [ -n "${LLAMA_CPP_CHECKPOINT:-}" ] && [ $# -ne 1 ]; then
  echo "LLAMA_CPP_CHECKPOINT converts one checkpoint: give exactly one ARCH" >&2; exit 2
fi

# The version benchmarked: pack_llama_cpp.sh's source.json, or a checkout's git description.
if [ -n "${LLAMA_CPP_SRC:-}" ]; then
  src=$LLAMA_CPP_SRC
  commit=$(git -C "$src" describe --tags --always 2>/dev/null || echo unknown)
  short_commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
  source_label=$src
else
  src=$work/llama.cpp
  json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$(dirname "$archive")/source.json" "$1" 2>/dev/null || echo unknown; }
  short_commit=$(json_field bundle_commit | cut -c1-10)
  commit="$(json_field llama_cpp_tag) (bundle commit $short_commit)"
  source_label="npm node-llama-cpp@$(json_field node_llama_cpp), trimmed by tools/peers/pack_llama_cpp.sh"
fi

step() { echo "[llama_cpp.sh ${SECONDS}s] $*"; }
last_lines() { tail -n 5 "$1" | tr '\n' ' '; }
model_type() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_type"])' "$configs/$1/config.json"; }
bench_args_for() { # LLAMA_BENCH_ARGS, or the default for the ARCH's kind
  if [ -n "${LLAMA_BENCH_ARGS:-}" ]; then echo "$LLAMA_BENCH_ARGS"; return; fi
  case $(model_type "$1") in
    qwen3_moe|deepseek_v2) echo "-p 512 -n 128 -d 0" ;;
    *) echo "-p 512 -n 128 -d 0,8192" ;;
  esac
}
# KV cells llama-batched-bench needs: most sequences x (longest prompt + most generated).
batched_ctx() {
  python3 - "$1" <<'EOF'
import sys
words = sys.argv[1].split()
lists = {f: [int(x) for x in words[words.index(f) + 1].split(",")] for f in ("-npp", "-ntg", "-npl") if f in words}
print(max(lists.get("-npl", [1])) * (max(lists.get("-npp", [512])) + max(lists.get("-ntg", [128]))))
EOF
}
free_bytes() { python3 -c 'import shutil,sys; print(shutil.disk_usage(sys.argv[1]).free)' "$1" 2>/dev/null || echo 0; }
gb() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1e9:.1f}")' "$1"; }

# Results. Per ARCH: $arch, $gguf, $bench_args and $batched_full are set by run_arch.
record_bench() { # [why it failed]
  local outcome=(--llama-bench-json "$work/$arch-llama-bench.json")
  if [ -n "${1:-}" ]; then outcome=(--failed "$1"); fi
  python3 tools/peers/bench_result.py llama-bench --model-dir "$configs/$arch" "${outcome[@]}" \
    --gguf "$gguf" --out-dir "$out_dir" --backend "$backend" --tests "$bench_args -fa 1 -ngl 99" \
    --llama-cpp-commit "$commit" --llama-cpp-source "$source_label"
}
record_batched() { # [why it failed]
  local outcome=(--jsonl "$work/$arch-batched-bench.jsonl")
  if [ -n "${1:-}" ]; then outcome=(--failed "$1"); fi
  python3 tools/peers/bench_result.py llama-batched-bench --model-dir "$configs/$arch" "${outcome[@]}" \
    --gguf "$gguf" --out-dir "$out_dir" --backend "$backend" --args "$batched_full" \
    --llama-cpp-commit "$commit" --llama-cpp-source "$source_label"
}
fail_arch() { # why: a failed result for each suite of the ARCH
  echo "llama.cpp peer ($arch): $1" >&2
  record_bench "$1"
  if [ "$batched_args" != none ]; then record_batched "$1"; fi
}
setup_arch() {
  arch=$1
  bench_args=$(bench_args_for "$arch")
  batched_full=none
  if [ "$batched_args" != none ]; then batched_full="$batched_args -c $(batched_ctx "$batched_args") -b 2048 -ub 512 -fa on -ngl 99"; fi
  gguf=$work/$arch-f16.gguf
  # A GGUF kept by an earlier run (LLAMA_CPP_KEEP_GGUF=1), wherever it went.
  for dir in "${LLAMA_CPP_GGUF_DIR:-$work}" /dev/shm; do
    if [ -f "$dir/$arch-f16.gguf" ] && [ -z "${LLAMA_CPP_CHECKPOINT:-}" ]; then gguf=$dir/$arch-f16.gguf; return; fi
  done
}

# Writes $gguf, choosing its directory by free space; returns 1 after recording a failure. With
# "ahead" (writing a later ARCH's GGUF while the build runs) it records nothing: 2 when there is
# no room now, 1 when writing failed (the ARCH's own turn tries again and records why).
write_model() {
  local ahead=${1:-} size candidates=("${LLAMA_CPP_GGUF_DIR:-$work}") report=() dir free
  [ -n "${LLAMA_CPP_GGUF_DIR:-}" ] || candidates+=(/dev/shm)
  if [ -n "${LLAMA_CPP_CHECKPOINT:-}" ]; then
    size=$(du -sb "$LLAMA_CPP_CHECKPOINT" | cut -f1)
  elif ! size=$(python3 tools/peers/write_gguf.py --random-from "$configs/$arch" --size-only 2>"$work/gguf.log"); then
    [ -z "$ahead" ] || return 1
    fail_arch "write_gguf.py cannot write $arch: $(last_lines "$work/gguf.log")"; return 1
  fi
  gguf=
  for dir in "${candidates[@]}"; do
    [ -d "$dir" ] || continue
    free=$(free_bytes "$dir")
    report+=("$dir $(gb "$free") GB free")
    if [ "$free" -ge $((size + margin)) ]; then gguf=$dir/$arch-f16.gguf; break; fi
  done
  if [ -z "$gguf" ]; then
    [ -z "$ahead" ] || return 2
    gguf=$work/$arch-f16.gguf
    fail_arch "no room for the $(gb "$size") GB GGUF (+${LLAMA_CPP_MARGIN_GIB:-2} GiB kept free): $(IFS=';'; echo "${report[*]}")"; return 1
  fi
  if [ -n "${LLAMA_CPP_CHECKPOINT:-}" ]; then
    step "converting $LLAMA_CPP_CHECKPOINT to $gguf ($(gb "$size") GB of checkpoint; ${report[*]})"
    python3 tools/peers/write_gguf.py "$LLAMA_CPP_CHECKPOINT" "$gguf" --name "$arch" >"$work/gguf.log" 2>&1 \
      || { fail_arch "write_gguf.py failed: $(last_lines "$work/gguf.log")"; return 1; }
  else
    step "writing $gguf${ahead:+ ahead}, $(gb "$size") GB of random F16 weights (${report[*]})"
    if ! python3 tools/peers/write_gguf.py --random-from "$configs/$arch" "$gguf" --name "$arch" --seed "${LLAMA_CPP_SEED:-0}" >"$work/gguf.log" 2>&1; then
      [ -z "$ahead" ] || { step "writing ahead failed: $(last_lines "$work/gguf.log")"; return 1; }
      fail_arch "write_gguf.py failed: $(last_lines "$work/gguf.log")"; return 1
    fi
  fi
  step "$(tail -n 1 "$work/gguf.log")"
}

# Runs the two benchmarks of $arch on $gguf.
benchmark() {
  step "llama-bench $bench_args -fa 1 -ngl 99 ($arch)"
  # shellcheck disable=SC2086 # bench_args is a list of arguments
  if "$bench_bin" -m "$gguf" $bench_args -fa 1 -ngl 99 -o json >"$work/$arch-llama-bench.json" 2>"$work/$arch-llama-bench.log"; then
    record_bench
  else
    echo "llama.cpp peer ($arch): llama-bench failed" >&2
    record_bench "llama-bench failed: $(last_lines "$work/$arch-llama-bench.log")"
  fi
  [ "$batched_args" != none ] || return 0
  step "llama-batched-bench $batched_full ($arch)"
  # shellcheck disable=SC2086 # batched_full is a list of arguments
  if "$batched_bin" -m "$gguf" $batched_full --output-format jsonl >"$work/$arch-batched-bench.jsonl" 2>"$work/$arch-batched-bench.log"; then
    record_batched
  else
    echo "llama.cpp peer ($arch): llama-batched-bench failed" >&2
    record_batched "llama-batched-bench failed: $(last_lines "$work/$arch-batched-bench.log")"
  fi
}

# Every ARCH not yet done fails with the same reason (the build or the source); the script ends.
fail_all() {
  for a in "${archs[@]:$current}"; do setup_arch "$a"; fail_arch "$1"; done
  exit 0
}
archs=("$@")
current=0

if [ -z "${LLAMA_CPP_SRC:-}" ] && [ ! -f "$src/CMakeLists.txt" ]; then
  [ -f "$archive" ] || fail_all "no llama.cpp source: $archive is absent (make it with tools/peers/pack_llama_cpp.sh and carry .llama-cpp) and LLAMA_CPP_SRC is unset"
  step "unpacking $archive"
  tar -C "$work" -xJf "$archive" || fail_all "unpacking $archive failed"
fi
[ -f "$src/CMakeLists.txt" ] || fail_all "llama.cpp source not found at $src"
df -h "$work" /dev/shm 2>/dev/null | sed 's/^/[df] /' || true

# 1. The build runs in its own process group (set -m) so that a failure can stop it whole.
build_pid=
if [ ! -x "$bench_bin" ] || [ ! -x "$batched_bin" ]; then
  if [ "$cuda" = ON ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  step "building llama-bench and llama-batched-bench for $backend in the background, log $work/build.log"
  set -m
  (
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA="$cuda" -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DGGML_CUDA_NCCL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="$short_commit" \
      || { echo "cmake configure failed"; exit 1; }
    cmake --build "$build" --target llama-bench llama-batched-bench -j "$jobs" || { echo "build failed"; exit 1; }
  ) >"$work/build.log" 2>&1 &
  build_pid=$!
  set +m
  trap '[ -z "$build_pid" ] || kill -- "-$build_pid" 2>/dev/null || true' EXIT
fi
wait_for_build() {
  [ -n "$build_pid" ] || return 0
  step "waiting for the build"
  if ! wait "$build_pid"; then
    build_pid=
    fail_all "$(grep -m1 -o 'cmake configure failed\|build failed' "$work/build.log" || echo build failed): $(last_lines "$work/build.log")"
  fi
  build_pid=
  step "build done"
}

build_running() { [ -n "$build_pid" ] && kill -0 "$build_pid" 2>/dev/null; }

# 2-5, one ARCH after the other.
for i in "${!archs[@]}"; do
  current=$i
  setup_arch "${archs[$i]}"
  if [ -f "$gguf" ]; then
    step "reusing $gguf"
  elif ! write_model; then
    continue
  fi
  # While the build runs, the next ARCHs' GGUFs are written too, as long as they fit beside this
  # one (they are found and used like a kept GGUF); the first that does not fit now waits its turn.
  for next in "${archs[@]:$((i + 1))}"; do
    build_running || break
    (setup_arch "$next"; [ -f "$gguf" ] || write_model ahead) || break
  done
  wait_for_build
  benchmark
  if [ "${LLAMA_CPP_KEEP_GGUF:-0}" != 1 ]; then
    step "deleting $gguf"
    rm -f "$gguf"
  fi
done
# A build still running here had nothing to build for (every ARCH failed before benchmarking): the EXIT trap stops it.
step "done"
