#!/usr/bin/env python3
"""Draw random small config variants of every family Keel serves and check Keel against transformers on each.

For each family this draws config variants from the keys transformers' config class for that family
reads (head_dim, KV heads, biases, tied heads, every RoPE type the family allows with its extra keys,
sliding windows and layer types, activations, softcaps, MoE routing keys, ...), builds each as a tiny
random-weight checkpoint with make_fixtures.build_fixture (the same weights, prompts, save/reload and
oracle.json as the committed fixtures), then runs scripts/oracle-check.ts on them: Keel's CPU backend,
the parity suite's logit tolerance and exact greedy tokens; with --engine, under every engine
variant of the parity suite and tensor and pipeline parallel 2 as well.

Usage:
    python3 tools/oracle/config_fuzz.py --out DIR [--families llama,gemma2] [--variants 6] [--seed 0]
                                        [--engine] [--no-check] [--keep]

Variants are seeded by (seed, family, index): `--seed S --families F --variants N` redraws the same N.
DIR/<family>-<seed>-<index>/ holds each checkpoint and DIR/results.jsonl one line per variant:
{"name", "family", "status": ok | keel-failed | oracle-invalid, "config": the drawn keys, ...}.
oracle-invalid means transformers itself refused the config (not a Keel bug). Without --keep,
the checkpoints of passing variants are deleted after the check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import make_fixtures as mf

REPO = Path(__file__).resolve().parents[2]
# Fewer re-draws than the committed fixtures: a variant that keeps a near-tie is reported as such
# (its min margins are in results.jsonl) rather than drawn for minutes.
mf.MAX_SEED_ATTEMPTS = 3
mf.MOE_SEED_ATTEMPTS = 6
# The CPU check compares with the float32 reference only: skip transformers' bfloat16 run (slow on CPU).
mf.bf16_reference = lambda model, prompts, last_logits: {}
# The Hub-layout check pins the committed fixtures to published checkpoints' names; a drawn variant
# (Gemma 2 with its own lm_head, Qwen2-MoE without a dense layer) may leave that layout and still be
# one transformers builds and saves.
mf.check_hub_layout = lambda model_type, tensors, config: None

ACTS = ("silu", "gelu", "gelu_pytorch_tanh", "relu", "gelu_new")


def act(r: random.Random, default: str) -> str:
    """Mostly the family's own activation: other ones are drawn, but must not crowd out the other keys."""
    return default if r.random() < 0.7 else r.choice(ACTS)


def heads(r: random.Random, hidden: int) -> dict:
    """Query heads, KV heads from 1 to all of them, and (every family's modeling code reads it) often an explicit head_dim."""
    n = r.choice((2, 4, 8))
    kv = r.choice([k for k in (1, 2, 4, 8) if n % k == 0])
    out = dict(hidden_size=hidden, num_attention_heads=n, num_key_value_heads=kv)
    if r.random() < 0.6:
        out["head_dim"] = r.choice((8, 16, 24, 32))
    return out


def base(r: random.Random) -> dict:
    return mf._fields(
        vocab_size=r.choice((256, 300)),
        intermediate_size=r.choice((32, 80, 36)),
        num_hidden_layers=r.choice((1, 2, 3)),
        rms_norm_eps=r.choice((1e-6, 1e-5, 1e-2)),
        tie_word_embeddings=r.random() < 0.4,
        **heads(r, r.choice((48, 64))),
    )


def head_dim_of(fields: dict, default: int | None = None) -> int:
    """The head size transformers will use: head_dim, else the config class's default, else hidden / heads."""
    return fields.get("head_dim") or default or fields["hidden_size"] // fields["num_attention_heads"]


def rope(r: random.Random, fields: dict, types=("default", "linear", "dynamic", "yarn", "llama3", "longrope"),
         partial: float = 1.0, head_dim_default: int | None = None) -> dict:
    """A RoPE dict of one of `types`, with that type's optional keys drawn too."""
    kind = r.choice(types)
    theta = r.choice((100.0, 10000.0, 500000.0))
    if kind == "default":
        return mf._rope("default", theta)
    if kind == "linear":
        return mf._rope("linear", theta, factor=r.choice((2.0, 4.0)))
    if kind == "dynamic":
        # transformers rescales past max_position_embeddings: make the decodes cross it.
        fields["max_position_embeddings"] = 48
        return mf._rope("dynamic", theta, factor=r.choice((2.0, 4.0)))
    if kind == "llama3":
        return mf._rope("llama3", theta, factor=r.choice((4.0, 8.0)), low_freq_factor=r.choice((1.0, 2.0)),
                        high_freq_factor=r.choice((4.0, 8.0)), original_max_position_embeddings=32)
    if kind == "yarn":
        extra = dict(factor=r.choice((2.0, 4.0)), original_max_position_embeddings=32)
        if r.random() < 0.5:
            extra.update(beta_fast=r.choice((8.0, 32.0)), beta_slow=r.choice((1.0, 2.0)))
        pick = r.random()
        if pick < 0.25:
            extra["attention_factor"] = r.choice((0.8, 1.3))
        elif pick < 0.5:
            extra.update(mscale=r.choice((0.707, 1.0)), mscale_all_dim=r.choice((0.707, 1.0)))
        if r.random() < 0.4:
            extra["truncate"] = False
        return mf._rope("yarn", theta, **extra)
    half = int(head_dim_of(fields, head_dim_default) * partial) // 2
    extra = dict(short_factor=[round(1 + r.random() * 0.5, 3) for _ in range(half)],
                 long_factor=[round(1 + r.random() * 5, 3) for _ in range(half)],
                 original_max_position_embeddings=32)
    if r.random() < 0.3:
        extra["attention_factor"] = r.choice((0.9, 1.2))
    if r.random() < 0.5:
        # Read for the attention factor instead of max / original (and by DeepSeek's softmax mscale).
        extra["factor"] = r.choice((2.0, 8.0))
    return mf._rope("longrope", theta, **extra)


