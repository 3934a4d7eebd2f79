#!/usr/bin/env bash
# llama.cpp as a peer, on the GPU host (H100: sm_90a). Usage, from the repo root:
#
#   bash tools/peers/llama_cpp.sh [ARCH]          # ARCH from bench/configs (default llama-3.1-8b)
#
# 1. Builds llama-bench from the llama.cpp source that node-llama-cpp's npm package bundles
#    (llama/llama.cpp in the package; the host has no network, so carry the package's source
#    there, or point LLAMA_CPP_SRC at any llama.cpp checkout), for one architecture only:
#    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a (about 5 minutes).
# 2. Saves the architecture with random bf16 weights (tools/peers/hf_peers.py --save-checkpoint).
# 3. Converts it to GGUF F16 with llama.cpp's convert_hf_to_gguf.py, if the source has it (its
#    gguf-py is put on PYTHONPATH: the host has no gguf package). The converter reads the
#    tokenizer: a random checkpoint has none, so copy the model's tokenizer files into the
#    checkpoint directory ($LLAMA_CPP_WORK/ARCH-hf) first, or the conversion fails.
# 4. Runs llama-bench pp512 and tg128, flash attention on, every layer on the GPU.
#
# Every outcome is written as a Keel result under bench/results/ (suite llama-bench, engine
# llama.cpp): the figures when it ran, otherwise a failed result that says which step failed
# and why. The script exits 0 in both cases; the result is the report.
set -euo pipefail
cd "$(dirname "$0")/../.."

arch=${1:-llama-3.1-8b}
src=${LLAMA_CPP_SRC:-node_modules/node-llama-cpp/llama/llama.cpp}
work=${LLAMA_CPP_WORK:-/tmp/keel-llama-cpp}
model_dir=bench/configs/$arch
checkpoint=$work/$arch-hf
gguf=$work/$arch-f16.gguf
log=$work/$arch.log
mkdir -p "$work"
[ -f "$model_dir/config.json" ] || { echo "no architecture $model_dir/config.json" >&2; exit 2; }

release=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("release", ""))' \
  "$(dirname "$src")/binariesGithubRelease.json" 2>/dev/null || true)

record_failure() {
  echo "llama.cpp peer: $1" >&2
  python3 tools/peers/bench_result.py llama-bench --model-dir "$model_dir" --failed "$1" --gguf "$gguf" ${release:+--llama-cpp-commit "$release"}
  exit 0
}
last_lines() { tail -n 5 "$log" | tr '\n' ' '; }

[ -f "$src/CMakeLists.txt" ] || record_failure "llama.cpp source not found at $src (set LLAMA_CPP_SRC)"

bench_bin=$work/build/bin/llama-bench
if [ ! -x "$bench_bin" ]; then
  echo "building llama-bench from $src (CUDA, sm_90a)..."
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$log" 2>&1 \
    || record_failure "cmake configure failed: $(last_lines)"
  cmake --build "$work/build" --target llama-bench -j "$(nproc)" >>"$log" 2>&1 || record_failure "build failed: $(last_lines)"
fi

if [ ! -f "$gguf" ]; then
  converter=$src/convert_hf_to_gguf.py
  [ -f "$converter" ] || record_failure "$converter is absent from the source: no GGUF of the random checkpoint can be made"
  if [ ! -f "$checkpoint/config.json" ]; then
    python3 tools/peers/hf_peers.py --arch "$arch" --save-checkpoint "$checkpoint" >"$log" 2>&1 \
      || record_failure "saving the random checkpoint failed: $(last_lines)"
  fi
  PYTHONPATH="$src/gguf-py${PYTHONPATH:+:$PYTHONPATH}" python3 "$converter" "$checkpoint" --outtype f16 --outfile "$gguf" >"$log" 2>&1 \
    || record_failure "convert_hf_to_gguf.py failed (a random checkpoint has no tokenizer files unless you added them): $(last_lines)"
fi

"$bench_bin" -m "$gguf" -p 512 -n 128 -fa 1 -ngl 99 -o json >"$work/$arch-llama-bench.json" 2>"$log" \
  || record_failure "llama-bench failed: $(last_lines)"
python3 tools/peers/bench_result.py llama-bench --model-dir "$model_dir" --llama-bench-json "$work/$arch-llama-bench.json" \
  --gguf "$gguf" ${release:+--llama-cpp-commit "$release"}
