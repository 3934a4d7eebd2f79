"""Keel beside llama.cpp on one GGUF file, as a Keel result (suite gguf-parity): do their greedy
continuations of the same token-id prompts agree, and how fast does each decode? Reads what
tools/peers/gguf_check.sh collects for one file:

    python3 tools/peers/gguf_parity.py --gguf FILE --gguf-type Q8_0 --model-dir bench/configs/llama-3.1-8b \
        --prompts PROMPTS.json --keel KEEL_GREEDY.json --llama LLAMA_GREEDY.json \
        [--keel-latency LATENCY.json] [--llama-bench LLAMA_BENCH.json] [--near-tie 0.25] [--out-dir DIR]
    python3 tools/peers/gguf_parity.py ... --failed "why it could not run"

(tools/peers/gguf_parity_test.py tests the judgement.)

Agreement is judged at every step of Keel's continuation, each in the same context for both
engines (the prompt and Keel's tokens before it): llama.cpp scored Keel's continuation in one
batch (tools/peers/llama_greedy.cpp). A step agrees when llama.cpp's argmax there is Keel's
token, or at a near-tie: llama.cpp's logit of its argmax exceeds its logit of Keel's token by at
most --near-tie, and Keel's logprob of its token exceeds its logprob of llama.cpp's choice by at
most as much (both engines then rank the two within rounding of each other; Keel's top logprobs
must list the other token). A file passes when every step of every prompt agrees. Also reported:
how many leading tokens of the two free-running greedy continuations are identical, and how
closely the engines' logits agree: at each step, for each of Keel's top candidates x, the
difference between Keel's logprob(token) - logprob(x) and llama.cpp's logit(token) - logit(x)
(the normalizer cancels), as its maximum and mean ("relative logit error"). Random weights give
flat distributions whose top candidates sit close together, so near-ties are common: the error
says how close "close" is.
Decode speed: Keel's batch-1 mean TPOT (keel bench latency) as tokens/s, llama-bench's tg rate.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_result  # noqa: E402


def _load(path):
    with open(path) as f:
        return json.load(f)


def compare_prompt(prompt, keel, llama, tolerance):
    """One prompt: the step-by-step judgement of Keel's continuation and the identical prefix."""
    tokens, top = keel["tokens"], keel["top"]
    scored = llama["scored"]
    if len(scored) != len(tokens) or len(top) != len(tokens):
        raise ValueError(f"{len(tokens)} Keel tokens, {len(top)} Keel logprob steps, {len(scored)} llama.cpp scores")
    disagreements = []
    errors = []
    for step, (token, keel_top, score) in enumerate(zip(tokens, top, scored)):
        llama_choice, llama_best = score["argmax"]
        other_id, llama_of_keel = score["other"]
        if other_id != token:
            raise ValueError(f"step {step}: llama.cpp scored token {other_id}, Keel chose {token}")
        keel_logprobs = dict((int(i), lp) for i, lp in keel_top)
        keel_of_keel = keel_logprobs.get(token, keel_top[0][1])
        # How far apart the engines place Keel's token above each of Keel's other candidates.
        for candidate, llama_logit in score.get("candidates", []):
            if candidate != token and candidate in keel_logprobs:
                errors.append(abs((keel_of_keel - keel_logprobs[candidate]) - (llama_of_keel - llama_logit)))
        if llama_choice == token:
            continue
        listed = llama_choice in keel_logprobs
        keel_gap = keel_of_keel - keel_logprobs[llama_choice] if listed else keel_of_keel - keel_top[-1][1]
        llama_gap = llama_best - llama_of_keel
        disagreements.append({
            "step": step,
            "keel_token": token,
            "llama_cpp_token": llama_choice,
            "llama_cpp_gap": llama_gap,
            # A lower bound when Keel's top logprobs do not list llama.cpp's choice.
            "keel_gap": keel_gap,
            "keel_lists_llama_cpp_token": listed,
            "near_tie": listed and llama_gap <= tolerance and keel_gap <= tolerance,
        })
    greedy = llama["greedy"]
    prefix = next((i for i, (a, b) in enumerate(zip(tokens, greedy)) if a != b), min(len(tokens), len(greedy)))
    gaps = [a[1] - b[1] for a, b in llama["greedy_top2"]]
    return {
        "prompt_len": len(prompt),
        "generated": len(tokens),
        "identical_greedy_prefix": prefix,
        "steps_agreeing": len(tokens) - len(disagreements),
        "disagreements": disagreements,
        "llama_cpp_min_top2_gap": min(gaps) if gaps else None,
        "max_relative_logit_error": max(errors) if errors else None,
        "mean_relative_logit_error": sum(errors) / len(errors) if errors else None,
        "passed": all(d["near_tie"] for d in disagreements),
    }


