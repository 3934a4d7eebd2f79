"""Keel's benchmark result JSON (src/bench/result-schema.ts) written from Python, and Keel's
random dataset (src/bench/random-dataset.ts) reproduced bit for bit, so the peers run the very
prompts Keel runs. Standard library only: it also runs where torch is absent.

As a command it records llama.cpp's results (see llama_cpp.sh):
    python3 bench_result.py llama-bench --model-dir DIR --llama-bench-json FILE [--out-dir DIR]
    python3 bench_result.py llama-bench --model-dir DIR --failed "why it could not run"
    python3 bench_result.py llama-batched-bench --model-dir DIR --jsonl FILE --args "-npp 128 -ntg 128 -npl 1,64"
    python3 bench_result.py llama-batched-bench --model-dir DIR --failed "why it could not run"
    python3 bench_result.py random-requests --num-prompts N --input-len A:B --output-len C:D --vocab-size V --seed S
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
SCHEMA_VERSION = 1
MASK = 0xFFFFFFFF


# --- Keel's seeded generator (src/sampling/rng.ts): xoshiro128** seeded through fmix32 ---

def _fmix32(x):
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK
    x ^= x >> 16
    return x


def _rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & MASK


class Xoshiro128StarStar:
    def __init__(self, state):
        self.s = [w & MASK for w in state]

    def next_uint32(self):
        s0, s1, s2, s3 = self.s
        result = (_rotl((s1 * 5) & MASK, 7) * 9) & MASK
        t = (s1 << 9) & MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 11)
        self.s = [s0, s1, s2, s3]
        return result

    def next_float(self):
        high = self.next_uint32() >> 5
        low = self.next_uint32() >> 6
        return (high * 67108864 + low) / 9007199254740992


def fork_stream(seed, stream_index):
    low = seed & MASK
    high = (seed // 4294967296) & MASK
    rng = Xoshiro128StarStar([_fmix32(low ^ 0x9E3779B9), _fmix32(high ^ 0x85EBCA6B), _fmix32(stream_index ^ 0xC2B2AE35), 0x27D4EB2F])
    for _ in range(16):
        rng.next_uint32()
    return rng


def uniform_int(rng, lo, hi):
    return lo + math.floor(rng.next_float() * (hi - lo + 1))


def random_requests(num_prompts, input_len, output_len, vocab_size, seed):
    """[(prompt_token_ids, output_len)]: Keel's randomRequests for (min, max) length ranges."""
    lengths = fork_stream(seed, 0)
    tokens = fork_stream(seed, 1)
    requests = []
    for _ in range(num_prompts):
        n_in = uniform_int(lengths, *input_len)
        n_out = uniform_int(lengths, *output_len)
        requests.append(([uniform_int(tokens, 0, vocab_size - 1) for _ in range(n_in)], n_out))
    return requests


# --- the result envelope ---

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_model():
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _nvidia_driver():
    for word in _read("/proc/driver/nvidia/version").split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def device(backend=None, name=None, cuda_version=None):
    return {
        "backend": backend,
        "name": name,
        "driver": _nvidia_driver(),
        "cuda_version": cuda_version,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
    }


