#!/usr/bin/env python3
"""Build tiny random-weight Hugging Face checkpoints and record transformers' outputs on them.

Keel's parity tests load each checkpoint with the TypeScript engine and compare against
`oracle.json`, so every number in here is computed by transformers itself, on CPU, in
float32, with eager attention: that is the most literal reading of the reference
implementation and is free of TF32/flash-attention rounding.

Usage:
    python3 tools/oracle/make_fixtures.py --out DIR [--only NAME ...]

For every fixture NAME this writes DIR/NAME/ (config.json, safetensors weights,
generation_config.json, oracle.json) and finally DIR/MANIFEST.json (with --only, merged into
the existing one). It exits non-zero if any fixture failed; the others are still written.
MoE routing, feature probes and checkpoint-layout checks live in fixture_probes.py;
docs/oracle-fixtures.md lists every fixture and what a re-implementation must copy.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

# The GPU host has no network: make every Hugging Face code path fail fast instead of
# retrying downloads. Set before transformers is imported, which reads them at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from greedy_reference import auto_class, greedy_with_cache, load_fp32, top_logprobs  # noqa: E402
from fixture_probes import (  # noqa: E402
    check_hub_layout, evidence, index_selection_stats, routing_stats, saved_tensors, softcap_stats,
)
from aqlm_fixtures import load_through_transformers  # noqa: E402
from quantized_fixtures import (  # noqa: E402
    SCHEMES, dequantized_state, fuse_input_major_experts, install_runtime_layers, quantize_model, write_checkpoint,
)

MAX_NEW_TOKENS = 24
PROMPT_LENGTHS = (5, 17, 40, 70)
# Prompts 3 and 4 share this many leading tokens so the engine's prefix cache has
# something to hit (prompt 3 is 40 tokens, so 33 leaves a partial last block either way).
SHARED_PREFIX_LEN = 33
# Ids 0..2 are pad/bos/eos in every fixture config; prompts stay clear of them so no
# engine-side special-token handling can interfere with the comparison.
FIRST_PROMPT_ID = 3
# The engine matches logits to ~1e-4; a greedy step whose top-2 logits are closer than
# this could legitimately flip, so such weights are re-drawn with another seed.
MIN_GREEDY_MARGIN = 1e-3
# Likewise for MoE routing: a token whose k-th and (k+1)-th router scores are closer than this
# (in the space the choice is made in, see fixture_probes.route) could pick another expert in
# another implementation, so such weights are re-drawn too.
MIN_ROUTING_MARGIN = 1e-3
# DeepSeek-V3.2's indexer: a query whose k-th and (k+1)-th index scores are closer than this could
# attend to another position in another implementation (Keel's float64 CPU scores land ~1e-6 from
# torch's float32 ones), so such weights are re-drawn too.
MIN_INDEX_MARGIN = 1e-4
MAX_SEED_ATTEMPTS = 8
# MoE fixtures must satisfy both margins and use every expert, which takes more draws.
MOE_SEED_ATTEMPTS = 32
INIT_STD = 0.1

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG_CLASS_NAMES = {
    "llama": "LlamaConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "mixtral": "MixtralConfig",
    "qwen2_moe": "Qwen2MoeConfig",
    "qwen3_moe": "Qwen3MoeConfig",
    "deepseek_v2": "DeepseekV2Config",
    "deepseek_v3": "DeepseekV3Config",
    "gemma": "GemmaConfig",
    "deepseek_v32": "DeepseekV32Config",
    "gemma2": "Gemma2Config",
    "gemma3_text": "Gemma3TextConfig",
    "phi3": "Phi3Config",
    "gpt_oss": "GptOssConfig",
    "gemma3": "Gemma3Config",
    "mistral3": "Mistral3Config",
    "llama4": "Llama4Config",
    "llama4_text": "Llama4TextConfig",
    "olmo2": "Olmo2Config",
    "olmo3": "Olmo3Config",
    "smollm3": "SmolLM3Config",
    "granite": "GraniteConfig",
    "seed_oss": "SeedOssConfig",
    "exaone4": "Exaone4Config",
    "arcee": "ArceeConfig",
    "ministral3": "Ministral3Config",
    "hunyuan_v1_dense": "HunYuanDenseV1Config",
    "apertus": "ApertusConfig",
    "glm4_moe": "Glm4MoeConfig",
    "glm4_moe_lite": "Glm4MoeLiteConfig",
    "mistral4": "Mistral4Config",
    "mimo_v2_flash": "MiMoV2FlashConfig",
    "laguna": "LagunaConfig",
    "glm_moe_dsa": "GlmMoeDsaConfig",
    "qwen3_next": "Qwen3NextConfig",
    "qwen3_5_text": "Qwen3_5TextConfig",
    "qwen3_5_moe": "Qwen3_5MoeConfig",
    "qwen3_5_moe_text": "Qwen3_5MoeTextConfig",
    "minimax_m2": "MiniMaxM2Config",
    "ernie4_5": "Ernie4_5Config",
    "ernie4_5_moe": "Ernie4_5_MoeConfig",
    "hunyuan_v1_moe": "HunYuanMoEV1Config",
    "olmoe": "OlmoeConfig",
    "granitemoe": "GraniteMoeConfig",
    "granitemoeshared": "GraniteMoeSharedConfig",
    "granitemoehybrid": "GraniteMoeHybridConfig",
    "dots1": "Dots1Config",
    "qwen2_vl": "Qwen2VLConfig",
    "qwen2_vl_text": "Qwen2VLTextConfig",
    "qwen2_5_vl": "Qwen2_5_VLConfig",
    "qwen2_5_vl_text": "Qwen2_5_VLTextConfig",
    "qwen3_vl": "Qwen3VLConfig",
    "qwen3_vl_text": "Qwen3VLTextConfig",
    "qwen3_vl_moe": "Qwen3VLMoeConfig",
    "qwen3_vl_moe_text": "Qwen3VLMoeTextConfig",
    "glm4v": "Glm4vConfig",
    "glm4v_text": "Glm4vTextConfig",
    "glm4v_moe": "Glm4vMoeConfig",
    "glm4v_moe_text": "Glm4vMoeTextConfig",
    "cohere": "CohereConfig",
    "cohere2": "Cohere2Config",
    "kimi_linear": "KimiLinearConfig",
    "glm": "GlmConfig",
    "glm4": "Glm4Config",
    "gemma4_text": "Gemma4TextConfig",
    "gemma4": "Gemma4Config",
    "exaone_moe": "ExaoneMoeConfig",
    "solar_open": "SolarOpenConfig",
    "youtu": "YoutuConfig",
    "jais2": "Jais2Config",
    "nanochat": "NanoChatConfig",
    "hy_v3": "HYV3Config",
    "cohere2_moe": "Cohere2MoeConfig",
    "afmoe": "AfmoeConfig",
}
# The families of the first fixtures, whose oracle.json and manifest entries keep their original fields.
FIRST_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
MOE_MODEL_TYPES = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "gpt_oss", "llama4", "llama4_text",
                   "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "qwen3_next", "qwen3_5_moe", "minimax_m2", "ernie4_5_moe",
                   "hunyuan_v1_moe", "olmoe", "granitemoe", "granitemoeshared", "granitemoehybrid", "dots1",
                   "qwen3_vl_moe", "glm4v_moe", "gemma4_text", "gemma4",
                   "mistral4", "mimo_v2_flash", "laguna", "exaone_moe", "solar_open", "hy_v3", "cohere2_moe", "afmoe", "kimi_linear"}
# The families with DeepSeek-V3's router (its e_score_correction_bias buffer) and V3.2's lightning indexer.
SELECTION_BIAS_MODEL_TYPES = {"deepseek_v3", "deepseek_v32", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "minimax_m2", "ernie4_5_moe",
                              "dots1", "glm4v_moe", "mimo_v2_flash", "exaone_moe", "solar_open", "hy_v3", "kimi_linear"}
INDEXER_MODEL_TYPES = {"deepseek_v32", "glm_moe_dsa"}
# Those routers' draws: weights wider than INIT_STD so top-k choices are decisive, a bias that moves some.
SELECTION_BIAS_ROUTER = ((r"\.mlp\.gate\.weight$", 0.0, 0.3), (r"\.e_score_correction_bias$", 0.0, 0.1))

COMMON_FIELDS = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    # Larger than the usual 0.02 so logits spread out and greedy ties are unlikely.
    initializer_range=INIT_STD,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def _rope(rope_type: str = "default", theta: float = 10000.0, **extra) -> dict:
    return {"rope_type": rope_type, "rope_theta": float(theta), **extra}


@dataclass
class Fixture:
    name: str
    model_type: str
    description: str
    fields: dict
    rope: dict
    stored_dtype: str = "float32"
    max_shard_size: str | None = None
    prompt_lengths: tuple[int, ...] = PROMPT_LENGTHS
    # Centre of the random norm weights: 1 for x * w norms, 0 for Gemma's x * (1 + w).
    norm_center: float = 1.0
    # (regex on the parameter/buffer name, centre, std) overriding the default draw; first match wins.
    init_overrides: tuple[tuple[str, float, float], ...] = ()
    # Names from fixture_probes.PROBES: features whose removal must change the logits.
    probes: tuple[str, ...] = ()
    # A scheme of quantized_fixtures.SCHEMES: the decoder's linear layers are written in that
    # format, and the oracle is transformers on their dequantized values.
    quantization: str | None = None
    # A vision-language checkpoint (model_type gemma3, mistral3, ...): `fields` and `rope` make its
    # text_config, of this model_type; `wrapper_fields` the rest (a tiny vision_config).
    text_model_type: str | None = None
    wrapper_fields: dict = field(default_factory=dict)
    # Top-level config.json keys set after saving: a re-saved checkpoint whose config disagrees with
    # its tensors, which the oracle reads as transformers' from_pretrained does.
    saved_config_overrides: dict = field(default_factory=dict)
    # A vision-language config.json written flat, as the Hub's Qwen2-VL and Qwen2.5-VL ones are:
    # text_config's keys at the top level (RoPE as 4.x's rope_theta + rope_scaling), from which
    # transformers builds text_config.
    flat_text_config: bool = False
    # Filled in while building, for the summary and the manifest.
    result: dict = field(default_factory=dict)


def _fields(**overrides) -> dict:
    merged = dict(COMMON_FIELDS)
    merged.update(overrides)
    return merged


FIXTURES = [
    Fixture(
        "llama-gqa", "llama",
        "Llama baseline: grouped-query attention (4 query heads share 2 KV heads), "
        "default RoPE theta 1e4, untied lm_head, float32 weights.",
        _fields(num_key_value_heads=2),
        _rope(),
    ),
    Fixture(
        "llama-mha-bf16", "llama",
        "Llama with plain multi-head attention (4 KV heads), weights stored as bfloat16 "
        "(reference computed in float32 from the same bf16-representable values).",
        _fields(num_key_value_heads=4, rms_norm_eps=1e-6),
        _rope(),
        stored_dtype="bfloat16",
    ),
    Fixture(
        "llama-mqa-f16", "llama",
        "Llama with multi-query attention (1 KV head), weights stored as float16 "
        "(reference computed in float32 from the same f16-representable values).",
        _fields(num_key_value_heads=1),
        _rope(),
        stored_dtype="float16",
    ),
    Fixture(
        "llama-rope-llama3", "llama",
        "Llama 3.1-style RoPE scaling (factor 8, low_freq_factor 1, high_freq_factor 4, "
        "original_max_position_embeddings 32, theta 5e5): per-frequency smooth interpolation.",
        _fields(num_key_value_heads=2),
        _rope("llama3", 500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=32),
    ),
    Fixture(
        "llama-rope-linear", "llama",
        "Linear RoPE scaling (position interpolation) with factor 2: inv_freq divided by 2.",
        _fields(num_key_value_heads=2),
        _rope("linear", 10000.0, factor=2.0),
    ),
    Fixture(
        "llama-rope-dynamic", "llama",
        "Dynamic NTK RoPE, factor 2, max_position_embeddings 48. transformers recomputes "
        "inv_freq in every forward from seq_len = max(position_ids) + 1 once that exceeds 48, "
        "and does NOT re-rotate keys already in the KV cache, so each decode step past 48 "
        "uses the base for its own position. Prompts (40 and 45 tokens) fit in 48 and their "
        "decodes cross it. (A prompt longer than 48 is prefilled by transformers with one base "
        "for all its tokens, which no paged cache can reproduce per position; Keel applies "
        "the per-position rule of the decode path there too.)",
        _fields(num_key_value_heads=2, max_position_embeddings=48),
        _rope("dynamic", 10000.0, factor=2.0),
        prompt_lengths=(5, 17, 40, 45),
    ),
    Fixture(
        "llama-rope-yarn", "llama",
        "YaRN RoPE scaling, factor 4, original_max_position_embeddings 32 "
        "(max_position_embeddings 128 = 4 x 32), default beta_fast 32 / beta_slow 1 and the "
        "default attention factor 0.1*ln(4)+1 applied to cos/sin.",
        _fields(num_key_value_heads=2),
        _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32),
    ),
    Fixture(
        "mistral-headdim", "mistral",
        "Mistral with an explicit head_dim 32 that differs from hidden_size / heads (16): "
        "q_proj is 64->128, o_proj 128->64. GQA with 2 KV heads, no sliding window.",
        _fields(num_key_value_heads=2, head_dim=32, sliding_window=None),
        _rope(),
    ),
    Fixture(
        "mistral-swa", "mistral",
        "Mistral sliding-window attention, sliding_window 16: query i sees keys j with "
        "i - 16 < j <= i (16 keys including itself). Prompts of 17, 40 and 70 tokens and all "
        "decode steps past 16 exercise the window, both in prefill and with the KV cache.",
        _fields(num_key_value_heads=2, sliding_window=16),
        _rope(),
    ),
    Fixture(
        "qwen2-bias-tied", "qwen2",
        "Qwen2: q/k/v projections carry biases (randomised, non-zero), lm_head tied to the "
        "embedding (no lm_head.weight in the checkpoint), RoPE theta 1e6, GQA with 2 KV heads.",
        _fields(num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
                use_sliding_window=False, sliding_window=None),
        _rope(theta=1000000.0),
    ),
    Fixture(
        "qwen3-qknorm", "qwen3",
        "Qwen3: per-head RMSNorm on q and k (q_norm/k_norm, applied before RoPE), head_dim 32 "
        "(!= 64/4), GQA with 2 KV heads, tied lm_head, RoPE theta 1e6.",
        _fields(num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, rms_norm_eps=1e-6,
                use_sliding_window=False, sliding_window=None),
        _rope(theta=1000000.0),
    ),
    Fixture(
        "llama-sharded", "llama",
        "Same architecture as llama-gqa but 3 layers, saved with max_shard_size=100KB so the "
        "weights are split over several model-0000X-of-0000N.safetensors files listed in "
        "model.safetensors.index.json.",
        _fields(num_key_value_heads=2, num_hidden_layers=3),
        _rope(),
        max_shard_size="100KB",
    ),
    # --- Families beyond Llama/Mistral/Qwen. Routers are drawn wider than INIT_STD so that
    # top-k choices are decisive (see MIN_ROUTING_MARGIN) yet still vary from token to token.
    Fixture(
        "mixtral-moe", "mixtral",
        "Mixtral sparse MoE in every layer: 4 experts (intermediate 32), top-2. Router logits "
        "x @ gate.T, softmax over all 4 experts in float32, top-2 of the probabilities, those 2 "
        "renormalised to sum 1; each expert is down(silu(w1 x) * w3 x) with w1=gate, w3=up, "
        "w2=down. Hub layout: block_sparse_moe.gate.weight, block_sparse_moe.experts.E.w1/w2/w3.weight. "
        "GQA 4 query / 2 KV heads, RoPE theta 1e6, no sliding window.",
        _fields(num_key_value_heads=2, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                sliding_window=None),
        _rope(theta=1000000.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
    ),
    Fixture(
        "qwen2-moe", "qwen2_moe",
        "Qwen1.5/2-MoE: 3 layers, layers 0 and 2 sparse, layer 1 a dense MLP (intermediate 64) via "
        "mlp_only_layers=[1] (decoder_sparse_step 1). Sparse layer: 4 routed experts (moe_intermediate "
        "32), top-2 of softmax(x @ gate.T) in float32 with norm_topk_prob=False (the 2 probabilities "
        "are used as they are, not renormalised), plus a shared expert (intermediate 48) scaled by "
        "sigmoid(shared_expert_gate(x)) and added. q/k/v biases (randomised), o_proj without bias, "
        "GQA 2 KV heads, RoPE theta 1e6.",
        _fields(num_key_value_heads=2, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=32,
                shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                decoder_sparse_step=1, mlp_only_layers=[1], qkv_bias=True, use_sliding_window=False,
                rms_norm_eps=1e-6),
        _rope(theta=1000000.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
        probes=("shared_expert_ungated", "norm_topk_flipped"),
    ),
    Fixture(
        "qwen3-moe", "qwen3_moe",
        "Qwen3-MoE: 3 layers, layers 0 and 2 sparse, layer 1 dense (mlp_only_layers=[1], intermediate "
        "64). Sparse layer: 8 experts (moe_intermediate 16), top-2 of softmax(x @ gate.T) in float32, "
        "norm_topk_prob=True (the 2 probabilities renormalised to sum 1), no shared expert. Per-head "
        "q_norm/k_norm RMSNorm before RoPE, no attention biases, GQA 2 KV heads, RoPE theta 1e6. "
        "transformers 5 writes the expert count as num_local_experts in config.json (Hub configs "
        "spell it num_experts; both are accepted).",
        _fields(num_key_value_heads=2, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                mlp_only_layers=[1], use_sliding_window=False, sliding_window=None, rms_norm_eps=1e-6),
        _rope(theta=1000000.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
        probes=("norm_topk_flipped", "qk_norm_off"),
    ),
    Fixture(
        "deepseek-v2-lite", "deepseek_v2",
        "DeepSeek-V2-Lite-like MLA + MoE, 3 layers. Attention: q_lora_rank None (plain q_proj to "
        "4 heads x (16 nope + 8 rope)), kv_a_proj_with_mqa -> [32-dim latent | 8-dim shared k_rope], "
        "kv_a_layernorm on the latent, kv_b_proj -> per head [16 k_nope | 16 v]; RoPE on the 8 rope "
        "dims in interleaved pairs (x[2i], x[2i+1]) (DeepSeek-V2 has no rope_interleave flag). YaRN "
        "factor 4, original_max_position_embeddings 32, mscale = mscale_all_dim = 0.707: cos/sin "
        "factor mscale(4,0.707)/mscale(4,0.707) = 1 and softmax scale (24^-0.5) * mscale(4,0.707)^2 "
        "with mscale(s,m) = 0.1*m*ln(s)+1. Layer 0 dense MLP (first_k_dense_replace 1); layers 1-2: "
        "8 routed experts (moe_intermediate 16), topk_method greedy: top-2 of softmax(x @ gate.T) in "
        "float32, not renormalised (norm_topk_prob False), times routed_scaling_factor 1.5; plus 1 "
        "shared expert (intermediate 16), ungated.",
        _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.5, q_lora_rank=None,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6),
        _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, mscale=0.707,
              mscale_all_dim=0.707, beta_fast=32.0, beta_slow=1.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
        probes=("mscale_off", "routed_scale_one"),
    ),
    Fixture(
        "deepseek-v2-expanded", "deepseek_v2",
        "DeepSeek-V2-like MLA whose head sizes Keel's expanded MLA prefill takes on a Hopper GPU: "
        "4 heads x (48 nope + 16 rope) = keys of 64, values of 32, kv_lora_rank 64, q_lora_rank "
        "None; interleaved-pair RoPE, default (no YaRN). A 64-token chunk or longer (the 70-token "
        "prompt) projects its context to every head's keys and values and runs the wgmma prefill "
        "kernel; shorter chunks and decodes run absorbed. 2 layers: layer 0 dense MLP, layer 1 "
        "4 routed experts top-2 (greedy, renormalised) and 1 shared expert.",
        _fields(num_key_value_heads=4, num_hidden_layers=2, intermediate_size=64, moe_intermediate_size=16,
                n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                topk_method="greedy", norm_topk_prob=True, routed_scaling_factor=1.0, q_lora_rank=None,
                kv_lora_rank=64, qk_nope_head_dim=48, qk_rope_head_dim=16, v_head_dim=32, rms_norm_eps=1e-6),
        _rope(theta=10000.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
    ),
    Fixture(
        "deepseek-v2-group", "deepseek_v2",
        "DeepSeek-V2-like MLA with q_lora_rank 24 (q_a_proj -> q_a_layernorm -> q_b_proj), kv_lora_rank "
        "32, 16 nope + 8 rope / 16 v head dims, interleaved-pair RoPE, 3 layers (layer 0 dense). "
        "MoE: 8 routed experts in n_group 2 groups of 4, topk_method group_limited_greedy: group "
        "score = max softmax probability in the group, keep topk_group 1 group, top-2 experts among "
        "its 4 (others masked to 0), weights = those probabilities (not renormalised) times "
        "routed_scaling_factor 16; 1 shared expert. YaRN factor 4 / original 32 with mscale 1.0 and "
        "mscale_all_dim 0.707, so cos/sin are multiplied by mscale(4,1)/mscale(4,0.707) != 1 and the "
        "softmax scale by mscale(4,0.707)^2.",
        _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                topk_method="group_limited_greedy", n_group=2, topk_group=1, norm_topk_prob=False,
                routed_scaling_factor=16.0, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16,
                qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6),
        _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, mscale=1.0,
              mscale_all_dim=0.707, beta_fast=32.0, beta_slow=1.0),
        init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
        probes=("mscale_off", "rope_attention_factor_one"),
    ),
    Fixture(
        "deepseek-v3", "deepseek_v3",
        "DeepSeek-V3-like MLA (q_lora_rank 24, kv_lora_rank 32, 16 nope + 8 rope / 16 v head dims) "
        "+ MoE, 3 layers (layer 0 dense, first_k_dense_replace 1). Router: s = sigmoid(x @ gate.T) in "
        "float32; choice scores s + e_score_correction_bias (a persistent buffer, randomised and "
        "saved as mlp.gate.e_score_correction_bias); 8 experts in n_group 4 groups of 2, group score "
        "= sum of the group's top-2 choice scores, keep topk_group 2 groups, top-2 experts by choice "
        "score among them; weights = s (without the bias) of those experts, divided by their sum "
        "(+1e-20) as norm_topk_prob=True, times routed_scaling_factor 2.5; plus 1 shared expert. "
        "rope_interleave True (the config default): RoPE rotates adjacent pairs (x[2i], x[2i+1]) and "
        "emits [rotated evens | rotated odds]. YaRN factor 4 / original 32, mscale = mscale_all_dim "
        "= 1: cos/sin factor 1, softmax scale 24^-0.5 * (0.1*ln4+1)^2. One MTP layer "
        "(num_nextn_predict_layers 1), which transformers does not model: stored as DeepSeek "
        "publishes it, model.layers.3.{enorm, hnorm, eh_proj, shared_head.norm, shared_head.head} "
        "and a MoE decoder block, drawn after the model (add_mtp_layers); the oracle is the "
        "decoder's alone.",
        _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=24,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6,
                num_nextn_predict_layers=1),
        _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, mscale=1.0,
              mscale_all_dim=1.0, beta_fast=32.0, beta_slow=1.0),
        init_overrides=SELECTION_BIAS_ROUTER,
        probes=("e_score_bias_off", "routed_scale_one", "mscale_off", "rope_not_interleaved"),
    ),
    Fixture(
        "deepseek-v32", "deepseek_v32",
        "DeepSeek-V3.2-like: DeepSeek-V3's MLA (q_lora_rank 24, kv_lora_rank 32, 16 nope + 8 rope / 16 v "
        "head dims, RoPE in interleaved pairs) and noaux_tc MoE (8 experts, n_group 4, topk_group 2, top-2, "
        "norm_topk_prob, routed_scaling_factor 2.5, 1 shared expert; layer 0 dense), 3 layers, with DeepSeek "
        "Sparse Attention: each layer's lightning indexer scores every earlier position t for a query s as "
        "sum_h w[s,h] * relu(q[s,h] . k[t] / sqrt(16)), with q = indexer.wq_b(q_a_layernorm(q_a_proj(x))) "
        "(16 heads x 16), k = LayerNorm(indexer.wk(x)) (weight and bias, eps 1e-6, one 16-dim key per token, "
        "cached), w = indexer.weights_proj(x) / sqrt(16), and the leading 8 dims of q and k rotated in "
        "rotate_half pairs (not interleaved) by the same cos/sin as MLA; MLA then attends only to the "
        "index_topk 8 positions of highest score (all of them while a query sees 8 or fewer), in prefill and "
        "decode. index_topk 8 is below every prompt length but the first, so selection changes the logits "
        "(probe index_topk_dense). YaRN factor 4 / original 32, mscale = mscale_all_dim = 1.",
        _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=24,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6,
                index_n_heads=16, index_head_dim=16, index_topk=8),
        _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, mscale=1.0,
              mscale_all_dim=1.0, beta_fast=32.0, beta_slow=1.0),
        # Wider indexer weights spread the index scores, so the 8th and 9th are rarely near-ties.
        init_overrides=(*SELECTION_BIAS_ROUTER,
                        (r"\.indexer\.(wq_b|wk|weights_proj)\.weight$", 0.0, 0.3)),
        probes=("index_topk_dense", "e_score_bias_off", "mscale_off"),
    ),
    Fixture(
        "gemma-mqa", "gemma",
        "Gemma 1: 2 layers, 4 query heads over 1 key/value head (Gemma-2B's MQA), head_dim 24 "
        "(not hidden / heads = 16, as Gemma-7B's 256 is not 3072 / 16); scale head_dim^-0.5; no "
        "soft-capping, no sliding window; RMSNorm x*(1+w) (norm weights randomised around 0, the "
        "final norm around 2; o_proj and down_proj std 1.0 so that the sublayers outweigh the scaled "
        "tied embedding and the greedy output varies); input and post-attention norms only (as "
        "Llama's); gelu_pytorch_tanh MLP; embeddings multiplied by sqrt(64) = 8; lm_head tied.",
        _fields(num_key_value_heads=1, head_dim=24, intermediate_size=96, hidden_act="gelu_pytorch_tanh",
                tie_word_embeddings=True, rms_norm_eps=1e-6),
        _rope(),
        norm_center=0.0,
        init_overrides=((r"^model\.norm\.weight$", 2.0, 0.1),
                        (r"(self_attn\.o_proj|mlp\.down_proj)\.weight$", 0.0, 1.0)),
        probes=("embed_scale_off",),
    ),
    Fixture(
        "gemma2-softcap", "gemma2",
        "Gemma 2: 4 layers alternating sliding (0, 2; sliding_window 16: query i sees keys j with "
        "i - 16 < j <= i) and global (1, 3) attention; attention-logit soft-capping "
        "cap*tanh(s/cap) on the scaled scores before the mask, final-logit soft-capping on the "
        "lm_head output; scale query_pre_attn_scalar^-0.5 with query_pre_attn_scalar 24 != head_dim "
        "16; RMSNorm x*(1+w) (norm weights randomised around 0); input, post-attention, "
        "pre-feed-forward and post-feed-forward norms (the post norms are applied to the sublayer "
        "output before the residual add); gelu_pytorch_tanh MLP; embeddings multiplied by "
        "sqrt(64) = 8; lm_head tied to the embedding. Drawn so that both caps bend the largest values "
        "(see softcap in oracle.json): attention cap 20 with q/k_proj std 0.25, final cap 10 with the "
        "final norm weight ~2 (scale ~3); post norms "
        "~1 (scale ~2) keep the tied embedding from dominating the residual stream.",
        _fields(num_key_value_heads=2, num_hidden_layers=4, head_dim=16, intermediate_size=64,
                hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=16,
                attn_logit_softcapping=20.0, final_logit_softcapping=10.0, tie_word_embeddings=True,
                rms_norm_eps=1e-6),
        _rope(),
        norm_center=0.0,
        init_overrides=((r"self_attn\.[qk]_proj\.weight$", 0.0, 0.25),
                        (r"^model\.norm\.weight$", 2.0, 0.1),
                        (r"post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1)),
        probes=("attn_softcap_off", "final_softcap_off", "sliding_window_off", "embed_scale_off",
                "scaling_head_dim"),
    ),
    Fixture(
        "gemma3-text", "gemma3_text",
        "Gemma 3 text: 6 layers, 5 sliding (0-4, sliding_window 16) : 1 global (5); per-head "
        "q_norm/k_norm (Gemma RMSNorm x*(1+w)) before RoPE; sliding layers RoPE theta 1e4 "
        "(rope_parameters.sliding_attention, the Hub's rope_local_base_freq), the global layer theta "
        "1e6 with linear scaling factor 8 (rope_parameters.full_attention, the Hub's rope_scaling); "
        "scale query_pre_attn_scalar^-0.5 with 24 != head_dim 16; no soft-capping; four norms per "
        "layer as Gemma 2, norm weights randomised around 0 (post norms around 1 and the final "
        "norm around 2, for varied greedy output); gelu_pytorch_tanh; embeddings times sqrt(64); "
        "lm_head tied.",
        _fields(num_key_value_heads=2, num_hidden_layers=6, head_dim=16, intermediate_size=48,
                hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=16,
                final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True,
                rms_norm_eps=1e-6),
        {"sliding_attention": _rope("default", 10000.0),
         "full_attention": _rope("linear", 1000000.0, factor=8.0)},
        norm_center=0.0,
        init_overrides=((r"^model\.norm\.weight$", 2.0, 0.1),
                        (r"post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1)),
        probes=("sliding_window_off", "global_rope_unscaled", "local_rope_global_base", "qk_norm_off",
                "scaling_head_dim", "embed_scale_off"),
    ),
    Fixture(
        "phi3-longrope", "phi3",
        "Phi-3: fused qkv_proj ([q 4x16 | k 2x16 | v 2x16] rows) and gate_up_proj ([gate | up] rows, "
        "down(up * silu(gate))); LongRoPE with original_max_position_embeddings 32, "
        "max_position_embeddings 128, short_factor/long_factor lists (8 values, inv_freq divided "
        "elementwise) and cos/sin scaled by sqrt(1 + ln(128/32)/ln(32)). transformers chooses the "
        "factors in every forward from seq_len = max(position_ids) + 1: long if seq_len > 32, else "
        "short, and does NOT re-rotate keys already in the KV cache. So the 40- and 70-token prompts "
        "are prefilled with long factors at every position (0-31 included), the 5-token prompt uses "
        "short factors throughout, and the 17-token prompt is prefilled short and switches to long "
        "at its first decode step at position 32, keeping its short-rotated cached keys. Per token: "
        "long iff its position >= 32 or the prompt is longer than 32 tokens. No sliding window.",
        _fields(num_key_value_heads=2, original_max_position_embeddings=32, sliding_window=None),
        _rope("longrope", 10000.0, short_factor=[1.0, 1.02, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3],
              long_factor=[1.0, 1.3, 1.8, 2.4, 3.2, 4.0, 5.0, 6.0], original_max_position_embeddings=32,
              partial_rotary_factor=1.0),
        probes=("longrope_short_only", "rope_attention_factor_one"),
    ),
    Fixture(
        "phi3-partial-rotary", "phi3",
        "Phi-4-mini-like Phi-3: partial_rotary_factor 0.75, so RoPE (LongRoPE, 6-value factor lists, "
        "same short/long rule as phi3-longrope) rotates only the first 12 of 16 head dims (rotate_half "
        "within those 12) and the last 4 pass through; fused qkv_proj/gate_up_proj; lm_head tied to "
        "the embedding; GQA 2 KV heads.",
        _fields(num_key_value_heads=2, original_max_position_embeddings=32, sliding_window=None,
                tie_word_embeddings=True),
        _rope("longrope", 10000.0, short_factor=[1.0, 1.03, 1.08, 1.15, 1.22, 1.3],
              long_factor=[1.0, 1.5, 2.2, 3.1, 4.3, 6.0], original_max_position_embeddings=32,
              partial_rotary_factor=0.75),
        probes=("longrope_short_only",),
    ),
    Fixture(
        "gpt-oss", "gpt_oss",
        "gpt-oss in float32 (not MXFP4): 2 layers, layer 0 sliding (window 16), layer 1 full; learned "
        "per-head attention sinks (self_attn.sinks, randomised): softmax over [scores | sink] per "
        "head, the sink column dropped afterwards, so rows sum to < 1; q/k/v/o biases; RoPE "
        "rotate_half pairing, YaRN factor 4 / original 32 / theta 150000 / beta_fast 32 / beta_slow "
        "1 / truncate False with cos/sin factor 0.1*ln4+1. MoE every layer: router logits = x @ W.T "
        "+ b over 4 experts, top-2 by logit, softmax over the 2 chosen logits only. Experts (Hub "
        "layout, fused): gate_up = x @ gate_up_proj[e] + gate_up_proj_bias[e] with gate = columns "
        "0,2,4,... and up = 1,3,5,... (interleaved), gate clamped to <= 7, up to [-7, 7], out = "
        "((up + 1) * gate * sigmoid(1.702 * gate)) @ down_proj[e] + down_proj_bias[e] (limit 7 and alpha "
        "1.702 are constants in transformers; config.json carries the Hub's swiglu_limit 7.0). Expert "
        "weights are drawn wide enough that the clamp is hit (swiglu_clamp_off probe).",
        _fields(num_key_value_heads=2, head_dim=16, intermediate_size=32, num_local_experts=4,
                num_experts_per_tok=2, sliding_window=16, attention_bias=True,
                # As in the Hub config; transformers 5.17 ignores it and hard-codes limit 7.0.
                swiglu_limit=7.0),
        _rope("yarn", 150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
              original_max_position_embeddings=32),
        init_overrides=((r"\.mlp\.router\.weight$", 0.0, 0.3),
                        (r"\.self_attn\.sinks$", 0.0, 1.0),
                        (r"\.mlp\.experts\.gate_up_proj$", 0.0, 0.6),
                        (r"\.mlp\.experts\.down_proj$", 0.0, 0.02)),
        probes=("sinks_off", "sliding_window_off", "swiglu_clamp_off", "rope_attention_factor_one"),
    ),
    # --- Quantized checkpoints: llama-gqa's architecture with its linear layers packed in each
    # format Keel reads (tools/oracle/quantized_fixtures.py); other tensors bf16.
    Fixture(
        "quant-gptq-int4-actorder", "llama",
        "GPTQ 4-bit (v1 checkpoint_format: zeros stored minus one), groups of 32, asymmetric, desc_act: g_idx lists a random column order, so groups are scattered over the input columns. Linear layers only; embeddings, norms and lm_head bf16. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="gptq-int4-actorder",
    ),
    Fixture(
        "quant-gptq-int8-channel", "llama",
        "GPTQ 8-bit, group_size -1 (one scale per output row), symmetric (zero 128 stored as 127), trivial g_idx. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="gptq-int8-channel",
    ),
    Fixture(
        "quant-awq-int4", "llama",
        "AWQ 4-bit GEMM layout (qweight [in, out/8] with fields in column order 0,2,4,6,1,3,5,7), groups of 32 with zero points; model.layers.1.mlp.down_proj left bf16 through modules_to_not_convert. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="awq-int4",
    ),
    Fixture(
        "quant-ct-w4a16", "llama",
        "compressed-tensors pack-quantized W4A16: weight_packed [out, in/8] (signed values + 8), bf16 weight_scale per group of 32, symmetric; lm_head ignored. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="ct-w4a16",
    ),
    Fixture(
        "quant-ct-w8a16-asym", "llama",
        "compressed-tensors pack-quantized W8A16, one scale per output channel, asymmetric: weight_zero_point packed along the output rows. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="ct-w8a16-asym",
    ),
    Fixture(
        "quant-ct-fp8-channel", "llama",
        "compressed-tensors float-quantized FP8 e4m3 weights with a float32 scale per output channel (dynamic per-token activation scales in the config, which Keel runs as bf16 activations). Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="ct-fp8-channel",
    ),
    Fixture(
        "quant-bnb-nf4-dq", "llama",
        "bitsandbytes 4-bit NF4, blocksize 64, double quantization (absmax as 8-bit dynamic-map codes in blocks of 256 with nested_absmax and nested_offset), bnb_4bit_compute_dtype bfloat16; model.layers.1.mlp.down_proj left bf16 through llm_int8_skip_modules. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="bnb-nf4-dq",
    ),
    Fixture(
        "quant-bnb-fp4", "llama",
        "bitsandbytes 4-bit FP4, blocksize 64, float32 absmax (no double quantization), bnb_4bit_compute_dtype float16. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="bnb-fp4",
    ),
    Fixture(
        "quant-bnb-int8", "llama",
        "bitsandbytes 8-bit LLM.int8(): weight int8 (CB) + SCB row absmax + weight_format 0, llm_int8_threshold 1.5 so that activation outlier columns occur. Oracle: transformers with each quantized linear running LLM.int8()'s mixed decomposition (tools/oracle/bnb_fixtures.py MixedInt8Linear: outlier columns in float32 against the dequantized weight, the rest int8 x int8 with row-wise activation scales).",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="bnb-int8",
    ),
    Fixture(
        "quant-fp8-block", "llama",
        "quant_method fp8 (DeepSeek-V3 style): FP8 e4m3 weights with weight_scale_inv block scales, weight_block_size [32, 48], ragged at the edges of every matrix. Oracle: transformers on the dequantized weights.",
        _fields(num_key_value_heads=2),
        _rope(),
        stored_dtype="bfloat16",
        quantization="fp8-block",
    ),
]


def derived(base_name: str, fields: dict | None = None, **changes) -> Fixture:
    """The fixture `base_name` of FIXTURES with `changes`, its fields updated by `fields`."""
    base = next(f for f in FIXTURES if f.name == base_name)
    if fields is not None:
        changes["fields"] = {**base.fields, **fields}
    return dataclasses.replace(base, **changes)


# gpt-oss as the Hub ships it: the gpt-oss fixture's architecture and draws, its experts in MXFP4.
FIXTURES.append(derived(
    "gpt-oss",
    name="gpt-oss-mxfp4",
    description="gpt-oss as the Hub ships it: quant_method mxfp4, the routed experts' gate_up_proj and down_proj stored as "
    "MXFP4 *_blocks U8 [E, out, in/32, 16] (two E2M1 codes a byte, the even element low) and *_scales U8 "
    "[E, out, in/32] (E8M0, 2^(s-127)), transposed from the 16-bit [E, in, out]; attention, router, "
    "embedding and lm_head bf16 (modules_to_not_convert). The gpt-oss fixture's architecture. Oracle: "
    "transformers' own MXFP4 loading, which on CPU dequantizes the experts (integrations/mxfp4.py), checked "
    "against the in-memory model on the dequantized weights.",
    stored_dtype="bfloat16",
    quantization="mxfp4",
    probes=(),
))
FIXTURES.append(Fixture(
    "quant-aqlm-2x8", "llama",
    "AQLM 2x8 (quant_method aqlm: two codebooks of 256 float16 vectors of 8, codes I8 [out, in/8, 2] stored signed, "
    "scales F16 [out, 1, 1, 1]) written by Keel's own `keel quantize --method vq` (plain k-means codebooks) from the "
    "bf16 model; embedding and lm_head bf16 (linear_weights_not_to_quantize). Oracle: transformers' AQLM loading "
    "(AqlmHfQuantizer) with a stand-in for the uninstalled aqlm library whose QuantizedLinear multiplies by the weight "
    "tools/oracle/aqlm_fixtures.py dequantizes from the format's definition, checked against the in-memory model on "
    "those weights and each layer against its 16-bit weight.",
    _fields(num_key_value_heads=2),
    _rope(),
    stored_dtype="bfloat16",
    quantization="aqlm-2x8",
))


# Quantized MoE checkpoints: qwen3-moe's architecture with experts 32 wide (whole 32-column chunks
# for the CUDA expert kernels), every linear layer but the router and lm_head packed per expert,
# as Qwen3-30B-A3B-GPTQ-Int4 and Qwen3-30B-A3B-FP8 ship.
for _scheme, _what in (
    ("gptq-int4-sym", "GPTQ 4-bit, groups of 32, symmetric (zeros 8 stored as 7), desc_act false, trivial g_idx (Qwen3-30B-A3B-GPTQ-Int4's layout)"),
    ("fp8-block", "quant_method fp8 with weight_scale_inv block scales [32, 48] (Qwen3-30B-A3B-FP8 / DeepSeek-V3 style, ragged blocks)"),
):
    FIXTURES.append(derived(
        "qwen3-moe",
        name=f"quant-moe-{_scheme}",
        description=f"qwen3-moe's architecture (moe_intermediate 32) with {_what}: attention projections, the dense layer's MLP and "
                    "every routed expert's gate_proj/up_proj/down_proj (experts.E.*, as the Hub writes them) packed; router, norms, "
                    "embeddings and lm_head bf16. Oracle: transformers on the dequantized weights (its loader fusing the per-expert tensors).",
        fields={"moe_intermediate_size": 32},
        stored_dtype="bfloat16",
        probes=(),
        quantization=_scheme,
    ))
# Mixtral's per-expert names differ from Qwen's (block_sparse_moe.experts.E.w1/w3/w2; DeepSeek's
# are Qwen's): the mixtral-moe fixture's architecture as compressed-tensors W4A16, as published
# Mixtral W4A16 checkpoints ship.
FIXTURES.append(derived(
    "mixtral-moe",
    name="quant-moe-mixtral-ct-w4a16",
    description="mixtral-moe's architecture as compressed-tensors pack-quantized W4A16 (weight_packed [out, in/8], signed values + 8, "
                "bf16 weight_scale per group of 32, symmetric): attention projections and every routed expert's w1/w3/w2 "
                "(block_sparse_moe.experts.E.*, as the Hub writes them) packed; router (ignored by re:.*block_sparse_moe.gate$), "
                "norms, embeddings and lm_head bf16. Oracle: transformers on the dequantized weights (its loader fusing the per-expert tensors).",
    stored_dtype="bfloat16",
    quantization="ct-w4a16-moe",
))
# GPTQ act-order experts: each expert's gate/up (one input, one column order) and down in orders of
# their own. Experts 64 wide so that the down projections have two groups (a real g_idx).
FIXTURES.append(derived(
    "mixtral-moe",
    name="quant-moe-mixtral-gptq-int4-actorder",
    description="mixtral-moe's architecture with experts 64 wide as GPTQ 4-bit, groups of 32, asymmetric, v1 zeros, desc_act: every "
                "linear layer's g_idx lists a random column order (shared by q/k/v, and by each expert's w1 and w3), so each "
                "expert's groups are scattered over its input columns in an order of its own; router, norms, embeddings and "
                "lm_head bf16. Oracle: transformers on the dequantized weights (its loader fusing the per-expert tensors).",
    fields={"intermediate_size": 64},
    stored_dtype="bfloat16",
    quantization="gptq-int4-actorder",
))

# Vision-language checkpoints Keel serves as their language model (text prompts): the Hub's nested
# layout (language_model.model.*, a vision tower and projector beside it), dtype and special
# tokens at the top level of config.json only. Their vision towers are as small as they go.
FIXTURES.append(Fixture(
    "gemma3-vl", "gemma3",
    "Gemma 3 as Gemma3ForConditionalGeneration (model_type gemma3), run on text: text_config a Gemma 3 text model of 3 "
    "layers, 2 sliding (sliding_window 16) : 1 global, q/k norms, query_pre_attn_scalar 24 != head_dim 16, local RoPE "
    "theta 1e4 and global 1e6; lm_head tied (tie_word_embeddings at the top level). Weights bf16 under "
    "language_model.model.*, beside a 1-layer SigLIP vision_tower.* and multi_modal_projector.*, which the engine skips.",
    _fields(num_key_value_heads=2, num_hidden_layers=3, head_dim=16, intermediate_size=48,
            hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=16,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True, rms_norm_eps=1e-6),
    {"sliding_attention": _rope("default", 10000.0), "full_attention": _rope("default", 1000000.0)},
    stored_dtype="bfloat16",
    norm_center=0.0,
    init_overrides=((r"^model\.language_model\.norm\.weight$", 2.0, 0.1),
                    (r"language_model\.layers\.\d+\.post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1)),
    text_model_type="gemma3_text",
    wrapper_fields=dict(tie_word_embeddings=True, mm_tokens_per_image=4,
                        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=28, patch_size=14)),
))
FIXTURES.append(Fixture(
    "mistral3-vl", "mistral3",
    "Mistral Small 3.1 / 3.2 as Mistral3ForConditionalGeneration (model_type mistral3), run on text: text_config a "
    "Mistral model with head_dim 32 != 64/4 heads, GQA with 2 KV heads, no sliding window, RoPE theta 1e6; lm_head "
    "untied (language_model.lm_head.weight). Weights bf16 under language_model.model.*, beside a 1-layer Pixtral "
    "vision_tower.* and multi_modal_projector.* (patch merger), which the engine skips.",
    _fields(num_key_value_heads=2, head_dim=32, sliding_window=None, rms_norm_eps=1e-5),
    _rope(theta=1000000.0),
    stored_dtype="bfloat16",
    text_model_type="mistral",
    wrapper_fields=dict(tie_word_embeddings=False,
                        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, head_dim=8, image_size=28, patch_size=14)),
))
FIXTURES.append(Fixture(
    "llama4-vl", "llama4",
    "Llama 4 (Scout/Maverick) as Llama4ForConditionalGeneration (model_type llama4), run on text: text_config a "
    "llama4_text model of 4 layers. Layers 0-2 rotate q/k (llama3 RoPE, theta 5e5, factor 8, original 32, applied to "
    "interleaved pairs), L2-normalize them (use_qk_norm, no weight) and attend within chunks of 16 positions "
    "(attention_chunk_size 16: every prompt but the first crosses a chunk boundary, and so do the decodes); layer 3 "
    "is NoPE with full attention and attention temperature tuning (floor_scale 8, attn_scale 0.1: queries at "
    "positions >= 7 are scaled). Layers 1 and 3 are MoE (interleave_moe_layer_step 2): 4 experts, top-1 of the "
    "router logits weighted by their sigmoid, the weight scaling the expert's input (expert(w x)), fused "
    "experts.gate_up_proj [E, H, 2I] (gate columns first) and down_proj [E, I, H], plus a shared expert; layers 0 "
    "and 2 a dense MLP of intermediate_size_mlp 64. lm_head untied. Weights bf16 under language_model.model.* "
    "beside a 1-layer vision_model.* and multi_modal_projector.*, which the engine skips.",
    _fields(num_key_value_heads=2, num_hidden_layers=4, head_dim=16, intermediate_size=32, intermediate_size_mlp=64,
            num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2, attention_chunk_size=16,
            floor_scale=8, attn_scale=0.1, rms_norm_eps=1e-5),
    _rope("llama3", 500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=32),
    stored_dtype="bfloat16",
    init_overrides=((r"\.feed_forward\.router\.weight$", 0.0, 0.3),),
    probes=("attention_chunks_off", "attn_temperature_off", "qk_l2_norm_off", "expert_output_weighted"),
    text_model_type="llama4_text",
    wrapper_fields=dict(vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           image_size=28, patch_size=14, vision_output_dim=16, projector_input_dim=16,
                                           projector_output_dim=16, pixel_shuffle_ratio=0.5)),
))


FIXTURES.append(Fixture(
    "llama4-text", "llama4_text",
    "Llama 4 as Llama4ForCausalLM (model_type llama4_text, the Hub's text-only layout: model.layers.*, lm_head), "
    "4 layers, every one MoE (interleave_moe_layer_step 1): top-2 of 4 experts 16 wide (the sigmoid weights scaling "
    "each expert's input) beside a shared expert; use_qk_norm false, default RoPE theta 5e5 on interleaved pairs, "
    "attention chunks of 16 (every prompt but the first crosses a chunk boundary, and so do the decodes); layer 3 "
    "NoPE (no_rope_layer_interval 4) with full attention and temperature tuning (floor_scale 4, attn_scale 0.2). "
    "lm_head untied. Weights bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=4, head_dim=16, intermediate_size=16, intermediate_size_mlp=64,
            num_local_experts=4, num_experts_per_tok=2, interleave_moe_layer_step=1, attention_chunk_size=16,
            no_rope_layer_interval=4, use_qk_norm=False, floor_scale=4, attn_scale=0.2, rms_norm_eps=1e-5),
    _rope("default", 500000.0),
    stored_dtype="bfloat16",
    init_overrides=((r"\.feed_forward\.router\.weight$", 0.0, 0.3),),
    probes=("attention_chunks_off", "attn_temperature_off", "expert_output_weighted"),
))

# A Mistral 3 checkpoint re-saved with tie_word_embeddings true at the top level while it still
# holds its own lm_head: transformers 5.17's tie_weights keeps a present lm_head that differs from
# the embedding (and warns), so the head is the checkpoint's, not the embedding.
FIXTURES.append(derived(
    "mistral3-vl",
    name="mistral3-vl-own-head",
    description="mistral3-vl's architecture (1 layer, intermediate 64) with config.json's top-level tie_word_embeddings set to "
                "true after saving, while language_model.lm_head.weight (drawn apart from the embedding) stays in the "
                "checkpoint: transformers' from_pretrained keeps that lm_head (tie_weights ties only a missing or equal one). "
                "Oracle: transformers on the checkpoint as written.",
    fields={"num_hidden_layers": 1, "intermediate_size": 64},
    saved_config_overrides={"tie_word_embeddings": True},
))

# Gemma 3 as published W4A16 checkpoints of it ship: the wrapper's language model packed under its
# nested names, the vision tower and projector 16-bit.
FIXTURES.append(derived(
    "gemma3-vl",
    name="quant-gemma3-vl-ct-w4a16",
    description="gemma3-vl's architecture (intermediate 64) as compressed-tensors pack-quantized W4A16 (weight_packed [out, in/8], "
                "signed values + 8, bf16 weight_scale per group of 32, symmetric): every language model projection "
                "(language_model.model.layers.N.self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj) packed under the "
                "wrapper's nested names; the SigLIP vision tower and the projector (ignored: re:vision_tower.*, "
                "re:multi_modal_projector.*), norms and the tied embedding bf16. Oracle: transformers on the dequantized weights.",
    fields={"intermediate_size": 64},
    quantization="ct-w4a16-vl",
))

# Llama 4 as llm-compressor's W4A16 checkpoints ship it: the routed experts written per expert.
FIXTURES.append(derived(
    "llama4-text",
    name="quant-llama4-text-ct-w4a16",
    description="llama4-text's architecture (experts 32 wide) as compressed-tensors pack-quantized W4A16 (weight_packed [out, in/8], "
                "signed values + 8, bf16 weight_scale per group of 32, symmetric): attention projections, shared experts and "
                "every routed expert written per expert (feed_forward.experts.E.gate_proj/up_proj/down_proj, cut from the fused "
                "input-major tensors, as llm-compressor writes Llama 4) packed; router, norms, embeddings and lm_head bf16. "
                "Oracle: transformers on the dequantized weights, fused back.",
    fields={"intermediate_size": 32},
    probes=(),
    quantization="ct-w4a16",
))

# Config variants tools/oracle/config_fuzz.py found Keel getting wrong, one checkpoint per family
# pinning several of them end to end (and on the GPU, the kernels their fixes added).
FIXTURES.append(Fixture(
    "llama-longrope-mlp-bias", "llama",
    "Llama with keys the first fixtures leave at their defaults: LongRoPE (12 short and 12 long factors, "
    "original_max_position_embeddings 32 in rope_parameters; prompts of 40 and 70 tokens rotate long from position 0, "
    "the decodes of the 5 and 17 token prompts switch at 32), mlp_bias (gate/up/down biases), attention_bias, "
    "hidden_act gelu (the exact erf GELU), head_dim 24 != 64 / 4, GQA 4 query / 2 KV heads, weights bf16.",
    _fields(num_key_value_heads=2, head_dim=24, hidden_act="gelu", mlp_bias=True, attention_bias=True),
    _rope("longrope", 10000.0, short_factor=[1.0, 1.02, 1.05, 1.08, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.5],
          long_factor=[1.0, 1.2, 1.5, 1.9, 2.4, 3.0, 3.6, 4.2, 4.8, 5.4, 6.0, 7.0], original_max_position_embeddings=32),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "gemma3-text-yarn-h48", "gemma3_text",
    "Gemma 3 text with keys the gemma3-text fixture leaves at their defaults: hidden_size 48 (its embedding scale "
    "sqrt(48) is not a bf16 value: transformers in float32 multiplies by the float32 one), weights bf16, "
    "attn_logit_softcapping 20 (which transformers' Gemma 3 reads but never applies), the global layers' YaRN "
    "(factor 4, original 32) with truncate false in their rope_parameters entry (which transformers never reads for "
    "a per-layer-type dict, so it truncates), hidden_activation relu, 3 layers: two sliding (window 16, default RoPE) "
    "then a global one (sliding_window_pattern 3, gemma3-vl's geometry), GQA 4 query / 2 KV heads of 16, "
    "query_pre_attn_scalar 24, tied.",
    _fields(hidden_size=48, num_key_value_heads=2, num_hidden_layers=3, head_dim=16, intermediate_size=32,
            hidden_activation="relu", query_pre_attn_scalar=24, sliding_window=16, sliding_window_pattern=3, attn_logit_softcapping=20.0,
            final_logit_softcapping=None, tie_word_embeddings=True, rms_norm_eps=1e-6),
    {"sliding_attention": _rope("default", 10000.0),
     "full_attention": _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, beta_fast=32.0,
                             beta_slow=1.0, truncate=False)},
    stored_dtype="bfloat16",
    norm_center=0.0,
    init_overrides=((r"^model\.norm\.weight$", 2.0, 0.1),
                    (r"post_(attention|feedforward)_layernorm\.weight$", 1.0, 0.1)),
))

# OLMo 2 and 3: norms on the sublayers' outputs, q/k norms over the whole projection.
FIXTURES.append(Fixture(
    "olmo2-postnorm", "olmo2",
    "OLMo 2: no pre-norms; post_attention_layernorm on attention's output and post_feedforward_layernorm on the "
    "MLP's, inside the residual; q_norm [4 x 16] and k_norm [2 x 16] RMSNorms over the whole q and k projections "
    "(every head together) before RoPE; GQA 4 query / 2 KV heads, attention_bias (q, k, v and o), RoPE theta 1e4, "
    "weights bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, attention_bias=True),
    _rope(),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "olmo3-sliding", "olmo3",
    "OLMo 3: OLMo 2's layer with Olmo3Config's default layer_types over 4 layers (sliding_window 16 on layers 0-2, "
    "layer 3 full); rope_parameters per layer type: the sliding layers default RoPE theta 1e4, the full layer YaRN "
    "(factor 4, original 32) theta 5e5; GQA 4 query / 1 KV head, intermediate 48, tied lm_head, weights bf16.",
    _fields(num_key_value_heads=1, num_hidden_layers=4, intermediate_size=48, sliding_window=16, tie_word_embeddings=True),
    {"sliding_attention": _rope("default", 10000.0),
     "full_attention": _rope("yarn", 500000.0, factor=4.0, original_max_position_embeddings=32)},
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "smollm3-nope", "smollm3",
    "SmolLM3: Llama's layers with NoPE layers (no_rope_layer_interval 2: layers 1 and 3 skip RoPE) which also slide "
    "(use_sliding_window with sliding_window 16 makes SmolLM3Config's derived layer_types slide the NoPE layers), "
    "RoPE theta 2e6 on the others, attention_bias (q, k, v and o) and mlp_bias, GQA 4 query / 2 KV heads, "
    "lm_head tied (SmolLM3Config's default), weights bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=4, intermediate_size=48, no_rope_layer_interval=2,
            use_sliding_window=True, sliding_window=16, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    _rope("default", 2000000.0),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "granite-multipliers", "granite",
    "Granite 3.x: Llama's layers with embedding_multiplier 12 (embeddings scaled), attention_multiplier 0.0625 as "
    "the softmax scale (head_dim^-0.5 would be 0.25), residual_multiplier 0.22 on each sublayer's output before "
    "the residual add, logits divided by logits_scaling 4; GQA 4 query / 2 KV heads, lm_head tied, weights bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, embedding_multiplier=12.0, attention_multiplier=0.0625,
            residual_multiplier=0.22, logits_scaling=4.0, tie_word_embeddings=True),
    _rope(),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "seed-oss-biases", "seed_oss",
    "Seed-OSS: Llama's layers with q/k/v biases by SeedOssConfig's default attention_bias (true, absent from the "
    "fixture's fields) and an o_proj bias by attention_out_bias, head_dim 16 given (the class defaults it to 128), "
    "GQA 4 query / 2 KV heads, RoPE theta 1e4, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, head_dim=16, attention_out_bias=True),
    _rope(),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "exaone4-nope-global", "exaone4",
    "EXAONE 4: OLMo 2's post-norm layer with per-head q_norm / k_norm (RMSNorm over head_dim 16) before RoPE; "
    "Exaone4Config's default layers over 4 (sliding_window_pattern 4: layers 0-2 slide with window 16 and rotate, "
    "layer 3 attends globally without RoPE); GQA 4 query / 2 KV heads, RoPE theta 1e4, untied; bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=4, intermediate_size=48, sliding_window=16),
    _rope(),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "arcee-relu2", "arcee",
    "Arcee (AFM): Llama's attention with an MLP without a gate, down(relu(up(x))^2) (hidden_act relu2, "
    "ArceeConfig's default), mlp_bias (up and down) and attention_bias (q, k, v and o), GQA 4 query / 2 KV heads, "
    "RoPE theta 1e4, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=96, mlp_bias=True, attention_bias=True),
    _rope(),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "ministral3-yarn-temperature", "ministral3",
    "Ministral 3: Mistral's layers (no sliding_window: Ministral3Config's default) with YaRN RoPE (factor 8, "
    "original_max_position_embeddings 16, theta 1e6, mscale = mscale_all_dim = 1) and every query scaled after RoPE "
    "by 1 + llama_4_scaling_beta (0.5) * ln(1 + floor(p / 16)) at position p, so the prompts' later positions "
    "see factors up to 1.8; head_dim 16 given (the class defaults it to 128), GQA 4 query / 2 KV heads, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, head_dim=16),
    _rope("yarn", 1000000.0, factor=8.0, original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
          mscale=1.0, mscale_all_dim=1.0, llama_4_scaling_beta=0.5),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "hunyuan-dense-norm-after-rope", "hunyuan_v1_dense",
    "Hunyuan dense (HunYuanDenseV1): Llama's layers whose per-head query_layernorm / key_layernorm RMSNorms apply "
    "AFTER RoPE (the keys are cached normed); NTK-alpha RoPE as the Hub's configs give it (rope type dynamic with "
    "alpha 1000, factor 1: base 1e4 * 1000^(16/14)), attention_bias (q, k, v and o), head_dim 16, GQA 4 query / 2 "
    "KV heads, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, head_dim=16, attention_bias=True),
    _rope("dynamic", 10000.0, factor=1.0, alpha=1000.0),
    stored_dtype="bfloat16",
))
FIXTURES.append(Fixture(
    "ernie4.5-interleaved-rope", "ernie4_5",
    "ERNIE 4.5 dense (Ernie4_5ForCausalLM): Llama's layers with RoPE over interleaved pairs (x[2i], x[2i+1]) of each "
    "head (GLM's rotate_half with cos/sin repeat_interleaved), use_bias on q, k, v, o and the MLP's gate, up and "
    "down, head_dim 16, GQA 4 query / 2 KV heads, RoPE theta 5e5 (the class default), lm_head tied to the "
    "embedding (the class default); bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64, head_dim=16, use_bias=True, tie_word_embeddings=True),
    _rope(theta=500000.0),
    stored_dtype="bfloat16",
    probes=("rope_halves",),
))
FIXTURES.append(Fixture(
    "cohere-qknorm", "cohere",
    "Cohere Command-R+ (CohereForCausalLM): parallel layers, h = x + attn(ln(x)) + mlp(ln(x)) with one input "
    "LayerNorm (mean-subtracting, weight only) per layer and a LayerNorm final norm; use_qk_norm: q and k "
    "LayerNorm-ed per head before RoPE with each head's own weights (q_norm [4, 16], k_norm [2, 16]); RoPE over "
    "interleaved pairs (x[2i], x[2i+1]); attention_bias on q, k, v and o; logits times logit_scale 0.25; GQA 4 "
    "query / 2 KV heads, head_dim 16, theta 5e5 (the class default), lm_head tied (the class default); final norm "
    "weights around 4 so that the scaled logits spread out (greedy margins); bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=3, intermediate_size=64, use_qk_norm=True, attention_bias=True,
            logit_scale=0.25, layer_norm_eps=1e-5, tie_word_embeddings=True),
    _rope(theta=500000.0),
    stored_dtype="bfloat16",
    init_overrides=((r"^model\.norm\.weight$", 4.0, 0.4),),
    probes=("qk_norm_off", "rope_halves"),
))
FIXTURES.append(Fixture(
    "cohere2-sliding-nope", "cohere2",
    "Cohere 2 (Command-A / R7B, Cohere2ForCausalLM): Cohere's parallel layers and LayerNorms, layers 0-2 sliding "
    "(window 16) with RoPE over interleaved pairs, layer 3 full attention without RoPE (the default "
    "sliding_window_pattern 4), logit_scale 0.0625 (the class default: the fixture sets no logit_scale), no biases, GQA 4 "
    "query / 2 KV heads, head_dim 16, RoPE theta 1e4, lm_head tied (the class default); final norm weights "
    "around 12 so that the scaled logits spread out (greedy margins); bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=4, intermediate_size=64, sliding_window=16,
            layer_norm_eps=1e-5, tie_word_embeddings=True),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"^model\.norm\.weight$", 12.0, 1.0),),
    probes=("sliding_window_off", "rope_halves"),
))
FIXTURES.append(Fixture(
    "hunyuan-moe", "hunyuan_v1_moe",
    "Hunyuan MoE (HunYuanMoEV1, Hunyuan-A13B-like): hunyuan-dense-norm-after-rope's attention (per-head "
    "query_layernorm / key_layernorm after RoPE, NTK-alpha RoPE, q/k/v/o biases, head_dim 16, GQA 4 query / 2 KV heads) "
    "and a MoE block in every layer: top-k of softmax(x @ gate.wg.T) renormalised, moe_topk given per layer [2, 1], "
    "over 4 experts, plus shared_mlp every token runs through; experts and shared MLP intermediate_size 32 wide. "
    "Vocabulary 128, untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, intermediate_size=32, head_dim=16, attention_bias=True, num_experts=4, moe_topk=[2, 1]),
    _rope("dynamic", 10000.0, factor=1.0, alpha=1000.0),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.wg\.weight$", 0.0, 0.3),),
))
FIXTURES.append(Fixture(
    "apertus-xielu", "apertus",
    "Apertus: Llama's attention with per-head q_norm / k_norm before RoPE, the layer norms named "
    "attention_layernorm / feedforward_layernorm, and an MLP without a gate, down(xielu(up(x))) (hidden_act xielu, "
    "ApertusConfig's default) whose act_fn constants differ per layer: alpha_p and alpha_n (through softplus) and "
    "the saved beta and eps buffers (eps around -0.05, so the clamp of expm1's input shows); llama3 RoPE (factor 8, "
    "original 16, theta 1.2e7), GQA 4 query / 2 KV heads, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=64),
    _rope("llama3", 12000000.0, factor=8.0, original_max_position_embeddings=16, low_freq_factor=1.0, high_freq_factor=4.0),
    stored_dtype="bfloat16",
    init_overrides=((r"act_fn\.alpha_p$", 0.5, 0.3), (r"act_fn\.alpha_n$", 0.0, 0.3),
                    (r"act_fn\.beta$", 0.5, 0.2), (r"act_fn\.eps$", -0.05, 0.02)),
))
# Z.ai's GLM MoE families: GLM-4.5 / 4.6 / 4.7 (glm4_moe), GLM-4.7-Flash (glm4_moe_lite), GLM-5 (glm_moe_dsa).
FIXTURES.append(Fixture(
    "glm4-moe-lite", "glm4_moe_lite",
    "GLM-4.7-Flash-like (Glm4MoeLiteForCausalLM): DeepSeek-V3's MLA (q_lora_rank 24 -> q_a_layernorm -> q_b_proj, "
    "kv_lora_rank 32, 16 nope + 8 rope / 24 v head dims, 4 heads, RoPE theta 1e6 on interleaved pairs as "
    "rope_interleave True) with GLM-4-MoE's router: sigmoid scores + e_score_correction_bias (randomised) pick the "
    "top-2 of 8 experts (moe_intermediate 8, n_group 1 as the real config), weights renormalised and times "
    "routed_scaling_factor 1.8, plus 1 shared expert. The feed-forward per layer from mlp_layer_types "
    "[sparse, dense, sparse] (transformers' Glm4MoeLiteConfig reads no first_k_dense_replace). Weights bf16.",
    _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=32, moe_intermediate_size=8,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
            norm_topk_prob=True, routed_scaling_factor=1.8, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16,
            qk_rope_head_dim=8, v_head_dim=24, rms_norm_eps=1e-5, mlp_layer_types=["sparse", "dense", "sparse"]),
    _rope(theta=1000000.0),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "routed_scale_one", "rope_not_interleaved"),
))
# Mistral Small 4 (mistral4): DeepSeek-V3's MLA and MoE with Ministral 3's query scale and a softmax router.
FIXTURES.append(Fixture(
    "mistral4", "mistral4",
    "Mistral-Small-4-like (Mistral4ForCausalLM), 3 layers: DeepSeek-V3's MLA (q_lora_rank 24 -> q_a_layernorm -> q_b_proj, "
    "kv_lora_rank 32, 16 nope + 8 rope / 16 v head dims, 4 heads, RoPE on interleaved pairs as rope_interleave True) with "
    "YaRN (factor 4, original_max_position_embeddings 16, theta 1e4, mscale = mscale_all_dim = 1: softmax scale "
    "24^-0.5 * (0.1*ln4+1)^2) over the 8 rope dims (partial_rotary_factor 8/24, which Mistral4Config sets), and every "
    "query (nope and rope parts) scaled after RoPE by 1 + llama_4_scaling_beta (0.5) * ln(1 + floor(p / 16)), up to 1.9 "
    "at the prompts' later positions. Layer 0 a dense MLP (first_k_dense_replace 1, intermediate 32); layers 1-2: "
    "Mistral4TopkRouter, a softmax over 8 experts (moe_intermediate 8) in n_group 4 groups of 2, the topk_group 2 "
    "groups whose two probabilities sum highest kept, top-2 probabilities renormalised (norm_topk_prob) times "
    "routed_scaling_factor 1.5, no selection bias; experts fused as transformers holds them (experts.gate_up_proj "
    "[8, 16, 64], experts.down_proj [8, 64, 8]), plus 1 shared expert. Weights bf16.",
    _fields(num_key_value_heads=4, num_hidden_layers=3, intermediate_size=32, moe_intermediate_size=8,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=4,
            topk_group=2, norm_topk_prob=True, routed_scaling_factor=1.5, q_lora_rank=24, kv_lora_rank=32,
            qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6),
    _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=16, mscale=1.0, mscale_all_dim=1.0,
          beta_fast=32.0, beta_slow=1.0, llama_4_scaling_beta=0.5),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
    probes=("llama4_scaling_off", "routed_scale_one", "mscale_off", "rope_not_interleaved"),
))
# Xiaomi's MiMo-V2-Flash (mimo_v2_flash): GLM-4.5-like GQA with value heads narrower than q/k, sliding layers with sinks.
FIXTURES.append(Fixture(
    "mimo-v2-flash", "mimo_v2_flash",
    "MiMo-V2-Flash-like (MiMoV2FlashForCausalLM), 4 layers: layer_types [full, sliding, sliding, full] (window 16), "
    "mlp_layer_types [dense, sparse, sparse, dense] (dense intermediate 32). q/k heads of head_dim 24, value heads of "
    "v_head_dim 16, values times attention_value_scale 0.5 before caching; 4 query heads over 1 KV head on the full "
    "layers and 2 (twice num_key_value_heads) on the sliding ones, which also have a learned sink logit per head "
    "(self_attn.attention_sink_bias on the Hub, transformers' sinks); q/k/v biases (attention_bias), o_proj without. "
    "RoPE per layer type in rotate_half pairs over the leading dims: the full layers theta 1e6 over 12 of 24 dims "
    "(partial_rotary_factor 0.5), the sliding ones theta 1e4 over int(24 * 0.334) = 8 dims (the factor left to "
    "MiMoV2FlashRotaryEmbedding's default). MoE: sigmoid router + e_score_correction_bias (randomised) over 8 experts "
    "(moe_intermediate 8) in n_group 2 groups of 4, topk_group 1, top-2 renormalised times routed_scaling_factor 2, no "
    "shared experts, saved per expert (mlp.experts.E.*_proj). Weights bf16.",
    _fields(num_key_value_heads=1, num_hidden_layers=4, head_dim=24, v_head_dim=16, attention_value_scale=0.5,
            sliding_window=16, attention_bias=True, intermediate_size=32, moe_intermediate_size=8, n_routed_experts=8,
            num_experts_per_tok=2, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.0,
            layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
            mlp_layer_types=["dense", "sparse", "sparse", "dense"]),
    {"full_attention": _rope("default", 1000000.0, partial_rotary_factor=0.5),
     "sliding_attention": _rope("default", 10000.0)},
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER + ((r"\.self_attn\.sinks$", 0.0, 1.0),),
    probes=("sinks_off", "sliding_window_off", "value_scale_one", "e_score_bias_off", "routed_scale_one"),
))
# Poolside's Laguna (laguna): per-layer query heads, softplus output gates, per-layer-type partial RoPE, capped sigmoid routing.
FIXTURES.append(Fixture(
    "laguna", "laguna",
    "Laguna-like (LagunaForCausalLM), 3 layers: layer_types [full, sliding, sliding] (window 16), "
    "num_attention_heads_per_layer [4, 8, 4] over 2 KV heads of head_dim 16, per-head q_norm/k_norm RMSNorm before "
    "RoPE, q/k/v/o biases (attention_bias), the attention output times softplus(g_proj(x)), one gate per head "
    "(gating true) broadcast over it. RoPE per layer type in rotate_half pairs: the full layer theta 5e5 over the "
    "leading 8 of 16 dims (partial_rotary_factor 0.5), the sliding ones theta 1e4 over the whole head (the factor "
    "left to LagunaRotaryEmbedding's default 1). Layer 0 a dense MLP (intermediate 32), layers 1-2 the MoE block: "
    "router logits soft-capped to 2 * tanh(l / 2) (moe_router_logit_softcapping 2), sigmoid scores + "
    "e_score_correction_bias (randomised) pick the top-2 of 8 experts (moe_intermediate 8), weights renormalised, "
    "the experts' sum times moe_routed_scaling_factor 1.5, plus an ungated shared expert 16 wide. Weights bf16.",
    _fields(num_key_value_heads=2, num_hidden_layers=3, head_dim=16, num_attention_heads_per_layer=[4, 8, 4],
            layer_types=["full_attention", "sliding_attention", "sliding_attention"], sliding_window=16,
            attention_bias=True, intermediate_size=32, moe_intermediate_size=8, shared_expert_intermediate_size=16,
            num_experts=8, num_experts_per_tok=2, moe_routed_scaling_factor=1.5, moe_router_logit_softcapping=2.0,
            rms_norm_eps=1e-6),
    {"full_attention": _rope("default", 500000.0, partial_rotary_factor=0.5),
     "sliding_attention": _rope("default", 10000.0)},
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), (r"\.e_score_correction_bias$", 0.0, 0.1)),
    probes=("output_gate_one", "router_softcap_off", "sliding_window_off", "qk_norm_off", "e_score_bias_off"),
))
FIXTURES.append(Fixture(
    "glm4-moe", "glm4_moe",
    "GLM-4.5-like (Glm4MoeForCausalLM), 2 layers, vocabulary 128: GQA 4 query / 2 KV heads of head_dim 24 (!= 64 / 4) "
    "with q/k/v biases (attention_bias; o_proj has none), per-head q_norm/k_norm RMSNorm before RoPE (use_qk_norm, as "
    "GLM-4.5), partial rotary: the leading 12 of 24 dims rotate in rotate_half pairs (partial_rotary_factor 0.5, the "
    "config default), RoPE theta 1e6. Layer 0 a dense MLP (first_k_dense_replace 1, intermediate 32); layer 1: sigmoid "
    "router + e_score_correction_bias (randomised) over 8 experts (moe_intermediate 8) in n_group 2 groups of 4, "
    "topk_group 1 (group score = sum of its two best choice scores), top-2 renormalised (norm_topk_prob) times "
    "routed_scaling_factor 2.5, plus 1 shared expert. One MTP layer (num_nextn_predict_layers 1) stored as "
    "model.layers.2.* (add_mtp_layers), which transformers ignores and Keel must too. Weights bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=24, num_hidden_layers=2, intermediate_size=32, moe_intermediate_size=8,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
            first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5, attention_bias=True,
            use_qk_norm=True, partial_rotary_factor=0.5, rms_norm_eps=1e-5, num_nextn_predict_layers=1),
    _rope(theta=1000000.0, partial_rotary_factor=0.5),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("qk_norm_off", "e_score_bias_off", "routed_scale_one", "rotary_whole_head"),
))
FIXTURES.append(Fixture(
    "glm-moe-dsa", "glm_moe_dsa",
    "GLM-5-like (GlmMoeDsaForCausalLM), 3 layers, vocabulary 128: DeepSeek-V3.2's MLA (q_lora_rank 24, kv_lora_rank 32, 16 nope + 8 "
    "rope / 24 v head dims, 4 heads, MLA RoPE on interleaved pairs) and DeepSeek Sparse Attention whose lightning "
    "indexer (16 heads x 16, index_topk 8) rotates its leading 8 dims in interleaved pairs (V3.2's rotates "
    "rotate_half pairs). indexer_types from index_topk_freq 2 and index_skip_topk_offset 1: [full, shared, full]: "
    "layer 1 has no indexer and attends to the positions layer 0's indexer chose. GLM-4-MoE routing (sigmoid + "
    "e_score_correction_bias, top-2 of 8 experts, n_group 1, renormalised, routed_scaling_factor 2.5, 1 shared "
    "expert), layer 0 dense (first_k_dense_replace 1). RoPE theta 1e6, default. One MTP layer (num_nextn_predict_layers "
    "1) stored as model.layers.3.* (add_mtp_layers): a full indexer layer as GLM-5's layer 78 is, which transformers "
    "ignores and Keel's MTP head reads. Weights bf16.",
    _fields(vocab_size=128, num_key_value_heads=4, num_hidden_layers=3, intermediate_size=32, moe_intermediate_size=8,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
            first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=24,
            kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=24, rms_norm_eps=1e-5,
            index_n_heads=16, index_head_dim=16, index_topk=8, index_topk_freq=2, index_skip_topk_offset=1,
            num_nextn_predict_layers=1),
    _rope(theta=1000000.0),
    stored_dtype="bfloat16",
    init_overrides=(*SELECTION_BIAS_ROUTER,
                    (r"\.indexer\.(wq_b|wk|weights_proj)\.weight$", 0.0, 0.3)),
    probes=("index_topk_dense", "shared_layers_dense", "indexer_rope_half", "e_score_bias_off"),
))

# The hybrid Qwen models (Gated DeltaNet + gated full attention): zero-centred RMSNorms (1 + w),
# except the DeltaNet's gated output norm (x * w), drawn around 1.
HYBRID_FIELDS = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
    linear_conv_kernel_dim=4, rms_norm_eps=1e-6,
)
HYBRID_NORMS = ((r"linear_attn\.norm\.weight$", 1.0, 0.1), (r"linear_attn\.conv1d\.weight$", 0.0, 0.5))
FIXTURES.append(Fixture(
    "qwen3.5-hybrid", "qwen3_5_text",
    "Qwen3.5 language model (qwen3_5_text), dense: layers 0-2 Gated DeltaNet, layer 3 full attention "
    "(layer_types from full_attention_interval 4). DeltaNet: in_proj_qkv / in_proj_z / in_proj_b / in_proj_a, "
    "2 key heads and 4 value heads of 8 (each key head read by 2 value heads), causal depthwise conv1d of width 4 "
    "and silu over q|k|v, l2-normalised q and k, q scaled by 8^-0.5, beta = sigmoid(b), "
    "g = -exp(A_log) * softplus(a + dt_bias), gated RMSNorm(x) * w * silu(z) per value head, out_proj. Full "
    "attention: q_proj yields each head's query and output gate (output * sigmoid(gate) before o_proj), "
    "zero-centred q/k norms, partial rotary 0.25 of head_dim 16 (4 dims), GQA 4 query / 2 KV heads. "
    "mRoPE sections (interleaved) with text positions: plain RoPE. Every other RMSNorm multiplies by (1 + w). "
    "Dense MLP 64, lm_head tied to the embedding. The prompts' prefill runs transformers' chunked delta rule, its "
    "decodes the recurrent one. One MTP layer (mtp_num_hidden_layers 1) stored as mtp.* (add_hybrid_mtp_layers), "
    "which transformers ignores and Keel's MTP head reads.",
    _fields(intermediate_size=64, tie_word_embeddings=True, mtp_num_hidden_layers=1, **HYBRID_FIELDS),
    _rope(partial_rotary_factor=0.25, mrope_section=[1, 1, 0], mrope_interleaved=True),
    norm_center=0.0,
    init_overrides=HYBRID_NORMS,
))
FIXTURES.append(Fixture(
    "qwen3-next-moe", "qwen3_next",
    "Qwen3-Next: the qwen3.5-hybrid geometry with Qwen3-Next's DeltaNet projections grouped by key head "
    "(in_proj_qkvz: per key head its q, k, then its 2 value heads' v and z; in_proj_ba: per key head its value "
    "heads' b then a), and MoE feed-forwards: layers 0, 2, 3 sparse (mlp_only_layers [1], dense 32), 4 experts "
    "(moe_intermediate 16), top-2 of softmax(x @ gate.T), renormalised (norm_topk_prob), plus a shared expert "
    "(16) scaled by sigmoid(shared_expert_gate(x)). Partial rotary 0.25, RoPE theta 1e4. One MTP layer "
    "(mtp_num_hidden_layers 1) stored as mtp.* (add_hybrid_mtp_layers), its block a MoE one, untied lm_head.",
    _fields(intermediate_size=32, moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4,
            num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1],
            mtp_num_hidden_layers=1, **HYBRID_FIELDS),
    _rope(partial_rotary_factor=0.25),
    norm_center=0.0,
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), *HYBRID_NORMS),
))
FIXTURES.append(Fixture(
    "qwen3.5-moe-vl", "qwen3_5_moe",
    "Qwen3.5-MoE as Qwen3_5MoeForConditionalGeneration (model_type qwen3_5_moe), run on text: text_config a "
    "qwen3_5_moe_text model of the qwen3.5-hybrid geometry (Qwen3.5's separate DeltaNet projections) with a MoE block "
    "in every layer: 4 experts (moe_intermediate 16), saved per expert (transformers fuses them at load), top-2 of "
    "softmax(x @ gate.T) always renormalised (Qwen3.5-MoE has no norm_topk_prob), plus a shared expert (16) scaled by sigmoid(shared_expert_gate(x)). Weights under "
    "model.language_model.*, lm_head tied to the embedding (tie_word_embeddings at the top level), beside a 1-block "
    "vision tower model.visual.*, which the engine skips. One MTP layer (text_config's mtp_num_hidden_layers 1) "
    "stored at the top level as mtp.*, as the Hub's Qwen3.5 checkpoints keep it (add_hybrid_mtp_layers).",
    _fields(moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
            tie_word_embeddings=True, mtp_num_hidden_layers=1, **HYBRID_FIELDS),
    _rope(partial_rotary_factor=0.25, mrope_section=[1, 1, 0], mrope_interleaved=True),
    norm_center=0.0,
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), *HYBRID_NORMS),
    text_model_type="qwen3_5_moe_text",
    wrapper_fields=dict(tie_word_embeddings=True, vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, patch_size=2,
                                           temporal_patch_size=1, spatial_merge_size=1, out_hidden_size=32,
                                           num_position_embeddings=16)),
))

# The Qwen VL models as their ...ForConditionalGeneration, run on text: three position ids per token
# (M-RoPE) that a text prompt makes equal, and the smallest vision towers their configs allow.
QWEN2_VL_VISION = dict(depth=1, embed_dim=16, hidden_size=64, num_heads=2, mlp_ratio=1, patch_size=2, temporal_patch_size=1,
                       spatial_merge_size=1)
QWEN2_5_VL_VISION = dict(depth=1, hidden_size=16, intermediate_size=16, out_hidden_size=64, num_heads=2, patch_size=2,
                         temporal_patch_size=1, spatial_merge_size=1, window_size=4, fullatt_block_indexes=[0])
QWEN3_VL_VISION = dict(depth=1, hidden_size=16, intermediate_size=16, out_hidden_size=64, num_heads=2, patch_size=2,
                       temporal_patch_size=1, spatial_merge_size=1, num_position_embeddings=16, deepstack_visual_indexes=[0])
FIXTURES.append(Fixture(
    "qwen2-vl", "qwen2_vl",
    "Qwen2-VL as Qwen2VLForConditionalGeneration (model_type qwen2_vl), run on text, with config.json flat as the Hub's "
    "Qwen2-VL configs are (the language model's keys at the top level, rope_theta 1e6 + rope_scaling {type: mrope, "
    "mrope_section [2, 3, 3]}: transformers builds text_config from them). A qwen2_vl_text model of 2 layers: GQA 4 "
    "query / 2 KV heads of 16, q/k/v biases (randomised), no o bias; M-RoPE's chunked sections over the 8 frequencies, "
    "which a text prompt's equal position ids make 1-D RoPE. lm_head untied. Weights bf16 under the causal LM's own "
    "names (model.*, lm_head.*) beside a 1-block vision tower visual.*, which the engine skips.",
    _fields(num_key_value_heads=2, intermediate_size=64, rms_norm_eps=1e-6),
    _rope(theta=1000000.0, mrope_section=[2, 3, 3]),
    stored_dtype="bfloat16",
    text_model_type="qwen2_vl_text",
    wrapper_fields=dict(tie_word_embeddings=False, vision_config=QWEN2_VL_VISION),
    flat_text_config=True,
))
FIXTURES.append(Fixture(
    "qwen2.5-vl", "qwen2_5_vl",
    "Qwen2.5-VL as Qwen2_5_VLForConditionalGeneration (model_type qwen2_5_vl), run on text: text_config a "
    "qwen2_5_vl_text model of 3 layers, GQA 4 query / 1 KV head of 16, q/k/v biases, M-RoPE's chunked sections "
    "[4, 2, 2] (theta 1e4). lm_head tied by text_config's tie_word_embeddings alone: config.json's top level says false "
    "(set after saving), and Qwen2_5_VLConfig forwards text_config's true to the wrapper, so the checkpoint holds no "
    "lm_head. Weights bf16 under model.* beside a 1-block vision tower visual.*, which the engine skips.",
    _fields(num_key_value_heads=1, num_hidden_layers=3, intermediate_size=64, tie_word_embeddings=True),
    _rope(theta=10000.0, mrope_section=[4, 2, 2]),
    stored_dtype="bfloat16",
    text_model_type="qwen2_5_vl_text",
    wrapper_fields=dict(vision_config=QWEN2_5_VL_VISION),
    saved_config_overrides=dict(tie_word_embeddings=False),
))
FIXTURES.append(Fixture(
    "qwen3-vl", "qwen3_vl",
    "Qwen3-VL as Qwen3VLForConditionalGeneration (model_type qwen3_vl), run on text: text_config a qwen3_vl_text "
    "model of 2 layers, GQA 4 query / 2 KV heads of head_dim 16 (explicit: the class default is 128), per-head q/k "
    "RMSNorms before RoPE, no biases, interleaved M-RoPE (mrope_section [4, 2, 2], mrope_interleaved), theta 5e6. "
    "lm_head tied by the top level's tie_word_embeddings. Weights bf16 under model.language_model.* beside a 1-block "
    "vision tower model.visual.* (with a deepstack merger, whose features touch only image tokens), which the engine skips.",
    _fields(num_key_value_heads=2, head_dim=16, intermediate_size=64, tie_word_embeddings=True),
    _rope(theta=5000000.0, mrope_section=[4, 2, 2], mrope_interleaved=True),
    stored_dtype="bfloat16",
    probes=("qk_norm_off",),
    text_model_type="qwen3_vl_text",
    wrapper_fields=dict(tie_word_embeddings=True, vision_config=QWEN3_VL_VISION),
))
FIXTURES.append(Fixture(
    "qwen3-vl-moe", "qwen3_vl_moe",
    "Qwen3-VL-MoE as Qwen3VLMoeForConditionalGeneration (model_type qwen3_vl_moe), run on text: text_config a "
    "qwen3_vl_moe_text model of 3 layers, q/k norms, head_dim 16, interleaved M-RoPE (mrope_section [4, 2, 2]), theta "
    "1e4; layers 0 and 2 a MoE block of 4 experts (moe_intermediate 16), top-2 of softmax(x @ gate.T) always "
    "renormalised (the class has no norm_topk_prob), no shared expert; layer 1 dense (mlp_only_layers [1], intermediate "
    "64). The experts fused as the Hub's Qwen3-VL-MoE checkpoints hold them, input-major: experts.gate_up_proj [E, H, 2I] "
    "(gate columns first) and experts.down_proj [E, I, H] (transformers 5.18's save_pretrained writes them as it holds "
    "them, [E, 2I, H] and [E, H, I]; its loader takes either, by shape). lm_head untied: the top level's "
    "tie_word_embeddings false wins over text_config's true. Weights bf16 under model.language_model.* beside a 1-block "
    "vision tower model.visual.*, which the engine skips.",
    _fields(num_key_value_heads=2, num_hidden_layers=3, head_dim=16, intermediate_size=64, moe_intermediate_size=16,
            num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=True),
    _rope(theta=10000.0, mrope_section=[4, 2, 2], mrope_interleaved=True),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
    text_model_type="qwen3_vl_moe_text",
    wrapper_fields=dict(tie_word_embeddings=False, vision_config=QWEN3_VL_VISION),
))

# MiniMax's MiniMax-M2.
FIXTURES.append(Fixture(
    "minimax-m2", "minimax_m2",
    "MiniMax-M2-like (MiniMaxM2ForCausalLM), 2 layers, vocabulary 128: GQA 4 query / 2 KV heads of head_dim 24 "
    "(!= 64 / 4), q_norm / k_norm RMSNorms over the whole q and k projections (96 and 48 wide, every head together, "
    "as qk_norm_type per_layer) before RoPE, partial rotary: the leading 12 of 24 dims rotate in rotate_half pairs "
    "(rotary_dim 12, which MiniMaxM2Config turns into partial_rotary_factor 0.5), RoPE theta 5e6 (the class "
    "default). A MoE block in every layer, Mixtral's layout (block_sparse_moe.gate, experts.E.w1/w2/w3, "
    "intermediate 16) under a sigmoid router: 8 experts, top-2 by sigmoid(x @ gate.T) + "
    "block_sparse_moe.e_score_correction_bias (randomised), weighted by their sigmoid scores renormalised to sum 1; "
    "no shared expert. Weights bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=24, intermediate_size=16, num_local_experts=8,
            num_experts_per_tok=2, rotary_dim=12),
    _rope(theta=5000000.0, partial_rotary_factor=0.5),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("qk_norm_off", "e_score_bias_off", "rotary_whole_head"),
))
# Baidu's ERNIE 4.5 MoE.
FIXTURES.append(Fixture(
    "ernie4.5-moe", "ernie4_5_moe",
    "ERNIE-4.5-21B-A3B-like (Ernie4_5_MoeForCausalLM), 3 layers, vocabulary 128: ERNIE 4.5's attention (RoPE over "
    "interleaved pairs of each head, GQA 4 query / 2 KV heads of head_dim 16, theta 5e5), layer 0 a dense MLP "
    "(moe_layer_start_index 1, intermediate 32), layers 1 and 2 a MoE block: softmax(x @ gate.T) in float32, top-2 of "
    "8 experts (moe_intermediate 16) chosen by score + mlp.moe_statics.e_score_correction_bias ([1, 8], "
    "randomised), weighted by their scores renormalised (moe_norm_min 1e-12), plus 1 shared expert (16) every token "
    "runs through; lm_head tied (the class default). Weights bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=32,
            moe_intermediate_size=16, moe_num_experts=8, moe_k=2, moe_num_shared_experts=1, moe_layer_start_index=1,
            tie_word_embeddings=True),
    _rope(theta=500000.0),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "rope_halves"),
))
# Z.ai's dense GLM-4: GLM-4-9B-chat-hf (glm), GLM-4-0414 and GLM-Z1 (glm4).
FIXTURES.append(Fixture(
    "glm-partial-interleaved", "glm",
    "GLM-4-9B-chat-hf-like (GlmForCausalLM), 2 layers, vocabulary 128: GQA 4 query / 2 KV heads of head_dim 24 (given; "
    "the class defaults it to 128), q/k/v biases by GlmConfig's default attention_bias (true, absent from the "
    "fixture's fields; o_proj has none), partial rotary by the class default (partial_rotary_factor 0.5, absent): the "
    "leading 12 of 24 dims rotate in interleaved pairs (x[2i], x[2i+1]) (cos/sin repeat_interleaved), RoPE theta 1e4; "
    "gate and up as one mlp.gate_up_proj (gate rows first, intermediate 64); untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=24, intermediate_size=64),
    _rope(),
    stored_dtype="bfloat16",
    probes=("rope_halves", "rotary_whole_head"),
))
FIXTURES.append(Fixture(
    "glm4-sandwich-norms", "glm4",
    "GLM-4-0414-like (Glm4ForCausalLM), 2 layers, vocabulary 128: glm-partial-interleaved's layer plus the sandwich "
    "norms post_self_attn_layernorm (attention's output) and post_mlp_layernorm (the MLP's output) before each "
    "residual add; 4 query heads / 1 KV head of head_dim 16, partial_rotary_factor 0.75 in rope_parameters (the leading "
    "12 of 16 dims rotate in interleaved pairs; Glm4Config writes its default 0.5 at the top level beside it, which the "
    "dict's overrides), RoPE theta 5e5, attention_bias (q, k, v), gate_up_proj "
    "(intermediate 48), lm_head tied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=1, head_dim=16, intermediate_size=48, attention_bias=True,
            tie_word_embeddings=True),
    _rope(theta=500000.0, partial_rotary_factor=0.75),
    stored_dtype="bfloat16",
    probes=("sandwich_norms_off", "rope_halves", "rotary_whole_head"),
))
# GLM-4.1V-Thinking (glm4v) and GLM-4.5V (glm4v_moe) as their ...ForConditionalGeneration, run on text: M-RoPE's
# three position ids, equal for a text prompt, over GLM-4's and GLM-4.5's partial rotary; the smallest vision tower.
GLM4V_VISION = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, patch_size=2, image_size=4, temporal_patch_size=1,
                    spatial_merge_size=1, out_hidden_size=64)
FIXTURES.append(Fixture(
    "glm4v", "glm4v",
    "GLM-4.1V-Thinking as Glm4vForConditionalGeneration (model_type glm4v), run on text: text_config a glm4v_text model "
    "of 2 layers, vocabulary 128, GQA 4 query / 2 KV heads of 16 (hidden_size / num_attention_heads, which its attention "
    "always uses), q/k/v biases whatever attention_bias says (false here; o_proj has none), GLM-4's sandwich norms and "
    "fused gate_up_proj (intermediate 48), M-RoPE's chunked sections [2, 1, 1] over the leading 8 of 16 dims "
    "(partial_rotary_factor 0.5; the class default is 1) rotating in interleaved pairs, theta 1e4. lm_head tied by "
    "text_config's tie_word_embeddings alone: config.json's top level says false (set after saving), and Glm4vConfig "
    "forwards text_config's true to the wrapper, so the checkpoint holds no lm_head. "
    "Weights bf16 under model.language_model.* beside a 1-block vision tower model.visual.*, which the engine skips.",
    _fields(vocab_size=128, num_key_value_heads=2, intermediate_size=48, attention_bias=False, tie_word_embeddings=True),
    _rope(partial_rotary_factor=0.5, mrope_section=[2, 1, 1]),
    stored_dtype="bfloat16",
    probes=("sandwich_norms_off", "rope_halves"),
    text_model_type="glm4v_text",
    wrapper_fields=dict(vision_config=GLM4V_VISION),
    saved_config_overrides=dict(tie_word_embeddings=False),
))
FIXTURES.append(Fixture(
    "glm4v-moe", "glm4v_moe",
    "GLM-4.5V as Glm4vMoeForConditionalGeneration (model_type glm4v_moe), run on text: text_config a glm4v_moe_text "
    "model of 2 layers, vocabulary 128, GQA 4 query / 2 KV heads of head_dim 24 (!= 64 / 4) with q/k/v biases by the "
    "class default attention_bias (true, absent), no q/k norms (use_qk_norm true in the config, which the class never "
    "reads), M-RoPE's chunked sections [2, 2, 2] over the leading 12 of 24 dims (partial_rotary_factor by the class "
    "default 0.5, absent) in rotate_half halves, theta 1e4. Layer 0 a dense MLP (first_k_dense_replace 1, intermediate "
    "32); layer 1: sigmoid router + e_score_correction_bias over 8 experts (moe_intermediate 8) in n_group 2 groups, "
    "topk_group 1, top-2 renormalised times routed_scaling_factor 2.5, plus 1 shared expert; the experts saved per "
    "expert (transformers fuses them at load). lm_head untied. Weights bf16 under model.language_model.* beside a "
    "1-block vision tower model.visual.*, which the engine skips.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=24, intermediate_size=32, moe_intermediate_size=8,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
            first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5, use_qk_norm=True),
    _rope(mrope_section=[2, 2, 2]),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "routed_scale_one"),
    text_model_type="glm4v_moe_text",
    wrapper_fields=dict(tie_word_embeddings=False, vision_config=GLM4V_VISION),
))

# AI2's OLMoE, IBM's Granite MoE (plain and with a shared MLP), rednote's dots.llm1.
FIXTURES.append(Fixture(
    "olmoe", "olmoe",
    "OLMoE-1B-7B-like (OlmoeForCausalLM), 2 layers, vocabulary 128: Llama's pre-norm layers whose q_norm / k_norm "
    "RMSNorms cover the whole q and k projections (64 and 32 wide, every head together, as OLMo 2) before RoPE, GQA "
    "4 query / 2 KV heads; a MoE block in every layer as Qwen2-MoE routes it: top-2 of softmax(x @ mlp.gate.T) over 8 "
    "experts (intermediate_size 16 each), not renormalised (norm_topk_prob false, the class default), no shared "
    "expert, saved per expert (mlp.experts.E.gate_proj/up_proj/down_proj). Untied; weights bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, intermediate_size=16, num_experts=8, num_experts_per_tok=2),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3),),
    probes=("qk_norm_off", "norm_topk_flipped"),
))
FIXTURES.append(Fixture(
    "granitemoe", "granitemoe",
    "Granite 3.0 MoE-like (GraniteMoeForCausalLM), 2 layers, vocabulary 128: Granite's multipliers (embedding 12, "
    "attention 0.0625 as the softmax scale, residual 0.22 on each sublayer's output, logits divided by 4) over "
    "Llama's layers, GQA 4 query / 2 KV heads; block_sparse_moe in every layer: top-2 of 4 experts (intermediate 16) "
    "by softmax over the two best router logits (block_sparse_moe.router.layer), experts fused output-major as the "
    "Hub stores them (input_linear [4, 32, 64]: gate rows then up rows; output_linear [4, 64, 16]). Tied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
            embedding_multiplier=12.0, attention_multiplier=0.0625, residual_multiplier=0.22, logits_scaling=4.0,
            tie_word_embeddings=True),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"\.block_sparse_moe\.router\.weight$", 0.0, 0.3),),
))
FIXTURES.append(derived(
    "granitemoe",
    {"shared_intermediate_size": 32, "attention_bias": True, "logits_scaling": 0.5, "tie_word_embeddings": False},
    name="granitemoeshared",
    model_type="granitemoeshared",
    description="Granite MoE with a shared MLP (GraniteMoeSharedForCausalLM), 2 layers, vocabulary 128: granitemoe's layers and "
    "multipliers (embedding 12, attention 0.0625, residual 0.22, logits divided by 0.5) with attention_bias on q, k, v and o, top-2 "
    "of 4 experts (intermediate 16, input_linear / output_linear), plus shared_mlp (shared_intermediate_size 32: "
    "input_linear [64, 64] gate rows then up rows, output_linear [64, 32]) every token runs through, added to the "
    "experts before the residual multiplier. Untied; bf16.",
))
# Granite 4.0's hybrids (GraniteMoeHybridForCausalLM): Mamba-2 mixers and attention by layer_types.
# The mixers' conv filters, A_log and D drawn wider than INIT_STD so the state carries information;
# mamba_chunk_size 16 makes transformers' prefill run its SSD across chunks (the prompts reach 70 tokens).
GRANITE_HYBRID_DRAWS = ((r"\.mamba\.conv1d\.weight$", 0.0, 0.5), (r"\.mamba\.A_log$", 0.0, 0.5), (r"\.mamba\.D$", 1.0, 0.3),
                        (r"\.block_sparse_moe\.router\.weight$", 0.0, 0.3))
FIXTURES.append(Fixture(
    "granite4-hybrid", "granitemoehybrid",
    "Granite 4.0-H-like (GraniteMoeHybridForCausalLM), 3 layers, vocabulary 128: layer_types mamba, attention, mamba. "
    "Mamba-2 mixer: in_proj to z (64) | xBC (64 + 2 groups x B and C of state 8) | dt (4 heads), causal depthwise "
    "conv1d of width 4 with bias and silu over xBC, the SSD scan per head (head dim 16, heads 0-1 read group 0, 2-3 "
    "group 1) with A = -exp(A_log), dt = softplus(dt + dt_bias), D skip, then y * silu(z) RMS-normed over all 64 "
    "values (norm.weight), out_proj; transformers' prefill runs the chunked SSD (mamba_chunk_size 16), its decodes the "
    "recurrent step. Attention: GQA 4 query / 2 KV heads, no RoPE (position_embedding_type nope, as the Hub's hybrids). "
    "Granite's multipliers (embedding 12, attention 0.125 as the softmax scale, residual 0.22, logits divided by 4). "
    "Every layer: block_sparse_moe (top-2 of 4 experts, intermediate 16, input_linear / output_linear, router.layer) "
    "plus shared_mlp (32). Untied; bf16.",
    _fields(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_key_value_heads=2, intermediate_size=16,
            num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=32,
            embedding_multiplier=12.0, attention_multiplier=0.125, residual_multiplier=0.22, logits_scaling=4.0,
            layer_types=["mamba", "attention", "mamba"], position_embedding_type="nope",
            mamba_n_heads=4, mamba_n_groups=2, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16,
            mamba_conv_bias=True, mamba_proj_bias=False),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=GRANITE_HYBRID_DRAWS,
))
FIXTURES.append(derived(
    "granite4-hybrid",
    {"num_local_experts": 0, "position_embedding_type": "rope", "mamba_proj_bias": True, "mamba_n_groups": 1,
     "layer_types": ["attention", "mamba", "mamba"], "tie_word_embeddings": True},
    name="granite4-hybrid-dense-rope",
    init_overrides=GRANITE_HYBRID_DRAWS[:3],
    description="Granite 4.0-H-Micro-like dense hybrid: granite4-hybrid's geometry with no experts (num_local_experts 0: "
    "each layer's feed-forward is shared_mlp alone), RoPE on the attention layer (position_embedding_type rope, theta "
    "1e4), layer_types attention, mamba, mamba, one group of B and C for all 4 Mamba heads, biases on in_proj and "
    "out_proj (mamba_proj_bias), lm_head tied to the embedding. bf16.",
))
FIXTURES.append(Fixture(
    "dots1", "dots1",
    "dots.llm1-like (Dots1ForCausalLM), 3 layers, vocabulary 128: Qwen3's attention (per-head q_norm / k_norm before "
    "RoPE, head_dim 16, GQA 4 query / 2 KV heads), layer 2 sliding (window 16: Dots1Config derives layer_types from "
    "max_window_layers 2); layer 0 a dense MLP (first_k_dense_replace 1, intermediate 32), layers 1 and 2 DeepSeek-V3's "
    "MoE: sigmoid(x @ mlp.gate.T) + mlp.gate.e_score_correction_bias (randomised) picks the top-2 of 8 experts "
    "(intermediate 16) within the best of 2 groups (n_group 2, topk_group 1, groups scored by their two best), weighted "
    "by their sigmoid scores renormalised (norm_topk_prob) times routed_scaling_factor 2.5, plus 1 shared expert (16). "
    "Untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=32,
            moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=2,
            topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=1, sliding_window=16,
            max_window_layers=2),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "routed_scale_one", "qk_norm_off", "sliding_window_off"),
))

# Gemma 4: plain x * w norms (norm weights around 1), q/k/v norms, per-layer head dims. Its
# layer_scalar buffers are drawn around 1 so that no layer all but erases the residual stream.
GEMMA4_INIT = ((r"layer_scalar$", 1.0, 0.2),)
GEMMA4_FIELDS = dict(num_key_value_heads=2, head_dim=16, global_head_dim=32, sliding_window=16,
                     hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, rms_norm_eps=1e-6)
GEMMA4_ROPE = {"sliding_attention": _rope("default", 10000.0),
               "full_attention": _rope("proportional", 1000000.0, partial_rotary_factor=0.25)}
FIXTURES.append(Fixture(
    "gemma4-dense", "gemma4_text",
    "Gemma 4 dense (the 31B's shape): 4 layers sliding (window 16), full, sliding, full; sliding layers head_dim 16 with "
    "2 KV heads and default RoPE theta 1e4, full layers head_dim 32 (global_head_dim) with 1 KV head "
    "(num_global_key_value_heads, saved as per_layer_config) whose values are k_proj's output (attention_k_eq_v: no "
    "v_proj) and proportional RoPE (theta 1e6, partial_rotary_factor 0.25: 4 of 16 pairs rotate, over the whole head); "
    "q_norm / k_norm and a weightless v_norm per head, scores unscaled; four x * w norms per layer; layer_scalar drawn "
    "around 1; gelu_pytorch_tanh; embeddings times sqrt(64); final_logit_softcapping 10; no per-layer inputs "
    "(hidden_size_per_layer_input 0); lm_head tied; bf16.",
    _fields(**GEMMA4_FIELDS, num_hidden_layers=4, intermediate_size=48, attention_k_eq_v=True, num_global_key_value_heads=1,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            hidden_size_per_layer_input=0, final_logit_softcapping=10.0),
    GEMMA4_ROPE,
    stored_dtype="bfloat16",
    init_overrides=GEMMA4_INIT,
))
FIXTURES.append(Fixture(
    "gemma4-ple-kv-shared", "gemma4_text",
    "Gemma 4 small (E2B/E4B's shape): 4 layers alternating sliding (window 16, head_dim 16) and full (head_dim 32, "
    "proportional RoPE over a quarter), 2 KV heads everywhere, v_proj on every layer; the last 2 layers "
    "(num_kv_shared_layers 2) have no k/v projections and read the keys and values of layers 0 (sliding) and 1 (full), "
    "with twice the MLP width (use_double_wide_mlp: 48 for 24); per-layer inputs (hidden_size_per_layer_input 8, "
    "vocab_size_per_layer_input 256): embed_tokens_per_layer times sqrt(8) plus per_layer_model_projection of the "
    "embeddings times 64^-0.5 through per_layer_projection_norm, times 2^-0.5, gating each layer's "
    "per_layer_input_gate / per_layer_projection / post_per_layer_input_norm; layer_scalar around 1; lm_head tied; bf16.",
    _fields(**GEMMA4_FIELDS, num_hidden_layers=4, intermediate_size=24, num_kv_shared_layers=2, use_double_wide_mlp=True,
            layer_types=["sliding_attention", "full_attention"] * 2,
            hidden_size_per_layer_input=8, vocab_size_per_layer_input=256),
    GEMMA4_ROPE,
    stored_dtype="bfloat16",
    init_overrides=GEMMA4_INIT,
))
FIXTURES.append(Fixture(
    "gemma4-moe-vl", "gemma4",
    "Gemma 4 MoE (the 26B-A4B's shape) as Gemma4ForConditionalGeneration (model_type gemma4, no vision or audio "
    "tower), run on text: text_config a gemma4_text model of 3 layers (sliding, sliding, full), keys as values on the "
    "full layer (1 KV head of 32), and beside each layer's dense MLP (intermediate 32) a mixture of 4 experts "
    "(moe_intermediate_size 16, top 2): the router norms the residual without weights, times router.scale and 64^-0.5, "
    "softmax over router.proj's logits, top 2 renormalised, times router.per_expert_scale; experts.gate_up_proj "
    "[4, 32, 64] and down_proj [4, 64, 16] on pre_feedforward_layernorm_2 of the residual; the dense MLP's output "
    "through post_feedforward_layernorm_1 and the experts' through post_feedforward_layernorm_2, summed, then "
    "post_feedforward_layernorm. Weights under model.language_model.*, lm_head tied (the wrapper's default); bf16.",
    _fields(**GEMMA4_FIELDS, num_hidden_layers=3, intermediate_size=32, attention_k_eq_v=True, num_global_key_value_heads=1,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], hidden_size_per_layer_input=0,
            enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16),
    GEMMA4_ROPE,
    stored_dtype="bfloat16",
    init_overrides=GEMMA4_INIT + ((r"router\.proj\.weight$", 0.0, 0.3), (r"router\.(scale|per_expert_scale)$", 1.0, 0.2)),
    text_model_type="gemma4_text",
    wrapper_fields=dict(tie_word_embeddings=True),
))
FIXTURES.append(Fixture(
    "exaone-moe", "exaone_moe",
    "K-EXAONE-like (ExaoneMoeForCausalLM), 3 layers, vocabulary 128: EXAONE 4's attention (per-head q_norm / k_norm "
    "before RoPE, head_dim 16, GQA 4 query / 2 KV heads; layers 0-1 sliding (window 16) with RoPE, layer 2 global "
    "without RoPE, sliding_window_pattern 3) in OLMoE's pre-norm layers; layer 0 a dense MLP (first_k_dense_replace 1, "
    "intermediate 32), layers 1-2 DeepSeek-V3's MoE under EXAONE's key names: sigmoid(x @ mlp.gate.T) + "
    "e_score_correction_bias (randomised) picks the top-2 of num_experts 8 (intermediate 16) within the best of 2 "
    "groups, renormalised (norm_topk_prob, the class default), times routed_scaling_factor 2.5 (the class default), "
    "plus num_shared_experts 1 (16); the selection bias saved beside the router as the Hub's checkpoints hold it "
    "(mlp.e_score_correction_bias). Untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=32,
            moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2, num_shared_experts=1, n_group=2,
            topk_group=1, first_k_dense_replace=1, sliding_window=16, sliding_window_pattern=3),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "routed_scale_one", "qk_norm_off", "sliding_window_off"),
))

FIXTURES.append(Fixture(
    "solar-open", "solar_open",
    "Solar-Open-like (SolarOpenForCausalLM), 2 layers, vocabulary 128: GLM-4.5's decoder with Llama's attention "
    "(attention_bias on q, k and v, none on o_proj; no q/k norms; the whole head of 16 rotates: SolarOpenConfig has "
    "no partial_rotary_factor default), GQA 4 query / 2 KV heads, RoPE theta 1e6 (the class default); a MoE block in "
    "every layer (no dense layer: the class reads no first_k_dense_replace): sigmoid(x @ mlp.gate.T) + "
    "mlp.gate.e_score_correction_bias (randomised) picks the top-2 of 8 experts (intermediate 16) within the best of "
    "2 groups, renormalised, times routed_scaling_factor 2.0, plus 1 shared expert (16). Untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, moe_intermediate_size=16, n_routed_experts=8,
            num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1, routed_scaling_factor=2.0,
            attention_bias=True),
    _rope(theta=1000000.0),
    stored_dtype="bfloat16",
    init_overrides=SELECTION_BIAS_ROUTER,
    probes=("e_score_bias_off", "routed_scale_one"),
))

FIXTURES.append(Fixture(
    "youtu", "youtu",
    "Youtu-LLM-like (YoutuForCausalLM), 2 layers, vocabulary 128: DeepSeek-V3's MLA (q_lora_rank 24, kv_lora_rank 32, "
    "16 nope + 8 rope / 16 v head dims, 4 heads; RoPE over interleaved pairs by the class default rope_interleave) "
    "with YaRN factor 4 / original 32 and mscale = mscale_all_dim = 1 (softmax scale 24^-0.5 * (0.1 ln 4 + 1)^2), over "
    "Qwen3's dense gated MLP in every layer (intermediate 64; YoutuConfig has no MoE keys), lm_head tied (the class "
    "default); no pad_token_id (the class default: YoutuPreTrainedModel's init zeroes the padding row of the "
    "embedding when from_pretrained loads a checkpoint, which the reload check would catch); bf16.",
    _fields(vocab_size=128, num_key_value_heads=4, intermediate_size=64, q_lora_rank=24, kv_lora_rank=32,
            qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
            pad_token_id=None),
    _rope("yarn", 10000.0, factor=4.0, original_max_position_embeddings=32, mscale=1.0, mscale_all_dim=1.0,
          beta_fast=32.0, beta_slow=1.0),
    stored_dtype="bfloat16",
    probes=("mscale_off", "rope_not_interleaved"),
))

FIXTURES.append(Fixture(
    "jais2-layernorm", "jais2",
    "Jais 2 (Jais2ForCausalLM): Llama's attention with q/k/v/o biases (Jais2Config's default attention_bias, absent "
    "from the fixture's fields), NemotronMLP's ungated down(relu(up(x))^2) with up and down biases (mlp_bias, the "
    "class default), every norm an nn.LayerNorm with a weight and a bias (input_layernorm, post_attention_layernorm, "
    "model.norm; layer_norm_eps 1e-5, biases drawn N(0, 0.1)), GQA 4 query / 2 KV heads, RoPE theta 1e4, untied; bf16.",
    {k: v for k, v in _fields(num_key_value_heads=2, intermediate_size=96, layer_norm_eps=1e-5).items() if k != "rms_norm_eps"},
    _rope(),
    stored_dtype="bfloat16",
))

FIXTURES.append(Fixture(
    "nanochat", "nanochat",
    "nanochat (NanoChatForCausalLM): Llama's pre-norm layers with every norm a weightless RMSNorm (Llama 4's L2 "
    "norm), the embedding normed before layer 0; Qwen3's attention with weightless q/k norms after RoPE and NanoChat's "
    "rotate_half (x2, -x1), a rotation by -theta; CLIP's MLP fc1 -> relu2 -> fc2 without a gate; the final logits "
    "soft-capped at final_logit_softcapping 15 (the class default); attention_bias (q, k, v and o), GQA 4 query / 2 "
    "KV heads, RoPE theta 1e4, untied; bf16.",
    _fields(num_key_value_heads=2, intermediate_size=96, attention_bias=True, rms_norm_eps=1e-6),
    _rope(),
    stored_dtype="bfloat16",
    probes=("final_softcap_off",),
))

FIXTURES.append(Fixture(
    "hy-v3", "hy_v3",
    "Hy3-like (HYV3ForCausalLM), 3 layers, vocabulary 128: Apertus's attention (per-head q_norm / k_norm before "
    "RoPE, attention_bias on q, k, v and o, head_dim 16, GQA 4 query / 2 KV heads, RoPE theta 1e4); layer 0 a dense "
    "gated MLP (HYV3Config's default mlp_layer_types, intermediate 32), layers 1-2 MiniMax-M2's sigmoid router: "
    "sigmoid(x @ mlp.router.gate.T) + mlp.expert_bias (randomised) picks the top-2 of 8 experts (intermediate 16), "
    "weighted by their sigmoid scores renormalised, times router_scaling_factor 2.826 (the class default), plus "
    "mlp.shared_mlp (num_shared_experts 1, 16), saved under the Hub's names. Untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=32,
            moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2, num_shared_experts=1, attention_bias=True),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), (r"\.e_score_correction_bias$", 0.0, 0.1)),
    probes=("e_score_bias_off", "qk_norm_off"),
))

FIXTURES.append(Fixture(
    "cohere2-moe", "cohere2_moe",
    "Cohere 2 MoE (Cohere2MoeForCausalLM), 3 layers, vocabulary 128: Cohere's parallel layers on RMSNorms "
    "(rms_norm_eps set; absent: Cohere's LayerNorm), RoPE over interleaved pairs, GQA 4 query / 2 KV heads, head_dim 16; "
    "layer 0 dense (first_k_dense_replace 1, prefix_dense_intermediate_size 48), full attention that still rotates "
    "(prefix_dense_sliding_window_pattern 1, the class default); layers 1-2 by sliding_window_pattern 2: layer 1 "
    "sliding (window 16) with RoPE, layer 2 full without; their MoE: the top-2 of 8 logits of mlp.gate, a softmax over "
    "those two (expert_selection_fn softmax), Mixtral's experts (intermediate_size 16), plus 1 shared expert (16) "
    "added (shared_expert_combination_strategy sum); logit_scale 0.0625 (the class default), final norm weights "
    "around 12 (logits spread for greedy margins), tied (the class default); bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=16,
            num_experts=8, num_experts_per_tok=2, num_shared_experts=1, shared_expert_combination_strategy="sum",
            first_k_dense_replace=1, prefix_dense_intermediate_size=48, sliding_window=16, sliding_window_pattern=2,
            rms_norm_eps=1e-5, tie_word_embeddings=True),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"^model\.norm\.weight$", 12.0, 1.0), (r"\.mlp\.gate\.weight$", 0.0, 0.3)),
    probes=("sliding_window_off", "rope_halves"),
))

FIXTURES.append(Fixture(
    "afmoe", "afmoe",
    "AFMoE (Arcee Trinity, AfmoeForCausalLM), 3 layers, vocabulary 128: Llama's attention with per-head q_norm / k_norm "
    "before RoPE and an output gate sigmoid(self_attn.gate_proj(x)) before o_proj, layers 0-1 sliding (window 16) "
    "with RoPE, layer 2 full attention without RoPE (global_attn_every_n_layers 3); four norms a "
    "layer (input, post_attention on attention's output, pre_mlp, post_mlp on the MLP's output); layer 0 a dense MLP "
    "(num_dense_layers 1, intermediate 32), layers 1-2 sigmoid(x @ mlp.router.gate.T) + mlp.expert_bias (randomised) "
    "picks the top-2 of 4 experts (intermediate 16), renormalised, times route_scale 2.0, plus 1 shared expert (16); "
    "mup_enabled: embeddings times sqrt(64); head_dim 16, GQA 4 query / 2 KV heads, untied; bf16.",
    _fields(vocab_size=128, num_key_value_heads=2, head_dim=16, num_hidden_layers=3, intermediate_size=32,
            moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, num_shared_experts=1, route_scale=2.0,
            num_dense_layers=1, sliding_window=16, global_attn_every_n_layers=3, mup_enabled=True),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.router\.gate\.weight$", 0.0, 0.3), (r"\.expert_bias$", 0.0, 0.1)),
    probes=("qk_norm_off", "sliding_window_off"),
))

FIXTURES.append(Fixture(
    "kimi-linear", "kimi_linear",
    "Kimi Linear (KimiLinearForCausalLM), 4 layers: layers 0, 1, 3 Kimi Delta Attention and layer 2 MLA "
    "(linear_attn_config's 1-indexed kda_layers [1, 2, 4] and full_attn_layers [3]). KDA: 2 heads of 8, "
    "q/k/v_proj each through its own depthwise causal conv1d of width 4 (q_conv1d, k_conv1d, v_conv1d; no bias) "
    "and silu, l2-normalised q and k, q scaled by 8^-0.5, beta = sigmoid(b_proj(x)) per head, a decay per key "
    "channel g = -exp(A_log_h) * softplus(f_b_proj(f_a_proj(x)) + dt_bias) (A_log [1, 1, 2, 1], dt_bias [16], "
    "drawn wide so the channels' decays differ), each row of the head's state decayed by its own exp(g_i); "
    "RMSNorm(x) * w * sigmoid(g_b_proj(g_a_proj(x))) per head (o_norm), o_proj. MLA without RoPE (NoPE): one "
    "q_proj (q_lora_rank null), kv_lora_rank 32, 8 nope + 8 shared-key / 8 v head dims (the CUDA MLA kernels' "
    "smallest: a latent of 32, a shared key of 8), the shared key part unrotated, softmax scale 16^-0.5. Layer 0 a dense MLP (first_k_dense_replace 1) stored as mlp.* as the "
    "Hub's checkpoints (transformers 5.18's save writes it under block_sparse_moe.*, renamed after saving); "
    "layers 1-3 DeepSeek-V3's MoE under block_sparse_moe: sigmoid scores in float32, top 2 of 4 experts by "
    "score + e_score_correction_bias (one group), weighted by their scores renormalised (moe_renormalize), "
    "times routed_scaling_factor 2.446, experts.E.w1/w3/w2 (gate/up/down) per expert, plus 1 shared expert. "
    "The prompts' prefill runs transformers' chunked KDA, its decodes the recurrent one. Weights stored as bfloat16.",
    _fields(hidden_size=32, num_hidden_layers=4, intermediate_size=64, moe_intermediate_size=16, num_attention_heads=4,
            num_key_value_heads=4, kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8,
            v_head_dim=8, num_experts=4, num_experts_per_token=2, num_shared_experts=1, num_expert_group=1,
            topk_group=1, moe_renormalize=True, routed_scaling_factor=2.446, first_k_dense_replace=1,
            linear_attn_config=dict(full_attn_layers=[3], kda_layers=[1, 2, 4], head_dim=8, num_heads=2,
                                    short_conv_kernel_size=4)),
    _rope(),
    stored_dtype="bfloat16",
    init_overrides=((r"\.mlp\.gate\.weight$", 0.0, 0.3), (r"\.e_score_correction_bias$", 0.0, 0.1),
                    (r"self_attn\.conv1d\.weight$", 0.0, 0.5), (r"forget_gate\.A_log$", -1.0, 0.5),
                    (r"forget_gate\.dt_bias$", 0.0, 1.0)),
    probes=("kda_decay_per_head", "e_score_bias_off", "routed_scale_one"),
))


# Each fixture's first seed (its weights try base, base + 1, ...; its prompts draw from base + 7),
# by name, so that adding or moving a fixture never changes another's bytes. The committed
# fixtures' bases are what they were drawn with when the base was 1000 x (position + 1) in the
# list of that day, which is why some repeat; a new fixture takes a thousand no other one uses.
SEED_BASES = {
    "llama-gqa": 1000,
    "llama-mha-bf16": 2000,
    "llama-mqa-f16": 3000,
    "llama-rope-llama3": 4000,
    "llama-rope-linear": 5000,
    "llama-rope-dynamic": 6000,
    "llama-rope-yarn": 7000,
    "mistral-headdim": 8000,
    "mistral-swa": 9000,
    "qwen2-bias-tied": 10000,
    "qwen3-qknorm": 11000,
    "llama-sharded": 12000,
    "mixtral-moe": 13000,
    "qwen2-moe": 14000,
    "qwen3-moe": 15000,
    "deepseek-v2-lite": 16000,
    "deepseek-v2-group": 17000,
    "deepseek-v3": 18000,
    "deepseek-v32": 19000,
    "gemma-mqa": 19000,
    "gemma2-softcap": 19000,
    "gemma3-text": 20000,
    "phi3-longrope": 21000,
    "phi3-partial-rotary": 22000,
    "gpt-oss": 23000,
    "quant-gptq-int4-actorder": 24000,
    "quant-gptq-int8-channel": 25000,
    "quant-awq-int4": 26000,
    "quant-ct-w4a16": 27000,
    "quant-ct-w8a16-asym": 28000,
    "quant-ct-fp8-channel": 29000,
    "quant-bnb-nf4-dq": 30000,
    "quant-bnb-fp4": 31000,
    "quant-bnb-int8": 32000,
    "quant-fp8-block": 30000,
    "gpt-oss-mxfp4": 31000,
    "quant-aqlm-2x8": 35000,
    "quant-moe-gptq-int4-sym": 36000,
    "quant-moe-fp8-block": 37000,
    "quant-moe-mixtral-ct-w4a16": 40000,
    "quant-moe-mixtral-gptq-int4-actorder": 41000,
    "gemma3-vl": 42000,
    "mistral3-vl": 43000,
    "llama4-vl": 44000,
    "llama4-text": 45000,
    "mistral3-vl-own-head": 46000,
    "quant-gemma3-vl-ct-w4a16": 47000,
    "quant-llama4-text-ct-w4a16": 48000,
    "llama-longrope-mlp-bias": 49000,
    "gemma3-text-yarn-h48": 50000,
    "olmo2-postnorm": 63000,
    "olmo3-sliding": 64000,
    "smollm3-nope": 65000,
    "granite-multipliers": 66000,
    "seed-oss-biases": 67000,
    "exaone4-nope-global": 68000,
    "arcee-relu2": 69000,
    "ministral3-yarn-temperature": 70000,
    "hunyuan-dense-norm-after-rope": 71000,
    "apertus-xielu": 72000,
    "qwen3.5-hybrid": 51000,
    "qwen3-next-moe": 52000,
    "qwen3.5-moe-vl": 53000,
    "glm4-moe-lite": 60000,
    "glm4-moe": 61000,
    "mistral4": 97000,
    "mimo-v2-flash": 98000,
    "laguna": 99000,
    "glm-moe-dsa": 62000,
    "minimax-m2": 73000,
    "ernie4.5-interleaved-rope": 74000,
    "ernie4.5-moe": 75000,
    "hunyuan-moe": 76000,
    "olmoe": 91000,
    "granitemoe": 92000,
    "granitemoeshared": 93000,
    "granite4-hybrid": 95000,
    "granite4-hybrid-dense-rope": 96000,
    "dots1": 94000,
    "gemma4-dense": 101000,
    "gemma4-ple-kv-shared": 102000,
    "gemma4-moe-vl": 103000,
    "qwen2-vl": 77000,
    "qwen2.5-vl": 78000,
    "qwen3-vl": 79000,
    "qwen3-vl-moe": 80000,
    "cohere-qknorm": 88100,
    "cohere2-sliding-nope": 88200,
    "kimi-linear": 131000,
    "deepseek-v2-expanded": 132000,
    "glm-partial-interleaved": 87000,
    "glm4-sandwich-norms": 88000,
    "glm4v": 88500,
    "glm4v-moe": 88600,
    "exaone-moe": 110000,
    "solar-open": 111000,
    "youtu": 112000,
    "jais2-layernorm": 113000,
    "nanochat": 114000,
    "hy-v3": 115000,
    "cohere2-moe": 116000,
    "afmoe": 117000,
}
_missing = [fx.name for fx in FIXTURES if fx.name not in SEED_BASES]
_unused = sorted(set(SEED_BASES) - {fx.name for fx in FIXTURES})
if _missing or _unused:
    raise SystemExit(f"SEED_BASES must name every fixture once: missing {_missing}, unused {_unused}")


# ---------------------------------------------------------------------------------------
# Config and model construction


def _init_accepts(cls, name: str) -> bool:
    """True if `cls(...)` takes `name` as a declared argument (not just via **kwargs)."""
    if name in getattr(cls, "__dataclass_fields__", {}):
        return True
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def build_config(model_type: str, fields: dict, rope: dict):
    """Create the config, preferring transformers 5's `rope_parameters`.

    Older releases take `rope_theta` + `rope_scaling` instead; a config class that does not
    declare `rope_parameters` would silently store it as an unused attribute, so the choice
    is made from the signature rather than by catching errors alone.
    """
    cls = getattr(transformers, CONFIG_CLASS_NAMES[model_type])
    errors = []
    if _init_accepts(cls, "rope_parameters"):
        try:
            # Deep copy: configs fill in defaults in place, and per-layer-type dicts are nested.
            return cls(rope_parameters=copy.deepcopy(rope), **copy.deepcopy(fields)), "rope_parameters"
        except Exception as exc:  # noqa: BLE001 - report and try the legacy spelling
            errors.append(f"rope_parameters: {exc!r}")
    if not _is_flat_rope(rope):
        raise RuntimeError(f"{cls.__name__} does not take rope_parameters; per-layer-type RoPE needs transformers 5")
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling.get("rope_type") == "default":
        scaling = None
    try:
        return cls(rope_theta=rope["rope_theta"], rope_scaling=scaling, **fields), "rope_theta+rope_scaling"
    except Exception as exc:  # noqa: BLE001
        errors.append(f"rope_theta/rope_scaling: {exc!r}")
    raise RuntimeError(f"could not build {cls.__name__}: " + "; ".join(errors))


def build_fixture_config(fx: Fixture):
    """The fixture's config: build_config's, or for a vision-language fixture its wrapper around one."""
    if fx.text_model_type is None:
        return build_config(fx.model_type, fx.fields, fx.rope)
    text_config, rope_style = build_config(fx.text_model_type, fx.fields, fx.rope)
    cls = getattr(transformers, CONFIG_CLASS_NAMES[fx.model_type])
    return cls(text_config=text_config, **copy.deepcopy(fx.wrapper_fields)), rope_style


def effective_rope(config) -> dict:
    """The RoPE settings the config (its text_config, for a vision-language one) ended up with, whichever spelling it uses."""
    config = config.get_text_config()
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        out = dict(params)
    else:
        out = dict(getattr(config, "rope_scaling", None) or {})
        theta = getattr(config, "rope_theta", None)
        if theta is not None:
            out.setdefault("rope_theta", theta)
    if _is_flat_rope(out) or not out:
        out.setdefault("rope_type", out.get("type", "default"))
    return out


def _is_flat_rope(rope: dict) -> bool:
    """True for one RoPE dict; False for Gemma 3's {layer_type: RoPE dict}."""
    return "rope_type" in rope or "type" in rope or "rope_theta" in rope


