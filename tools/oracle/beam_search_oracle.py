"""transformers' beam search on a few existing fixtures: what Keel's use_beam_search must return.

Run from the repository root with the CPU oracle venv:

    /work/.venv-oracle/bin/python tools/oracle/beam_search_oracle.py

Writes test/fixtures/beam-search.json: per fixture and setting (num_beams, length_penalty,
early_stopping, the tokens that end a beam, max_new_tokens), for two of the fixture's prompts,
every returned beam (num_return_sequences = num_beams) as its generated tokens and score, best
first. Settings that end beams at a frequent token use that token as the only EOS, so that beams
stop at different lengths and the length penalty and early-stopping rules decide.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from greedy_reference import load_fp32

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = [ROOT / "models" / "keel-tiny"] + [ROOT / "test" / "fixtures" / name for name in ("llama-gqa", "qwen3-qknorm", "qwen3.5-hybrid")]
PROMPTS = [0, 2]
# (num_beams, length_penalty, early_stopping, stop: "eos" = the model's EOS, "greedy" = the
# fixture's third greedy token for the prompt, max_new_tokens)
SETTINGS = [
    (3, 1.0, False, "eos", 10),
    (4, 0.5, True, "greedy", 12),
    (2, 2.0, "never", "greedy", 8),
    (5, -0.5, False, "greedy", 10),
]


@torch.no_grad()
def beams(model, prompt: list[int], num_beams, length_penalty, early_stopping, eos: list[int], max_new_tokens: int):
    out = model.generate(
        torch.tensor([prompt], dtype=torch.long),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos,
        pad_token_id=eos[0],
        return_dict_in_generate=True,
        output_scores=True,
    )
    # A beam's generated length is where its beam indices (one per generated token) stop.
    lengths = (out.beam_indices >= 0).sum(dim=1).tolist()
    return [
        {"tokens": seq[len(prompt) : len(prompt) + n].tolist(), "score": float(f"{score:.6g}")}
        for seq, n, score in zip(out.sequences, lengths, out.sequences_scores.tolist())
    ]


def main() -> None:
    cases = []
    for path in FIXTURES:
        model = load_fp32(path)
        oracle = json.loads((path / "oracle.json").read_text())
        model_eos = model.generation_config.eos_token_id
        model_eos = model_eos if isinstance(model_eos, list) else [model_eos]
        for index in PROMPTS:
            prompt = oracle["prompts"][index]
            for num_beams, length_penalty, early_stopping, stop, max_new_tokens in SETTINGS:
                eos = model_eos if stop == "eos" else [oracle["greedy"][index][2]]
                cases.append(
                    {
                        "fixture": path.name,
                        "prompt": index,
                        "num_beams": num_beams,
                        "length_penalty": length_penalty,
                        "early_stopping": early_stopping,
                        "stop": stop,
                        "eos_token_ids": eos,
                        "max_new_tokens": max_new_tokens,
                        "beams": beams(model, prompt, num_beams, length_penalty, early_stopping, eos, max_new_tokens),
                    }
                )
    out = ROOT / "test" / "fixtures" / "beam-search.json"
    out.write_text(json.dumps({"transformers": __import__("transformers").__version__, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