def sliding(r: random.Random, fields: dict, qwen: bool) -> None:
    window = r.choice((None, 8, 16, 32))
    fields["sliding_window"] = window
    if qwen:
        fields["use_sliding_window"] = window is not None and r.random() < 0.8
        if r.random() < 0.5:
            fields["max_window_layers"] = r.choice((0, 1, 2))
        elif fields["use_sliding_window"] and r.random() < 0.5:
            # Without use_sliding_window transformers sets the window to None, and a sliding layer then fails.
            fields["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(fields["num_hidden_layers"])]


def fx(name: str, model_type: str, fields: dict, rope_: dict, **kw) -> mf.Fixture:
    if model_type in mf.MOE_MODEL_TYPES and fields["num_hidden_layers"] == 1:
        # Room for a MoE layer beside a dense first one (first_k_dense_replace, mlp_only_layers, moe_layers).
        fields["num_hidden_layers"] = 2
    if fields.get("max_position_embeddings") == 48:
        # Dynamic RoPE: prompts that fit in 48 positions, whose decodes cross it (as llama-rope-dynamic's).
        kw["prompt_lengths"] = (5, 17, 40, 45)
    return mf.Fixture(name, model_type, f"config_fuzz variant {name}", fields, rope_, **kw)


# --- one generator per family: (rng, name) -> Fixture


def gen_llama(r, name):
    f = base(r)
    f.update(attention_bias=r.random() < 0.5, mlp_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    return fx(name, "llama", f, rope(r, f))


def gen_mistral(r, name):
    f = base(r)
    f["hidden_act"] = act(r, "silu")
    sliding(r, f, qwen=False)
    return fx(name, "mistral", f, rope(r, f))


def gen_ministral3(r, name):
    f = base(r)
    f["hidden_act"] = act(r, "silu")
    sliding(r, f, qwen=False)
    # Ministral3Config's head_dim defaults to 128, not hidden / heads.
    rope_ = rope(r, f, head_dim_default=128)
    # Every query is scaled by 1 + llama_4_scaling_beta * ln(1 + floor(p / original_max_position_embeddings)):
    # an original context the prompts cross (every RoPE type needs one here, as transformers reads it).
    rope_.update(llama_4_scaling_beta=r.choice((0.1, 0.5, 1.0)), original_max_position_embeddings=r.choice((8, 16, 32)))
    return fx(name, "ministral3", f, rope_)


def gen_qwen2(r, name):
    f = base(r)
    f["hidden_act"] = act(r, "silu")
    sliding(r, f, qwen=True)
    return fx(name, "qwen2", f, rope(r, f))


def gen_qwen3(r, name):
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    sliding(r, f, qwen=True)
    # Qwen3Config's head_dim defaults to 128, not hidden / heads.
    return fx(name, "qwen3", f, rope(r, f, head_dim_default=128))


GEMMA_NORMS = ((r"^model\.norm\.weight$", 2.0, 0.1), (r"post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1))


def gen_gemma(r, name):
    f = base(r)
    f.update(head_dim=f.get("head_dim", 16), attention_bias=r.random() < 0.4, hidden_act=act(r, "gelu_pytorch_tanh"))
    return fx(name, "gemma", f, rope(r, f), norm_center=0.0, init_overrides=GEMMA_NORMS[:1])


def _gemma2_fields(r):
    f = base(r)
    f.update(head_dim=f.get("head_dim", 16), attention_bias=r.random() < 0.4, hidden_activation=act(r, "gelu_pytorch_tanh"),
             query_pre_attn_scalar=r.choice((16, 24, 64)), sliding_window=r.choice((8, 16, 32)),
             attn_logit_softcapping=r.choice((None, 20.0, 50.0)), final_logit_softcapping=r.choice((None, 10.0, 30.0)))
    if r.random() < 0.4:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(f["num_hidden_layers"])]
    return f


def gen_gemma2(r, name):
    f = _gemma2_fields(r)
    return fx(name, "gemma2", f, rope(r, f), norm_center=0.0, init_overrides=GEMMA_NORMS)


def _gemma3_text(r):
    f = _gemma2_fields(r)
    f["num_hidden_layers"] = r.choice((2, 3, 4))
    f.pop("layer_types", None)
    if r.random() < 0.5:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(f["num_hidden_layers"])]
    else:
        f["sliding_window_pattern"] = r.choice((2, 3))
    rope_ = {"sliding_attention": rope(r, f, ("default", "linear")), "full_attention": rope(r, f, ("default", "linear", "yarn", "llama3"))}
    return f, rope_


def gen_gemma3_text(r, name):
    f, rope_ = _gemma3_text(r)
    return fx(name, "gemma3_text", f, rope_, norm_center=0.0, init_overrides=GEMMA_NORMS)


def gen_gemma3(r, name):
    f, rope_ = _gemma3_text(r)
    tied = r.random() < 0.8
    f["tie_word_embeddings"] = tied
    return fx(name, "gemma3", f, rope_, norm_center=0.0, text_model_type="gemma3_text",
              init_overrides=((r"^model\.language_model\.norm\.weight$", 2.0, 0.1),
                              (r"language_model\.layers\.\d+\.post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1)),
              wrapper_fields=dict(tie_word_embeddings=tied, mm_tokens_per_image=4,
                                  vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, image_size=28, patch_size=14)))


def _gemma4_text(r):
    """Gemma4TextConfig's keys: per-layer head dims and kv heads, keys as values, KV-shared layers, double-wide MLPs,
    per-layer inputs, the mixture of experts beside the dense MLP, proportional RoPE on the full layers."""
    f = base(r)
    n = f["num_hidden_layers"] = r.choice((2, 3, 4, 5))
    f.update(head_dim=f.get("head_dim", 16), attention_bias=r.random() < 0.3, hidden_activation=act(r, "gelu_pytorch_tanh"),
             sliding_window=r.choice((8, 16, 32)), global_head_dim=r.choice((16, 32, 48)),
             attention_k_eq_v=r.random() < 0.5, final_logit_softcapping=r.choice((None, 10.0, 30.0)),
             use_double_wide_mlp=r.random() < 0.5, vocab_size_per_layer_input=f["vocab_size"],
             hidden_size_per_layer_input=r.choice((0, 0, 4, 8)))
    if r.random() < 0.3:
        f["use_bidirectional_attention"] = "vision"
    if f["attention_k_eq_v"] and r.random() < 0.7:
        f["num_global_key_value_heads"] = r.choice([k for k in (1, 2, 4) if f["num_attention_heads"] % k == 0])
    if r.random() < 0.7:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    types = list(f.get("layer_types") or ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)])
    types[-1] = "full_attention"
    # The last layers may read the last earlier layer of their type: only where every one of them has one.
    shared = r.choice(range(n))
    if any(t not in types[:n - shared] for t in types[n - shared:]):
        shared = 0
    f["num_kv_shared_layers"] = shared
    if r.random() < 0.4:
        f.update(enable_moe_block=True, num_experts=r.choice((4, 8)), top_k_experts=r.choice((1, 2)),
                 moe_intermediate_size=r.choice((8, 16)))
    full = r.choice(("proportional", "proportional", "default", "linear"))
    full_rope = (mf._rope("proportional", r.choice((10000.0, 1000000.0)), partial_rotary_factor=r.choice((0.25, 0.5, 1.0)),
                          **({"factor": 2.0} if r.random() < 0.3 else {}))
                 if full == "proportional" else rope(r, f, (full,)))
    return f, {"sliding_attention": rope(r, f, ("default", "linear")), "full_attention": full_rope}


# Gemma 4's layer_scalar buffers around 1 (a draw around 0 all but erases the residual stream), its routers wide.
GEMMA4_DRAWS = ((r"layer_scalar$", 1.0, 0.2), (r"router\.proj\.weight$", 0.0, 0.3), (r"router\.(scale|per_expert_scale)$", 1.0, 0.2))


def _gemma4_overrides(f: dict) -> tuple:
    return GEMMA4_DRAWS if f.get("enable_moe_block") else GEMMA4_DRAWS[:1]


def gen_gemma4_text(r, name):
    f, rope_ = _gemma4_text(r)
    return fx(name, "gemma4_text", f, rope_, init_overrides=_gemma4_overrides(f))


def gen_gemma4(r, name):
    f, rope_ = _gemma4_text(r)
    return fx(name, "gemma4", f, rope_, text_model_type="gemma4_text", init_overrides=_gemma4_overrides(f),
              wrapper_fields=dict(tie_word_embeddings=r.random() < 0.8))


def gen_mistral3(r, name):
    f = base(r)
    sliding(r, f, qwen=False)
    return fx(name, "mistral3", f, rope(r, f), text_model_type="mistral",
              wrapper_fields=dict(tie_word_embeddings=f["tie_word_embeddings"] if r.random() < 0.7 else not f["tie_word_embeddings"],
                                  vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, head_dim=8, image_size=28, patch_size=14)))


def gen_phi3(r, name):
    f = base(r)
    f.update(hidden_act=act(r, "silu"), original_max_position_embeddings=32, sliding_window=r.choice((None, 16)))
    # Phi3Config checks longrope's factor lists against hidden_size / num_attention_heads, not a head_dim
    # key (which its attention would read): Phi-3 checkpoints carry none, so neither do the variants.
    f.pop("head_dim", None)
    # int(head_dim * factor) must be even (rotate_half pairs), as for GLM below.
    partial = r.choice([p for p in (1.0, 0.5, 0.75) if int(head_dim_of(f) * p) % 2 == 0])
    # Phi3Config accepts default and longrope only.
    rope_ = rope(r, f, ("default", "longrope"), partial)
    if partial != 1.0:
        rope_["partial_rotary_factor"] = partial
    return fx(name, "phi3", f, rope_)


MOE_ROUTER = ((r"\.mlp\.gate\.weight$", 0.0, 0.3),)