def _rope_by_layer_type(rope: dict) -> dict[str, dict]:
    return {"": rope} if _is_flat_rope(rope) else rope


def check_rope(model, config, expected: dict) -> None:
    got_all = _rope_by_layer_type(effective_rope(config))
    rotary = getattr(model.get_decoder(), "rotary_emb", None)
    rotary_types = getattr(rotary, "rope_type", None)
    for layer_type, want in _rope_by_layer_type(expected).items():
        where = f" ({layer_type})" if layer_type else ""
        got = got_all.get(layer_type) or {}
        got_type = got.get("rope_type", got.get("type", "default"))
        if got_type != want["rope_type"]:
            raise RuntimeError(f"config rope_type{where} {got_type!r} != {want['rope_type']!r}")
        theta = got.get("rope_theta")
        if theta is None or not math.isclose(float(theta), want["rope_theta"], rel_tol=1e-9):
            raise RuntimeError(f"config rope_theta{where} {theta!r} != {want['rope_theta']!r}")
        for key, value in want.items():
            if key not in ("rope_type", "rope_theta") and got.get(key) != value:
                raise RuntimeError(f"config rope {key}{where} {got.get(key)!r} != {value!r}")
        rotary_type = rotary_types.get(layer_type) if isinstance(rotary_types, dict) else rotary_types
        if rotary_type is not None and rotary_type != want["rope_type"]:
            raise RuntimeError(f"model rotary_emb.rope_type{where} {rotary_type!r} != {want['rope_type']!r}")


