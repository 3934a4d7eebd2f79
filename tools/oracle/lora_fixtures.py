#!/usr/bin/env python3
"""Tiny PEFT LoRA adapters on an existing fixture, with transformers' outputs on the merged model.

Each adapter is written in PEFT's on-disk format (adapter_config.json + adapter_model.safetensors,
tensors named base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight [out, r]), without
the peft package: the oracle is transformers running the base checkpoint with every adapted weight
replaced by W + scale * B @ A (scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora),
which is what PEFT's merge_and_unload computes. Keel serves the adapter unmerged; its greedy tokens
must match and its logits stay close.

Usage:
    python3 tools/oracle/lora_fixtures.py --fixtures test/fixtures

writes test/fixtures/lora/<name>/ (adapter_config.json, adapter_model.safetensors, oracle.json)
for every adapter below, on the base fixture it names (which must exist already). The prompts
are the base fixture's, so prompts 3 and 4 share a prefix as there.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import MIN_GREEDY_MARGIN, MAX_SEED_ATTEMPTS, configure_torch, load_fixture, reference, round_sig  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODULE_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                 "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


@dataclass
class Adapter:
    name: str
    base: str
    description: str
    r: int
    lora_alpha: float
    target_modules: list[str]
    layers: list[int] | None = None
    use_rslora: bool = False
    stored_dtype: str = "float32"
    # Standard deviations of A and B: B is zero at PEFT's init, so a trained adapter is stood in
    # for by drawing both, large enough that the adapter changes the greedy output.
    std_a: float = 0.15
    std_b: float = 0.15

    @property
    def scale(self) -> float:
        return self.lora_alpha / (self.r ** 0.5 if self.use_rslora else self.r)


ADAPTERS = [
    Adapter("llama-gqa-all-r8", "llama-gqa",
            "Rank 8, lora_alpha 16 (scale 2) on every projection: q/k/v/o and gate/up/down of both layers, float32.",
            r=8, lora_alpha=16, target_modules=list(MODULE_PARENT)),
    Adapter("llama-gqa-qv-r4-rslora", "llama-gqa",
            "Rank 4, lora_alpha 4 with use_rslora (scale 4 / sqrt(4) = 2) on q_proj and v_proj of layer 1 only "
            "(layers_to_transform [1]), stored bfloat16.",
            r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], layers=[1], use_rslora=True,
            stored_dtype="bfloat16", std_a=0.3, std_b=0.3),
]


def draw_weights(adapter: Adapter, model, seed: int) -> dict[str, torch.Tensor]:
    """PEFT's tensors by name, values rounded to the stored dtype (and kept in float32)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    num_layers = model.config.num_hidden_layers
    for layer in adapter.layers if adapter.layers is not None else range(num_layers):
        for module in adapter.target_modules:
            name = f"model.layers.{layer}.{MODULE_PARENT[module]}.{module}"
            weight = model.get_submodule(name).weight
            out_features, in_features = weight.shape
            a = adapter.std_a * torch.randn((adapter.r, in_features), generator=gen)
            b = adapter.std_b * torch.randn((out_features, adapter.r), generator=gen)
            dtype = DTYPES[adapter.stored_dtype]
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.to(dtype).to(torch.float32)
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.to(dtype).to(torch.float32)
    return tensors


@torch.no_grad()
def merged(model, adapter: Adapter, tensors: dict[str, torch.Tensor]):
    """A copy of the model with W + scale * B @ A in every adapted module (PEFT's merge)."""
    import copy
    out = copy.deepcopy(model)
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len("base_model.model."):-len(".lora_A.weight")]
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        weight = out.get_submodule(module).weight
        weight.copy_(weight + adapter.scale * (b.double() @ a.double()).float())
    return out


def adapter_config(adapter: Adapter, base_dir: Path) -> dict:
    """adapter_config.json as PEFT's LoraConfig.save_pretrained writes it."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": str(base_dir),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": adapter.layers,
        "lora_alpha": adapter.lora_alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": adapter.r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": adapter.target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": adapter.use_rslora,
    }


def build(adapter: Adapter, index: int, fixtures: Path) -> dict:
    base_dir = fixtures / adapter.base
    base_oracle = json.loads((base_dir / "oracle.json").read_text())
    prompts = base_oracle["prompts"]
    model = load_fixture(base_dir)
    base_ref = reference(model, prompts)
    best = None
    for attempt in range(MAX_SEED_ATTEMPTS):
        seed = 500_000 + 1000 * index + attempt
        tensors = draw_weights(adapter, model, seed)
        ref = reference(merged(model, adapter, tensors), prompts)
        if best is None or ref["min_greedy_margin"] > best[2]["min_greedy_margin"]:
            best = (seed, tensors, ref)
        if ref["min_greedy_margin"] >= MIN_GREEDY_MARGIN:
            break
    seed, tensors, ref = best
    if ref["greedy"] == base_ref["greedy"]:
        raise RuntimeError(f"{adapter.name} leaves every greedy token of the base model unchanged: it tests nothing")
    out_dir = fixtures / "lora" / adapter.name
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[adapter.stored_dtype]
    save_file({k: v.to(dtype).contiguous() for k, v in sorted(tensors.items())}, out_dir / "adapter_model.safetensors",
              metadata={"format": "pt"})
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config(adapter, Path("..") / ".." / adapter.base), indent=2) + "\n")
    oracle = {
        "name": adapter.name,
        "base": adapter.base,
        "description": adapter.description,
        "stored_dtype": adapter.stored_dtype,
        "scale": adapter.scale,
        "prompts": prompts,
        "last_logits": [round_sig(row) for row in ref["last_logits"]],
        "greedy": ref["greedy"],
        "greedy_top_logprobs": ref["greedy_top_logprobs"],
        "max_new_tokens": base_oracle["max_new_tokens"],
        "seed": seed,
        "min_greedy_margin": ref["min_greedy_margin"],
        "base_vs_adapter_max_abs_dlogit": max(float((a - b).abs().max()) for a, b in zip(ref["last_logits"], base_ref["last_logits"])),
        "reference": "transformers on CPU, float32, eager attention, on the base fixture with every adapted weight "
                     "merged as W + scale * B @ A (PEFT's merge); KV-cached greedy loop, EOS does not stop",
        "versions": {"torch": torch.__version__},
    }
    (out_dir / "oracle.json").write_text(json.dumps(oracle, separators=(",", ":")) + "\n")
    return {"name": adapter.name, "seed": seed, "min_greedy_margin": ref["min_greedy_margin"],
            "bytes": sum(p.stat().st_size for p in out_dir.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", required=True, type=Path, help="the fixtures directory (test/fixtures)")
    args = parser.parse_args()
    configure_torch()
    for index, adapter in enumerate(ADAPTERS):
        result = build(adapter, index, args.fixtures)
        print(json.dumps(result), flush=True)
        if result["min_greedy_margin"] < MIN_GREEDY_MARGIN:
            print(f"  WARNING: min greedy margin {result['min_greedy_margin']:.2e} < {MIN_GREEDY_MARGIN}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