def gen_mixtral(r, name):
    f = base(r)
    f.update(hidden_act=act(r, "silu"), num_local_experts=r.choice((4, 6)), num_experts_per_tok=r.choice((1, 2, 3)),
             intermediate_size=32)
    if r.random() < 0.3:
        # MixtralConfig has no such key: transformers always renormalizes.
        f["norm_topk_prob"] = False
    sliding(r, f, qwen=False)
    rope_ = rope(r, f)
    if rope_["rope_type"] in ("dynamic", "yarn"):
        # transformers' dynamic NTK and YaRN read config.head_dim, which MixtralConfig leaves None unless given.
        f.setdefault("head_dim", f["hidden_size"] // f["num_attention_heads"])
    return fx(name, "mixtral", f, rope_, init_overrides=MOE_ROUTER)


def _some_sparse_layer(f):
    """At least one MoE layer (i sparse when not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0)."""
    n = f["num_hidden_layers"]
    if not any(i not in f["mlp_only_layers"] and (i + 1) % f["decoder_sparse_step"] == 0 for i in range(n)):
        f["decoder_sparse_step"] = 1


def gen_qwen2_moe(r, name):
    f = base(r)
    n = f["num_hidden_layers"]
    f.update(num_experts=r.choice((4, 6)), num_experts_per_tok=r.choice((1, 2, 3)), moe_intermediate_size=16,
             shared_expert_intermediate_size=r.choice((16, 48)), norm_topk_prob=r.random() < 0.5,
             decoder_sparse_step=r.choice((1, 2)), mlp_only_layers=r.choice(([], [0], [n - 1])),
             qkv_bias=r.random() < 0.7, hidden_act=act(r, "silu"))
    _some_sparse_layer(f)
    sliding(r, f, qwen=True)
    return fx(name, "qwen2_moe", f, rope(r, f), init_overrides=MOE_ROUTER)


def gen_qwen3_moe(r, name):
    f = base(r)
    n = f["num_hidden_layers"]
    f.update(num_experts=r.choice((4, 8)), num_experts_per_tok=r.choice((1, 2, 3)), moe_intermediate_size=16,
             norm_topk_prob=r.random() < 0.5, decoder_sparse_step=r.choice((1, 2)),
             mlp_only_layers=r.choice(([], [0], [n - 1])), attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    _some_sparse_layer(f)
    sliding(r, f, qwen=True)
    return fx(name, "qwen3_moe", f, rope(r, f), init_overrides=MOE_ROUTER)


def _mla(r, f):
    f.update(num_key_value_heads=f["num_attention_heads"], kv_lora_rank=r.choice((16, 32)),
             q_lora_rank=r.choice((None, 24)), qk_nope_head_dim=r.choice((8, 16)), qk_rope_head_dim=r.choice((4, 8)),
             v_head_dim=r.choice((8, 16)), n_routed_experts=r.choice((4, 8)), num_experts_per_tok=2,
             moe_intermediate_size=16, n_shared_experts=r.choice((None, 1, 2)),
             first_k_dense_replace=r.choice((0, 1)), routed_scaling_factor=r.choice((1.0, 2.5)),
             norm_topk_prob=r.random() < 0.5, hidden_act=act(r, "silu"), attention_bias=r.random() < 0.3)
    f.pop("head_dim", None)
    if f["n_shared_experts"] is None:
        del f["n_shared_experts"]
    if r.random() < 0.2:
        # DeepSeek's own code reads it; transformers does not.
        f["moe_layer_freq"] = 2


def _mla_rope(r, f):
    """DeepSeek's RoPE: transformers reads the scaling's factor for the softmax mscale whenever the type is not default."""
    rope_ = rope(r, f, ("default", "yarn", "linear", "longrope"), head_dim_default=f["qk_rope_head_dim"])
    if rope_["rope_type"] != "default":
        rope_.setdefault("factor", r.choice((2.0, 8.0)))
    return rope_


def gen_deepseek_v2(r, name):
    f = base(r)
    _mla(r, f)
    method = r.choice(("greedy", "group_limited_greedy"))
    f["topk_method"] = method
    if method == "group_limited_greedy":
        f.update(n_group=2, topk_group=r.choice((1, 2)))
    return fx(name, "deepseek_v2", f, _mla_rope(r, f), init_overrides=MOE_ROUTER)


def gen_deepseek_v3(r, name):
    f = base(r)
    _mla(r, f)
    # Each kept group must hold at least top-2 candidates (transformers sums each group's top 2).
    f.update(n_group=r.choice([g for g in (1, 2, 4) if f["n_routed_experts"] // g >= 2]), rope_interleave=r.random() < 0.6)
    f["topk_group"] = r.choice([g for g in (1, 2, 4) if g <= f["n_group"]])
    return fx(name, "deepseek_v3", f, _mla_rope(r, f),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


def gen_youtu(r, name):
    """DeepSeek-V3's MLA keys (rope_interleave drawn) over a dense MLP in every layer: YoutuConfig has no MoE keys.
    No pad_token_id (the class default): transformers zeroes the padding row of the embedding when it loads one."""
    f = base(r)
    _mla(r, f)
    for key in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
                "first_k_dense_replace", "routed_scaling_factor", "norm_topk_prob", "moe_layer_freq"):
        f.pop(key, None)
    f.update(rope_interleave=r.random() < 0.6, pad_token_id=None)
    return fx(name, "youtu", f, _mla_rope(r, f))

def gen_deepseek_v32(r, name):
    f = base(r)
    _mla(r, f)
    f.update(n_group=r.choice([g for g in (1, 2) if f["n_routed_experts"] // g >= 2]), q_lora_rank=24,
             # Few indexer heads leave positions whose every head's ReLU is 0: exact index-score ties at the
             # top-k boundary, which torch.topk breaks in an implementation-defined order (no engine can follow).
             index_n_heads=r.choice((16, 32)), index_head_dim=r.choice((16, 32)), index_topk=r.choice((4, 8)))
    f["topk_group"] = r.choice([g for g in (1, 2) if g <= f["n_group"]])
    f["qk_rope_head_dim"] = min(f["qk_rope_head_dim"], f["index_head_dim"])
    return fx(name, "deepseek_v32", f, rope(r, f, ("default", "yarn")),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),
                                           (r"\.indexer\.(wq_b|wk|weights_proj)\.weight$", 0.0, 0.3)))


def _v3_groups(r, f):
    """n_group and topk_group as gen_deepseek_v3 draws them: each kept group holds at least top-2 candidates."""
    f["n_group"] = r.choice([g for g in (1, 2, 4) if f["n_routed_experts"] // g >= 2])
    f["topk_group"] = r.choice([g for g in (1, 2, 4) if g <= f["n_group"]])


def _glm_partial(r, head_dim: int, default: float) -> float | None:
    """A partial_rotary_factor whose int(head_dim * factor) rotary dims pair up, or None (absent: the class's
    `default`, unless that one's rotary dims would not pair up: then 1.0)."""
    factors = [p for p in (0.25, 0.5, 0.75, 1.0) if int(head_dim * p) % 2 == 0 and int(head_dim * p) > 0]
    partial = r.choice(factors) if r.random() < 0.7 else None
    if partial is None and int(head_dim * default) % 2 != 0:
        partial = 1.0
    return partial


def _glm_rope(r, f: dict, partial: float | None, default: float, types=("default", "linear", "dynamic", "yarn", "llama3", "longrope"),
              head_dim_default: int | None = None) -> dict:
    """rope() over the rotary dims, with a drawn partial_rotary_factor in the RoPE dict (transformers 5) or at the
    top level (4.x, the Hub's configs): the dict's wins, either is read."""
    rope_ = rope(r, f, types, partial=partial if partial is not None else default, head_dim_default=head_dim_default)
    if partial is not None:
        (rope_ if r.random() < 0.5 else f)["partial_rotary_factor"] = partial
    return rope_


def _glm4_moe_keys(r, f: dict) -> None:
    """GLM-4.5's attention and MoE keys: biases, q/k norms, experts in groups, shared experts, first dense layers."""
    f["num_hidden_layers"] = max(2, f["num_hidden_layers"])
    f.update(attention_bias=r.random() < 0.7, use_qk_norm=r.random() < 0.5, n_routed_experts=r.choice((4, 8)),
             moe_intermediate_size=16, n_shared_experts=r.choice((1, 2)), first_k_dense_replace=r.choice((0, 1)),
             routed_scaling_factor=r.choice((1.0, 2.5)), norm_topk_prob=r.random() < 0.7, hidden_act=act(r, "silu"))
    _v3_groups(r, f)
    f["num_experts_per_tok"] = r.choice([k for k in (1, 2, 3) if k <= f["topk_group"] * f["n_routed_experts"] // f["n_group"]])


GLM4_MOE_ROUTER = MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),)


def gen_glm4_moe(r, name):
    f = base(r)
    # int(head_dim * factor) must be even (rotate_half pairs); absent, Glm4MoeConfig's default 0.5.
    partial = _glm_partial(r, head_dim_of(f), 0.5)
    _glm4_moe_keys(r, f)
    if r.random() < 0.3:
        f["num_nextn_predict_layers"] = 1  # stored after the decoder's layers (make_fixtures.add_mtp_layers); only --speculative-method mtp reads it
    return fx(name, "glm4_moe", f, _glm_rope(r, f, partial, 0.5), init_overrides=GLM4_MOE_ROUTER)


def gen_solar_open(r, name):
    """GLM-4.5's keys on Llama's attention: no q/k norms or MTP layers, every layer sparse (first_k_dense_replace and
    use_qk_norm drawn, never read), the whole head rotating (a partial_rotary_factor below 1 fails in transformers),
    head_dim absent: the class's 128."""
    f = base(r)
    _glm4_moe_keys(r, f)
    return fx(name, "solar_open", f, rope(r, f, head_dim_default=128), init_overrides=GLM4_MOE_ROUTER)

def gen_ernie4_5(r, name):
    f = base(r)
    f.update(use_bias=r.random() < 0.6, hidden_act=act(r, "silu"))
    if r.random() < 0.3:
        del f["tie_word_embeddings"]  # Ernie4_5Config's default: tied
    return fx(name, "ernie4_5", f, rope(r, f, head_dim_default=128))


def _glm_dense(r, name, model_type):
    """GLM-4 dense (glm; glm4 adds sandwich norms): attention_bias on q/k/v (absent: the class's true), partial
    rotary over interleaved pairs, fused gate_up_proj; head_dim absent is GlmConfig's 128."""
    f = base(r)
    # int(head_dim * factor) must be even; absent, the class's default 0.5.
    partial = _glm_partial(r, head_dim_of(f, 128), 0.5)
    if r.random() < 0.7:
        f["attention_bias"] = r.random() < 0.7
    f["hidden_act"] = act(r, "silu")
    return fx(name, model_type, f, _glm_rope(r, f, partial, 0.5, head_dim_default=128))


def gen_glm(r, name):
    return _glm_dense(r, name, "glm")


def gen_glm4(r, name):
    return _glm_dense(r, name, "glm4")


def gen_ernie4_5_moe(r, name):
    f = base(r)
    n = max(2, f["num_hidden_layers"])
    f.update(num_hidden_layers=n, moe_num_experts=r.choice((4, 8)), moe_k=r.choice((1, 2, 3)), moe_intermediate_size=16,
             moe_num_shared_experts=r.choice((0, 1, 2)), moe_layer_start_index=r.choice((0, 1)),
             moe_layer_end_index=r.choice((-1, n - 1)), moe_layer_interval=r.choice((1, 1, 2)), hidden_act=act(r, "silu"))
    if r.random() < 0.3:
        del f["tie_word_embeddings"]  # Ernie4_5_MoeConfig's default: tied
    return fx(name, "ernie4_5_moe", f, rope(r, f),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


def gen_minimax_m2(r, name):
    f = base(r)
    head_dim = head_dim_of(f, 128)  # MiniMaxM2Config's own head_dim default
    f.update(num_local_experts=r.choice((4, 8)), num_experts_per_tok=r.choice((1, 2, 3)), intermediate_size=r.choice((16, 32)),
             hidden_act=act(r, "silu"))
    # The rotating dims as released checkpoints give them (rotary_dim), as a partial_rotary_factor
    # (which wins over rotary_dim), or neither: the whole head.
    dims = [d for d in (head_dim // 4, head_dim // 2, head_dim) if d % 2 == 0 and d > 0]
    rotary_dim = r.choice(dims)
    pick = r.random()
    if pick < 0.5:
        f["rotary_dim"] = rotary_dim
    elif pick < 0.75:
        f.update(rotary_dim=r.choice(dims), partial_rotary_factor=rotary_dim / head_dim)
    else:
        rotary_dim = head_dim
    if r.random() < 0.3:
        f.update(use_qk_norm=True, qk_norm_type="per_layer", scoring_func="sigmoid", use_routing_bias=True)  # MiniMax's own keys, as released
    return fx(name, "minimax_m2", f, rope(r, f, partial=rotary_dim / head_dim, head_dim_default=128),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


def gen_glm4_moe_lite(r, name):
    f = base(r)
    _mla(r, f)
    _v3_groups(r, f)
    f["num_hidden_layers"] = n = max(2, f["num_hidden_layers"])
    f["rope_interleave"] = r.random() < 0.7
    if r.random() < 0.6:
        # Glm4MoeLiteConfig reads mlp_layer_types (default: layer 0 dense), never first_k_dense_replace.
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(n - 1)] + ["sparse"]
    if r.random() < 0.3:
        f["num_nextn_predict_layers"] = 1
    return fx(name, "glm4_moe_lite", f, rope(r, f, ("default", "yarn", "linear", "longrope"), head_dim_default=f["qk_rope_head_dim"]),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


def gen_glm_moe_dsa(r, name):
    f = base(r)
    _mla(r, f)
    f.pop("moe_layer_freq", None)
    f["n_group"] = r.choice([g for g in (1, 2) if f["n_routed_experts"] // g >= 2])
    f["topk_group"] = r.choice([g for g in (1, 2) if g <= f["n_group"]])
    f["num_hidden_layers"] = n = r.choice((2, 3, 4))
    f.update(q_lora_rank=24, index_n_heads=r.choice((16, 32)), index_head_dim=r.choice((16, 32)), index_topk=r.choice((4, 8)))
    f["qk_rope_head_dim"] = min(f["qk_rope_head_dim"], f["index_head_dim"])
    # Which layers reuse the previous full layer's top-k: GlmMoeDsaConfig's three spellings, or every layer full.
    pick = r.random()
    if pick < 0.35:
        f.update(index_topk_freq=r.choice((1, 2, 3)), index_skip_topk_offset=r.choice((1, 2)))
    elif pick < 0.55:
        f["index_topk_pattern"] = "F" + "".join(r.choice("FS") for _ in range(n - 1))
    elif pick < 0.8:
        f["indexer_types"] = ["full"] + [r.choice(("full", "shared")) for _ in range(n - 1)]
    return fx(name, "glm_moe_dsa", f, rope(r, f, ("default", "yarn")),
              init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),
                                           (r"\.indexer\.(wq_b|wk|weights_proj)\.weight$", 0.0, 0.3)))


def gen_mistral4(r, name):
    f = base(r)
    _mla(r, f)
    _v3_groups(r, f)
    f.pop("moe_layer_freq", None)
    f["rope_interleave"] = r.random() < 0.7
    # Mistral4RotaryEmbedding's default RoPE spans the whole head, which its rope part cannot take: scaled types only,
    # over the rope part (partial_rotary_factor rope / head_dim, written or left to Mistral4Config).
    rope_ = rope(r, f, ("yarn", "linear", "longrope"), head_dim_default=f["qk_rope_head_dim"])
    rope_.setdefault("factor", r.choice((2.0, 8.0)))
    if r.random() < 0.5:
        rope_["partial_rotary_factor"] = f["qk_rope_head_dim"] / (f["qk_nope_head_dim"] + f["qk_rope_head_dim"])
    # get_llama_4_attn_scale reads both from the RoPE dict: an original context the prompts cross.
    rope_.update(llama_4_scaling_beta=r.choice((0.1, 0.5, 1.0)), original_max_position_embeddings=r.choice((8, 16, 32)))
    return fx(name, "mistral4", f, rope_, init_overrides=MOE_ROUTER)


def _layer_type_rope(r, f: dict, head_dim: int, default_rope_share: float) -> dict:
    """One layer type's RoPE dict (MiMo-V2-Flash's, Laguna's): default RoPE over partial_rotary_factor (absent: the
    family's `default_rope_share`) or a scaled type over the whole head unless a factor is written; only factors whose
    int(head_dim * factor) rotary dims pair up."""
    rope_ = rope(r, f, ("default", "default", "linear", "yarn"), head_dim_default=head_dim)
    default_share = default_rope_share if rope_["rope_type"] == "default" else 1.0
    shares = [p for p in (0.25, 0.5, 1.0) if int(head_dim * p) % 2 == 0 and int(head_dim * p) > 0]
    if r.random() < 0.6 or int(head_dim * default_share) % 2 != 0:
        rope_["partial_rotary_factor"] = r.choice(shares)
    return rope_


def gen_mimo_v2_flash(r, name):
    f = base(r)
    n = f["num_attention_heads"]
    # The sliding layers hold twice num_key_value_heads, which must divide the query heads.
    f["num_key_value_heads"] = r.choice([k for k in (1, 2, 4) if n % (2 * k) == 0])
    f["head_dim"] = head_dim = r.choice((16, 24, 32))
    f["v_head_dim"] = r.choice([v for v in (8, 16, head_dim) if v <= head_dim])
    f["num_hidden_layers"] = layers = max(2, f["num_hidden_layers"])
    f.update(sliding_window=r.choice((8, 16, 32)), attention_bias=r.random() < 0.5, moe_intermediate_size=16,
             n_routed_experts=r.choice((4, 8)), num_experts_per_tok=2, norm_topk_prob=r.random() < 0.5,
             routed_scaling_factor=r.choice((1.0, 2.5, None)), hidden_act=act(r, "silu"))
    _v3_groups(r, f)
    pick = r.random()
    if pick < 0.3:
        f["attention_value_scale"] = None
    elif pick < 0.7:
        f["attention_value_scale"] = r.choice((0.5, 1.3))
    if r.random() < 0.6:
        f["layer_types"] = [r.choice(("full_attention", "sliding_attention")) for _ in range(layers)]
    if r.random() < 0.6:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(layers - 1)] + ["sparse"]
    rope_ = {layer_type: _layer_type_rope(r, f, head_dim, 0.334) for layer_type in ("full_attention", "sliding_attention")}
    # Only sliding layers have sinks (by default every layer but the first of these few).
    sliding = "sliding_attention" in f.get("layer_types", ["sliding_attention"])
    sinks = ((r"\.self_attn\.sinks$", 0.0, 1.0),) if sliding else ()
    return fx(name, "mimo_v2_flash", f, rope_, init_overrides=GLM4_MOE_ROUTER + sinks)


def gen_laguna(r, name):
    f = base(r)
    f["num_hidden_layers"] = layers = max(2, f["num_hidden_layers"])
    kv = f["num_key_value_heads"]
    f["head_dim"] = head_dim = r.choice((16, 24, 32))
    if r.random() < 0.5:
        f["num_attention_heads_per_layer"] = [r.choice([h for h in (2, 4, 8) if h % kv == 0]) for _ in range(layers)]
    f.update(sliding_window=r.choice((8, 16, 32)), attention_bias=r.random() < 0.5, gating=r.choice((True, False, "per-head", "per-element")),
             moe_intermediate_size=16, shared_expert_intermediate_size=r.choice((8, 16, 32)), num_experts=r.choice((4, 8)),
             num_experts_per_tok=2, moe_routed_scaling_factor=r.choice((1.0, 2.5)),
             moe_router_logit_softcapping=r.choice((0.0, 0.0, 2.0, 5.0)), hidden_act=act(r, "silu"))
    if r.random() < 0.7:
        f["layer_types"] = [r.choice(("full_attention", "sliding_attention")) for _ in range(layers)]
    if r.random() < 0.6:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(layers - 1)] + ["sparse"]
    rope_ = {layer_type: _layer_type_rope(r, f, head_dim, 1.0) for layer_type in ("full_attention", "sliding_attention")}
    return fx(name, "laguna", f, rope_, init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


def gen_gpt_oss(r, name):
    f = base(r)
    f.update(head_dim=f.get("head_dim", 16), num_local_experts=r.choice((4, 6)), num_experts_per_tok=r.choice((1, 2, 3)),
             intermediate_size=32, sliding_window=r.choice((8, 16, 32)), attention_bias=r.random() < 0.7, swiglu_limit=7.0)
    if r.random() < 0.4:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(f["num_hidden_layers"])]
    return fx(name, "gpt_oss", f, rope(r, f, ("default", "yarn", "longrope")),
              init_overrides=((r"\.mlp\.router\.weight$", 0.0, 0.3), (r"\.self_attn\.sinks$", 0.0, 1.0),
                              (r"\.mlp\.experts\.gate_up_proj$", 0.0, 0.6), (r"\.mlp\.experts\.down_proj$", 0.0, 0.02)))


def _llama4_text(r):
    # attention_chunk_size is never null: transformers 5.18 builds its cache's chunked (RoPE) layers
    # from it and fails on null (TypeError in cache_utils), and Llama 4 checkpoints all set it.
    f = base(r)
    n = r.choice((2, 3, 4))
    f.update(num_hidden_layers=n, head_dim=f.get("head_dim", 16), intermediate_size=16, intermediate_size_mlp=48,
             num_local_experts=r.choice((3, 4)), num_experts_per_tok=r.choice((1, 2)),
             use_qk_norm=r.random() < 0.5, attention_chunk_size=r.choice((8, 16)),
             attn_temperature_tuning=r.random() < 0.7, floor_scale=r.choice((4, 8)), attn_scale=r.choice((0.1, 0.3)),
             attention_bias=r.random() < 0.3)
    if r.random() < 0.5:
        f["interleave_moe_layer_step"] = r.choice((1, 2))
    else:
        f["moe_layers"] = sorted(r.sample(range(n), r.randint(1, n)))
    if r.random() < 0.5:
        f["no_rope_layer_interval"] = r.choice((2, 4))
    else:
        f["no_rope_layers"] = [r.choice((0, 1)) for _ in range(n)]
    return f


LLAMA4_ROUTER = ((r"\.feed_forward\.router\.weight$", 0.0, 0.3),)


def gen_llama4_text(r, name):
    f = _llama4_text(r)
    return fx(name, "llama4_text", f, rope(r, f, ("default", "llama3", "linear")), init_overrides=LLAMA4_ROUTER)


def gen_llama4(r, name):
    f = _llama4_text(r)
    return fx(name, "llama4", f, rope(r, f, ("default", "llama3")), init_overrides=LLAMA4_ROUTER, text_model_type="llama4_text",
              wrapper_fields=dict(tie_word_embeddings=f["tie_word_embeddings"],
                                  vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     image_size=28, patch_size=14, vision_output_dim=16, projector_input_dim=16,
                                                     projector_output_dim=16, pixel_shuffle_ratio=0.5)))


def gen_olmo2(r, name):
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    return fx(name, "olmo2", f, rope(r, f))


def gen_olmo3(r, name):
    f = base(r)
    f.update(num_hidden_layers=r.choice((2, 3, 4)), attention_bias=r.random() < 0.3, hidden_act=act(r, "silu"),
             # transformers fails on sliding layers without a window (Keel reads them as full).
             sliding_window=r.choice((8, 16, 32)))
    if r.random() < 0.5:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(f["num_hidden_layers"])]
    # One table per layer type (LongRoPE only where every layer shares one: not here).
    rope_ = {"sliding_attention": rope(r, f, ("default", "linear")), "full_attention": rope(r, f, ("default", "linear", "yarn", "llama3"))}
    return fx(name, "olmo3", f, rope_)


def gen_smollm3(r, name):
    f = base(r)
    f.update(num_hidden_layers=r.choice((2, 3, 4)), attention_bias=r.random() < 0.4, mlp_bias=r.random() < 0.4,
             hidden_act=act(r, "silu"), tie_word_embeddings=r.random() < 0.6)
    n = f["num_hidden_layers"]
    if r.random() < 0.5:
        f["no_rope_layers"] = [r.choice((0, 1)) for _ in range(n)]
    else:
        f["no_rope_layer_interval"] = r.choice((1, 2, 4))
    pick = r.random()
    if pick < 0.4:
        f.update(use_sliding_window=True, sliding_window=r.choice((8, 16, 32)))
    elif pick < 0.6:
        # layer_types slide whatever use_sliding_window says (transformers' masks read layer_types).
        f.update(use_sliding_window=r.random() < 0.5, sliding_window=r.choice((8, 16)),
                 layer_types=[r.choice(("sliding_attention", "full_attention")) for _ in range(n)])
    # LongRoPE only where every layer shares one table: not with NoPE layers.
    return fx(name, "smollm3", f, rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3")))


def gen_granite(r, name):
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, mlp_bias=r.random() < 0.3, hidden_act=act(r, "silu"),
             embedding_multiplier=r.choice((1.0, 4.0, 12.0)), residual_multiplier=r.choice((1.0, 0.22, 0.5)),
             attention_multiplier=r.choice((1.0, 0.0625, 0.015625)), logits_scaling=r.choice((1.0, 2.0, 8.0)))
    return fx(name, "granite", f, rope(r, f))


def gen_seed_oss(r, name):
    f = base(r)
    f.update(attention_out_bias=r.random() < 0.5, mlp_bias=r.random() < 0.3, hidden_act=act(r, "silu"))
    if r.random() < 0.3:
        f["attention_bias"] = False
    # SeedOssConfig's head_dim defaults to 128, not hidden / heads.
    return fx(name, "seed_oss", f, rope(r, f, head_dim_default=128))


def gen_arcee(r, name):
    f = base(r)
    # An ungated MLP: relu2 is the only hidden_act Keel runs for it.
    f.update(attention_bias=r.random() < 0.4, mlp_bias=r.random() < 0.4, hidden_act="relu2")
    return fx(name, "arcee", f, rope(r, f))


def gen_jais2(r, name):
    """Llama's attention with an ungated relu² MLP and LayerNorms with biases: layer_norm_eps (Jais2Config has no
    rms_norm_eps), attention_bias and mlp_bias drawn or absent (the class's true), every RoPE type."""
    f = base(r)
    del f["rms_norm_eps"]
    f["layer_norm_eps"] = r.choice((1e-6, 1e-5, 1e-2))
    for key in ("attention_bias", "mlp_bias"):
        if r.random() < 0.6:
            f[key] = r.random() < 0.5
    return fx(name, "jais2", f, rope(r, f))

def gen_nanochat(r, name):
    """Weightless norms, NanoChat's reversed rotate_half, an ungated relu² MLP (the only hidden_act Keel runs for it),
    final_logit_softcapping absent (15), drawn or null; attention_bias; every RoPE type over the whole head."""
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act="relu2")
    if r.random() < 0.6:
        f["final_logit_softcapping"] = r.choice((None, 5.0, 30.0))
    return fx(name, "nanochat", f, rope(r, f))

def gen_hunyuan_v1_dense(r, name, model_type="hunyuan_v1_dense", f=None, **kw):
    f = base(r) if f is None else f
    # HunYuanDenseV1Config leaves head_dim None, which its attention fails on: always give one.
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), head_dim=head_dim_of(f))
    if r.random() < 0.4:
        # The Hub's NTK-alpha RoPE: dynamic with alpha rotates by the fixed base theta * alpha^(d / (d - 2)).
        return fx(name, model_type, f, mf._rope("dynamic", r.choice((1e4, 5e5)), factor=r.choice((1.0, 2.0)), alpha=r.choice((10.0, 1000.0))), **kw)
    # No LongRoPE: the normed keys are cached through a second (identity) rotary table, which Keel refuses beside it.
    return fx(name, model_type, f, rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3")), **kw)


def gen_hunyuan_v1_moe(r, name):
    """Hunyuan dense's attention draws, a MoE block in every layer: moe_topk one number or one per layer."""
    f = base(r)
    n_experts = r.choice((4, 6))
    f.update(num_experts=n_experts, intermediate_size=r.choice((16, 32)),
             moe_topk=r.choice((1, 2, 3)) if r.random() < 0.5 else [r.choice((1, 2, 3)) for _ in range(max(2, f["num_hidden_layers"]))])
    return gen_hunyuan_v1_dense(r, name, "hunyuan_v1_moe", f, init_overrides=((r"\.mlp\.gate\.wg\.weight$", 0.0, 0.3),))


def gen_olmoe(r, name):
    """Qwen2-MoE's routing (norm_topk_prob drawn) under q/k norms over the whole projections."""
    f = base(r)
    # OlmoeAttention sizes its q/k norms by hidden_size: head_dim is hidden / heads.
    f.pop("head_dim", None)
    f.update(num_experts=r.choice((4, 8)), num_experts_per_tok=r.choice((1, 2, 3)), intermediate_size=r.choice((16, 32)),
             norm_topk_prob=r.random() < 0.5, attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    return fx(name, "olmoe", f, rope(r, f), init_overrides=MOE_ROUTER)


def gen_granitemoe(r, name, model_type="granitemoe"):
    """Granite's multipliers (as gen_granite draws them) over a block_sparse_moe in every layer; granitemoeshared's shared MLP (0: none)."""
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), num_local_experts=r.choice((4, 6)),
             num_experts_per_tok=r.choice((1, 2, 3)), intermediate_size=r.choice((16, 32)),
             embedding_multiplier=r.choice((1.0, 4.0, 12.0)), residual_multiplier=r.choice((1.0, 0.22, 0.5)),
             attention_multiplier=r.choice((1.0, 0.0625, 0.015625)), logits_scaling=r.choice((1.0, 2.0, 8.0)))
    if model_type == "granitemoeshared":
        f["shared_intermediate_size"] = r.choice((0, 16, 48))
    return fx(name, model_type, f, rope(r, f), init_overrides=((r"\.block_sparse_moe\.router\.weight$", 0.0, 0.3),))


def gen_granitemoeshared(r, name):
    return gen_granitemoe(r, name, "granitemoeshared")


def gen_granitemoehybrid(r, name):
    """Granite 4.0's hybrids: Mamba-2 and attention layers by layer_types (old or new names, at least one attention
    layer, sometimes no Mamba one), RoPE or none, Mamba heads, groups, state, conv width and biases, Granite's
    multipliers, a MoE block beside the shared MLP or the shared MLP alone (0 experts)."""
    f = base(r)
    n = r.choice((2, 3, 4))
    expand = r.choice((1, 2))
    mamba_heads = r.choice([h for h in (1, 2, 4, 8) if expand * f["hidden_size"] % h == 0])
    # Mostly 1 or 2 attention layers beside Mamba ones; sometimes attention alone (granite-4.0-micro).
    attention = r.sample(range(n), n if r.random() < 0.1 else min(n - 1, r.choice((1, 1, 2))))
    mamba_name, attention_name = r.choice((("mamba", "attention"), ("linear_attention", "full_attention")))
    experts = r.choice((0, 4, 6))
    f.update(num_hidden_layers=n, hidden_act="silu", attention_bias=r.random() < 0.3,
             layer_types=[attention_name if i in attention else mamba_name for i in range(n)],
             position_embedding_type=r.choice((None, "nope", "rope", "rope")),
             mamba_n_heads=mamba_heads, mamba_n_groups=r.choice([g for g in (1, 2, 4) if mamba_heads % g == 0]),
             mamba_d_state=r.choice((4, 8, 16)), mamba_d_conv=r.choice((2, 3, 4)), mamba_expand=expand,
             mamba_chunk_size=r.choice((8, 16, 256)), mamba_conv_bias=r.random() < 0.7, mamba_proj_bias=r.random() < 0.3,
             num_local_experts=experts, num_experts_per_tok=r.choice((1, 2, 3)), intermediate_size=r.choice((16, 32)),
             shared_intermediate_size=r.choice((16, 32, 48)),
             embedding_multiplier=r.choice((1.0, 4.0, 12.0)), residual_multiplier=r.choice((1.0, 0.22, 0.5)),
             attention_multiplier=r.choice((1.0, 0.0625, 0.015625)), logits_scaling=r.choice((1.0, 2.0, 8.0)))
    draws = mf.GRANITE_HYBRID_DRAWS
    # An override must match some tensor: the Mamba draws need a Mamba layer, the router's experts.
    overrides = (draws[:3] if len(attention) < n else ()) + (draws[3:] if experts else ())
    return fx(name, "granitemoehybrid", f, rope(r, f), init_overrides=overrides)


def gen_dots1(r, name):
    """Qwen3's attention (q/k norms, windows by layer_types or max_window_layers) over DeepSeek-V3's MoE after first_k_dense_replace."""
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), n_routed_experts=r.choice((4, 8)),
             moe_intermediate_size=16, n_shared_experts=r.choice((1, 2)), first_k_dense_replace=r.choice((0, 1)),
             routed_scaling_factor=r.choice((1.0, 2.5)), norm_topk_prob=r.random() < 0.6,
             sliding_window=r.choice((None, 8, 16, 32)), max_window_layers=r.choice((0, 1, 2, 62)))
    _v3_groups(r, f)
    f["num_experts_per_tok"] = r.choice([k for k in (1, 2, 3) if k <= f["topk_group"] * f["n_routed_experts"] // f["n_group"]])
    if f["sliding_window"] is not None and r.random() < 0.4:
        # transformers' masks read layer_types (a sliding layer without a window fails there).
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(max(2, f["num_hidden_layers"]))]
    return fx(name, "dots1", f, rope(r, f), init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))


XIELU_INIT = ((r"act_fn\.alpha_p$", 0.5, 0.3), (r"act_fn\.alpha_n$", 0.0, 0.3), (r"act_fn\.beta$", 0.5, 0.2), (r"act_fn\.eps$", -0.05, 0.02))


def gen_apertus(r, name):
    f = base(r)
    # An MLP without a gate: xielu (ApertusConfig's default, constants per layer) or relu2, the ones Keel runs.
    f.update(attention_bias=r.random() < 0.4, hidden_act=r.choice(("xielu", "xielu", "relu2")))
    return fx(name, "apertus", f, rope(r, f), init_overrides=XIELU_INIT if f["hidden_act"] == "xielu" else ())


def gen_exaone4(r, name):
    f = base(r)
    n = r.choice((2, 3, 4))
    f.update(num_hidden_layers=n, hidden_act=act(r, "silu"), sliding_window=r.choice((8, 16, 32)))
    if r.random() < 0.5:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    else:
        f["sliding_window_pattern"] = r.choice((2, 3, 4))
    # The full layers are NoPE: LongRoPE only where every layer shares one table.
    return fx(name, "exaone4", f, rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3")))


def gen_exaone_moe(r, name):
    """EXAONE 4's attention and layer pattern in pre-norm layers over DeepSeek-V3's MoE, counted by num_experts /
    num_shared_experts; dense layers by mlp_layer_types or first_k_dense_replace."""
    f = base(r)
    n = r.choice((2, 3, 4))
    # ExaoneMoeConfig refuses a null sliding_window (an int field).
    f.update(num_hidden_layers=n, hidden_act=act(r, "silu"), sliding_window=r.choice((8, 16, 32)),
             n_routed_experts=r.choice((4, 8)), moe_intermediate_size=16, num_shared_experts=r.choice((0, 1, 2)),
             routed_scaling_factor=r.choice((1.0, 2.5)), norm_topk_prob=r.random() < 0.7)
    if r.random() < 0.5:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    else:
        f["sliding_window_pattern"] = r.choice((2, 3, 4))
    if r.random() < 0.5:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(n - 1)] + ["sparse"]
    else:
        f["first_k_dense_replace"] = r.choice((0, 1))
    _v3_groups(r, f)
    f["num_experts"] = f.pop("n_routed_experts")
    f["num_experts_per_tok"] = r.choice([k for k in (1, 2, 3) if k <= f["topk_group"] * f["num_experts"] // f["n_group"]])
    # The full layers are NoPE: LongRoPE only where every layer shares one table.
    rope_ = rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3"))
    return fx(name, "exaone_moe", f, rope_, init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),))

def gen_hy_v3(r, name):
    """Apertus's attention (q/k norms, attention_bias) over a dense layer 0 (or mlp_layer_types) and MiniMax-M2's
    sigmoid router times router_scaling_factor, 0 to 2 shared experts (0: a shared MLP intermediate_size wide)."""
    f = base(r)
    n = max(2, f["num_hidden_layers"])
    f.update(num_hidden_layers=n, attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), num_experts=r.choice((4, 8)),
             moe_intermediate_size=16, num_shared_experts=r.choice((0, 1, 2)), router_scaling_factor=r.choice((1.0, 2.826)))
    f["num_experts_per_tok"] = r.choice((1, 2, 3))
    if r.random() < 0.5:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(n - 1)] + ["sparse"]
    return fx(name, "hy_v3", f, rope(r, f, head_dim_default=128),
              init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), (r"\.e_score_correction_bias$", 0.0, 0.1)))

