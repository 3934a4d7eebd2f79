#!/usr/bin/env bash
# The GPU host's agenda in one device call (device time is scarce: one machine start for all).
# Run from the repo root there, after `bash scripts/pack-gpu.sh` and `bash scripts/gpu-carry.sh pack` (the
# fixtures travel compressed in .gpu, so that the tree and .gpu fit the 64 MiB carry) here, with carry [".gpu"]:
#   bash scripts/gpu-run.sh tests server latency hf-latency throughput serve
# Steps: tests (npm run test:gpu), checks (the same split over eight processes that run at once:
# the kernel tests, or the GPU test files in $CHECKS_KERNEL_FILES, and the CUDA parity suite over seven groups of fixtures), files (the GPU test files named
# in $GPU_TEST_FILES), soak (the server's
# chaos soak on the CUDA backend, 30 s phases), speculative (test/speculative-decoding.gpu.test.ts, and the
# parity suite's speculative variants on six fixtures), moe-mla (latency of Qwen3-30B-A3B and
# DeepSeek-V2-Lite at batch 1 and 64), moe-decode (the MoE kernel tests, then each of $MOE_ARCHS,
# default both MoE configs, at batch 1 with KEEL_MOE_DECODE=split and at batch 1 and 64 fused),
# decode-attention (the attention and quantized-KV kernel tests, keel bench attention, then Qwen3-30B-A3B batch 1 and
# Llama-3.1-8B batch 1 and 64 with KEEL_DECODE_ATTENTION=cuda-cores and tensor-cores),
# model-latency (keel bench latency on each of $LATENCY_ARCHS at $LATENCY_BATCHES, tagged $LATENCY_TAG),
# moe-profile (scripts/profile-decode-step.ts on $MOE_ARCHS, on each MoE path of $MOE_PATHS, default split then fused, with the extra arguments $PROFILE_ARGS, e.g. --table-keys 32768), quantize (keel quantize --method
# $QUANTIZE_METHODS, default gptq, --backend cuda on a random-weight Llama-3.2-1B written by tools/oracle/random_checkpoint.py with keel-tiny's tokenizer:
# carry models/keel-tiny, gpu-carry.sh pack-models), moe-quant (the MoE
# kernel tests, then Qwen3-30B-A3B at batch 1 and 64 in bf16 and with --quantization fp8, int8, int4), server (test/server, the HTTP server driven by the openai SDK, on
# the CUDA backend: KEEL_TEST_BACKEND=cuda), latency (Llama-3.1-8B batch 1/16/64), hf-latency (the HF
# eager and static-cache + compile peers at batch 1, same lengths), throughput (nano-vllm workload on
# Qwen3-0.6B; 256 x 512/256 on the 7B/8B configs), hf-throughput (HF eager generate and generate_batch
# on the 256 x 512/256 workload of the configs in $HF_ARCHS, default all four; each 7B/8B config takes
# minutes, so pick them per call, and $HF_LIMIT seconds bound the step, default 600), throughput-small (Qwen3-0.6B 256 x 512/256
# with bf16 and fp8 KV, then HF generate_batch on it), profile (scripts/profile-decode-step.ts on Llama-3.1-8B, with the extra arguments $PROFILE_ARGS, e.g. --batch 64), profile-verify
# (the same for verification steps of 1, 3 and 5 query tokens at 512 cached tokens), profile-head (the EAGLE-3 head's
# drafting pass and its catch-up over 3 and 5 tokens, op by op),
# perf-leads (the same with int4 weights, and on a 5-token verification step at 200 and 32k context), sampling (Qwen2.5-7B
# throughput plain, with top-p, top-k, a repetition penalty and 5 logprobs, and with top-p alone over
# the random weights' flat distribution, its slowest case: what they cost), serve (keel bench serve --launch on the four
# configs), attention (keel bench attention, then the PyTorch SDPA peer on the same shapes: Llama-3.1-8B's, Phi-3-mini's and DeepSeek-V2-Lite's expanded MLA heads), lora (the
# LoRA GPU tests, then keel bench lora), mla-decode (the MLA and 8-bit KV GPU tests, both MLA decode
# kernels each, then keel bench attention, which times both), lora-throughput (Llama-3.1-8B, 128 x 512/256, with 0, 1, 8
# and 32 adapters at each rank of $LORA_RANKS, default 16 64; the base model once), archs
# (latency batch 1 on the other three bench/configs), linear (keel bench linear over every weight format and
# 1..256 rows), gemv-mma (int4 and fp8 linears at 1..16 rows, then 8B latency at batch 1 and 8 with
# KEEL_QUANTIZED_GEMV=cuda-cores and tensor-cores), formats (Llama-3.1-8B latency at batch 1/16/64 per --quantization of $FORMATS, default int4 int8
# fp8 nf4 llm-int8 aqlm-2x8 (dummy AQLM weights) sparse24 (--sparsity 2:4), int4/int8/fp8 also with KEEL_MARLIN=1), seventy (the 70B shape in fp8 and int4 at batch 1 and 32),
# kv-long (8B decode with $KV_LONG_BATCHES, default 16, sequences at 32k: bf16, fp8, int8 and int4 KV, or $KV_LONG_DTYPES),
# quest (8B decode at $QUEST_CONTEXTS, default 32k and 128k context, dense and Quest budgets 2,048 and 4,096 or $QUEST_BUDGETS; batch sizes
# $QUEST_BATCHES, default 1,16 at 32k and 1,4 past it, $QUEST_ITERS measured iterations, default 2), spec-synthetic
# (8B with an EAGLE-3 head and a 1B draft at --synthetic-accepted-drafts 1..3 against plain decoding), spec-fitted (EAGLE-3
# drafting 2 and 4 tokens, all accepted: the mean accepted lengths 3 and 5 without wasted drafts), spec-timeline (batch 1
# plain and EAGLE-3 drafting 2 and 4, all accepted, with --step-timeline: host phases and device gaps per step),
# spec-host-profile (a V8 CPU profile of EAGLE-3 drafting 2 at batch 1, its top functions printed), profile-quest (a Quest
# decode step at 128k context op by op, dense and at budget $QUEST_BUDGET, and its sparse kernels under Nsight Compute), profile-prefill
# (both prefill attention kernels at 8k under Nsight Compute, full sections, or those in $PROFILE_PREFILL_KERNELS: the report,
# stall reasons from its sampling counters, and its source page per machine instruction as gzipped CSV), sass (the machine code of cached
# kernels named by $SASS_KERNELS, default the wgmma prefill kernel, and an opcode count), profile-mixed
# (Qwen3-0.6B's offline decode and mixed steps op by op), profile-drafting (EAGLE-3's K = 4 steps kernel by kernel under
# Nsight Compute, summarized by scripts/ncu-kernel-summary.ts),
# spec-real (keel-tiny on bench/datasets/code-prompts.jsonl at batch 1: plain, its draft, n-gram),
# verify (keel bench verify: Llama-3.1-8B's verification pass of 1..32 query tokens at batch 1, 8
# and 32 against its plain decode step, 512 cached tokens), multi-turn (keel bench serve --dataset
# multi-turn on Llama-3.1-8B with a 2,048-block KV pool, a quarter of the conversations' tokens,
# without and with a 32 GiB host tier), offload (8B batch 1 and 8, eager, --cpu-offload-gb 0, 4, 8,
# 12), preemption (8B batch 16, 2,048 in / 256 out, in a 2,048-block pool: recompute, then swap; contexts
# past the 2,048-token step budget, which swap mode swaps rather than recomputes),
# pdl-tests (the programmatic-dependent-launch GPU test), pdl (per config of $PDL_ARCHS, default Llama-3.1-8B at batch 1 and 64, Qwen3-30B-A3B and
# DeepSeek-V2-Lite at batch 1: latency with KEEL_PDL=0, then KEEL_PDL=1 against it as the baseline;
# $PDL_ROUNDS such pairs, default 1; 140 s a run: one config with two rounds per call stays under 10 minutes),
# llm-int8-gemm (LLM.int8()'s GPU tests, keel bench linear on llm-int8 with its int8 sums by dp4a and on the tensor cores),
# gemm-candidates (keel bench linear in bf16 at 16 to 256 rows: cuBLAS against each cuBLASLt heuristic candidate; then 8B latency
# at batch 1, 16 and 64 with KEEL_BF16_GEMM=cublas and tuned), w8a8 (FP8 W8A8: its GPU test, keel bench linear on fp8 at 256 to 4,096 rows, 8B TTFT at 2,048 tokens in bf16, fp8 and fp8 W8A8),
# fixtures (tools/oracle/make_fixtures.py --only $FIXTURES into test/fixtures, copied into the results to commit),
# mla-prefill (MLA's expanded prefill: its GPU test, parity of deepseek-v2-expanded with it where that fixture is present, keel bench attention, SDPA on DeepSeek-V2-Lite's expanded heads, then
# DeepSeek-V2-Lite's TTFT at 4,096 tokens with KEEL_MLA_PREFILL=absorbed and auto),
# variants ($VARIANT_COMMAND under each of $VARIANTS, scripts/gpu-variants.sh: an A/B of code edits in one call),
# timeline (the throughput step's two workloads, Llama-3.1-8B 256 x 512/256 and Qwen3-0.6B
# nano-vllm, with --step-timeline: each result holds the summary, the steps' JSONL files are
# gzipped beside them; the first step has 240 s, as it may compile the kernels).
# Each step runs in its
# own process group under a time limit and the whole group is killed after it, so no test process
# keeps GPU memory into the next step; GPU memory in use is printed between steps. Logs and result
# JSON go to $OUT (8 files at most come back: results and logs are packed into two tarballs). Set
# GPU_RUN_SECONDS to the call's limit (less a margin): steps are cut to fit and the tarballs still get made.
set -uo pipefail
# The packages travel as one tarball (scripts/gpu-carry.sh): env.sh links node_modules to the tree.
[ -f .gpu/node_modules.tar.xz ] && [ ! -d .gpu/node_modules ] && tar xJf .gpu/node_modules.tar.xz -C .gpu
source .gpu/env.sh
source .gpu/source.sh
# Test fixtures may travel compressed in the carry (the whole tree with them passes the call's 64 MiB).
[ -f .gpu/fixtures.tar.xz ] && tar xJf .gpu/fixtures.tar.xz -C test/fixtures
out=${OUT:-/tmp/keel-gpu}
mkdir -p "$out/results"
export KEEL_CACHE_DIR=/tmp/keel-cache
# Result names end with the GPU, e.g. h100.
kind=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o 'H[0-9]\+' | head -1 | tr 'H' 'h')
dummy="--load-format dummy --backend cuda --no-progress --max-model-len 4096"
# Throughput runs first run once unmeasured: each lease starts with an empty kernel cache, and the
# first steps compile kernels and record graphs (Qwen3-0.6B's first mixed step took 654 ms of a
# 4.16 s run, 2026-12-06), which a served engine pays once, not per workload.
warm="--num-iters-warmup 1"