def parameter_count(c):
    """Parameters a config.json implies, as src/bench/roofline.ts counts them (a tied table once):
    dense Llama/Mistral/Qwen2/Qwen3, Qwen3-MoE and DeepSeek-V2 (every expert counted)."""
    h, v = c["hidden_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    if c["model_type"] == "qwen3_moe":
        layers = [_qwen3_moe_layer(c, i) for i in range(c["num_hidden_layers"])]
    elif c["model_type"] == "deepseek_v2":
        layers = [_deepseek_v2_layer(c, i) for i in range(c["num_hidden_layers"])]
    else:
        kv_heads = c.get("num_key_value_heads") or heads
        head_dim = c.get("head_dim") or h // heads
        m = c["intermediate_size"]
        qkv_rows = (heads + 2 * kv_heads) * head_dim
        bias = c["model_type"] == "qwen2" or (c["model_type"] in ("llama", "qwen3") and c.get("attention_bias"))
        out_bias = c["model_type"] in ("llama", "qwen3") and c.get("attention_bias")
        layer = 2 * h + qkv_rows * h + heads * head_dim * h + 3 * h * m
        layer += qkv_rows if bias else 0
        layer += h if out_bias else 0
        layer += 2 * head_dim if c["model_type"] == "qwen3" else 0
        layers = [layer] * c["num_hidden_layers"]
    return v * h + sum(layers) + h + (0 if c.get("tie_word_embeddings") else v * h)


def _qwen3_moe_layer(c, i):
    h, heads = c["hidden_size"], c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    d = c.get("head_dim") or h // heads
    attention = (heads + 2 * kv_heads) * d * h + heads * d * h + 2 * d
    e = c.get("num_experts") or 0
    sparse = e > 0 and i not in (c.get("mlp_only_layers") or []) and (i + 1) % (c.get("decoder_sparse_step") or 1) == 0
    mlp = e * h + e * 3 * h * c["moe_intermediate_size"] if sparse else 3 * h * c["intermediate_size"]
    return 2 * h + attention + mlp


def _deepseek_v2_layer(c, i):
    h, heads = c["hidden_size"], c["num_attention_heads"]
    nope, rope, v, kv_lora, q_lora = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"], c.get("q_lora_rank")
    q = q_lora * h + q_lora + heads * (nope + rope) * q_lora if q_lora else heads * (nope + rope) * h
    attention = q + (kv_lora + rope) * h + kv_lora + heads * (nope + v) * kv_lora + h * heads * v
    if i < (c.get("first_k_dense_replace") or 0):
        mlp = 3 * h * c["intermediate_size"]
    else:
        e, m = c["n_routed_experts"], c["moe_intermediate_size"]
        mlp = e * h + e * 3 * h * m + 3 * h * m * (c.get("n_shared_experts") or 0)
    return 2 * h + attention + mlp


def model_info(model_dir, config, parameter_count, dtype="bf16"):
    return {
        "name": os.path.basename(os.path.normpath(model_dir)),
        "path": os.path.relpath(os.path.abspath(model_dir), REPO_ROOT) if os.path.abspath(model_dir).startswith(REPO_ROOT) else model_dir,
        "model_type": config["model_type"],
        "parameter_count": int(parameter_count),
        "load_format": "dummy",
        "dtype": dtype,
    }


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def result(suite, engine, dev, model, config, software, results=None, error=None, started=None):
    """A result as src/bench/result-schema.ts defines it: results when it ran, error when not;
    dated when the run started (`started`, from now()), else now."""
    # As in src/bench/run-environment.ts: a copy of the tree (the GPU host's) names its commit in
    # KEEL_GIT_COMMIT / KEEL_GIT_DIRTY, since any repository it carries may be stale.
    head = os.environ.get("KEEL_GIT_COMMIT") or _git("rev-parse", "HEAD")
    if os.environ.get("KEEL_GIT_COMMIT"):
        changes = None if "KEEL_GIT_DIRTY" not in os.environ else ("dirty" if os.environ["KEEL_GIT_DIRTY"] == "1" else "")
    else:
        changes = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "status": "failed" if error is not None else "ok",
        "error": error,
        "date": started or now(),
        "git_commit": head,
        "git_dirty": None if head is None or changes is None else changes != "",
        "software": {"python": platform.python_version(), **software},
        "device": dev,
        "model": model,
        "config": config,
        "suite": suite,
        "results": None if error is not None else results,
    }


def write(res, out_dir=RESULTS_DIR):
    stamp = res["date"].split(".")[0].replace(":", "-") + "Z"
    model = res["model"]["name"] if res["model"] else "none"
    path = os.path.join(out_dir, f"{res['suite']}-{res['engine']}-{model}-{res['device']['backend'] or 'unknown'}-{stamp}.json")
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"wrote {path}" + (f" (failed: {res['error']})" if res["error"] else ""))
    return path


def summary(metric, values):
    """mean_/median_/p90_/p99_<metric> with numpy's linear interpolation, as src/bench/statistics.ts."""
    def pct(p):
        s = sorted(values)
        rank = p / 100 * (len(s) - 1)
        below = math.floor(rank)
        above = min(below + 1, len(s) - 1)
        return s[below] + (s[above] - s[below]) * (rank - below)
    if not values:
        return {f"{k}_{metric}": None for k in ("mean", "median", "p90", "p99")}
    return {f"mean_{metric}": sum(values) / len(values), f"median_{metric}": pct(50), f"p90_{metric}": pct(90), f"p99_{metric}": pct(99)}


# --- llama.cpp ---

