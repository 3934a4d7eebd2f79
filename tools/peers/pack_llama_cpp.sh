#!/usr/bin/env bash
# Packs a trimmed llama.cpp source for the GPU host, which has no network (run on the dev machine,
# from the repo root; needs npm, git, xz):
#
#   bash tools/peers/pack_llama_cpp.sh [NODE_LLAMA_CPP_VERSION]     # default 3.22.1
#
# The source is the one node-llama-cpp's npm package bundles (llama/gitRelease.bundle, a git
# bundle of one squashed commit; llama/llama.cpp.info.json names the llama.cpp release tag).
# Kept: what configuring and building llama-bench, llama-batched-bench and llama-quantize needs
# with the CPU and CUDA backends (CMake files, include/, src/, common/, vendor/, ggml/ without the
# other backends, licenses). Dropped: docs, tests, examples, models (vocab files), the Python
# converters, the other tools and backends. tools/CMakeLists.txt is rewritten to add only those
# three tools, and the unified `app` is dropped (configure with -DLLAMA_BUILD_APP=OFF).
#
# Writes .llama-cpp/llama.cpp.tar.xz (ignored by git; the top folder in it is llama.cpp/) and
# .llama-cpp/source.json (package version, llama.cpp tag, bundle commit, ggml version), for
# llama_cpp.sh. Carry ".llama-cpp" in the device call that runs llama_cpp.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=${1:-3.22.1}
out=.llama-cpp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "node-llama-cpp@$version" >/dev/null && tar xzf node-llama-cpp-*.tgz)
git clone -q "$tmp/package/llama/gitRelease.bundle" "$tmp/full" 2>/dev/null
full=$tmp/full
commit=$(git -C "$full" rev-parse HEAD)
tag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tag"])' "$tmp/package/llama/llama.cpp.info.json")

src=$tmp/llama.cpp
mkdir -p "$src/tools" "$src/ggml/src"
for path in CMakeLists.txt LICENSE licenses cmake include src common vendor; do
  cp -r "$full/$path" "$src/"
done
for path in CMakeLists.txt cmake include; do
  cp -r "$full/ggml/$path" "$src/ggml/"
done
# ggml/src: its own files, the CPU and CUDA backends; every other backend is a subdirectory that
# ggml/src/CMakeLists.txt adds only when its GGML_<NAME> option is on.
find "$full/ggml/src" -mindepth 1 -maxdepth 1 \( -type f -o -name ggml-cpu -o -name ggml-cuda \) -exec cp -r {} "$src/ggml/src/" \;
cp -r "$full/tools/llama-bench" "$full/tools/batched-bench" "$full/tools/quantize" "$src/tools/"
rm -f "$src"/tools/*/README.md
cat >"$src/tools/CMakeLists.txt" <<'EOF'
# Trimmed by Keel's tools/peers/pack_llama_cpp.sh: the two benchmarks and the quantizer.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(batched-bench)
add_subdirectory(llama-bench)
add_subdirectory(quantize)
EOF

ggml_version=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$src/ggml/CMakeLists.txt" | paste -sd.)
mkdir -p "$out"
tar -C "$tmp" -cf - llama.cpp | xz -9 -T0 >"$out/llama.cpp.tar.xz"
cat >"$out/source.json" <<EOF
{
  "node_llama_cpp": "$version",
  "llama_cpp_tag": "$tag",
  "bundle_commit": "$commit",
  "ggml_version": "$ggml_version",
  "archive": "llama.cpp.tar.xz"
}
EOF
echo "wrote $out/llama.cpp.tar.xz ($(du -h "$out/llama.cpp.tar.xz" | cut -f1); $(du -sh "$src" | cut -f1) unpacked) and $out/source.json:"
cat "$out/source.json"