# GPU_RUN_SECONDS bounds the whole run (the device call's limit): each step's limit is cut to what is
# left, less 20 s for packing, and a step with under 10 s left is skipped, so results always come back.
deadline=$(( $(date +%s) + ${GPU_RUN_SECONDS:-86400} - 20 ))
step() { # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  local left=$(( deadline - $(date +%s) ))
  if (( left < 10 )); then echo "[$name] skipped: GPU_RUN_SECONDS spent"; return; fi
  (( limit > left )) && limit=$left
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed "s/^/[$name] GPU memory in use before: /"
  setsid timeout -k 5 "$limit" "$@" > "$out/$name.log" 2>&1 &
  local pid=$!
  wait "$pid"
  local rc=$?
  kill -9 -- "-$pid" 2>/dev/null
  echo "[$name] rc=$rc ($(tail -1 "$out/$name.log" | cut -c1-160))"
}

# keel bench latency on random weights of bench/configs/$1 at batch sizes $2, result tagged $3.
latency() {
  echo node bin/keel bench latency --model "bench/configs/$1" $dummy \
    --batch-size "$2" --input-len 128 --output-len 128 --num-iters 3 --num-iters-warmup 1 \
    --output "$out/results/latency-$1-$3-$kind.json"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for s in "$@"; do
  case $s in
    tests) step tests 300 node scripts/run-tests.mjs gpu ;;
    checks) # The kernel tests beside the CUDA parity suite over seven groups of fixtures that cover them all.
      step kernels 420 node --test --test-concurrency=4 ${CHECKS_KERNEL_FILES:-$(ls test/backend/cuda/*.gpu.test.ts src/backend/cuda/*.gpu.test.ts)} &
      groups=(llama '^llama' mistral-qwen '^(mistral|qwen2-bias|qwen3-qk|keel)' mla '^(?!quant-)(deepseek|glm)'
        moe '^(?!quant-)(?!deepseek|glm).*(moe|gpt-oss)' quant 'quant|lora|spec|bnb'
        dense-a-l '^(?!llama|mistral|qwen2-bias|qwen3-qk|keel|deepseek|glm)(?!.*(quant|lora|spec|bnb|moe|gpt-oss))[a-l]'
        dense-m-z '^(?!llama|mistral|qwen2-bias|qwen3-qk|keel|deepseek|glm)(?!.*(quant|lora|spec|bnb|moe|gpt-oss))[m-z]')
      for ((i = 0; i < ${#groups[@]}; i += 2)); do
        step "parity-${groups[i]}" 420 env KEEL_PARITY_FIXTURES="${groups[i+1]}" node --test test/transformers-parity.gpu.test.ts &
      done
      wait
      for log in kernels $(for ((i = 0; i < ${#groups[@]}; i += 2)); do echo "parity-${groups[i]}"; done); do
        grep -hE "^# (tests|pass|fail)" "$out/$log.log" | tr '\n' ' ' | sed "s/^/[$log] /"; echo
        grep -hE "^ *not ok" "$out/$log.log" | head -20 | sed "s/^/[$log] /"
      done ;;
    files) # The GPU test files named in $GPU_TEST_FILES, two at a time.
      step files 500 node --test --test-concurrency=2 ${GPU_TEST_FILES:?name the test files}
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/files.log" | head -30 | sed "s/^/[files] /" ;;
    speculative) step speculative 280 node --test test/speculative-decoding.gpu.test.ts
      step parity-speculative 280 env KEEL_PARITY_FIXTURES='^(llama-gqa|mixtral-moe|deepseek-v2-lite|gemma2-softcap|phi3-longrope|keel-tiny)$' \
        node --test --test-name-pattern='speculative' test/transformers-parity.gpu.test.ts ;;
    soak) step soak 150 node scripts/chaos-soak.ts --backend cuda --phase-seconds 30 --output "$out/results/soak-$kind.json" ;;
    moe-mla) for a in qwen3-30b-a3b deepseek-v2-lite; do step "latency-$a" 170 $(latency "$a" 1,64 batched); done ;;
    moe-quant) step moe-tests 150 node --test test/backend/cuda/moe.gpu.test.ts
      step latency-qwen3-30b-a3b-bf16 170 $(latency qwen3-30b-a3b 1,64 bf16)
      for q in fp8 int8 int4; do step "latency-qwen3-30b-a3b-$q" 170 $(latency qwen3-30b-a3b 1,64 "$q") --quantization "$q"; done ;;
    moe-decode) step moe-tests 150 node --test test/backend/cuda/moe.gpu.test.ts
      for a in ${MOE_ARCHS:-qwen3-30b-a3b deepseek-v2-lite}; do
        step "latency-$a-split" 170 env KEEL_MOE_DECODE=split $(latency "$a" 1 moe-split)
        step "latency-$a-fused" 170 env KEEL_MOE_DECODE=fused $(latency "$a" 1,64 moe-fused)
      done ;;
    decode-attention) # bf16 decode attention on tensor cores against CUDA cores: the kernel tests, the kernels alone, then whole models at batch 1 (and 8B at 64).
      step decode-attention-tests 300 node --test test/backend/cuda/attention.gpu.test.ts test/backend/cuda/kv-cache-quantization.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/decode-attention-tests.log" | head -20 | sed "s/^/[decode-attention-tests] /"
      step attention 300 node bin/keel bench attention --output "$out/results/attention-keel-decode-kernels-$kind.json"
      grep -h "^decode" "$out/attention.log" | head -20
      for k in cuda-cores tensor-cores; do
        step "latency-qwen3-30b-a3b-$k" 170 env KEEL_DECODE_ATTENTION=$k $(latency qwen3-30b-a3b 1 "decode-$k")
        step "latency-llama-3.1-8b-$k" 170 env KEEL_DECODE_ATTENTION=$k $(latency llama-3.1-8b 1,64 "decode-$k")
      done ;;
    model-latency) # keel bench latency on each config of $LATENCY_ARCHS (default llama-3.1-8b) at $LATENCY_BATCHES (default 1), results tagged $LATENCY_TAG (default batched).
      for a in ${LATENCY_ARCHS:-llama-3.1-8b}; do step "latency-$a" 170 $(latency "$a" "${LATENCY_BATCHES:-1}" "${LATENCY_TAG:-batched}"); grep -h "TPOT" "$out/latency-$a.log"; done ;;
    moe-profile) for a in ${MOE_ARCHS:-qwen3-30b-a3b deepseek-v2-lite}; do
        for path in ${MOE_PATHS:-split fused}; do step "profile-$a-$path" 150 env KEEL_MOE_DECODE=$path node scripts/profile-decode-step.ts --model "bench/configs/$a" ${PROFILE_ARGS:-}; done
      done ;;
    quantize) step random-1b 120 python3 tools/oracle/random_checkpoint.py bench/configs/llama-3.2-1b /tmp/random-llama-3.2-1b --tokenizer models/keel-tiny
      for m in ${QUANTIZE_METHODS:-gptq}; do
        step "quantize-$m" 420 node bin/keel quantize --model /tmp/random-llama-3.2-1b --method "$m" --bits 4 --calibration tools/oracle/make_fixtures.py \
          --backend cuda --output "/tmp/random-llama-3.2-1b-$m" --result "$out/results/quantize-$m-llama-3.2-1b-$kind.json"
      done ;;
    server) step server 300 env KEEL_TEST_BACKEND=cuda node scripts/run-tests.mjs cpu test/server ;;
    latency) step latency 240 $(latency llama-3.1-8b 1,16,64 batched) ;;
    hf-latency) step hf-latency 300 python3 tools/peers/hf_peers.py --arch llama-3.1-8b --only latency-eager,latency-compile \
      --latency-input-len 128 --latency-output-len 128 --num-iters 2 --num-iters-warmup 1 --out-dir "$out/results" ;;
    hf-throughput) step hf-throughput "${HF_LIMIT:-600}" python3 tools/peers/hf_peers.py --arch "${HF_ARCHS:-qwen3-0.6b,llama-3.1-8b,qwen2.5-7b,mistral-7b}" \
      --only throughput-eager,throughput-batch --out-dir "$out/results" ;;
    throughput) step throughput 240 node bin/keel bench throughput $warm --model bench/configs/qwen3-0.6b $dummy \
      --workload nano-vllm --output "$out/results/throughput-qwen3-0.6b-nano-vllm-$kind.json"
      for a in llama-3.1-8b qwen2.5-7b mistral-7b; do
        step "throughput-$a" 120 node bin/keel bench throughput $warm --model "bench/configs/$a" $dummy \
          --num-prompts 256 --input-len 512 --output-len 256 --output "$out/results/throughput-$a-random-$kind.json"
      done ;;
    serve) for a in llama-3.1-8b qwen3-0.6b qwen2.5-7b mistral-7b; do
        step "serve-$a" 120 node bin/keel bench serve --launch --model "bench/configs/$a" $dummy \
          --num-prompts 200 --input-len 1024 --output-len 128 --request-rate 16 --output "$out/results/serve-$a-rate16-$kind.json"
      done ;;
    mla-decode) step mla-tests 400 node --test test/backend/cuda/mla.gpu.test.ts test/backend/cuda/kv-cache-quantization.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/mla-tests.log" | head -20 | sed "s/^/[mla-tests] /"
      step mla-bench 300 node bin/keel bench attention --output "$out/results/attention-keel-mla-decode-$kind.json"
      grep -h "^MLA decode" "$out/mla-bench.log" ;;
    fixtures) # Oracle fixtures made here (transformers on this host), into test/fixtures for the steps after, and back in the results tarball to commit.
      step fixtures 300 python3 tools/oracle/make_fixtures.py --out test/fixtures --only ${FIXTURES:?name the fixtures}
      mkdir -p "$out/results/fixtures" && for f in $FIXTURES; do cp -r "test/fixtures/$f" "$out/results/fixtures/"; done
      cp test/fixtures/MANIFEST.json "$out/results/fixtures/" ;;
    variants) # $VARIANTS (scripts/gpu-variants.sh: base is the tree, each other a directory of files over it) each running $VARIANT_COMMAND, $VARIANT_SECONDS in all (default 300).
      step variants "${VARIANT_SECONDS:-300}" env OUT="$out" bash scripts/gpu-variants.sh run bash -c "${VARIANT_COMMAND:?name the command}"
      cat "$out/variants.log" ;;
    mla-prefill) # MLA's expanded prefill: its GPU test (and parity of deepseek-v2-expanded with it, where that fixture is here), the attention bench (both forms) with SDPA on the expanded shapes, then DeepSeek-V2-Lite's TTFT at 4k absorbed and auto.
      step mla-expansion-tests 300 node --test test/backend/cuda/mla-expansion.gpu.test.ts
      [ -f test/fixtures/deepseek-v2-expanded/oracle.json ] && step parity-mla-expanded 200 env KEEL_MLA_PREFILL=auto KEEL_PARITY_FIXTURES='^deepseek-v2-expanded$' node --test test/transformers-parity.gpu.test.ts
      step attention 200 node bin/keel bench attention --only mla-prefill --output "$out/results/attention-keel-mla-prefill-$kind.json"
      grep -h "^MLA prefill" "$out/attention.log"
      step sdpa 120 python3 tools/peers/hf_peers.py --arch deepseek-v2-lite --only sdpa --out-dir "$out/results"
      for f in absorbed auto; do
        step "ttft-deepseek-v2-lite-$f" 170 env KEEL_MLA_PREFILL=$f node bin/keel bench latency --model bench/configs/deepseek-v2-lite --load-format dummy --backend cuda \
          --no-progress --max-model-len 8192 --batch-size 1 --input-len 4096 --output-len 4 --num-iters 2 --num-iters-warmup 1 --output "$out/results/latency-deepseek-v2-lite-mla-prefill-$f-$kind.json"
        grep -h "TTFT" "$out/ttft-deepseek-v2-lite-$f.log"
      done ;;
    attention) step attention 300 node bin/keel bench attention --output "$out/results/attention-keel-llama-3.1-8b-heads-$kind.json"
      step sdpa 200 python3 tools/peers/hf_peers.py --arch llama-3.1-8b,phi-3-mini,deepseek-v2-lite --only sdpa --out-dir "$out/results" ;;
    lora) step lora-tests 280 node --test test/backend/cuda/lora.gpu.test.ts test/backend/cuda/graphs.gpu.test.ts test/lora.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/lora-tests.log" | head -20 | sed "s/^/[lora-tests] /"
      step lora-kernels 200 node bin/keel bench lora --output "$out/results/lora-kernels-llama-3.1-8b-$kind.json"
      grep -hE "^(decode|prefill) " "$out/lora-kernels.log" ;;
    lora-throughput) for r in ${LORA_RANKS:-16 64}; do for n in 0 1 8 32; do
        [ "$n" = 0 ] && [ "$r" != 16 ] && continue
        step "throughput-lora$n-r$r" 150 node bin/keel bench throughput $warm --model bench/configs/llama-3.1-8b $dummy --num-prompts 128 --input-len 512 \
          --output-len 256 --lora-adapters "$n" --lora-rank "$r" --output "$out/results/throughput-llama-3.1-8b-lora$n-r$r-$kind.json"
        grep -hE "^Throughput|output tokens/s" "$out/throughput-lora$n-r$r.log" | sed "s/^/[lora$n-r$r] /"
      done; done ;;
    profile) step profile 120 node scripts/profile-decode-step.ts ${PROFILE_ARGS:-} ;;
    profile-verify) # Where a verification step's time goes beside a decode step's: 8B, 512 cached tokens, q = 1 (decode), 3 and 5.
      for q in 1 3 5; do step "profile-verify$q" 100 node scripts/profile-decode-step.ts --query-tokens "$q" --context 512; done
      for q in 1 3 5; do cat "$out/profile-verify$q.log" | sed "s/^/[profile-verify$q] /"; done ;;
    profile-head) # The EAGLE-3 head's passes op by op: a chain's single-token pass, then catch-ups over 3 and 5 tokens.
      for q in 1 3 5; do
        step "profile-head-q$q" 100 node scripts/profile-decode-step.ts --eagle3-head bench/configs/eagle3-llama-3.1-8b --context 512 --query-tokens "$q"
      done
      for q in 1 3 5; do sed "s/^/[profile-head-q$q] /" "$out/profile-head-q$q.log"; done ;;
    throughput-small) # Issue 17's small-model figure: Qwen3-0.6B 256 x 512/256 with bf16 and fp8 KV (each with its step timeline), then HF generate_batch on the same workload unless SMALL_PEER=0.
      for kv in auto fp8; do
        step "throughput-qwen3-0.6b-kv-$kv" 120 node bin/keel bench throughput $warm --model bench/configs/qwen3-0.6b $dummy --num-prompts 256 \
          --input-len 512 --output-len 256 --kv-cache-dtype "$kv" --step-timeline "$out/results/timeline-qwen3-0.6b-kv-$kv-$kind.jsonl" \
          --output "$out/results/throughput-qwen3-0.6b-random-kv-$kv-$kind.json"
        grep -hE -A12 "^Throughput" "$out/throughput-qwen3-0.6b-kv-$kv.log" | sed "s/^/[kv $kv] /"
      done
      gzip -f "$out"/results/timeline-qwen3-0.6b-kv-*.jsonl
      [ "${SMALL_PEER:-1}" = 0 ] || step hf-throughput-qwen3-0.6b 200 python3 tools/peers/hf_peers.py --arch qwen3-0.6b --only throughput-batch --out-dir "$out/results" ;;
    profile-drafting) # EAGLE-3 drafting 4 at batch 1 (all accepted), its kernels timed one by one by Nsight Compute over about four steady steps (launches 20,000 to 23,000): where a step's drafting time goes between the head's passes, the sampling passes and the tree expansions.
      step profile-drafting 300 ncu --clock-control none --csv --metrics gpu__time_duration.sum --launch-skip 20000 --launch-count 3000 \
        node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy --batch-size 1 --input-len 128 --output-len 256 --num-iters 1 \
        --num-iters-warmup 1 --speculative-method eagle3 --speculative-model bench/configs/eagle3-llama-3.1-8b --num-speculative-tokens 4 \
        --synthetic-accepted-drafts 4
      node scripts/ncu-kernel-summary.ts "$out/profile-drafting.log" | head -40 | sed "s/^/[profile-drafting] /" ;;
    profile-mixed) # Offline throughput's two kinds of step on Qwen3-0.6B, op by op: a decode of 221 sequences at 640 tokens, and a mixed step (136 decodes at 600 beside a 2,048-token prefill chunk).
      step profile-small-decode 150 node scripts/profile-decode-step.ts --model bench/configs/qwen3-0.6b --batch 221 --context 640
      step profile-small-mixed 150 node scripts/profile-decode-step.ts --model bench/configs/qwen3-0.6b --batch 136 --context 600 --prefill-chunk 2048
      for p in decode mixed; do sed "s/^/[profile-small-$p] /" "$out/profile-small-$p.log"; done ;;
    profile-prefill) # Prefill attention at 8k tokens under Nsight Compute, both kernels (full sections): where the Hopper kernel's time goes (keel bench attention --only prefill launches each Llama shape 45 times, 512 / 2k / 8k in turn, so the 91st launch is the first at 8k).
      # The report comes back (results/ncu-prefill-KERNEL.ncu-rep) with two readings of it: the sections,
      # and where the warps stalled, by reason (raw sampling counters) and by machine instruction (source page, gzipped CSV).
      for k in ${PROFILE_PREFILL_KERNELS:-prefill_attention_kernel prefill_attention_wgmma_kernel}; do
        rep="$out/results/ncu-prefill-$k"
        step "profile-$k" 300 ncu --clock-control none --set full --import-source no --kernel-name "$k" --launch-skip 90 --launch-count 1 \
          --export "$rep" --force-overwrite node bin/keel bench attention --only prefill --output "$out/ncu-attention-$k.json"
        ncu --import "$rep.ncu-rep" --page details > "$out/profile-$k-details.log" 2>&1
        grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Registers Per Thread|Achieved Occupancy" "$out/profile-$k-details.log" | head -20 | sed "s/^/[profile-$k] /"
        ncu --import "$rep.ncu-rep" --page raw > "$out/profile-$k-raw.log" 2>&1
        grep -E "smsp__pcsamp_warps_issue_stalled_[a-z_]+ " "$out/profile-$k-raw.log" | tr -d , | awk '{print $NF, $1}' | sort -g -r | head -14 | sed "s/^/[stalls $k] /"
        ncu --import "$rep.ncu-rep" --page source --csv --print-source sass 2>&1 | gzip > "$rep-sass.csv.gz"
      done ;;
    sass) # The machine code of the kernels the earlier steps compiled whose file names match $SASS_KERNELS (default prefill-attention-wgmma), from the kernel cache: full listings into $OUT, an opcode count printed (HGMMA present? LDL/STL spills? barriers?).
      for cubin in "$KEEL_CACHE_DIR"/kernels/${SASS_KERNELS:-prefill-attention-wgmma}*.cubin; do
        [ -f "$cubin" ] || { echo "[sass] no cached cubin matches ${SASS_KERNELS:-prefill-attention-wgmma}"; continue; }
        name=$(basename "$cubin" .cubin)
        cuobjdump -sass "$cubin" > "$out/sass-$name.txt" 2>&1
        grep -oE '^ +/\*[0-9a-f]+\*/ +(@!?U?P[0-9T] +)?[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*' "$out/sass-$name.txt" | awk '{print $NF}' | sed 's/\..*//' |
          sort | uniq -c | sort -rn | head -40 | tr '\n' ' ' | sed "s/^/[sass $name] /"
        echo
      done ;;
    profile-quest) # Where a Quest decode step's time goes at 128k context (130,816 cached tokens): dense, then budget $QUEST_BUDGET (default 4,096) op by op, then the sparse layers' kernels timed one by one by Nsight Compute.
      budget=${QUEST_BUDGET:-4096}
      step profile-quest-dense 200 node scripts/profile-decode-step.ts --context 130816
      step profile-quest-sparse 200 node scripts/profile-decode-step.ts --context 130816 --sparse-token-budget "$budget"
      step profile-quest-ncu 200 ncu --clock-control none --kernel-name regex:'sparse_|decode_attention' --launch-count 12 \
        --metrics gpu__time_duration.sum node scripts/profile-decode-step.ts --context 130816 --sparse-token-budget "$budget"
      for p in dense sparse; do sed "s/^/[profile-quest-$p] /" "$out/profile-quest-$p.log"; done
      grep -E "^  [a-z_]+.*\(|gpu__time_duration" "$out/profile-quest-ncu.log" | sed "s/^/[profile-quest-ncu] /" ;;
    perf-leads) # Op-by-op profiles of the open performance leads: int4 batch-1 decode, a 5-token verification step, and one at 32k context.
      step profile-int4 200 node scripts/profile-decode-step.ts --quantization int4
      step profile-verify5 120 node scripts/profile-decode-step.ts --query-tokens 5
      step profile-verify5-32k 150 node scripts/profile-decode-step.ts --query-tokens 5 --context 32768
      for log in profile-int4 profile-verify5 profile-verify5-32k; do head -8 "$out/$log.log" | sed "s/^/[$log] /"; tail -1 "$out/$log.log" | sed "s/^/[$log] /"; done ;;
    sampling) for variant in plain "truncated-penalized --top-p 0.9 --top-k 50 --repetition-penalty 1.1 --logprobs 5" "top-p --top-p 0.9"; do
        options=${variant#"${variant%% *}"} name=throughput-qwen2.5-7b-sampling-${variant%% *}
        step "$name" 120 node bin/keel bench throughput $warm --model bench/configs/qwen2.5-7b $dummy \
          --num-prompts 256 --input-len 512 --output-len 256 $options --output "$out/results/$name-$kind.json"
      done ;;
    archs) for a in qwen3-0.6b qwen2.5-7b mistral-7b; do step "latency-$a" 150 $(latency "$a" 1 batch1); done ;;
    linear) step linear 400 node bin/keel bench linear --format bf16,fp8,int8,int4,nf4,aqlm-2x8,2:4 --rows 1,8,16,32,64,128,256 \
        --output "$out/results/linear-llama-3.1-8b-formats-$kind.json" ;;
    gemv-mma) # The tensor-core int4/fp8 decode GEMV against the CUDA-core one: kernels alone, then 8B decode per kernel.
      step linear-gemv 150 node bin/keel bench linear --format int4,fp8 --rows 1,2,4,8,16 \
        --output "$out/results/linear-llama-3.1-8b-gemv-mma-$kind.json"
      for q in int4 fp8; do for k in cuda-cores tensor-cores; do
        step "latency-8b-$q-$k" 120 env KEEL_QUANTIZED_GEMV=$k $(latency llama-3.1-8b 1,8 "$q-gemv-$k") --quantization "$q"
        grep -h "^batch " "$out/latency-8b-$q-$k.log" | sed "s/^/[$q $k] /"
      done; done ;;
    formats) for q in ${FORMATS:-int4 int8 fp8 nf4 llm-int8 aqlm-2x8 sparse24}; do
        if [ "$q" = sparse24 ]; then step latency-8b-sparse24 200 $(latency llama-3.1-8b 1,16,64 sparse24) --sparsity 2:4; continue; fi
        step "latency-8b-$q" 200 $(latency llama-3.1-8b 1,16,64 "$q") --quantization "$q"
        case $q in int4 | int8 | fp8) step "latency-8b-$q-marlin" 200 env KEEL_MARLIN=1 $(latency llama-3.1-8b 1,16,64 "$q-marlin") --quantization "$q" ;; esac
      done ;;
    gemm-candidates) # bf16 GEMMs at decode batch rows: cuBLAS's pick against each of cuBLASLt's heuristic candidates (issue 17's batch-64 lead), their GPU test, then 8B latency with KEEL_BF16_GEMM=cublas and tuned.
      step cublas-lt-tests 150 node --test test/backend/cuda/cublas-lt.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/cublas-lt-tests.log" | head -12 | sed "s/^/[cublas-lt-tests] /"
      step gemm-candidates 200 node bin/keel bench linear --format bf16 --rows 16,32,64,128,256 --output "$out/results/linear-llama-3.1-8b-bf16-candidates-$kind.json"
      grep -hE "bf16 .*(cublas|keel-bf16)" "$out/gemm-candidates.log" | head -80
      for g in cublas tuned; do
        step "latency-8b-gemm-$g" 170 env KEEL_BF16_GEMM=$g $(latency llama-3.1-8b 1,16,64 "gemm-$g")
        grep -h "^batch" "$out/latency-8b-gemm-$g.log" | sed "s/^/[gemm $g] /"
      done ;;
    llm-int8-gemm) # LLM.int8()'s prefill sums on the tensor cores: its GPU tests, then keel bench linear on llm-int8 with KEEL_LLM_INT8_GEMM=dp4a and tensor-cores.
      step llm-int8-tests 200 node --test test/backend/cuda/llm-int8.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/llm-int8-tests.log" | head -12 | sed "s/^/[llm-int8-tests] /"
      for g in dp4a tensor-cores; do
        step "linear-llm-int8-$g" 200 env KEEL_LLM_INT8_GEMM=$g node bin/keel bench linear --format llm-int8 --rows 16,256,1024,4096 --output "$out/results/linear-llama-3.1-8b-llm-int8-$g-$kind.json"
        grep -hE "llm-int8 " "$out/linear-llm-int8-$g.log" | sed "s/^/[$g] /"
      done ;;
    w8a8) # FP8 W8A8 (cuBLASLt, per-token activation scales): its GPU test, keel bench linear on fp8 at prefill rows, then 8B TTFT at 2,048 tokens in bf16, fp8 weight-only and fp8 W8A8.
      step w8a8-tests 200 node --test test/backend/cuda/w8a8-linear.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok" "$out/w8a8-tests.log" | head -12 | sed "s/^/[w8a8-tests] /"
      step linear-w8a8 200 node bin/keel bench linear --format bf16,fp8 --rows 256,1024,4096 --output "$out/results/linear-llama-3.1-8b-w8a8-$kind.json"
      grep -hE "fp8 .*(w8a8|dequantize)|bf16 .*cublas" "$out/linear-w8a8.log" | head -40
      # Each case's flags: bf16 none, fp8-* --quantization fp8, and its KEEL_FP8_GEMM (w8a16 but for fp8-w8a8).
      fp8_case() { q=(); [ "$1" = bf16 ] || q=(--quantization fp8); g=w8a16; [ "$1" = fp8-w8a8 ] && g=w8a8; }
      for f in bf16 fp8-w8a16 fp8-w8a8; do
        fp8_case "$f"
        step "ttft-8b-$f" 150 env KEEL_FP8_GEMM=$g node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy "${q[@]}" \
          --batch-size 1 --input-len 2048 --output-len 4 --num-iters 3 --num-iters-warmup 1 --output "$out/results/latency-llama-3.1-8b-prefill2048-$f-$kind.json"
        grep -h "TTFT" "$out/ttft-8b-$f.log" | sed "s/^/[$f] /"
      done
      # What the activations' rounding costs: keel-tiny's perplexity over 512-token windows (prefill rows, so W8A8 runs), where models/ was carried (gpu-carry.sh pack-models).
      if [ -f models/keel-tiny/config.json ]; then
        head -c 6000 tools/oracle/quantized_fixtures.py > /tmp/keel-held-out.py
        for f in bf16 fp8-w8a16 fp8-w8a8; do
          fp8_case "$f"
          step "perplexity-$f" 120 env KEEL_FP8_GEMM=$g node bin/keel perplexity --model models/keel-tiny --backend cuda "${q[@]}" --file /tmp/keel-held-out.py --context-length 512 --stride 256 --json
          tail -1 "$out/perplexity-$f.log" | sed "s/^/[perplexity $f] /"
        done
      fi ;;
    seventy) for q in fp8 int4; do
        step "latency-70b-$q" 400 $(latency llama-3.1-70b 1,32 "$q") --quantization "$q" --gpu-memory-utilization 0.95
      done ;;
    kv-long) # Issue 16's long-context figure: 8B decode with $KV_LONG_BATCHES (default 16) sequences at 32k, bf16 against 8-bit KV (bf16 needs an H200's memory at 16).
      for kv in ${KV_LONG_DTYPES:-auto fp8_e4m3 int8 int4}; do
        step "kv-long-$kv" 300 node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy --max-model-len 33024 \
          --batch-size "${KV_LONG_BATCHES:-16}" --input-len 32768 --output-len 128 --num-iters 2 --num-iters-warmup 1 --kv-cache-dtype "$kv" \
          --gpu-memory-utilization 0.95 --output "$out/results/latency-llama-3.1-8b-ctx32768-kv-$kv-$kind.json"
        grep -hE "TPOT|decode|Avg latency" "$out/kv-long-$kv.log" | head -4 | sed "s/^/[kv-long-$kv] /"
      done ;;
    quest) for ctx in ${QUEST_CONTEXTS:-32768 131072}; do for budget in ${QUEST_BUDGETS:-dense 2048 4096}; do
        sparse=$([ "$budget" = dense ] || echo "--sparse-attention quest --sparse-token-budget $budget")
        # 128 generated tokens and a margin past the prompt, within Llama-3.1's 131,072 positions (128k prompts are 256 short).
        len=$(( ctx + 256 > 131072 ? 131072 : ctx + 256 ))
        step "quest-$ctx-$budget" 300 node bin/keel bench latency --model bench/configs/llama-3.1-8b --load-format dummy --backend cuda \
          --no-progress --max-model-len "$len" --batch-size "${QUEST_BATCHES:-$([ $ctx = 32768 ] && echo 1,16 || echo 1,4)}" --input-len "$((len - 256))" \
          --output-len 128 --num-iters "${QUEST_ITERS:-2}" --num-iters-warmup 1 $sparse --output "$out/results/latency-llama-3.1-8b-ctx$ctx-$budget-$kind.json"
      done; done ;;
    spec-synthetic) base="$out/results/latency-llama-3.1-8b-spec-base-$kind.json"
      step spec-base 200 $(latency llama-3.1-8b 1,8,32 spec-base)
      for n in 1 2 3; do
        step "spec-eagle3-$n" 200 $(latency llama-3.1-8b 1,8,32 "spec-eagle3-n$n") --baseline "$base" --speculative-method eagle3 \
          --speculative-model bench/configs/eagle3-llama-3.1-8b --num-speculative-tokens 4 --synthetic-accepted-drafts "$n"
        step "spec-draft1b-$n" 200 $(latency llama-3.1-8b 1,8,32 "spec-draft1b-n$n") --baseline "$base" \
          --speculative-model bench/configs/llama-3.2-1b --num-speculative-tokens 4 --synthetic-accepted-drafts "$n"
      done ;;
    spec-fitted) # EAGLE-3 drafting only what is accepted: N of N drafts, the mean accepted length N + 1.
      base="$out/results/latency-llama-3.1-8b-spec-base-$kind.json"
      [ -f "$base" ] || step spec-base 200 $(latency llama-3.1-8b 1,8,32 spec-base)
      for n in 2 4; do
        step "spec-eagle3-k$n" 200 $(latency llama-3.1-8b 1,8,32 "spec-eagle3-k$n-n$n") --baseline "$base" --speculative-method eagle3 \
          --speculative-model bench/configs/eagle3-llama-3.1-8b --num-speculative-tokens "$n" --synthetic-accepted-drafts "$n"
      done ;;
    spec-timeline) # Where a speculative step's time goes at batch 1, on the host and the device: plain, then EAGLE-3 drafting 2 and 4, all accepted.
      for k in 0 2 4; do
        spec=$([ "$k" = 0 ] || echo "--speculative-method eagle3 --speculative-model bench/configs/eagle3-llama-3.1-8b --num-speculative-tokens $k --synthetic-accepted-drafts $k")
        step "spec-timeline-k$k" 150 node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy --batch-size 1 --input-len 128 \
          --output-len 128 --num-iters 2 --num-iters-warmup 1 $spec --step-timeline "$out/results/timeline-spec-k$k-$kind.jsonl" \
          --output "$out/results/latency-llama-3.1-8b-spec-timeline-k$k-$kind.json"
      done
      gzip -f "$out"/results/timeline-spec-*.jsonl ;;
    spec-host-profile) # The host's side of EAGLE-3 drafting 2 tokens at batch 1 (all accepted), as a V8 CPU profile, summarized.
      step spec-host-profile 150 node --cpu-prof --cpu-prof-dir "$out/prof" bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy \
        --batch-size 1 --input-len 128 --output-len 256 --num-iters 4 --num-iters-warmup 1 --speculative-method eagle3 \
        --speculative-model bench/configs/eagle3-llama-3.1-8b --num-speculative-tokens 2 --synthetic-accepted-drafts 2
      for p in "$out"/prof/*.cpuprofile; do node scripts/cpu-profile-top.ts "$p" --top 60 --after compile > "$out/spec-host-profile-top.log"; done
      rm -rf "$out/prof"; head -130 "$out/spec-host-profile-top.log" ;;
    spec-real) d="--dataset custom --dataset-path bench/datasets/code-prompts.jsonl --output-len 128 --backend cuda --no-progress"
      for m in plain "draft --speculative-model models/keel-tiny-draft" "ngram --speculative-method ngram"; do
        step "spec-real-${m%% *}" 150 node bin/keel bench serve --launch $d --max-concurrency 1 ${m#"${m%% *}"} \
          --output "$out/results/serve-keel-tiny-code-${m%% *}-b1-$kind.json"
      done ;;
    verify) step verify 200 node bin/keel bench verify --model bench/configs/llama-3.1-8b $dummy --batch-size 1,8,32 \
        --query-tokens 1,2,4,8,16,32 --context-len 512 --output "$out/results/verify-llama-3.1-8b-$kind.json" ;;
    multi-turn) mt="--dataset multi-turn --num-conversations 32 --num-turns 6 --input-len 2048 --turn-len 256 --output-len 128 --max-concurrency 16"
      for tier in gpu-only host-tier; do
        step "multi-turn-$tier" 200 node bin/keel bench serve --launch --model bench/configs/llama-3.1-8b $dummy --num-kv-blocks 2048 \
          $([ $tier = host-tier ] && echo --kv-offload-gb 32) $mt --output "$out/results/multi-turn-8b-$tier-$kind.json"
      done ;;
    offload) for g in 0 4 8 12; do
        step "offload-$g" 150 node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy --enforce-eager --cpu-offload-gb $g \
          --batch-size 1,8 --input-len 128 --output-len 64 --num-iters 3 --num-iters-warmup 1 --output "$out/results/offload-8b-$g-$kind.json"
      done ;;
    preemption) for mode in recompute swap; do
        step "preemption-$mode" 200 node bin/keel bench latency --model bench/configs/llama-3.1-8b $dummy --batch-size 16 --input-len 2048 \
          --output-len 256 --num-iters 3 --num-iters-warmup 1 --num-kv-blocks 2048 --preemption-mode $mode --swap-space 16 \
          --output "$out/results/latency-llama-3.1-8b-preemption-$mode-$kind.json"
      done ;;
    pdl-tests) step pdl-tests 150 node --test test/backend/cuda/programmatic-launch.gpu.test.ts
      grep -hE "^# (tests|pass|fail)|^ *not ok|dependent start" "$out/pdl-tests.log" | head -20 | sed "s/^/[pdl-tests] /" ;;
    pdl) for a in ${PDL_ARCHS:-llama-3.1-8b qwen3-30b-a3b deepseek-v2-lite}; do
        batches=$([ "$a" = llama-3.1-8b ] && echo 1,64 || echo 1)
        for r in $(seq 1 "${PDL_ROUNDS:-1}"); do
          base="$out/results/latency-$a-pdl0-r$r-$kind.json"
          step "latency-$a-pdl0-r$r" 140 env KEEL_PDL=0 $(latency "$a" "$batches" "pdl0-r$r")
          step "latency-$a-pdl1-r$r" 140 env KEEL_PDL=1 $(latency "$a" "$batches" "pdl1-r$r") $([ -f "$base" ] && echo --baseline "$base")
          for p in 0 1; do grep -h "^batch " "$out/latency-$a-pdl$p-r$r.log" | sed "s/^/[$a KEEL_PDL=$p r$r] /"; done
        done
      done ;;
    timeline) step timeline-llama-3.1-8b 240 node bin/keel bench throughput $warm --model bench/configs/llama-3.1-8b $dummy \
        --num-prompts 256 --input-len 512 --output-len 256 --step-timeline "$out/results/timeline-llama-3.1-8b-random-$kind.jsonl" \
        --output "$out/results/throughput-llama-3.1-8b-random-timeline-$kind.json"
      step timeline-qwen3-0.6b 150 node bin/keel bench throughput $warm --model bench/configs/qwen3-0.6b $dummy --workload nano-vllm \
        --step-timeline "$out/results/timeline-qwen3-0.6b-nano-vllm-$kind.jsonl" --output "$out/results/throughput-qwen3-0.6b-nano-vllm-timeline-$kind.json"
      gzip -f "$out"/results/timeline-*.jsonl
      for log in timeline-llama-3.1-8b timeline-qwen3-0.6b; do grep -hE -A12 "^Throughput" "$out/$log.log" | sed "s/^/[$log] /"; done ;;
    *) echo "unknown step $s (tests, checks, files, gemm-candidates, w8a8, llm-int8-gemm, perf-leads, soak, moe-mla, moe-quant, moe-decode, moe-profile, server, latency, hf-latency, throughput, hf-throughput, lora, lora-throughput, profile, profile-verify, profile-head, throughput-small, sampling, serve, attention, archs, linear, gemv-mma, formats, seventy, quest, spec-synthetic, spec-fitted, spec-timeline, spec-host-profile, profile-quest, profile-mixed, profile-drafting, spec-real, verify, multi-turn, offload, preemption, pdl-tests, pdl, fixtures, mla-prefill, variants, timeline)"; exit 2 ;;
  esac
done
for log in tests server; do grep -hE "^# (tests|pass|fail)" "$out/$log.log" 2>/dev/null | sed "s/^/[$log] /"; done
tar czf "$out/results.tgz" -C "$out" results && rm -rf "$out/results"
# At most 8 files come back from a device call: the steps' logs travel as one tarball.
# (run.log, where a call may send this script's own output, stays.)
logs=$(cd "$out" && ls *.log 2>/dev/null | grep -vx run.log)
[ -n "$logs" ] && (cd "$out" && tar czf logs.tgz $logs && rm -f $logs)