def llama_bench_tests(entries):
    """llama-bench -o json rows -> [{name: pp512 | tg128 | tg128@d8192, tokens_per_s, stddev}]
    (the name as llama-bench's own table spells it: @dN when N tokens were in the KV cache first)."""
    tests = []
    for e in entries:
        name = f"pp{e['n_prompt']}" if e.get("n_gen", 0) == 0 else f"tg{e['n_gen']}"
        if e.get("n_prompt", 0) and e.get("n_gen", 0):
            name = f"pp{e['n_prompt']}+tg{e['n_gen']}"
        depth = int(e.get("n_depth", 0))
        if depth:
            name += f"@d{depth}"
        tests.append({"name": name, "tokens_per_s": float(e["avg_ts"]), "stddev": float(e["stddev_ts"]) if "stddev_ts" in e else None})
    return tests


def _llama_bench_command(args):
    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    gpu = None
    tests = None
    build = {}
    error = args.failed
    if error is None:
        try:
            with open(args.llama_bench_json) as f:
                entries = json.load(f)
            tests = llama_bench_tests(entries)
            gpu = (entries[0].get("gpu_info") or entries[0].get("cpu_info")) if entries else None
            build = {k: entries[0][k] for k in ("build_commit", "build_number", "backends", "model_n_params", "model_size") if entries and k in entries[0]}
        except (OSError, ValueError, KeyError) as e:
            error = f"llama-bench output unreadable: {e}"
    params = parameter_count(config)
    res = result(
        "llama-bench",
        "llama.cpp",
        device(args.backend, gpu, None),
        model_info(args.model_dir, config, params, dtype=args.dtype),
        {"gguf": args.gguf, "tests": args.tests, "flash_attn": True, "n_gpu_layers": 99, "llama_cpp_commit": args.llama_cpp_commit,
         "llama_cpp_source": args.llama_cpp_source, **build},
        {"llama.cpp": args.llama_cpp_commit or "unknown"},
        results=None if error else {"tests": tests},
        error=error,
    )
    write(res, args.out_dir)


def _int_list(args, flag):
    """The comma-separated integers after flag in a command line, or None."""
    words = args.split()
    if flag not in words or words.index(flag) + 1 >= len(words):
        return None
    return [int(x) for x in words[words.index(flag) + 1].split(",")]


def batched_bench_runs(rows):
    """llama-batched-bench --output-format jsonl rows -> runs: prompt tokens per sequence (pp),
    tokens generated per sequence (tg), sequences (pl), KV cells used (n_kv); prefill time and
    rate over all sequences' prompts (t_pp, speed_pp); decode time, rate (t_tg, speed_tg: pl * tg
    tokens over t_tg) and time per decode step (t_tg / tg, which Keel's latency suite calls TPOT);
    total time and rate (t, speed)."""
    return [{
        "prompt_tokens": int(r["pp"]),
        "generated_tokens": int(r["tg"]),
        "sequences": int(r["pl"]),
        "kv_tokens": int(r["n_kv"]),
        "prefill_s": float(r["t_pp"]),
        "prefill_tokens_per_s": float(r["speed_pp"]),
        "decode_s": float(r["t_tg"]),
        "decode_tokens_per_s": float(r["speed_tg"]),
        "decode_ms_per_step": float(r["t_tg"]) * 1000 / int(r["tg"]) if int(r["tg"]) else 0.0,
        "total_s": float(r["t"]),
        "tokens_per_s": float(r["speed"]),
    } for r in rows]


