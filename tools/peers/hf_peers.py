"""Peers for Keel's benchmarks, run on the GPU host (PyTorch 2.11, transformers 5.17):

  hf-eager            transformers `generate`, eager, dynamic cache
  hf-static-compile   `generate` with a static cache, which it compiles with torch.compile (mode reduce-overhead)
  hf-generate-batch   transformers continuous batching, `generate_batch`, paged attention
  torch-sdpa          PyTorch scaled_dot_product_attention, flash and cuDNN backends, on prefill shapes

on the architectures of bench/configs/ with random bf16 weights (`from_config`), over the
workloads Keel's commands run, with the very same prompts (bench_result.py ports Keel's seeded
random dataset):

  latency      batch 1, 128 prompt tokens, 256 generated, greedy, EOS ignored
               = keel bench latency --batch-size 1 --input-len 128 --output-len 256
  throughput   256 random prompts of 512 tokens, 256 generated each
               = keel bench throughput --num-prompts 256 --input-len 512 --output-len 256
               (generate_batch takes one max_new_tokens for all requests, so the shared
               workload has fixed lengths)

Each run writes one JSON result in Keel's schema under bench/results/; a run that fails writes a
failed result with the error instead, and the others go on.

    python3 tools/peers/hf_peers.py                          # every architecture, every peer
    python3 tools/peers/hf_peers.py --arch llama-3.1-8b --only latency-eager,latency-compile
"""
import argparse
import gc
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_result  # noqa: E402

