#!/usr/bin/env bash
# Keel beside llama.cpp on GGUF files llama.cpp's own tools made (issue #22's GPU-host check), in
# one device call. From the repo root on the GPU host, carry [".gpu", ".llama-cpp"]:
#
#   source .gpu/env.sh && mkdir -p $OUT/r && GGUF_CHECK_OUT_DIR=$OUT/r bash tools/peers/gguf_check.sh > $OUT/gguf_check.log 2>&1
#   cp /tmp/keel-gguf-check/*.log $OUT/r/; tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
#   (at most 8 files come back from a device call: the results and logs travel as one tarball)
#
# For the model of bench/configs/$GGUF_CHECK_ARCH (default llama-3.1-8b):
# 1. unpacks .llama-cpp/llama.cpp.tar.xz (tools/peers/pack_llama_cpp.sh) and builds llama-bench
#    and libllama with CUDA in the background (about 5 minutes on 16 cores) while the rest runs;
# 2. writes an F16 GGUF of random weights (tools/peers/write_gguf.py --random-from: Keel's dummy
#    weights, a synthetic vocabulary) and quantizes it with llama-quantize to each type of
#    $GGUF_CHECK_TYPES (default "Q8_0 Q4_K_M"): the static CPU build that
#    tools/peers/build_llama_quantize.sh leaves in .llama-cpp/bin, or else one built here first;
# 3. for each type, Keel (scripts/keel-greedy.ts, one load): the greedy continuation of
#    $GGUF_CHECK_PROMPTS token-id prompts (default 5, 16 to 256 random ids) for
#    $GGUF_CHECK_TOKENS tokens (default 32) with its top logprobs, then batch-1 decode timing
#    (keel bench latency: 16 prompt tokens, 128 generated, 3 runs after 1 warm-up);
# 4. once the CUDA build is done, for each type: llama.cpp (tools/peers/llama_greedy.cpp, built
#    against it) generates greedily from the same prompts and scores Keel's continuation, and
#    llama-bench measures tg128 (-p 0 -n 128 -r 3 -fa 1, every layer on the GPU);
# 5. tools/peers/gguf_parity.py writes a gguf-parity result per type (every step of Keel's
#    continuation agrees with llama.cpp's argmax or is a near-tie in both engines; both decode
#    rates), beside Keel's latency results and llama-bench results (bench_result.py), all in
#    $GGUF_CHECK_OUT_DIR (default bench/results). A step that fails or runs out of time leaves a
#    failed gguf-parity result saying which; the script exits 0 then (1 only for bad settings).
#
# Settings for a dry run without a GPU (the same steps on the CPU, a small config):
#   GGUF_CHECK_CUDA=OFF GGUF_CHECK_CONFIG=DIR (a config.json of its own) GGUF_CHECK_BUILD=DIR
#   (a llama.cpp build that has bin/llama-quantize, bin/llama-bench and bin/libllama.so, reused
#   instead of building). GGUF_CHECK_WORK (default /tmp/keel-gguf-check) holds the GGUFs, builds
#   and logs; GGUF_CHECK_DEADLINE (default 570) is the seconds after which steps not yet started
#   are skipped (a device call has 600).
set -uo pipefail
cd "$(dirname "$0")/../.."

arch=${GGUF_CHECK_ARCH:-llama-3.1-8b}
config_dir=${GGUF_CHECK_CONFIG:-bench/configs/$arch}
types=${GGUF_CHECK_TYPES:-Q8_0 Q4_K_M}
cuda=${GGUF_CHECK_CUDA:-ON}
work=${GGUF_CHECK_WORK:-/tmp/keel-gguf-check}
out_dir=${GGUF_CHECK_OUT_DIR:-bench/results}
deadline=${GGUF_CHECK_DEADLINE:-570}
n_prompts=${GGUF_CHECK_PROMPTS:-5}
n_tokens=${GGUF_CHECK_TOKENS:-32}
jobs=$(nproc)
# Node 22 (the GPU host's) runs .ts itself; older ones need tsx.
ts_loader=$(node -p 'process.features.typescript ? "" : "--import=tsx"')
[ -f "$config_dir/config.json" ] || { echo "gguf_check.sh: no $config_dir/config.json" >&2; exit 1; }
if [ "$cuda" = ON ]; then backend=cuda; ngl=99; else backend=cpu; ngl=0; fi
mkdir -p "$work" "$out_dir"
name=$(basename "$config_dir")
src=$work/llama.cpp
cpu_build=$work/build-quantize
gpu_build=${GGUF_CHECK_BUILD:-$work/build-$backend}
commit=$(python3 -c 'import json; d = json.load(open(".llama-cpp/source.json")); print(d["llama_cpp_tag"], "(bundle commit", d["bundle_commit"][:10] + ")")' 2>/dev/null || echo unknown)