def _cohere_fields(r):
    """Keys both Cohere classes read: biases, activation, LayerNorm eps, a tied head by default, and
    logit_scale (absent: 0.0625) with final norm weights around its inverse, so the logits keep the
    spread of the other families' (greedy margins)."""
    f = base(r)
    f.update(attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), layer_norm_eps=r.choice((1e-5, 1e-3)))
    if r.random() < 0.3:
        del f["tie_word_embeddings"]  # CohereConfig's and Cohere2Config's default: tied
    scale = r.choice((None, 0.25, 1.0))
    if scale is not None:
        f["logit_scale"] = scale
    centre = 1.0 / (scale or 0.0625)
    return f, ((r"^model\.norm\.weight$", centre, 0.1 * centre),)


def gen_cohere(r, name):
    f, norm = _cohere_fields(r)
    f["use_qk_norm"] = r.random() < 0.5
    return fx(name, "cohere", f, rope(r, f), init_overrides=norm)


def gen_cohere2(r, name):
    f, norm = _cohere_fields(r)
    n = r.choice((2, 3, 4))
    f.update(num_hidden_layers=n, sliding_window=r.choice((8, 16, 32)))
    if r.random() < 0.5:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    else:
        f["sliding_window_pattern"] = r.choice((2, 3, 4))
    # The full layers are NoPE: LongRoPE only where every layer shares one table.
    return fx(name, "cohere2", f, rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3")), init_overrides=norm)


def gen_cohere2_moe(r, name):
    """Cohere 2's keys (no LongRoPE beside the NoPE layers) with RMSNorms (rms_norm_eps drawn) or LayerNorms (absent),
    a dense prefix (first_k_dense_replace, its own width and window pattern) or mlp_layer_types, 4 or 8 experts under
    a softmax or sigmoid over the top-k logits, 0 to 2 shared experts summed in."""
    f, norm = _cohere_fields(r)
    n = r.choice((2, 3, 4))
    f.update(num_hidden_layers=n, sliding_window=r.choice((8, 16, 32)), num_experts=r.choice((4, 8)),
             num_experts_per_tok=r.choice((1, 2, 3)), expert_selection_fn=r.choice(("softmax", "sigmoid")),
             norm_topk_prob=r.random() < 0.7, num_shared_experts=r.choice((0, 1, 2)), intermediate_size=16)
    if f["num_shared_experts"] > 0 or r.random() < 0.5:
        f["shared_expert_combination_strategy"] = "sum"
    if r.random() < 0.5:
        del f["rms_norm_eps"]  # absent: Cohere's LayerNorm (layer_norm_eps)
    if r.random() < 0.5:
        f.update(first_k_dense_replace=1, prefix_dense_sliding_window_pattern=r.choice((1, 2)),
                 prefix_dense_intermediate_size=r.choice((32, 48)))
    elif r.random() < 0.5:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(n - 1)] + ["sparse"]
    if r.random() < 0.4:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    else:
        f["sliding_window_pattern"] = r.choice((2, 3, 4))
    # Cohere2MoeConfig declares rope_scaling (never read) but not rope_parameters, which make_fixtures would pass
    # as rope_scaling: the drawn RoPE goes in as a rope_parameters key, which the class reads.
    rope_ = rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3"))
    f["rope_parameters"] = dict(rope_)
    return fx(name, "cohere2_moe", f, rope_, init_overrides=norm + ((r"\.mlp\.gate\.weight$", 0.0, 0.3),))