def ensure_eager(model) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl == "eager":
        return
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
        impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise RuntimeError(f"model uses attention implementation {impl!r}, expected 'eager'")


def _is_norm_weight(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and "norm" in parts[-2]


def persistent_buffers(model) -> list[tuple[str, torch.Tensor]]:
    """Floating-point buffers that are saved with the weights (e.g. DeepSeek-V3's
    e_score_correction_bias), sorted by name; non-persistent ones (inv_freq, Gemma's
    embed_scale) are recomputed from the config and left alone."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    saved = set(model.state_dict().keys()) - params
    return [(name, model.get_buffer(name)) for name in sorted(saved)
            if torch.is_floating_point(model.get_buffer(name))]


@torch.no_grad()
def randomize_parameters(model, seed: int, norm_center: float = 1.0,
                         overrides: tuple[tuple[str, float, float], ...] = ()) -> dict:
    """Overwrite every parameter, and every persistent floating-point buffer, with seeded values.

    transformers' own init already draws N(0, initializer_range), but it zeroes biases,
    sets norm weights to 1, and its ordering/scheme may change between releases. Drawing
    everything here keeps fixtures reproducible across versions and makes biases and norm
    weights carry information the engine must actually load. Buffers are drawn after all
    parameters (the Llama/Mistral/Qwen fixtures have none, so their draws are unchanged).
    `norm_center` is 0 for Gemma, whose RMSNorm multiplies by (1 + w); `overrides` widen or
    narrow the draw for particular tensors (routers, sinks, experts) without changing the
    noise any other tensor gets.
    """
    gen = torch.Generator().manual_seed(seed)
    counts = {"norm": 0, "bias": 0, "matrix": 0, "buffer": 0, "override": 0}

    def draw(name: str, tensor: torch.Tensor, kind: str) -> None:
        noise = torch.randn(tuple(tensor.shape), generator=gen, dtype=torch.float32)
        for pattern, center, std in overrides:
            if re.search(pattern, name):
                tensor.copy_(center + std * noise)
                counts["override"] += 1
                return
        if kind == "buffer":
            tensor.copy_(0.1 * noise)
        elif _is_norm_weight(name):
            tensor.copy_(norm_center + 0.1 * noise)
            kind = "norm"
        elif name.endswith(".bias") or name.endswith("_bias"):
            tensor.copy_(0.1 * noise)
            kind = "bias"
        else:
            tensor.copy_(INIT_STD * noise)
        counts[kind] += 1

    # named_parameters() yields a tied embedding/lm_head only once, so ties survive.
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        draw(name, param, "matrix")
    for name, buf in persistent_buffers(model):
        draw(name, buf, "buffer")
    return counts


@torch.no_grad()
def round_to_dtype(model, dtype: torch.dtype) -> None:
    """Make the float32 weights exactly representable in the storage dtype."""
    if dtype == torch.float32:
        return
    for param in model.parameters():
        param.copy_(param.to(dtype).to(torch.float32))
    for _, buf in persistent_buffers(model):
        buf.copy_(buf.to(dtype).to(torch.float32))


def ensure_eager_experts(model) -> None:
    """MoE models run their experts with the plain per-expert loop, like attention with eager.

    transformers 5 defaults to "grouped_mm" where torch supports it; the eager loop is the
    literal reading of the modeling code (and what fixture_probes' routing check mirrors).
    """
    if not hasattr(model.config, "_experts_implementation"):
        return
    can_set = getattr(model, "_can_set_experts_implementation", None)
    if callable(can_set) and can_set():
        model.set_experts_implementation("eager")
        impl = model.config._experts_implementation
        if impl != "eager":
            raise RuntimeError(f"model uses experts implementation {impl!r}, expected 'eager'")


def make_model(fx: Fixture, seed: int):
    config, rope_style = build_fixture_config(fx)
    torch.manual_seed(seed)
    model = auto_class(fx.model_type).from_config(config, attn_implementation="eager")
    model = model.float().eval()
    ensure_eager(model)
    ensure_eager_experts(model)
    check_rope(model, model.config, fx.rope)
    counts = randomize_parameters(model, seed, fx.norm_center, fx.init_overrides)
    if fx.model_type in ("qwen2", "qwen2_moe", "gpt_oss") and fx.fields.get("qkv_bias", True) and counts["bias"] == 0:
        raise RuntimeError(f"{fx.model_type} model has no bias parameters; the fixture would not test them")
    if fx.model_type in SELECTION_BIAS_MODEL_TYPES and counts["buffer"] + counts["override"] == 0:
        raise RuntimeError(f"{fx.model_type} e_score_correction_bias was not randomised")
    for pattern, _, _ in fx.init_overrides:
        names = [n for n, _ in model.named_parameters()] + [n for n, _ in persistent_buffers(model)]
        if not any(re.search(pattern, n) for n in names):
            raise RuntimeError(f"init override {pattern!r} matches no tensor")
    # A vision-language wrapper's own tie_word_embeddings is the one transformers applies.
    tied = fx.wrapper_fields.get("tie_word_embeddings", fx.fields.get("tie_word_embeddings")) if fx.text_model_type else fx.fields.get("tie_word_embeddings")
    if tied:
        out_w = model.get_output_embeddings().weight
        in_w = model.get_input_embeddings().weight
        if out_w.data_ptr() != in_w.data_ptr():
            raise RuntimeError("tie_word_embeddings=True but lm_head is not tied to the embedding")
    round_to_dtype(model, DTYPES[fx.stored_dtype])
    return model, rope_style, counts


def load_quantized_fixture(path: Path):
    """A quantized fixture reloaded without the format's library: its packed layers unpacked by
    quantized_fixtures.dequantized_state into a float32 model of the same config. MXFP4 is read by
    transformers itself (its integration's dequantizing path, which CPU hosts take)."""
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    if config.quantization_config.get("quant_method") == "aqlm":
        # transformers' own AQLM loading, with a stand-in for the aqlm library (aqlm_fixtures.py).
        model = load_through_transformers(path)
        ensure_eager(model)
        return model
    if config.quantization_config.get("quant_method") == "mxfp4":
        # dequantize=True: the integration's CPU path, taken without the accelerate/triton checks.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", local_files_only=True,
                                                     quantization_config=transformers.Mxfp4Config(dequantize=True)).float().eval()
        ensure_eager(model)
        ensure_eager_experts(model)
        return model
    del config.quantization_config
    model = auto_class(config.model_type).from_config(config, attn_implementation="eager").float().eval()
    state = fuse_input_major_experts(dequantized_state(path))
    if set(state) != set(model.state_dict()):
        # Per-expert checkpoint tensors of experts transformers fuses in memory, or a vision-language
        # model's saved names: its own loader converts them, from the dequantized tensors written as
        # a 16-bit checkpoint.
        model = load_dequantized_through_transformers(path, config, state)
    else:
        model.load_state_dict(state, strict=True)
    quantization = json.loads((path / "config.json").read_text())["quantization_config"]
    install_runtime_layers(model, quantization, load_file(str(path / "model.safetensors")))
    ensure_eager(model)
    return model


def load_dequantized_through_transformers(path: Path, config, state: dict[str, torch.Tensor]):
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        model = auto_class(config.model_type).from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager",
                                                              local_files_only=True).float().eval()
    ensure_eager_experts(model)
    return model


def load_fixture(path: Path):
    """A saved fixture reloaded in float32 on CPU, every attention module eager."""
    model = load_fp32(path)
    ensure_eager(model)
    ensure_eager_experts(model)
    return model


@torch.no_grad()
def bf16_reference(model, prompts: list[list[int]], last_logits: list[torch.Tensor]) -> dict:
    """transformers itself running the same model in bfloat16, per prompt: how far it lands from its
    float32 last-token logits (the error a bf16 engine cannot be blamed for), those logits, and its
    KV-cached greedy continuation. Where rounding flips a near-tie (an MoE expert, an index top-k
    position), a bf16 engine may flip the same one: the CUDA parity suite accepts logits near these
    and a greedy path that leaves the float32 one where this one does, with its token."""
    model = copy.deepcopy(model).to(torch.bfloat16)
    logits = [model(input_ids=torch.tensor([p])).logits[0, -1].float() for p in prompts]
    return {
        "bf16_max_abs_dlogit": [float(f"{float((row - ref).abs().max()):.4g}") for row, ref in zip(logits, last_logits)],
        "bf16_last_logits": [round_sig(row) for row in logits],
        "bf16_greedy": [greedy_with_cache(model, p, MAX_NEW_TOKENS)[0] for p in prompts],
    }


# ---------------------------------------------------------------------------------------
# Reference computation


def make_prompts(seed: int, vocab_size: int, lengths: tuple[int, ...]) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> list[int]:
        return torch.randint(FIRST_PROMPT_ID, vocab_size, (n,), generator=gen).tolist()

    p1, p2, p3 = (draw(n) for n in lengths[:3])
    p4 = p3[:SHARED_PREFIX_LEN] + draw(lengths[3] - SHARED_PREFIX_LEN)
    return [p1, p2, p3, p4]


@torch.no_grad()
def full_sequence_logits(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Logits for the same positions as the cached loop, from one uncached forward."""
    model = copy.deepcopy(model)
    seq = prompt + tokens[:-1]
    out = model(input_ids=torch.tensor([seq], dtype=torch.long), use_cache=False)
    return out.logits[0, len(prompt) - 1:].float()


def top2_margin(logits: torch.Tensor) -> float:
    top = torch.topk(logits, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def reference(model, prompts: list[list[int]]) -> dict:
    last_logits, greedy, greedy_top, margins, cache_vs_full = [], [], [], [], []
    for prompt in prompts:
        tokens, step_logits = greedy_with_cache(model, prompt, MAX_NEW_TOKENS)
        if not torch.isfinite(step_logits).all():
            raise RuntimeError("non-finite logits")
        full = full_sequence_logits(model, prompt, tokens)
        last_logits.append(step_logits[0])
        greedy.append(tokens)
        greedy_top.append(top_logprobs(step_logits))
        margins.append(top2_margin(step_logits))
        cache_vs_full.append(float((full - step_logits).abs().max()))
    return {
        "last_logits": last_logits,
        "greedy": greedy,
        "greedy_top_logprobs": greedy_top,
        "min_greedy_margin": min(margins),
        "cache_vs_full_max_abs_diff": cache_vs_full,
    }


def round_sig(values: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.tolist()]


# ---------------------------------------------------------------------------------------
# Saving


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_checkpoint(model, fx: Fixture, out_dir: Path) -> None:
    dtype = DTYPES[fx.stored_dtype]
    # .to() converts in place, so cast a copy and keep the float32 reference model intact.
    to_save = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    kwargs = {}
    params = inspect.signature(to_save.save_pretrained).parameters
    # transformers 5 always writes safetensors and dropped the flag; 4.x still takes it.
    if "safe_serialization" in params:
        kwargs["safe_serialization"] = True
    if fx.max_shard_size is not None:
        kwargs["max_shard_size"] = fx.max_shard_size
    to_save.save_pretrained(out_dir, **kwargs)
    # Defensive: every engine loader expects these next to the weights.
    if not (out_dir / "config.json").is_file():
        to_save.config.save_pretrained(out_dir)
    gen_cfg = getattr(to_save, "generation_config", None)
    if gen_cfg is not None and not (out_dir / "generation_config.json").is_file():
        gen_cfg.save_pretrained(out_dir)

    weights = sorted(p.name for p in out_dir.glob("*.safetensors"))
    if not weights:
        raise RuntimeError(f"no .safetensors written in {out_dir}: {sorted(os.listdir(out_dir))}")
    if any(out_dir.glob("*.bin")):
        raise RuntimeError("pickle (.bin) weights were written; expected safetensors only")
    if fx.max_shard_size is not None:
        if not (out_dir / "model.safetensors.index.json").is_file() or len(weights) < 2:
            raise RuntimeError(f"expected a sharded checkpoint, got {weights}")


def _checkpoint_tensors(out_dir: Path) -> tuple[dict, dict | None]:
    """A saved checkpoint's tensors, and its index where it is sharded."""
    index_path = out_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else None
    files = sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]
    return {name: t for f in files for name, t in load_file(out_dir / f).items()}, index


def _draw_mtp_tensors(shapes: dict, dtypes: dict, gen: torch.Generator, norm_center: float) -> dict:
    """Random tensors of `shapes`, drawn in name order as randomize_parameters draws them (norm
    weights around `norm_center`, routers wider), each stored in its `dtypes` entry."""
    drawn = {}
    for name in sorted(shapes):
        noise = torch.randn(shapes[name], generator=gen, dtype=torch.float32)
        if _is_norm_weight(name):
            value = norm_center + 0.1 * noise
        elif name.endswith("e_score_correction_bias"):
            value = 0.1 * noise
        elif name.endswith("mlp.gate.weight"):
            value = 0.3 * noise
        else:
            value = INIT_STD * noise
        drawn[name] = value.to(dtypes[name]).contiguous()
    return drawn


def _append_tensors(out_dir: Path, tensors: dict, index: dict | None, extra: dict) -> None:
    """Adds `extra` to the saved checkpoint: into model.safetensors, or a sharded checkpoint's
    shard of their own (model-mtp.safetensors), listed in its index."""
    if index is None:
        save_file({**tensors, **extra}, out_dir / "model.safetensors", metadata={"format": "pt"})
        return
    save_file(extra, out_dir / "model-mtp.safetensors", metadata={"format": "pt"})
    index["weight_map"].update({name: "model-mtp.safetensors" for name in extra})
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _last_layer_block(tensors: dict, prefix: str) -> dict:
    """The tensors under `prefix` (the decoder's last layer's), by their names within the layer."""
    block = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    if not any(name.startswith("mlp.experts.") or name.startswith("mlp.gate_proj.") for name in block):
        raise RuntimeError(f"{prefix}* holds no feed-forward the MTP block could copy")
    return block


@torch.no_grad()
def add_mtp_layers(out_dir: Path, config, seed: int) -> None:
    """DeepSeek-V3's multi-token prediction layers, which transformers does not model, appended to
    the saved checkpoint as DeepSeek publishes them: layer num_hidden_layers + k holds enorm, hnorm,
    eh_proj [H, 2H], shared_head.norm, shared_head.head [vocab, H] and a decoder block named as the
    decoder's last (MoE) layer's tensors are. Drawn as randomize_parameters draws, from their own
    generator, after the model: the decoder's weights and oracle do not change. Stored in the
    checkpoint's dtype, as the decoder's tensors are (each block tensor in its decoder twin's).
    A sharded checkpoint gets them in a shard of their own, listed in its index."""
    tensors, index = _checkpoint_tensors(out_dir)
    block = _last_layer_block(tensors, f"model.layers.{config.num_hidden_layers - 1}.")
    if not any(name.startswith("mlp.experts.") for name in block):
        raise RuntimeError("the MTP block copies the last layer's tensor names, which must be a MoE layer's")
    h = config.hidden_size
    shapes = {name: tuple(t.shape) for name, t in block.items()}
    shapes.update({"enorm.weight": (h,), "hnorm.weight": (h,), "eh_proj.weight": (h, 2 * h),
                   "shared_head.norm.weight": (h,), "shared_head.head.weight": (config.vocab_size, h)})
    dtype = tensors["model.embed_tokens.weight"].dtype
    dtypes = {name: block[name].dtype if name in block else dtype for name in shapes}
    gen = torch.Generator().manual_seed(seed + 500)
    mtp = {}
    for k in range(config.num_nextn_predict_layers):
        mtp.update({f"model.layers.{config.num_hidden_layers + k}.{name}": t for name, t in _draw_mtp_tensors(shapes, dtypes, gen, 1.0).items()})
    _append_tensors(out_dir, tensors, index, mtp)


@torch.no_grad()
def add_hybrid_mtp_layers(out_dir: Path, text_config, norm_center: float, seed: int) -> None:
    """Qwen3-Next's and Qwen3.5's multi-token prediction layer, which transformers ignores
    (`_keys_to_ignore_on_load_unexpected` ^mtp.*), appended to the saved checkpoint as the Hub's
    checkpoints hold it, at the top level also in a vision-language wrapper's: mtp.fc [H, 2H] (over
    [embedding, hidden]), mtp.pre_fc_norm_embedding, mtp.pre_fc_norm_hidden, mtp.norm, and
    mtp.layers.0.* a decoder block named as the decoder's last layer's (full attention, and its
    MoE block or dense MLP). No head: the target's LM head gives its logits. Norm weights are the
    family's (1 + w), drawn around `norm_center`; drawn after the model from their own generator."""
    tensors, index = _checkpoint_tensors(out_dir)
    last = text_config.num_hidden_layers - 1
    if text_config.layer_types[last] != "full_attention":
        raise RuntimeError("the MTP block copies the last layer's tensor names, which must be a full-attention layer's")
    stored = next(name for name in tensors if name.endswith(f"layers.{last}.input_layernorm.weight"))
    block = _last_layer_block(tensors, stored[: -len("input_layernorm.weight")])
    h = text_config.hidden_size
    shapes = {f"layers.0.{name}": tuple(t.shape) for name, t in block.items()}
    shapes.update({"fc.weight": (h, 2 * h), "pre_fc_norm_embedding.weight": (h,), "pre_fc_norm_hidden.weight": (h,), "norm.weight": (h,)})
    dtype = next(t.dtype for name, t in tensors.items() if name.endswith("embed_tokens.weight"))
    dtypes = {name: dtype for name in shapes}
    gen = torch.Generator().manual_seed(seed + 500)
    drawn = _draw_mtp_tensors(shapes, dtypes, gen, norm_center)
    _append_tensors(out_dir, tensors, index, {f"mtp.{name}": t for name, t in drawn.items()})


def flatten_text_config(out_dir: Path) -> None:
    """config.json as the Hub's Qwen2-VL configs are: text_config's keys at the top level (its own
    model_type dropped, the wrapper's keys kept where both have one), RoPE spelled as transformers 4.x's rope_theta + rope_scaling, whose
    "mrope" type the text config class reads as "default"."""
    saved = json.loads((out_dir / "config.json").read_text())
    text = saved.pop("text_config")
    del text["model_type"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.pop("rope_type")
    text["rope_scaling"] = {"type": "mrope" if rope_type == "default" else rope_type, **rope}
    # The wrapper's own keys win (its tie_word_embeddings is the one transformers applies).
    (out_dir / "config.json").write_text(json.dumps({**text, **saved}, indent=2, sort_keys=True) + "\n")


def write_input_major_experts(out_dir: Path) -> None:
    """Qwen3-VL-MoE's fused experts as the Hub's checkpoints hold them, input-major (gate_up_proj
    [E, H, 2I], down_proj [E, I, H]); transformers 5.18's save_pretrained writes its in-memory
    [E, 2I, H] and [E, H, I], and its loader transposes whichever does not match (check_dims)."""
    fused = re.compile(r"\.mlp\.experts\.(gate_up_proj|down_proj)$")
    for path in sorted(out_dir.glob("*.safetensors")):
        tensors = load_file(path)
        moved = {name: t.transpose(1, 2).contiguous() if fused.search(name) else t for name, t in tensors.items()}
        save_file(moved, str(path), metadata={"format": "pt"})


def name_dense_mlps_as_hub(out_dir: Path, config) -> None:
    """Kimi Linear's dense layers as the Hub's checkpoints name them, model.layers.N.mlp.*: transformers
    5.18 reads both spellings (it renames block_sparse_moe to mlp), but its save_pretrained reverses that
    rename for every layer, dense ones included."""
    dense = [i for i, t in enumerate(config.mlp_layer_types) if t == "dense"]
    if not dense:
        return
    pattern = re.compile(r"^model\.layers\.(%s)\.block_sparse_moe\." % "|".join(map(str, dense)))

    def rename(name: str) -> str:
        return pattern.sub(r"model.layers.\1.mlp.", name)

    for path in sorted(out_dir.glob("*.safetensors")):
        tensors = load_file(path)
        save_file({rename(name): t for name, t in tensors.items()}, str(path), metadata={"format": "pt"})
    index_path = out_dir / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index["weight_map"] = {rename(name): file for name, file in index["weight_map"].items()}
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def check_saved_config(fx: Fixture, out_dir: Path) -> dict:
    saved = json.loads((out_dir / "config.json").read_text())
    if saved.get("model_type") != fx.model_type:
        raise RuntimeError(f"saved model_type {saved.get('model_type')!r} != {fx.model_type!r}")
    text = saved["text_config"] if fx.text_model_type and not fx.flat_text_config else saved
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    saved_by_type = _rope_by_layer_type(rope) if rope else {"": {}}
    for layer_type, want in _rope_by_layer_type(fx.rope).items():
        got = saved_by_type.get(layer_type) or {}
        rope_type = got.get("rope_type", got.get("type", "default"))
        # Qwen2-VL's 4.x spelling of default frequencies split into M-RoPE sections.
        if rope_type == "mrope" and fx.flat_text_config:
            rope_type = "default"
        if rope_type != want["rope_type"]:
            raise RuntimeError(f"saved config has rope_type {rope_type!r} for {layer_type or 'all layers'}, "
                               f"expected {want['rope_type']!r}")
    return saved


# ---------------------------------------------------------------------------------------


def draw_quality(fx: Fixture, ref: dict, routing: dict | None, selection: dict | None) -> float:
    """>= 1 when a draw is acceptable; otherwise larger is closer. For dense fixtures this is
    the greedy margin alone, so their choice of seed is what it always was."""
    quality = ref["min_greedy_margin"] / MIN_GREEDY_MARGIN
    if routing is not None:
        quality = min(quality, routing["min_routing_margin"] / MIN_ROUTING_MARGIN)
        if not routing["every_expert_used"]:
            quality = min(quality, 0.0)
    if selection is not None:
        quality = min(quality, selection["min_index_margin"] / MIN_INDEX_MARGIN)
    return quality


def build_fixture(fx: Fixture, root: Path, versions: dict) -> dict:
    out_dir = root / fx.name
    if out_dir.exists():
        shutil.rmtree(out_dir)  # stale shards from an earlier run would confuse loaders
    base_seed = SEED_BASES[fx.name]
    prompts = make_prompts(base_seed + 7, fx.fields["vocab_size"], fx.prompt_lengths)
    # A Granite 4.0 hybrid without experts (num_local_experts 0) is dense, as is a Gemma 4 without enable_moe_block.
    is_moe = fx.model_type in MOE_MODEL_TYPES and fx.fields.get("num_local_experts") != 0 and (
        fx.model_type not in ("gemma4_text", "gemma4") or fx.fields.get("enable_moe_block", False))

    # Re-draw weights until no greedy step is a near-tie (and, for MoE, no routing choice is
    # one and every expert is used); keep the best draw otherwise.
    best = None
    for attempt in range(MOE_SEED_ATTEMPTS if is_moe else MAX_SEED_ATTEMPTS):
        seed = base_seed + attempt
        model, rope_style, counts = make_model(fx, seed)
        packed = quantize_model(model, fx.quantization, seed) if fx.quantization else None
        ref = reference(model, prompts)
        routing = routing_stats(model, fx.model_type, prompts, ref["greedy"]) if is_moe else None
        if is_moe and routing is None:
            raise RuntimeError("MoE fixture has no MoE layer")
        selection = index_selection_stats(model, prompts, ref["greedy"]) if fx.model_type in INDEXER_MODEL_TYPES else None
        quality = draw_quality(fx, ref, routing, selection)
        if best is None or quality > best[0]:
            best = (quality, seed, model, rope_style, ref, counts, packed)
        if quality >= 1.0:
            break
    _, seed, model, rope_style, mem_ref, counts, packed = best
    if mem_ref["min_greedy_margin"] < MIN_GREEDY_MARGIN:
        print(f"  WARNING: best min greedy margin {mem_ref['min_greedy_margin']:.2e} < {MIN_GREEDY_MARGIN}",
              flush=True)

    save_checkpoint(model, fx, out_dir)
    if fx.saved_config_overrides:
        saved = json.loads((out_dir / "config.json").read_text())
        (out_dir / "config.json").write_text(json.dumps({**saved, **fx.saved_config_overrides}, indent=2, sort_keys=True) + "\n")
    if fx.flat_text_config:
        flatten_text_config(out_dir)
    if fx.model_type == "qwen3_vl_moe":
        write_input_major_experts(out_dir)
    if fx.model_type == "kimi_linear":
        name_dense_mlps_as_hub(out_dir, model.config)
    if fx.fields.get("num_nextn_predict_layers"):
        add_mtp_layers(out_dir, model.config, seed)
    if fx.fields.get("mtp_num_hidden_layers"):
        add_hybrid_mtp_layers(out_dir, model.config.get_text_config(), fx.norm_center, seed)
    if fx.quantization:
        write_checkpoint(out_dir, fx.quantization, packed)
    saved_config = check_saved_config(fx, out_dir)
    print(f"  config.json ({rope_style}): {json.dumps(saved_config, sort_keys=True)}", flush=True)
    tensors = saved_tensors(out_dir)
    if not fx.quantization:
        check_hub_layout(fx.model_type, tensors, model.config)

    # The oracle comes from the checkpoint as written, so config round-trip mistakes show
    # up here rather than as an unexplained mismatch in the engine's tests.
    reloaded = load_quantized_fixture(out_dir) if fx.quantization else load_fixture(out_dir)
    check_rope(reloaded, reloaded.config, fx.rope)
    ref = reference(reloaded, prompts)
    logits_diff = max(float((a - b).abs().max()) for a, b in zip(ref["last_logits"], mem_ref["last_logits"]))
    if ref["greedy"] != mem_ref["greedy"] or logits_diff > 1e-5:
        raise RuntimeError(f"reloaded checkpoint disagrees with the in-memory model (max |dlogit| {logits_diff:.3e})")

    extras: dict = {}
    if is_moe:
        routing = routing_stats(reloaded, fx.model_type, prompts, ref["greedy"])
        agree = routing["recomputed_vs_transformers"]
        if agree["token_choices_disagreeing"] or agree["max_abs_weight_diff"] > 1e-5:
            raise RuntimeError(f"fixture_probes.route disagrees with transformers' routing: {agree}")
        if not routing["every_expert_used"]:
            print("  WARNING: some expert is never chosen, or every token picks the same experts", flush=True)
        if routing["min_routing_margin"] < MIN_ROUTING_MARGIN:
            print(f"  WARNING: min routing margin {routing['min_routing_margin']:.2e} < {MIN_ROUTING_MARGIN}",
                  flush=True)
        extras["expert_usage"] = routing
        extras["min_routing_margin"] = routing["min_routing_margin"]
    if fx.model_type in INDEXER_MODEL_TYPES:
        selection = index_selection_stats(reloaded, prompts, ref["greedy"])
        if selection["rows_disagreeing"]:
            raise RuntimeError(f"fixture_probes.index_scores disagrees with transformers' top-k selection: {selection}")
        if selection["sparse_rows"] == 0:
            raise RuntimeError("no query sees more positions than index_topk: the fixture does not exercise sparsity")
        if selection["min_index_margin"] < MIN_INDEX_MARGIN:
            print(f"  WARNING: min index margin {selection['min_index_margin']:.2e} < {MIN_INDEX_MARGIN}", flush=True)
        extras["index_selection"] = selection
    if fx.probes:
        extras["evidence"] = evidence(reloaded, prompts, fx.probes)
        for name, result in extras["evidence"].items():
            if result["max_abs_dlogit"] < 1e-3:
                raise RuntimeError(f"probe {name} changes the logits by only {result['max_abs_dlogit']:.2e}: "
                                   "the fixture does not exercise it")
    if fx.quantization and SCHEMES[fx.quantization]["kind"] == "bnb8":
        # LLM.int8()'s outlier columns are those of every row in the same matmul, so batching
        # prompts together changes the result (slightly): the oracle holds for one prompt at a time.
        extras["batch_invariant"] = False
    if fx.model_type in ("gemma2", "gemma3_text"):
        extras["softcap"] = softcap_stats(reloaded, prompts, ref["greedy"])
    if fx.model_type not in FIRST_MODEL_TYPES or fx.quantization:
        # Newer fixtures also list their checkpoint's tensors, so the layout is reviewable here;
        # the first fixtures' oracle.json keep their original fields.
        extras["checkpoint_tensors"] = tensors
        extras["randomized"] = counts
        extras["init_overrides"] = [list(o) for o in fx.init_overrides]
        extras["norm_center"] = fx.norm_center
        extras["experts_implementation"] = getattr(reloaded.config, "_experts_implementation", None)

    oracle = {
        "name": fx.name,
        "model_type": fx.model_type,
        "description": fx.description,
        "stored_dtype": fx.stored_dtype,
        "prompts": prompts,
        "last_logits": [round_sig(row) for row in ref["last_logits"]],
        **bf16_reference(reloaded, prompts, ref["last_logits"]),
        "greedy": ref["greedy"],
        "greedy_top_logprobs": ref["greedy_top_logprobs"],
        "max_new_tokens": MAX_NEW_TOKENS,
        "versions": versions,
        # Extras for debugging a mismatch; not needed to run the comparison.
        "seed": seed,
        "shared_prefix_len": SHARED_PREFIX_LEN,
        "rope": effective_rope(reloaded.config),
        "min_greedy_margin": ref["min_greedy_margin"],
        "cache_vs_full_max_abs_diff": ref["cache_vs_full_max_abs_diff"],
        "reference": "transformers on CPU, float32, attn_implementation=eager, batch 1, "
                     "KV-cached greedy loop (EOS does not stop generation)"
                     + (", on the dequantized weights" if fx.quantization else ""),
        **extras,
    }
    if is_moe:
        oracle["reference"] += ", experts_implementation=eager"
    (out_dir / "oracle.json").write_text(json.dumps(oracle, separators=(",", ":")) + "\n")

    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    result = {
        "seed": seed,
        "rope_style": rope_style,
        "min_greedy_margin": ref["min_greedy_margin"],
        "cache_vs_full_max_abs_diff": max(ref["cache_vs_full_max_abs_diff"]),
        "randomized": counts,
        "files": files,
        "bytes": dir_bytes(out_dir),
    }
    if is_moe:
        result["min_routing_margin"] = extras["min_routing_margin"]
    if "checkpoint_tensors" in extras:
        result["tensor_count"] = len(tensors)
        result["versions"] = versions
    return result


def configure_torch() -> None:
    # Everything runs on CPU; TF32 is disabled anyway in case a future edit moves work to CUDA.
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except Exception as exc:  # noqa: BLE001
        print(f"note: could not disable TF32 ({exc!r})", flush=True)
    torch.set_default_dtype(torch.float32)
    # Per-shard progress bars would dominate the log of a dozen tiny checkpoints.
    hf_logging.disable_progress_bar()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--only", nargs="*", default=None, help="build only these fixture names")
    args = parser.parse_args()

    configure_torch()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(f"torch {versions['torch']}, transformers {versions['transformers']}, python {sys.version.split()[0]}",
          flush=True)

    selected = FIXTURES
    if args.only:
        unknown = set(args.only) - {fx.name for fx in FIXTURES}
        if unknown:
            parser.error(f"unknown fixture(s): {sorted(unknown)}")
        selected = [fx for fx in FIXTURES if fx.name in args.only]

    root: Path = args.out
    root.mkdir(parents=True, exist_ok=True)
    failures = []
    for fx in selected:
        print(f"[{fx.name}] {fx.model_type}, stored {fx.stored_dtype}", flush=True)
        start = time.perf_counter()
        try:
            fx.result = build_fixture(fx, root, versions)
            fx.result["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one broken fixture must not hide the others
            traceback.print_exc()
            fx.result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            failures.append(fx.name)
        fx.result["seconds"] = round(time.perf_counter() - start, 2)

    entries = {
        fx.name: {
            "name": fx.name,
            "model_type": fx.model_type,
            "stored_dtype": fx.stored_dtype,
            "description": fx.description,
            **{k: v for k, v in fx.result.items() if k != "randomized"},
        }
        for fx in selected
    }
    run_versions = {**versions, "python": sys.version.split()[0]}
    manifest_path = root / "MANIFEST.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if args.only and previous is not None:
        # A partial run keeps the other fixtures' entries (and the top-level versions, which
        # describe the entries without their own "versions") exactly as they were.
        kept = {e["name"]: e for e in previous.get("fixtures", []) if e["name"] not in entries}
        merged = {**kept, **entries}
        order = [fx.name for fx in FIXTURES if fx.name in merged] + sorted(set(merged) - {f.name for f in FIXTURES})
        manifest = {**previous, "fixtures": [merged[name] for name in order],
                    "failed": sorted((set(previous.get("failed", [])) - set(entries)) | set(failures))}
    else:
        manifest = {
            "generated_by": "tools/oracle/make_fixtures.py",
            "versions": run_versions,
            "max_new_tokens": MAX_NEW_TOKENS,
            "prompt_lengths": list(PROMPT_LENGTHS),
            "shared_prefix_len": SHARED_PREFIX_LEN,
            "fixtures": list(entries.values()),
            "failed": failures,
        }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")

    print()
    header = (f"{'fixture':<20} {'type':<12} {'dtype':<9} {'status':<7} {'KB':>7} {'margin':>9} "
              f"{'routing':>9} {'cache-vs-full':>13}")
    print(header)
    print("-" * len(header))
    for fx in selected:
        r = fx.result
        if r.get("status") == "ok":
            routing = f"{r['min_routing_margin']:9.2e}" if "min_routing_margin" in r else f"{'-':>9}"
            print(f"{fx.name:<20} {fx.model_type:<12} {fx.stored_dtype:<9} {'ok':<7} {r['bytes'] / 1024:7.1f} "
                  f"{r['min_greedy_margin']:9.2e} {routing} {r['cache_vs_full_max_abs_diff']:13.2e}")
        else:
            print(f"{fx.name:<20} {fx.model_type:<12} {fx.stored_dtype:<9} {'FAILED':<7}  {r.get('error', '')[:60]}")
    total_kb = dir_bytes(root) / 1024
    print(f"\n{len(selected) - len(failures)}/{len(selected)} fixtures ok, {total_kb:.0f} KB in {root}", flush=True)
    if failures:
        print(f"FAILED: {', '.join(failures)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