step() { echo "[gguf_check.sh ${SECONDS}s] $*"; }
time_left() { echo $((deadline - SECONDS)); }
last_lines() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' '; }
# Why a command under `timeout` failed: its exit status ($1), and the end of its log ($2).
why() { if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then echo "timed out"; else echo "exit status $1: $(last_lines "$2")"; fi; }
# A failed gguf-parity result for each type not yet recorded, then the end.
declare -A recorded=()
record_failed() { # type, why
  [ -n "${recorded[$1]:-}" ] && return
  recorded[$1]=1
  python3 tools/peers/gguf_parity.py --gguf "$work/$name-$1.gguf" --gguf-type "$1" --model-dir "$config_dir" \
    --backend "$backend" --llama-cpp-commit "$commit" --failed "$2" --out-dir "$out_dir"
}
fail_all() { for t in $types; do record_failed "$t" "$1"; done; exit 0; }

# 1. Sources and builds.
cmake_flags=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_NUMBER=0 -DGGML_CUDA_NCCL=OFF)
if [ ! -f "$src/CMakeLists.txt" ]; then
  [ -f .llama-cpp/llama.cpp.tar.xz ] || fail_all "no llama.cpp source: .llama-cpp/llama.cpp.tar.xz is absent (tools/peers/pack_llama_cpp.sh, then carry .llama-cpp)"
  tar -C "$work" -xJf .llama-cpp/llama.cpp.tar.xz || fail_all "unpacking .llama-cpp/llama.cpp.tar.xz failed"
fi
build_pid=
if [ -z "${GGUF_CHECK_BUILD:-}" ] && [ ! -x "$gpu_build/bin/llama-bench" ]; then
  [ "$cuda" = ON ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
  step "building llama-bench and libllama for $backend in the background (log $work/build-$backend.log)"
  set -m
  ( cmake -S "$src" -B "$gpu_build" "${cmake_flags[@]}" -DGGML_CUDA="$cuda" -DCMAKE_CUDA_ARCHITECTURES=90a \
      && cmake --build "$gpu_build" --target llama-bench llama -j "$jobs" ) >"$work/build-$backend.log" 2>&1 &
  build_pid=$!
  set +m
  trap '[ -z "$build_pid" ] || kill -- "-$build_pid" 2>/dev/null || true' EXIT
fi

# 2. The GGUF files: F16 from the config (written while the quantizer is found or built), then llama-quantize's.
f16=$work/$name-F16.gguf
f16_pid=
if [ ! -f "$f16" ]; then
  step "writing $f16 (random F16 weights) in the background"
  python3 tools/peers/write_gguf.py --random-from "$config_dir" "$f16.part" --name "$name" --seed 0 >"$work/write_gguf.log" 2>&1 \
    && mv "$f16.part" "$f16" &
  f16_pid=$!
fi
# llama-quantize: the static one tools/peers/build_llama_quantize.sh carried in .llama-cpp/bin, a
# given build's, or else built here for the CPU (a minute or two beside the other build).
runs() { [ -x "$1" ] && { "$1" --help >/dev/null 2>&1; [ $? -lt 126 ]; }; }
if runs .llama-cpp/bin/llama-quantize; then
  quantize=.llama-cpp/bin/llama-quantize
elif [ -n "${GGUF_CHECK_BUILD:-}" ] && runs "$gpu_build/bin/llama-quantize"; then
  quantize=$gpu_build/bin/llama-quantize
else
  [ -d "$src/tools/quantize" ] || fail_all "the packed llama.cpp source has no tools/quantize: re-run tools/peers/pack_llama_cpp.sh"
  quantize=$cpu_build/bin/llama-quantize
  if [ ! -x "$quantize" ]; then
    step "building llama-quantize for the CPU (log $work/build-quantize.log)"
    { cmake -S "$src" -B "$cpu_build" "${cmake_flags[@]}" -DGGML_CUDA=OFF && cmake --build "$cpu_build" --target llama-quantize -j "$jobs"; } \
      >"$work/build-quantize.log" 2>&1 || fail_all "building llama-quantize failed: $(last_lines "$work/build-quantize.log")"
  fi
fi
step "llama-quantize: $quantize"
if [ -n "$f16_pid" ]; then
  wait "$f16_pid" || fail_all "write_gguf.py failed: $(last_lines "$work/write_gguf.log")"
  step "$(tail -n 1 "$work/write_gguf.log")"
fi
# One type after the other in the background: Keel runs on each file as soon as it is there.
rm -f "$work"/quantize-*.done
(
  for t in $types; do
    [ -f "$work/$name-$t.gguf" ] || "$quantize" "$f16" "$work/$name-$t.gguf.part" "$t" "$jobs" >"$work/quantize-$t.log" 2>&1 \
      && mv "$work/$name-$t.gguf.part" "$work/$name-$t.gguf"
    touch "$work/quantize-$t.done"
  done
) &

# The prompts: random ids of the synthetic vocabulary, past its special and byte tokens.
prompts=$work/prompts.json
python3 - "$config_dir/config.json" "$n_prompts" >"$prompts" <<'EOF'
import json, random, sys
vocab = json.load(open(sys.argv[1]))["vocab_size"]
rng = random.Random(22)
lengths = [16, 32, 64, 128, 256]
print(json.dumps({"prompts": [[rng.randrange(300, vocab) for _ in range(lengths[i % len(lengths)])] for i in range(int(sys.argv[2]))]}))
EOF

# 3. Keel on each file, while llama.cpp builds.
for t in $types; do
  step "waiting for llama-quantize $t"
  until [ -f "$work/quantize-$t.done" ] || [ "$(time_left)" -le 60 ]; do sleep 1; done
  [ -f "$work/$name-$t.gguf" ] || { record_failed "$t" "llama-quantize $t failed or ran out of time: $(last_lines "$work/quantize-$t.log")"; continue; }
  [ -n "${recorded[$t]:-}" ] && continue
  left=$(time_left)
  [ "$left" -gt 60 ] || { record_failed "$t" "no time left for Keel's run"; continue; }
  step "Keel on $t: greedy and batch-1 latency (at most $((left - 30)) s)"
  timeout -k 5 $((left - 30)) node $ts_loader scripts/keel-greedy.ts --model "$work/$name-$t.gguf" --backend "$backend" \
    --prompts "$prompts" --max-tokens "$n_tokens" --greedy-output "$work/keel-$t.json" \
    --latency-output "$out_dir/latency-keel-$name-$t-gguf-$backend.json" --input-len 16 --output-len 128 --num-iters 3 --num-iters-warmup 1 \
    >"$work/keel-$t.log" 2>&1 || record_failed "$t" "Keel's run failed ($(why $? "$work/keel-$t.log"))"
  step "$(grep -m1 'loaded' "$work/keel-$t.log")"
done

# 4. llama.cpp on each file.
if [ -n "$build_pid" ]; then
  step "waiting for the $backend build"
  wait "$build_pid" || { build_pid=; fail_all "building llama.cpp for $backend failed: $(last_lines "$work/build-$backend.log")"; }
  build_pid=
  step "build done"
fi
greedy_bin=$work/llama-greedy-$backend
g++ -O2 -std=c++17 tools/peers/llama_greedy.cpp -I"$src/include" -I"$src/ggml/include" -L"$gpu_build/bin" \
  -lllama -lggml -lggml-base -Wl,-rpath,"$gpu_build/bin" -o "$greedy_bin" >"$work/llama-greedy-build.log" 2>&1 \
  || fail_all "compiling tools/peers/llama_greedy.cpp failed: $(last_lines "$work/llama-greedy-build.log")"
for t in $types; do
  [ -n "${recorded[$t]:-}" ] && continue
  [ "$(time_left)" -gt 20 ] || { record_failed "$t" "no time left for llama.cpp's runs"; continue; }
  gguf=$work/$name-$t.gguf
  step "llama.cpp on $t: greedy, scoring Keel's continuation"
  python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))["prompts"]; k = json.load(open(sys.argv[2]))["prompts"]