def read_batched_bench_jsonl(path):
    """The JSON rows of llama-batched-bench's output (its other lines are logs)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and '"speed_tg"' in line:
                rows.append(json.loads(line))
    return rows


def _gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _batched_bench_command(args):
    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    error, runs, settings = args.failed, None, {}
    if error is None:
        try:
            rows = read_batched_bench_jsonl(args.jsonl)
            if not rows:
                raise ValueError("no result rows")
            runs = batched_bench_runs(rows)
            settings = {k: rows[0][k] for k in ("n_kv_max", "n_batch", "n_ubatch", "flash_attn", "is_pp_shared", "n_gpu_layers", "n_threads") if k in rows[0]}
            # llama-batched-bench skips, silently, every combination its context cannot hold.
            wanted = [_int_list(args.args, f) for f in ("-npp", "-ntg", "-npl")]
            if all(wanted):
                missing = [(pp, tg, pl) for pp in wanted[0] for tg in wanted[1] for pl in wanted[2]
                           if not any((r["prompt_tokens"], r["generated_tokens"], r["sequences"]) == (pp, tg, pl) for r in runs)]
                if missing:
                    raise ValueError(f"no row for (pp, tg, pl) {missing} (a context smaller than pl * (pp + tg)?)")
        except (OSError, ValueError, KeyError) as e:
            error = f"llama-batched-bench output unreadable: {e}"
    res = result(
        "llama-batched-bench",
        "llama.cpp",
        device(args.backend, _gpu_name() if args.backend == "cuda" else _cpu_model(), None),
        model_info(args.model_dir, config, parameter_count(config), dtype="f16"),
        {"gguf": args.gguf, "args": args.args, "llama_cpp_commit": args.llama_cpp_commit, "llama_cpp_source": args.llama_cpp_source, **settings},
        {"llama.cpp": args.llama_cpp_commit or "unknown"},
        results=None if error else {"runs": runs},
        error=error,
    )
    write(res, args.out_dir)


def _random_requests_command(args):
    span = lambda s: tuple(int(x) for x in s.split(":"))
    reqs = random_requests(args.num_prompts, span(args.input_len), span(args.output_len), args.vocab_size, args.seed)
    json.dump([{"promptTokenIds": ids, "outputLen": n} for ids, n in reqs], sys.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lb = sub.add_parser("llama-bench", help="record llama-bench's JSON output (or why it could not run) as a Keel result")
    lb.add_argument("--model-dir", required=True, help="the architecture's directory (bench/configs/NAME)")
    lb.add_argument("--llama-bench-json", help="llama-bench -o json output")
    lb.add_argument("--failed", help="the reason llama.cpp could not run; records a failed result")
    lb.add_argument("--gguf", help="the GGUF file that was benchmarked")
    lb.add_argument("--llama-cpp-commit", help="the llama.cpp version benchmarked (tag and commit)")
    lb.add_argument("--llama-cpp-source", help="where that source came from (e.g. the npm package that bundles it)")
    lb.add_argument("--tests", default="pp512,tg128", help="the llama-bench tests asked for, as recorded in the config")
    lb.add_argument("--backend", default="cuda", help="device backend of the result (cpu for a CPU build)")
    lb.add_argument("--dtype", default="f16", help="the GGUF's weight type as the result's model records it (f16, q8_0, q4_k_m)")
    lb.add_argument("--out-dir", default=RESULTS_DIR)
    bb = sub.add_parser("llama-batched-bench", help="record llama-batched-bench's JSONL output (or why it could not run) as a Keel result")
    bb.add_argument("--model-dir", required=True, help="the architecture's directory (bench/configs/NAME)")
    bb.add_argument("--jsonl", help="llama-batched-bench --output-format jsonl output (log lines are skipped)")
    bb.add_argument("--failed", help="the reason llama.cpp could not run; records a failed result")
    bb.add_argument("--gguf", help="the GGUF file that was benchmarked")
    bb.add_argument("--args", default="", help="the llama-batched-bench arguments, as recorded in the config (-npp/-ntg/-npl are checked against the rows)")
    bb.add_argument("--llama-cpp-commit", help="the llama.cpp version benchmarked (tag and commit)")
    bb.add_argument("--llama-cpp-source", help="where that source came from")
    bb.add_argument("--backend", default="cuda", help="device backend of the result (cpu for a CPU build)")
    bb.add_argument("--out-dir", default=RESULTS_DIR)
    rr = sub.add_parser("random-requests", help="print Keel's random dataset as JSON (for checking the port)")
    rr.add_argument("--num-prompts", type=int, required=True)
    rr.add_argument("--input-len", required=True, help="MIN:MAX")
    rr.add_argument("--output-len", required=True, help="MIN:MAX")
    rr.add_argument("--vocab-size", type=int, required=True)
    rr.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "llama-bench":
        if args.failed is None and args.llama_bench_json is None:
            parser.error("give --llama-bench-json or --failed")
        _llama_bench_command(args)
    elif args.command == "llama-batched-bench":
        if args.failed is None and args.jsonl is None:
            parser.error("give --jsonl or --failed")
        _batched_bench_command(args)
    else:
        _random_requests_command(args)


if __name__ == "__main__":
    main()