def gen_afmoe(r, name):
    """Gated attention with q/k norms, sliding layers that rotate beside NoPE full ones (layer_types or
    global_attn_every_n_layers; no LongRoPE beside the identity table), sandwich norms, num_dense_layers, Hy3's
    router (route_scale), 0 to 2 shared experts, mup_enabled."""
    f = base(r)
    n = r.choice((2, 3, 4))
    f.update(num_hidden_layers=n, attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"), sliding_window=r.choice((8, 16, 32)),
             num_experts=r.choice((4, 8)), num_experts_per_tok=r.choice((1, 2, 3)), moe_intermediate_size=16,
             num_shared_experts=r.choice((0, 1, 2)), route_scale=r.choice((1.0, 2.5)), num_dense_layers=r.choice((0, 1)),
             mup_enabled=r.random() < 0.4)
    if r.random() < 0.4:
        f["layer_types"] = [r.choice(("sliding_attention", "full_attention")) for _ in range(n)]
    else:
        f["global_attn_every_n_layers"] = r.choice((2, 3, 4))
    return fx(name, "afmoe", f, rope(r, f, ("default", "linear", "dynamic", "yarn", "llama3"), head_dim_default=128),
              init_overrides=((r"\.mlp\.router\.gate\.weight$", 0.0, 0.3), (r"\.expert_bias$", 0.0, 0.1)))