for ids, out in zip(p, k):
    top = "|".join(",".join(str(c[0]) for c in step) for step in out["top"])
    print(",".join(map(str, ids)) + ";" + ",".join(map(str, out["tokens"])) + ";" + top)' "$prompts" "$work/keel-$t.json" \
    | timeout -k 5 120 "$greedy_bin" "$gguf" "$n_tokens" "$ngl" >"$work/llama-$t.json" 2>"$work/llama-$t.log" \
    || { record_failed "$t" "llama_greedy failed ($(why $? "$work/llama-$t.log"))"; continue; }
  step "llama-bench on $t"
  bench_args="-p 0 -n 128 -r 3 -fa 1 -ngl $ngl"
  bench_outcome=(--llama-bench-json "$work/llama-bench-$t.json")
  parity_bench=(--llama-bench "$work/llama-bench-$t.json")
  # shellcheck disable=SC2086 # bench_args is a list of arguments
  if ! timeout -k 5 120 "$gpu_build/bin/llama-bench" -m "$gguf" $bench_args -o json >"$work/llama-bench-$t.json" 2>"$work/llama-bench-$t.log"; then
    bench_outcome=(--failed "llama-bench failed ($(why $? "$work/llama-bench-$t.log"))")
    parity_bench=()
  fi
  python3 tools/peers/bench_result.py llama-bench --model-dir "$config_dir" "${bench_outcome[@]}" --gguf "$gguf" \
    --out-dir "$out_dir" --backend "$backend" --tests "$bench_args" --dtype "$(echo "$t" | tr 'A-Z' 'a-z')" \
    --llama-cpp-commit "$commit" --llama-cpp-source "node-llama-cpp's llama.cpp, trimmed by tools/peers/pack_llama_cpp.sh"
  # 5. The verdict (without llama.cpp's decode rate when llama-bench failed).
  recorded[$t]=1
  python3 tools/peers/gguf_parity.py --gguf "$gguf" --gguf-type "$t" --model-dir "$config_dir" --prompts "$prompts" \
    --keel "$work/keel-$t.json" --llama "$work/llama-$t.json" --keel-latency "$out_dir/latency-keel-$name-$t-gguf-$backend.json" \
    "${parity_bench[@]}" --backend "$backend" --llama-cpp-commit "$commit" --out-dir "$out_dir"
done
step "done"
