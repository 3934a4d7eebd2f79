#!/usr/bin/env bash
# Builds llama.cpp's llama-quantize for the CPU as one static binary, on the dev machine, from the
# source tools/peers/pack_llama_cpp.sh packed: .llama-cpp/bin/llama-quantize, carried with
# .llama-cpp. tools/peers/gguf_check.sh then quantizes on the GPU host at once instead of building
# the quantizer there first. From the repo root:
#
#   bash tools/peers/build_llama_quantize.sh        # about 20 minutes on 2 cores
#
# Portable: no -march=native, no OpenMP (ggml's own thread pool), libstdc++ and libgcc linked in;
# it needs only the host's glibc.
set -euo pipefail
cd "$(dirname "$0")/../.."

archive=.llama-cpp/llama.cpp.tar.xz
[ -f "$archive" ] || { echo "no $archive: run tools/peers/pack_llama_cpp.sh first" >&2; exit 1; }
work=${LLAMA_QUANTIZE_WORK:-$(mktemp -d)}
tar -C "$work" -xJf "$archive"
[ -d "$work/llama.cpp/tools/quantize" ] || { echo "$archive has no tools/quantize: re-run tools/peers/pack_llama_cpp.sh" >&2; exit 1; }
cmake -S "$work/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CUDA=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_NUMBER=0 \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc"
cmake --build "$work/build" --target llama-quantize -j "$(nproc)"
mkdir -p .llama-cpp/bin
cp "$work/build/bin/llama-quantize" .llama-cpp/bin/llama-quantize
echo "wrote .llama-cpp/bin/llama-quantize ($(du -h .llama-cpp/bin/llama-quantize | cut -f1)); it needs:"
ldd .llama-cpp/bin/llama-quantize || true