def _hybrid(r):
    """A Qwen3-Next / Qwen3.5 layer mix: Gated DeltaNet heads and conv width, the full layers' head size and partial rotary."""
    f = base(r)
    n = r.choice((2, 3, 4, 5))
    key_heads = r.choice((1, 2))
    f.update(num_hidden_layers=n, head_dim=r.choice((8, 16, 24, 32)), hidden_act="silu",
             linear_num_key_heads=key_heads, linear_num_value_heads=key_heads * r.choice((1, 2, 3)),
             linear_key_head_dim=r.choice((4, 8, 16)), linear_value_head_dim=r.choice((4, 8, 16)),
             linear_conv_kernel_dim=r.choice((2, 3, 4)), attention_bias=r.random() < 0.3)
    # At least one layer of each kind: transformers' hybrid cache needs a full-attention layer.
    if r.random() < 0.5:
        f["full_attention_interval"] = r.choice([k for k in (2, 3, 4) if k <= n])
    else:
        kinds = [r.choice(("linear_attention", "full_attention")) for _ in range(n - 2)] + ["linear_attention", "full_attention"]
        r.shuffle(kinds)
        f["layer_types"] = kinds
    return f


def _hybrid_rope(r, f):
    partial = r.choice((0.25, 0.5, 1.0))
    return {**rope(r, f, ("default", "linear", "yarn", "llama3"), partial=partial), "partial_rotary_factor": partial}