def keel_tokens_per_s(latency):
    batches = (latency.get("results") or {}).get("batches") or []
    row = next((b for b in batches if b["batch_size"] == 1), None)
    return None if row is None or not row.get("mean_tpot_ms") else 1000 / row["mean_tpot_ms"]


def llama_tokens_per_s(entries):
    tg = [e for e in entries if e.get("n_gen", 0) > 0 and e.get("n_prompt", 0) == 0 and not e.get("n_depth")]
    return float(tg[0]["avg_ts"]) if tg else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--gguf-type", required=True, help="the file's type as llama-quantize named it (F16, Q8_0, Q4_K_M)")
    parser.add_argument("--model-dir", required=True, help="the config.json the file was made from")
    parser.add_argument("--prompts")
    parser.add_argument("--keel")
    parser.add_argument("--llama")
    parser.add_argument("--keel-latency")
    parser.add_argument("--llama-bench")
    parser.add_argument("--near-tie", type=float, default=0.25)
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--llama-cpp-commit")
    parser.add_argument("--failed")
    parser.add_argument("--out-dir", default=bench_result.RESULTS_DIR)
    args = parser.parse_args()

    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    error = args.failed
    results = None
    gpu = None
    if error is None:
        try:
            prompts = _load(args.prompts)["prompts"]
            keel, llama = _load(args.keel), _load(args.llama)
            if len(keel["prompts"]) != len(prompts) or len(llama["prompts"]) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts, {len(keel['prompts'])} Keel results, {len(llama['prompts'])} llama.cpp results")
            judged = [compare_prompt(p, k, l, args.near_tie) for p, k, l in zip(prompts, keel["prompts"], llama["prompts"])]
            latency = _load(args.keel_latency) if args.keel_latency else None
            bench = _load(args.llama_bench) if args.llama_bench else None
            gpu = keel.get("device")
            results = {
                "gguf_type": args.gguf_type,
                "gguf_bytes": os.path.getsize(args.gguf) if os.path.exists(args.gguf) else None,
                "near_tie_tolerance": args.near_tie,
                "prompts": judged,
                "passed": all(j["passed"] for j in judged),
                "max_relative_logit_error": max((j["max_relative_logit_error"] for j in judged if j["max_relative_logit_error"] is not None), default=None),
                "keel_load_seconds": keel.get("load_seconds"),
                "keel_decode_tokens_per_s": keel_tokens_per_s(latency) if latency else None,
                "llama_cpp_decode_tokens_per_s": llama_tokens_per_s(bench) if bench else None,
            }
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            error = f"the runs' outputs are unreadable: {e!r}"
    res = bench_result.result(
        "gguf-parity",
        "keel",
        bench_result.device(args.backend, gpu, None),
        bench_result.model_info(args.model_dir, config, bench_result.parameter_count(config), dtype=args.gguf_type.lower()),
        {"gguf": args.gguf, "gguf_type": args.gguf_type, "prompts": args.prompts, "llama_cpp_commit": args.llama_cpp_commit, "greedy": True},
        {"llama.cpp": args.llama_cpp_commit or "unknown"},
        results=results,
        error=error,
    )
    bench_result.write(res, args.out_dir)
    if results is not None:
        for i, j in enumerate(results["prompts"]):
            print(f"[{args.gguf_type}] prompt {i}: identical greedy prefix {j['identical_greedy_prefix']}/{j['generated']}, "
                  f"steps agreeing {j['steps_agreeing']}/{j['generated']}" + "".join(
                      f"; step {d['step']}: Keel {d['keel_token']} vs llama.cpp {d['llama_cpp_token']} (gaps {d['keel_gap']:.3g} / {d['llama_cpp_gap']:.3g}{', near-tie' if d['near_tie'] else ', NOT a near-tie'})"
                      for d in j["disagreements"]))
        speeds = (results["keel_decode_tokens_per_s"], results["llama_cpp_decode_tokens_per_s"])
        print(f"[{args.gguf_type}] {'PASSED' if results['passed'] else 'FAILED'} (relative logit error at most {results['max_relative_logit_error']}); batch-1 decode Keel {speeds[0] and f'{speeds[0]:.1f}'} tok/s, llama.cpp {speeds[1] and f'{speeds[1]:.1f}'} tok/s")


if __name__ == "__main__":
    main()