ARCHS = ["llama-3.1-8b", "qwen3-0.6b", "qwen2.5-7b", "mistral-7b"]
# Named with --arch only: Phi-3-mini's heads of 96 are the SDPA peer's shape for a padded wgmma prefill;
# DeepSeek-V2-Lite's MLA heads, expanded (keys of nope + rope, values of v_head_dim), for MLA's expanded prefill.
EXTRA_ARCHS = ["phi-3-mini", "deepseek-v2-lite"]
RUNS = ["latency-eager", "latency-compile", "throughput-eager", "throughput-batch", "sdpa"]
# transformers' names for paged attention in continuous batching, newest spelling first.
PAGED_ATTENTION = ["paged|sdpa", "sdpa_paged"]
SDPA_SEQ_LENS = [512, 2048, 8192]
# The flash backend (FlashAttention-2) and cuDNN's fused attention, each timed on every shape.
SDPA_BACKENDS = ["FLASH_ATTENTION", "CUDNN_ATTENTION"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=",".join(ARCHS), help=f"comma-separated, from bench/configs ({', '.join(ARCHS)}; also {', '.join(EXTRA_ARCHS)})")
    p.add_argument("--only", default=",".join(RUNS), help=f"comma-separated runs ({', '.join(RUNS)})")
    p.add_argument("--latency-input-len", type=int, default=128)
    p.add_argument("--latency-output-len", type=int, default=256)
    p.add_argument("--num-iters", type=int, default=5)
    p.add_argument("--num-iters-warmup", type=int, default=2)
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--eager-batch-size", type=int, default=64, help="sequences per generate call in throughput-eager")
    p.add_argument("--bandwidth-gbps", type=float, help="memory bandwidth for the roofline fraction (H100 SXM: 3350)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=bench_result.RESULTS_DIR)
    return p.parse_args()


class Peer:
    """One architecture with random bf16 weights on the GPU, and the envelope of its results."""

    def __init__(self, arch, args):
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM

        self.torch = torch
        self.args = args
        self.dir = os.path.join(bench_result.REPO_ROOT, "bench", "configs", arch)
        with open(os.path.join(self.dir, "config.json")) as f:
            self.config_json = json.load(f)
        config = AutoConfig.from_pretrained(self.dir)
        torch.manual_seed(args.seed)
        # SDPA alone needs no weights: the model is built on the meta device, only to count its parameters.
        runs = [r for r in args.only.split(",") if r]
        with torch.device("meta" if runs == ["sdpa"] else "cuda"):
            self.model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
        self.model.eval()
        self.vocab = config.vocab_size
        self.params = sum(p.numel() for p in self.model.parameters())
        self.software = {"torch": torch.__version__, "transformers": transformers.__version__}
        self.device = bench_result.device("cuda", torch.cuda.get_device_name(0), torch.version.cuda)
        self.model_info = bench_result.model_info(self.dir, self.config_json, self.params)

    def record(self, suite, engine, config, run):
        """Runs `run() -> results` and writes its result, or a failed one with the error."""
        started = bench_result.now()
        try:
            results, error = run(), None
        except Exception as e:  # a peer that cannot run is a finding, recorded as such
            traceback.print_exc()
            results, error = None, f"{type(e).__name__}: {e}"
        bench_result.write(
            bench_result.result(suite, engine, self.device, self.model_info, {**config, "seed": self.args.seed}, self.software, results, error, started),
            self.args.out_dir,
        )

    def sync_time(self):
        self.torch.cuda.synchronize()
        return time.perf_counter()

    # --- latency: Keel's `bench latency` at batch 1 ---

    def latency(self, engine, compiled):
        a = self.args
        config = {"batch_sizes": [1], "input_len": a.latency_input_len, "output_len": a.latency_output_len, "num_iters": a.num_iters,
                  "num_iters_warmup": a.num_iters_warmup, "temperature": 0, "ignore_eos": True,
                  "cache": "static" if compiled else "dynamic", "compile": "reduce-overhead" if compiled else None}
        self.record("latency", engine, config, lambda: self._latency(compiled))

    def _latency(self, compiled):
        a = self.args
        kwargs = {}
        if compiled:
            # generate compiles the decoding forward itself when the cache is static; it keeps the
            # CUDA-graph outputs it needs (wrapping model.forward in torch.compile here instead
            # failed: "accessing tensor output of CUDAGraphs that has been overwritten").
            from transformers import CompileConfig

            kwargs["cache_implementation"] = "static"
            kwargs["compile_config"] = CompileConfig(fullgraph=True, mode="reduce-overhead")
        seed = a.seed
        timings = []
        for i in range(a.num_iters_warmup + a.num_iters):
            [(prompt, _)] = bench_result.random_requests(1, (a.latency_input_len,) * 2, (a.latency_output_len,) * 2, self.vocab, seed)
            seed += 1
            ttft, e2e = self._timed_generate(prompt, a.latency_output_len, kwargs)
            if i >= a.num_iters_warmup:
                timings.append((ttft, e2e))
        return latency_results(timings, a, self.config_json, self.params)

    def _timed_generate(self, prompt, output_len, kwargs):
        """(TTFT ms, e2e ms) of one generate call; the streamer sees the prompt, then each token."""
        torch = self.torch
        from transformers.generation.streamers import BaseStreamer

        class FirstToken(BaseStreamer):
            def __init__(self):
                self.puts = 0
                self.first = None

            def put(self, value):
                self.puts += 1
                if self.puts == 2:
                    torch.cuda.synchronize()
                    self.first = time.perf_counter()

            def end(self):
                pass

        ids = torch.tensor([prompt], device="cuda")
        streamer = FirstToken()
        start = self.sync_time()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=output_len, min_new_tokens=output_len,
                                      do_sample=False, streamer=streamer, pad_token_id=0, **kwargs)
        end = self.sync_time()
        if out.shape[1] - ids.shape[1] != output_len:
            raise RuntimeError(f"generate produced {out.shape[1] - ids.shape[1]} tokens instead of {output_len}")
        return (streamer.first - start) * 1000, (end - start) * 1000

    # --- throughput: Keel's `bench throughput` on a fixed-length random workload ---

    def throughput_config(self, extra):
        a = self.args
        return {"workload": "random", "dataset": "random", "num_prompts": a.num_prompts, "input_len": {"min": a.input_len, "max": a.input_len},
                "output_len": {"min": a.output_len, "max": a.output_len}, "temperature": 0, "ignore_eos": True, **extra}

    def requests(self):
        a = self.args
        return bench_result.random_requests(a.num_prompts, (a.input_len,) * 2, (a.output_len,) * 2, self.vocab, a.seed)

    def throughput_eager(self):
        a = self.args
        self.record("throughput", "hf-eager", self.throughput_config({"eager_batch_size": a.eager_batch_size}), self._throughput_eager)

    def _throughput_eager(self):
        torch, a = self.torch, self.args
        reqs = self.requests()
        start = self.sync_time()
        generated = 0
        for i in range(0, len(reqs), a.eager_batch_size):
            ids = torch.tensor([p for p, _ in reqs[i : i + a.eager_batch_size]], device="cuda")
            with torch.inference_mode():
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.output_len, min_new_tokens=a.output_len,
                                          do_sample=False, pad_token_id=0)
            generated += (out.shape[1] - ids.shape[1]) * ids.shape[0]
        return throughput_results(reqs, generated, self.sync_time() - start)

    def throughput_batch(self):
        self.record("throughput", "hf-generate-batch", self.throughput_config({"attn_implementation": PAGED_ATTENTION}), self._throughput_batch)

    def _throughput_batch(self):
        from transformers.generation import GenerationConfig

        a = self.args
        reqs = self.requests()
        gen = GenerationConfig(max_new_tokens=a.output_len, do_sample=False, eos_token_id=None, pad_token_id=0)
        errors = []
        for impl in PAGED_ATTENTION:
            try:
                self.model.set_attn_implementation(impl)
                start = self.sync_time()
                outputs = self.model.generate_batch(inputs=[p for p, _ in reqs], generation_config=gen, progress_bar=False)
                elapsed = self.sync_time() - start
                # Counted from the outputs: a request that sampled an EOS despite eos_token_id=None shows here.
                generated = sum(len(o.generated_tokens) for o in outputs.values())
                return throughput_results(reqs, generated, elapsed)
            except Exception as e:
                errors.append(f'attn_implementation="{impl}": {type(e).__name__}: {e}')
            finally:
                self.model.set_attn_implementation("sdpa")
        raise RuntimeError("generate_batch failed with every paged attention: " + " | ".join(errors))

    # --- attention: SDPA's flash and cuDNN backends on this architecture's prefill shapes ---

    def sdpa(self):
        c = self.config_json
        config = {"batch": 1, "seq_lens": SDPA_SEQ_LENS, "causal": True, "backends": SDPA_BACKENDS, "dtype": "bf16",
                  "kv_heads": "expanded to the query heads (repeat_interleave), as transformers' sdpa path does"}
        self.record("attention", "torch-sdpa", {**config, "num_heads": c["num_attention_heads"]}, self._sdpa)

    def _sdpa(self):
        from torch.nn.attention import SDPBackend

        c = self.config_json
        heads, kv_heads = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        if "qk_nope_head_dim" in c:  # MLA, expanded: every head its own keys and values
            head_dim, value_dim, kv_heads = c["qk_nope_head_dim"] + c["qk_rope_head_dim"], c["v_head_dim"], heads
        else:
            head_dim = c.get("head_dim") or c["hidden_size"] // heads
            value_dim = head_dim
        shapes = []
        for backend in SDPA_BACKENDS:
            for seq in SDPA_SEQ_LENS:
                shape = {"backend": backend, "batch": 1, "seq_len": seq, "num_heads": heads, "num_kv_heads": kv_heads, "head_dim": head_dim, "value_dim": value_dim, "causal": True}
                try:
                    ms = self._sdpa_ms(getattr(SDPBackend, backend), heads, kv_heads, head_dim, value_dim, seq)
                except RuntimeError as e:  # a backend this build or GPU lacks: no row, the reason on stderr
                    print(f"torch-sdpa {backend} at {seq} tokens: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                # QKᵀ and PV, 2 FLOPs per multiply-add each, half of the square under the causal mask.
                flops = 2 * heads * seq * seq * (head_dim + value_dim) / 2
                shapes.append({**shape, "ms": ms, "tflops": flops / (ms / 1000) / 1e12})
        return {"shapes": shapes}

    def _sdpa_ms(self, backend, heads, kv_heads, head_dim, value_dim, seq):
        torch = self.torch
        from torch.nn.attention import sdpa_kernel

        q = torch.randn(1, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, seq, head_dim, device="cuda", dtype=torch.bfloat16).repeat_interleave(heads // kv_heads, dim=1)
        v = torch.randn(1, heads, seq, value_dim, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(backend):
            for _ in range(3):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            iters = 20
            begin.record()
            for _ in range(iters):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end) / iters

    def close(self):
        del self.model
        gc.collect()
        self.torch.cuda.empty_cache()


def latency_results(timings, a, config_json, params):
    """Keel's latency row for batch 1 (src/bench/latency-suite.ts), roofline included."""
    out_len = a.latency_output_len
    ttfts = [t for t, _ in timings]
    e2es = [e for _, e in timings]
    tpots = [(e - t) / (out_len - 1) for t, e in timings]
    mean_tpot = sum(tpots) / len(tpots)
    return {
        "bandwidth_bytes_per_s": a.bandwidth_gbps * 1e9 if a.bandwidth_gbps else None,
        "bandwidth_source": "flag" if a.bandwidth_gbps else None,
        "batches": [{
            "batch_size": 1, "input_len": a.latency_input_len, "output_len": out_len, "num_iters": len(timings),
            **bench_result.summary("ttft_ms", ttfts), **bench_result.summary("tpot_ms", tpots), **bench_result.summary("e2el_ms", e2es),
            "output_tokens_per_s": out_len / (sum(e2es) / len(e2es) / 1000),
            "decode_tokens_per_s": 1000 / mean_tpot,
            "roofline": roofline(config_json, params, a, mean_tpot / 1000),
            "preemptions": None,
        }],
    }


def roofline(c, params, a, step_s):
    """src/bench/roofline.ts: bf16 weights read per step (an untied embedding only gathered) + KV at the mean context."""
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    untied = 0 if c.get("tie_word_embeddings") else c["vocab_size"] * c["hidden_size"]
    weight_bytes = (params - untied) * 2
    context = a.latency_input_len + a.latency_output_len / 2
    window = c.get("sliding_window") if c["model_type"] == "mistral" or c.get("use_sliding_window") else None
    if window:
        context = min(context, window)
    kv_bytes = context * 2 * c["num_hidden_layers"] * c.get("num_key_value_heads", heads) * head_dim * 2
    total = weight_bytes + kv_bytes
    bandwidth = a.bandwidth_gbps * 1e9 if a.bandwidth_gbps else None
    return {"weight_bytes_per_step": weight_bytes, "kv_bytes_per_step": kv_bytes, "bytes_per_step": total, "achieved_bytes_per_s": total / step_s,
            "bandwidth_bytes_per_s": bandwidth, "fraction": total / step_s / bandwidth if bandwidth else None}


def throughput_results(reqs, generated, elapsed):
    inputs = sum(len(p) for p, _ in reqs)
    return {"workload": "random", "num_requests": len(reqs), "elapsed_s": elapsed, "total_input_tokens": inputs, "total_output_tokens": int(generated),
            "requests_per_s": len(reqs) / elapsed, "input_tokens_per_s": inputs / elapsed, "output_tokens_per_s": generated / elapsed,
            "total_tokens_per_s": (inputs + generated) / elapsed}


SUITE_AND_ENGINE = {
    "latency-eager": ("latency", "hf-eager"),
    "latency-compile": ("latency", "hf-static-compile"),
    "throughput-eager": ("throughput", "hf-eager"),
    "throughput-batch": ("throughput", "hf-generate-batch"),
    "sdpa": ("attention", "torch-sdpa"),
}


def record_unbuildable(arch, runs, args, error):
    """The model could not be built (out of memory, an architecture transformers lacks): every run says so."""
    model_dir = os.path.join(bench_result.REPO_ROOT, "bench", "configs", arch)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    for run in runs:
        suite, engine = SUITE_AND_ENGINE[run]
        res = bench_result.result(suite, engine, bench_result.device("cuda"), bench_result.model_info(model_dir, config, bench_result.parameter_count(config)), {"seed": args.seed}, {}, error=error)
        bench_result.write(res, args.out_dir)


def main():
    args = parse_args()
    archs = [a for a in args.arch.split(",") if a]
    runs = [r for r in args.only.split(",") if r]
    for name in archs + runs:
        if name not in ARCHS + EXTRA_ARCHS + RUNS:
            sys.exit(f"unknown architecture or run: {name}")
    for arch in archs:
        try:
            peer = Peer(arch, args)
        except Exception as e:
            traceback.print_exc()
            record_unbuildable(arch, runs, args, f"{type(e).__name__}: {e}")
            continue
        try:
            if "latency-eager" in runs:
                peer.latency("hf-eager", compiled=False)
            if "throughput-eager" in runs:
                peer.throughput_eager()
            if "throughput-batch" in runs:
                peer.throughput_batch()
            if "sdpa" in runs:
                peer.sdpa()
            # Last: torch.compile leaves compiled state behind.
            if "latency-compile" in runs:
                peer.latency("hf-static-compile", compiled=True)
        finally:
            peer.close()


if __name__ == "__main__":
    main()
