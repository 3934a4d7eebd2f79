#!/usr/bin/env bash
# llama.cpp as a peer, on the GPU host (H100: sm_90a; no network, no gguf package). From the repo root:
#
#   bash tools/peers/llama_cpp.sh [ARCH]          # ARCH from bench/configs (default llama-3.1-8b)
#
# Needs .llama-cpp/llama.cpp.tar.xz, a trimmed llama.cpp source made on the dev machine by
# tools/peers/pack_llama_cpp.sh (carry ".llama-cpp" in the device call), or LLAMA_CPP_SRC
# pointing at any llama.cpp checkout. Then, in $LLAMA_CPP_WORK (default /tmp/keel-llama-cpp):
#
# 1. unpacks the source and builds llama-bench for one architecture, -DGGML_CUDA=ON
#    -DCMAKE_CUDA_ARCHITECTURES=90a (about 5 minutes on 16 cores), in the background while:
# 2. tools/peers/hf_peers.py --save-checkpoint saves ARCH with random weights, in f16;
# 3. tools/peers/write_gguf.py converts it to an F16 GGUF with a synthetic vocabulary (a random
#    checkpoint has no tokenizer, so llama.cpp's own converter cannot read it); the checkpoint is
#    deleted afterwards (16 GB for 8B) unless it was there before;
# 4. llama-bench -p 512 -n 128 -d 0,8192 -fa 1 -ngl 99 -o json: prefill and decode, on an empty
#    KV cache and after 8192 tokens, flash attention on, every layer on the GPU.
# The binary and the GGUF are kept in $LLAMA_CPP_WORK and reused by a later run on the same machine.
#
# Every outcome is written as a Keel result (suite llama-bench, engine llama.cpp) under
# $LLAMA_CPP_OUT_DIR (default bench/results): the figures when it ran, otherwise a failed result
# that says which step failed and why. The script exits 0 in both cases; the result is the report.
# Logs: $LLAMA_CPP_WORK/*.log.
#
# Other settings: LLAMA_CPP_CUDA=OFF builds for the CPU (to check this script on a machine without
# a GPU), LLAMA_BENCH_ARGS replaces "-p 512 -n 128 -d 0,8192", LLAMA_CPP_JOBS the build's -j.
set -euo pipefail
cd "$(dirname "$0")/../.."

arch=${1:-llama-3.1-8b}
archive=${LLAMA_CPP_ARCHIVE:-.llama-cpp/llama.cpp.tar.xz}
work=${LLAMA_CPP_WORK:-/tmp/keel-llama-cpp}
out_dir=${LLAMA_CPP_OUT_DIR:-bench/results}
cuda=${LLAMA_CPP_CUDA:-ON}
jobs=${LLAMA_CPP_JOBS:-$(nproc)}
bench_args=${LLAMA_BENCH_ARGS:--p 512 -n 128 -d 0,8192}
model_dir=bench/configs/$arch
checkpoint=$work/$arch-hf
gguf=$work/$arch-f16.gguf
bench_json=$work/$arch-llama-bench.json
if [ "$cuda" = ON ]; then backend=cuda; else backend=cpu; fi
build=$work/build-$backend
bench_bin=$build/bin/llama-bench
mkdir -p "$work"
[ -f "$model_dir/config.json" ] || { echo "no architecture $model_dir/config.json" >&2; exit 2; }

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

build_pid=
record_failure() {
  echo "llama.cpp peer: $1" >&2
  # A build still running in the background goes with the run that started it.
  if [ -n "$build_pid" ]; then kill -- "-$build_pid" 2>/dev/null || true; fi
  python3 tools/peers/bench_result.py llama-bench --model-dir "$model_dir" --failed "$1" --gguf "$gguf" --out-dir "$out_dir" \
    --backend "$backend" --tests "$bench_args -fa 1 -ngl 99" --llama-cpp-commit "$commit" --llama-cpp-source "$source_label"
  exit 0
}
last_lines() { tail -n 5 "$1" | tr '\n' ' '; }
step() { echo "[llama_cpp.sh ${SECONDS}s] $*"; }

if [ -z "${LLAMA_CPP_SRC:-}" ] && [ ! -f "$src/CMakeLists.txt" ]; then
  [ -f "$archive" ] || record_failure "no llama.cpp source: $archive is absent (make it with tools/peers/pack_llama_cpp.sh and carry .llama-cpp) and LLAMA_CPP_SRC is unset"
  step "unpacking $archive"
  tar -C "$work" -xJf "$archive" || record_failure "unpacking $archive failed"
fi
[ -f "$src/CMakeLists.txt" ] || record_failure "llama.cpp source not found at $src"

# 1. The build runs in its own process group (set -m) so that a failure elsewhere can stop it whole.
if [ ! -x "$bench_bin" ]; then
  if [ "$cuda" = ON ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  step "building llama-bench for $backend in the background, log $work/build.log"
  set -m
  (
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA="$cuda" -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DGGML_CUDA_NCCL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="$short_commit" \
      || { echo "cmake configure failed"; exit 1; }
    cmake --build "$build" --target llama-bench -j "$jobs" || { echo "build failed"; exit 1; }
  ) >"$work/build.log" 2>&1 &
  build_pid=$!
  set +m
fi

# 2-3. The model, while the build runs.
if [ ! -f "$gguf" ]; then
  made_checkpoint=
  if [ ! -f "$checkpoint/config.json" ]; then
    step "saving $arch with random f16 weights to $checkpoint"
    # Saved aside and renamed when whole: a run cut short leaves no half checkpoint to convert later.
    rm -rf "$checkpoint.partial"
    python3 tools/peers/hf_peers.py --arch "$arch" --save-checkpoint "$checkpoint.partial" --checkpoint-dtype f16 >"$work/checkpoint.log" 2>&1 \
      || record_failure "saving the random checkpoint failed: $(last_lines "$work/checkpoint.log")"
    mv "$checkpoint.partial" "$checkpoint"
    made_checkpoint=1
  fi
  step "converting to $gguf"
  python3 tools/peers/write_gguf.py "$checkpoint" "$gguf" --name "$arch" >"$work/gguf.log" 2>&1 \
    || record_failure "write_gguf.py failed: $(last_lines "$work/gguf.log")"
  if [ -n "$made_checkpoint" ]; then rm -rf "$checkpoint"; fi
fi

if [ -n "$build_pid" ]; then
  step "waiting for the build"
  if ! wait "$build_pid"; then
    build_pid=
    record_failure "$(grep -m1 -o 'cmake configure failed\|build failed' "$work/build.log" || echo build failed): $(last_lines "$work/build.log")"
  fi
  build_pid=
fi

# 4.
step "llama-bench $bench_args -fa 1 -ngl 99"
# shellcheck disable=SC2086 # bench_args is a list of arguments
"$bench_bin" -m "$gguf" $bench_args -fa 1 -ngl 99 -o json >"$bench_json" 2>"$work/llama-bench.log" \
  || record_failure "llama-bench failed: $(last_lines "$work/llama-bench.log")"
step "done"
python3 tools/peers/bench_result.py llama-bench --model-dir "$model_dir" --llama-bench-json "$bench_json" --gguf "$gguf" --out-dir "$out_dir" \
  --backend "$backend" --tests "$bench_args -fa 1 -ngl 99" --llama-cpp-commit "$commit" --llama-cpp-source "$source_label"