# The DeltaNet's gated output norm multiplies by w (drawn around 1); every other norm by (1 + w).
HYBRID_INIT = ((r"linear_attn\.norm\.weight$", 1.0, 0.1), (r"linear_attn\.conv1d\.weight$", 0.0, 0.5))


def _maybe_hybrid_mtp(r, f):
    """Sometimes one MTP layer (mtp_num_hidden_layers 1, stored as mtp.* by
    make_fixtures.add_hybrid_mtp_layers; only --speculative-method mtp reads it), whose block copies
    the last layer's tensor names: that layer is made a full-attention one."""
    if r.random() >= 0.3:
        return
    n = f["num_hidden_layers"]
    if "layer_types" in f:
        kinds = f["layer_types"]
        j = kinds.index("full_attention")
        kinds[j], kinds[-1] = kinds[-1], kinds[j]
    elif n % f["full_attention_interval"] != 0:
        del f["full_attention_interval"]
        f["layer_types"] = ["linear_attention"] * (n - 1) + ["full_attention"]
    f["mtp_num_hidden_layers"] = 1


def gen_qwen3_next(r, name):
    f = _hybrid(r)
    n = f["num_hidden_layers"]
    # A MoE fixture needs a sparse layer: decoder_sparse_step 2 may leave only layers mlp_only_layers takes.
    step = r.choice((1, 2)) if n >= 4 else 1
    f.update(num_experts=r.choice((4, 6)), num_experts_per_tok=r.choice((1, 2)), moe_intermediate_size=16,
             shared_expert_intermediate_size=r.choice((16, 32)), norm_topk_prob=r.random() < 0.5,
             decoder_sparse_step=step, mlp_only_layers=r.choice(([], [0], [n - 1])))
    _maybe_hybrid_mtp(r, f)
    if f.get("mtp_num_hidden_layers"):
        # The MTP block's feed-forward follows layer 0's sparse rule (vLLM's), and its stored tensors
        # are named as the last layer's: both layers sparse keeps the two alike.
        f.update(decoder_sparse_step=1, mlp_only_layers=[])
    return fx(name, "qwen3_next", f, _hybrid_rope(r, f), norm_center=0.0, init_overrides=MOE_ROUTER + HYBRID_INIT)


# KDA's per-channel decays drawn wide (A_log around -1, dt_bias N(0, 1)), its convolutions as the hybrids'.
KDA_INIT = ((r"self_attn\.conv1d\.weight$", 0.0, 0.5), (r"forget_gate\.A_log$", -1.0, 0.5), (r"forget_gate\.dt_bias$", 0.0, 1.0))


def _kimi_layer_kinds(r, f: dict) -> None:
    """KDA and MLA layers, at least one of each: linear_attn_config's 1-indexed kda_layers / full_attn_layers,
    or layer_types, or neither (KimiLinearConfig's pattern: layer i > 0 with i % 4 == 0 is MLA, so 5 layers)."""
    pick = r.random()
    if pick < 0.25:
        f["num_hidden_layers"] = 5
        return
    n = f["num_hidden_layers"]
    kinds = [r.choice((True, False)) for _ in range(n - 2)] + [True, False]
    r.shuffle(kinds)
    if pick < 0.65:
        f["linear_attn_config"]["kda_layers"] = [i + 1 for i, kda in enumerate(kinds) if kda]
        f["linear_attn_config"]["full_attn_layers"] = [i + 1 for i, kda in enumerate(kinds) if not kda]
    else:
        f["layer_types"] = ["linear_attention" if kda else "full_attention" for kda in kinds]


def gen_kimi_linear(r, name):
    """Kimi Linear: KDA heads and conv width (in linear_attn_config or as the class's top-level keys), MLA without
    RoPE (a shared key part of 0 to 8 dims), DeepSeek-V3's routing under Kimi's key names or their attribute_map aliases, dense layers by
    first_k_dense_replace or mlp_layer_types."""
    f = base(r)
    # KimiLinearForCausalLM ties nothing (its _tied_weights_keys is empty), so a tied config makes no tied model.
    f.pop("head_dim", None)
    f["tie_word_embeddings"] = False
    n = r.choice((2, 3, 4))
    experts = r.choice((4, 8))
    groups = r.choice([g for g in (1, 2) if experts // g >= 2])
    alias = r.random() < 0.3
    f.update(num_hidden_layers=n, hidden_act="silu", num_key_value_heads=f["num_attention_heads"],
             kv_lora_rank=r.choice((16, 32)), q_lora_rank=r.choice((None, 24)), qk_nope_head_dim=r.choice((8, 16)),
             qk_rope_head_dim=r.choice((0, 2, 4, 8)), v_head_dim=r.choice((8, 16)), attention_bias=r.random() < 0.3,
             moe_intermediate_size=16, routed_scaling_factor=r.choice((1.0, 2.446)), topk_group=r.choice([g for g in (1, 2) if g <= groups]),
             **{("num_local_experts" if alias else "num_experts"): experts,
                ("num_experts_per_tok" if alias else "num_experts_per_token"): r.choice((1, 2)),
                ("norm_topk_prob" if alias else "moe_renormalize"): r.random() < 0.6,
                ("n_group" if alias else "num_expert_group"): groups,
                ("n_shared_experts" if alias else "num_shared_experts"): r.choice((1, 2))})
    kda = dict(num_heads=r.choice((1, 2, 3)), head_dim=r.choice((4, 8, 16)), short_conv_kernel_size=r.choice((2, 3, 4)))
    if r.random() < 0.7:
        f["linear_attn_config"] = kda
    else:
        f.update(linear_num_heads=kda["num_heads"], linear_head_dim=kda["head_dim"], linear_conv_kernel_dim=kda["short_conv_kernel_size"])
        f["linear_attn_config"] = {}
    _kimi_layer_kinds(r, f)
    if not f["linear_attn_config"]:
        del f["linear_attn_config"]
    n = f["num_hidden_layers"]
    if r.random() < 0.3:
        f["mlp_layer_types"] = [r.choice(("dense", "sparse")) for _ in range(n - 1)] + ["sparse"]
    else:
        f["first_k_dense_replace"] = r.choice((0, 1, n - 1))
    return fx(name, "kimi_linear", f, mf._rope(), init_overrides=MOE_ROUTER + ((r"\.e_score_correction_bias$", 0.0, 0.1),) + KDA_INIT)

def _mrope_sections(r, head_dim: int) -> list[int]:
    """Three M-RoPE sections (temporal, height, width) splitting the head_dim / 2 frequencies at random."""
    half = head_dim // 2
    a, b = sorted(r.sample(range(half + 1), 2))
    return [a, b - a, half - b]


QWEN_VL_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


def _qwen2_vl(r, name, model_type):
    """Qwen2-VL / Qwen2.5-VL: Qwen2's keys under text_config (or flat at the top level, as the Hub's
    configs are), chunked M-RoPE sections that must cover head_dim / 2, and a tie by either config."""
    f = base(r)
    # Their attention sizes heads as hidden / heads: a head_dim key would reach the rotary alone.
    f.pop("head_dim", None)
    f["hidden_act"] = act(r, "silu")
    sliding(r, f, qwen=True)
    rope_ = rope(r, f, QWEN_VL_ROPE_TYPES)
    rope_["mrope_section"] = _mrope_sections(r, head_dim_of(f))
    vision = (mf.QWEN2_VL_VISION if model_type == "qwen2_vl" else mf.QWEN2_5_VL_VISION) | {"hidden_size" if model_type == "qwen2_vl" else "out_hidden_size": f["hidden_size"]}
    return fx(name, model_type, f, rope_, text_model_type=f"{model_type}_text", flat_text_config=r.random() < 0.5,
              wrapper_fields=dict(tie_word_embeddings=r.random() < 0.3, vision_config=vision))


def gen_qwen2_vl(r, name):
    return _qwen2_vl(r, name, "qwen2_vl")


def gen_qwen2_5_vl(r, name):
    return _qwen2_vl(r, name, "qwen2_5_vl")


def _qwen3_vl_text(r):
    """Qwen3-VL's language model: Qwen3's keys (no sliding), interleaved M-RoPE of three sections."""
    f = base(r)
    f.update(head_dim=f.get("head_dim", r.choice((8, 16))), attention_bias=r.random() < 0.4, hidden_act=act(r, "silu"))
    rope_ = rope(r, f, QWEN_VL_ROPE_TYPES)
    rope_.update(mrope_section=_mrope_sections(r, f["head_dim"]), mrope_interleaved=True)
    return f, rope_


def _qwen3_vl_wrapper(r, f):
    return dict(tie_word_embeddings=r.random() < 0.4, vision_config=mf.QWEN3_VL_VISION | {"out_hidden_size": f["hidden_size"]})


def gen_qwen3_vl(r, name):
    f, rope_ = _qwen3_vl_text(r)
    return fx(name, "qwen3_vl", f, rope_, text_model_type="qwen3_vl_text", wrapper_fields=_qwen3_vl_wrapper(r, f))


def gen_qwen3_vl_moe(r, name):
    f, rope_ = _qwen3_vl_text(r)
    n = f["num_hidden_layers"]
    # norm_topk_prob is drawn though the class ignores it: its router always renormalises.
    f.update(num_experts=r.choice((4, 8)), num_experts_per_tok=r.choice((1, 2, 3)), moe_intermediate_size=16,
             norm_topk_prob=r.random() < 0.5, decoder_sparse_step=r.choice((1, 2)), mlp_only_layers=r.choice(([], [0], [n - 1])))
    _some_sparse_layer(f)
    return fx(name, "qwen3_vl_moe", f, rope_, init_overrides=MOE_ROUTER, text_model_type="qwen3_vl_moe_text",
              wrapper_fields=_qwen3_vl_wrapper(r, f))


def _glm4v_wrapper(r, f: dict) -> dict:
    """GLM-4.1V's and GLM-4.5V's wrapper: a tie by either config (text_config's drawn by base), the smallest vision tower."""
    wrapper = dict(vision_config=mf.GLM4V_VISION | {"out_hidden_size": f["hidden_size"]})
    if r.random() < 0.6:
        wrapper["tie_word_embeddings"] = r.random() < 0.4
    return wrapper


def _glm4v_mrope(r, f: dict, rope_: dict, factor: float) -> None:
    """Chunked M-RoPE sections covering the frequencies of the int(head_dim * factor) rotary dims (the class's
    default [8, 12, 12] fits none of the drawn heads)."""
    rope_["mrope_section"] = _mrope_sections(r, int(head_dim_of(f) * factor))


def gen_glm4v(r, name):
    """GLM-4.1V's language model: glm4's layer whose attention biases q/k/v whatever attention_bias says (drawn) and
    sizes heads hidden / heads (no head_dim key), partial rotary over interleaved pairs (absent: the class's 1.0)."""
    f = base(r)
    f.pop("head_dim", None)
    partial = _glm_partial(r, head_dim_of(f), 1.0)
    if r.random() < 0.6:
        f["attention_bias"] = r.random() < 0.5
    f["hidden_act"] = act(r, "silu")
    rope_ = _glm_rope(r, f, partial, 1.0)
    _glm4v_mrope(r, f, rope_, partial or 1.0)
    return fx(name, "glm4v", f, rope_, text_model_type="glm4v_text", wrapper_fields=_glm4v_wrapper(r, f))


def gen_glm4v_moe(r, name):
    """GLM-4.5V's language model: glm4_moe's keys (use_qk_norm drawn, never read; attention_bias absent: the class's true)."""
    f = base(r)
    partial = _glm_partial(r, head_dim_of(f), 0.5)
    _glm4_moe_keys(r, f)
    if r.random() < 0.3:
        del f["attention_bias"]
    rope_ = _glm_rope(r, f, partial, 0.5)
    _glm4v_mrope(r, f, rope_, partial or 0.5)
    return fx(name, "glm4v_moe", f, rope_, init_overrides=GLM4_MOE_ROUTER, text_model_type="glm4v_moe_text",
              wrapper_fields=_glm4v_wrapper(r, f))


def gen_qwen3_5_text(r, name):
    f = _hybrid(r)
    _maybe_hybrid_mtp(r, f)
    return fx(name, "qwen3_5_text", f, _hybrid_rope(r, f), norm_center=0.0, init_overrides=HYBRID_INIT)


GENERATORS = {
    "llama": gen_llama, "mistral": gen_mistral, "ministral3": gen_ministral3, "qwen2": gen_qwen2, "qwen3": gen_qwen3, "gemma": gen_gemma,
    "gemma2": gen_gemma2, "gemma3_text": gen_gemma3_text, "gemma3": gen_gemma3, "mistral3": gen_mistral3,
    "gemma4_text": gen_gemma4_text, "gemma4": gen_gemma4,
    "phi3": gen_phi3, "mixtral": gen_mixtral, "qwen2_moe": gen_qwen2_moe, "qwen3_moe": gen_qwen3_moe,
    "deepseek_v2": gen_deepseek_v2, "deepseek_v3": gen_deepseek_v3, "deepseek_v32": gen_deepseek_v32, "gpt_oss": gen_gpt_oss,
    "llama4_text": gen_llama4_text, "llama4": gen_llama4,
    "olmo2": gen_olmo2, "olmo3": gen_olmo3, "smollm3": gen_smollm3, "granite": gen_granite, "seed_oss": gen_seed_oss, "exaone4": gen_exaone4, "arcee": gen_arcee,
    "hunyuan_v1_dense": gen_hunyuan_v1_dense, "apertus": gen_apertus,
    "glm4_moe": gen_glm4_moe, "glm4_moe_lite": gen_glm4_moe_lite, "glm_moe_dsa": gen_glm_moe_dsa,
    "mistral4": gen_mistral4, "mimo_v2_flash": gen_mimo_v2_flash, "laguna": gen_laguna,
    "qwen3_next": gen_qwen3_next, "qwen3_5_text": gen_qwen3_5_text, "minimax_m2": gen_minimax_m2,
    "ernie4_5": gen_ernie4_5, "ernie4_5_moe": gen_ernie4_5_moe,
    "hunyuan_v1_moe": gen_hunyuan_v1_moe,
    "olmoe": gen_olmoe, "granitemoe": gen_granitemoe, "granitemoeshared": gen_granitemoeshared,
    "granitemoehybrid": gen_granitemoehybrid, "dots1": gen_dots1,
    "qwen2_vl": gen_qwen2_vl, "qwen2_5_vl": gen_qwen2_5_vl, "qwen3_vl": gen_qwen3_vl, "qwen3_vl_moe": gen_qwen3_vl_moe,
    "cohere": gen_cohere, "cohere2": gen_cohere2,
    "glm": gen_glm, "glm4": gen_glm4, "glm4v": gen_glm4v, "glm4v_moe": gen_glm4v_moe,
    "exaone_moe": gen_exaone_moe, "solar_open": gen_solar_open, "youtu": gen_youtu, "jais2": gen_jais2, "nanochat": gen_nanochat, "hy_v3": gen_hy_v3, "cohere2_moe": gen_cohere2_moe, "afmoe": gen_afmoe,
    "kimi_linear": gen_kimi_linear,
}


def build(family: str, seed: int, index: int, root: Path, versions: dict) -> dict:
    name = f"{family.replace('_', '-')}-{seed}-{index}"
    r = random.Random(f"{seed}:{family}:{index}")
    fixture = GENERATORS[family](r, name)
    # Weights stored as transformers would save them in another dtype (the reference is float32 on
    # the same representable values), sometimes split over shards.
    fixture.stored_dtype = r.choice(("float32", "float32", "bfloat16", "float16"))
    if r.random() < 0.15:
        fixture.max_shard_size = "16KB"  # small enough to split even the smallest drawn model
    mf.SEED_BASES[name] = 100000 + 1000 * index + seed
    row = {"name": name, "family": family, "dir": str(root / name), "config": fixture.fields, "rope": fixture.rope}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = mf.build_fixture(fixture, root, versions)
    except Exception as exc:  # noqa: BLE001 - transformers refusing a drawn config is a finding, not a crash
        row.update(status="oracle-invalid", error=f"{type(exc).__name__}: {exc}"[:400])
        if "--verbose" in sys.argv:
            traceback.print_exc()
        return row
    row.update(status="built", min_greedy_margin=result["min_greedy_margin"], min_routing_margin=result.get("min_routing_margin"))
    return row


def check(rows: list[dict], engine: bool) -> None:
    """Runs scripts/oracle-check.ts on the built variants, in one node process (with --engine: every engine variant too)."""
    built = [row for row in rows if row["status"] == "built"]
    if not built:
        return
    flags = ["--engine"] if engine else []
    proc = subprocess.run(["node", "--import", "tsx", "scripts/oracle-check.ts", *flags, *(row["dir"] for row in built)],
                          cwd=REPO, capture_output=True, text=True)
    verdicts = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            verdict = json.loads(line)
            verdicts[verdict["dir"]] = verdict
    for row in built:
        verdict = verdicts.get(row["dir"])
        if verdict is None:
            row.update(status="keel-failed", error=f"no verdict (node exited {proc.returncode}): {proc.stderr[-600:]}")
            continue
        bad = {k: v for k, v in verdict.items() if k in ("logits", "greedy") and v != "ok"}
        row.update(status="keel-failed" if bad else "ok", **bad)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--families", default=",".join(GENERATORS), help=f"comma-separated, of: {', '.join(GENERATORS)}")
    parser.add_argument("--variants", type=int, default=4, help="variants per family")
    parser.add_argument("--first", type=int, default=0, help="index of the first variant (to resume or to redraw one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="build the checkpoints only")
    parser.add_argument("--engine", action="store_true",
                        help="check every engine variant of the parity suite too (chunked prefill, preemption, "
                             "speculation, offload, prefix cache, tensor and pipeline parallel 2): slower")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints of passing variants")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    families = args.families.split(",")
    unknown = set(families) - set(GENERATORS)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}")
    mf.configure_torch()
    # Tiny matrices: one thread is faster than two fighting over a shared machine.
    mf.torch.set_num_threads(1)
    mf.hf_logging.set_verbosity_error()
    versions = {"torch": mf.torch.__version__, "transformers": mf.transformers.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "results.jsonl").open("a") as log:
        for family in families:
            start = time.perf_counter()
            rows = [build(family, args.seed, i, args.out, versions) for i in range(args.first, args.first + args.variants)]
            if not args.no_check:
                check(rows, args.engine)
            for row in rows:
                log.write(json.dumps(row) + "\n")
                if row["status"] == "ok" and not args.keep:
                    shutil.rmtree(row["dir"], ignore_errors=True)
            counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "keel-failed", "oracle-invalid", "built")}
            print(f"{family}: {counts} in {time.perf_counter() - start:.0f} s", flush=True)
            for row in rows:
                if row["status"] not in ("ok", "built"):
                    detail = row.get("error") or row.get("logits") or row.get("greedy")
                    print(f"  {row['name']} {row['status']}: {str(detail)[:300]}", flush=True)
            log.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
