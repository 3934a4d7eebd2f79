"""Quantized checkpoints in the published layouts, written without the formats' own libraries.

The host has no AutoGPTQ, AutoAWQ or llm-compressor, so each format's tensors are packed here
from its specification (the layouts are spelled out in Keel's readers under
src/checkpoint/quantization/ and in docs/quantization.md). A fixture's linear layers are
quantized round to nearest, their float32 weights replaced by the dequantized values, and
transformers runs on those: the oracle is "transformers on the dequantized weights".

`pack` writes each layer's tensors; `unpack` reads them back with separate code (shifts and
masks written the other way round), so a packing mistake cannot cancel itself out: the reloaded
model must reproduce the in-memory one's logits.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BitsAndBytesConfig

from aqlm_fixtures import dequantize as dequantize_aqlm, quantize_with_keel, replace_by_dequantized
from bnb_fixtures import install_mixed_int8, pack_bnb4, pack_bnb8, read_bnb4, read_bnb8
from greedy_reference import VISION_LANGUAGE_MODEL_TYPES

# AutoAWQ's GEMM packing writes output columns 0, 2, 4, 6, 1, 3, 5, 7 of each group of 8 into
# 4-bit fields 0..7.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
LINEAR_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Each scheme: the quantization_config written to config.json, and how layers are packed.
SCHEMES = {
    "gptq-int4-actorder": {
        "config": {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": False,
                   "checkpoint_format": "gptq", "true_sequential": True, "lm_head": False},
        "kind": "gptq", "bits": 4, "group": 32, "act_order": True, "sym": False,
    },
    "gptq-int4-sym": {
        # Qwen3-30B-A3B-GPTQ-Int4's layout (desc_act false, symmetric: zeros 8 stored as 7), groups of 32 here.
        "config": {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": True,
                   "checkpoint_format": "gptq", "lm_head": False},
        "kind": "gptq", "bits": 4, "group": 32, "act_order": False, "sym": True,
    },
    "gptq-int8-channel": {
        "config": {"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": False, "sym": True,
                   "checkpoint_format": "gptq", "lm_head": False},
        "kind": "gptq", "bits": 8, "group": None, "act_order": False, "sym": True,
    },
    "awq-int4": {
        # One projection left 16-bit, as modules_to_not_convert does.
        "config": {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm",
                   "modules_to_not_convert": ["model.layers.1.mlp.down_proj"]},
        "kind": "awq", "bits": 4, "group": 32, "skip": ("model.layers.1.mlp.down_proj",),
    },
    "ct-w4a16": {
        "config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                 "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                             "group_size": 32, "dynamic": False, "actorder": None}}},
                   "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}},
        "kind": "ct-int", "bits": 4, "group": 32, "sym": True,
    },
    "ct-w4a16-moe": {
        # As published Mixtral W4A16 checkpoints write it: the router (a Linear too) ignored.
        "config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                 "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                             "group_size": 32, "dynamic": False, "actorder": None}}},
                   "ignore": ["lm_head", "re:.*block_sparse_moe.gate$"], "kv_cache_scheme": None, "sparsity_config": {}},
        "kind": "ct-int", "bits": 4, "group": 32, "sym": True,
    },
    "ct-w4a16-vl": {
        # A vision-language checkpoint as llm-compressor writes it: the vision tower and projector ignored.
        "config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                 "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                             "group_size": 32, "dynamic": False, "actorder": None}}},
                   "ignore": ["re:.*lm_head", "re:vision_tower.*", "re:multi_modal_projector.*"], "kv_cache_scheme": None,
                   "sparsity_config": {}},
        "kind": "ct-int", "bits": 4, "group": 32, "sym": True,
    },
    "ct-w8a16-asym": {
        "config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                 "weights": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "channel",
                                                             "group_size": None, "dynamic": False}}},
                   "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}},
        "kind": "ct-int", "bits": 8, "group": None, "sym": False,
    },
    "ct-fp8-channel": {
        "config": {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "output_activations": None,
                                                 "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel",
                                                             "dynamic": False},
                                                 "input_activations": {"num_bits": 8, "type": "float", "symmetric": True,
                                                                       "strategy": "token", "dynamic": True}}},
                   "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}},
        "kind": "fp8", "scales": "channel", "scale_name": "weight_scale",
    },
    "bnb-nf4-dq": {
        # transformers' BitsAndBytesConfig as save_pretrained writes it; one projection skipped.
        "config": {**BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                        bnb_4bit_compute_dtype=torch.bfloat16,
                                        llm_int8_skip_modules=["lm_head", "model.layers.1.mlp.down_proj"]).to_dict()},
        "kind": "bnb4", "quant_type": "nf4", "blocksize": 64, "double_quant": True, "dtype": "bfloat16",
        "skip": ("model.layers.1.mlp.down_proj",),
    },
    "bnb-fp4": {
        "config": {**BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False,
                                        bnb_4bit_compute_dtype=torch.float16).to_dict()},
        "kind": "bnb4", "quant_type": "fp4", "blocksize": 64, "double_quant": False, "dtype": "bfloat16",
    },
    "bnb-int8": {
        # A threshold low enough that the tiny model's activations have outlier columns every step.
        "config": {**BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=1.5).to_dict()},
        "kind": "bnb8", "threshold": 1.5,
    },
    "fp8-block": {
        # Blocks of 32 rows x 48 columns: ragged at both edges of every matrix of these shapes.
        "config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [32, 48]},
        "kind": "fp8", "scales": "block", "block": (32, 48), "scale_name": "weight_scale_inv",
    },
    "aqlm-2x8": {
        # Written by Keel's own `keel quantize --method vq` (tools/oracle/aqlm_fixtures.py), which
        # must write exactly this quantization_config.
        "config": {"quant_method": "aqlm", "in_group_size": 8, "out_group_size": 1, "num_codebooks": 2, "nbits_per_codebook": 8,
                   "linear_weights_not_to_quantize": ["lm_head.weight", "lm_head", "model.embed_tokens.weight", "model.embed_tokens"],
                   "meta": {"quantizer": ["keel quantize --method vq"]}},
        "kind": "aqlm",
    },
    "mxfp4": {
        # gpt-oss's published layout: the routed experts' fused tensors in MXFP4, the rest 16-bit.
        "config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                       "model.embed_tokens", "lm_head"]},
        "kind": "mxfp4",
    },
}

# FP4 E2M1 magnitudes of codes 0..7 (code + 8: the same, negative), OCP Microscaling spec 5.3.3.
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
MX_BLOCK = 32
# gpt-oss keeps these 3-D expert tensors [experts, in, out] in MXFP4.
MXFP4_EXPERT_SUFFIXES = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
# transformers 5 holds Mixtral's, Qwen-MoE's and DeepSeek's routed experts fused in memory,
# gate_up_proj [experts, 2n, hidden] (gate rows, then up) and down_proj [experts, hidden, n], and
# writes them per expert: each is one linear layer of the checkpoint, quantized as any other.
FUSED_EXPERTS = (".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")
# The per-expert checkpoint names, by model type: where the experts sit under a decoder layer and
# what each projection is called (Qwen-MoE's and DeepSeek's `mlp.experts.E.gate_proj`, the default).
CHECKPOINT_EXPERTS = {
    "mixtral": ("block_sparse_moe.experts", {"gate": "w1", "up": "w3", "down": "w2"}),
}
DEFAULT_CHECKPOINT_EXPERTS = ("mlp.experts", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
# Llama 4 holds its routed experts input-major, gate_up_proj [experts, hidden, 2n] (gate columns
# first) and down_proj [experts, n, hidden], in memory and in the Hub's 16-bit checkpoints;
# llm-compressor writes quantized ones per expert (feed_forward.experts.E.gate_proj, [out, in]).
INPUT_MAJOR_EXPERTS = (".feed_forward.experts.gate_up_proj", ".feed_forward.experts.down_proj")
PER_EXPERT_INPUT_MAJOR = re.compile(r"^(.*\.feed_forward\.experts)\.(\d+)\.(gate|up|down)_proj(\.weight)?$")
# Vision-language models: only the language model is quantized (its vision tower has q/k/v_proj
# too), and save_pretrained writes its in-memory names under the Hub's prefixes.
VISION_MODULES = re.compile(r"(^|\.)(vision_tower|vision_model|multi_modal_projector)\.")
VISION_LANGUAGE_SAVED_PREFIXES = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."))


def checkpoint_name(model, name: str) -> str:
    """The name save_pretrained gives the in-memory parameter `name` (less its `.weight`)."""
    if model.config.model_type not in VISION_LANGUAGE_MODEL_TYPES:
        return name
    for memory, saved in VISION_LANGUAGE_SAVED_PREFIXES:
        if name.startswith(memory):
            return saved + name[len(memory):]
    raise ValueError(f"{name} is no language model parameter of a {model.config.model_type} model")


def quantized_layers(model, scheme: dict) -> list[str]:
    """Names (less `.weight`) of the decoder's linear layers the scheme quantizes."""
    names = [n[: -len(".weight")] for n, _ in model.named_parameters()
             if n.endswith(".weight") and n.split(".")[-2] in LINEAR_SUFFIXES and not VISION_MODULES.search(n)]
    return [n for n in names if n not in scheme.get("skip", ())]


@torch.no_grad()
def quantize_model(model, scheme_name: str, seed: int) -> dict[str, torch.Tensor]:
    """Replaces each quantized layer's weight by its dequantized value; returns the packed tensors."""
    scheme = SCHEMES[scheme_name]
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    packed: dict[str, torch.Tensor] = {}
    if scheme["kind"] == "mxfp4":
        for name, param in params.items():
            if name.endswith(MXFP4_EXPERT_SUFFIXES):
                blocks, scales, dequantized = pack_mxfp4(param.data.float().transpose(1, 2))
                param.copy_(dequantized.transpose(1, 2))
                packed[f"{name}_blocks"], packed[f"{name}_scales"] = blocks, scales
        if not packed:
            raise RuntimeError("mxfp4: the model has no gpt-oss expert tensors")
        return packed
    if scheme["kind"] == "aqlm":
        packed = quantize_with_keel(model, scheme["config"])
        replace_by_dequantized(model, packed)
        return packed
    # Act-order permutes a layer's input columns by its Hessian, which comes from its input:
    # projections reading the same input (q/k/v, gate/up) get the same order, as in GPTQ's output.
    orders: dict[str, torch.Tensor] = {}
    for base, weight in linear_weights(model, scheme):
        same_input = re.sub(r"\.(q|k|v)_proj$", ".qkv", re.sub(r"\.(gate_proj|up_proj|w1|w3)$", ".gate_up", base))
        if same_input not in orders:
            orders[same_input] = torch.randperm(weight.shape[1], generator=gen)
        tensors, dequantized = PACKERS[scheme["kind"]](weight.float(), scheme, orders[same_input])
        weight.copy_(dequantized)
        packed.update({f"{base}.{k}": v for k, v in tensors.items()})
    install_runtime_layers(model, scheme["config"], packed)
    return packed


def linear_weights(model, scheme: dict) -> list[tuple[str, torch.Tensor]]:
    """Each quantized layer's checkpoint name (less `.weight`) and its [out, in] weight in memory
    (a view into a fused expert tensor for routed experts, so writing it writes the model)."""
    return [(checkpoint_name(model, base), weight) for base, weight in _linear_weights_in_memory(model, scheme)]


def _linear_weights_in_memory(model, scheme: dict) -> list[tuple[str, torch.Tensor]]:
    """linear_weights under the names the model has in memory."""
    params = dict(model.named_parameters())
    out = [(base, params[f"{base}.weight"].data) for base in quantized_layers(model, scheme)]
    # gpt-oss's fused tensors are its checkpoint's own (input-major, interleaved): MXFP4 packs them.
    fused = model.config.model_type != "gpt_oss"
    experts, projection = CHECKPOINT_EXPERTS.get(model.config.model_type, DEFAULT_CHECKPOINT_EXPERTS)
    for name, param in params.items():
        if name.endswith(INPUT_MAJOR_EXPERTS):
            prefix = name[: name.rindex(".")]
            for e in range(param.shape[0]):
                if name.endswith("gate_up_proj"):
                    n = param.shape[2] // 2
                    out += [(f"{prefix}.{e}.gate_proj", param.data[e, :, :n].t()), (f"{prefix}.{e}.up_proj", param.data[e, :, n:].t())]
                else:
                    out.append((f"{prefix}.{e}.down_proj", param.data[e].t()))
            continue
        if not (fused and name.endswith(FUSED_EXPERTS)):
            continue
        prefix = f"{name[: name.index('.mlp.experts.')]}.{experts}"
        for e in range(param.shape[0]):
            if name.endswith("gate_up_proj"):
                n = param.shape[1] // 2
                out += [(f"{prefix}.{e}.{projection['gate']}", param.data[e, :n]), (f"{prefix}.{e}.{projection['up']}", param.data[e, n:])]
            else:
                out.append((f"{prefix}.{e}.{projection['down']}", param.data[e]))
    return out


def install_runtime_layers(model, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """For formats whose layers compute more than a product with the dequantized weight
    (LLM.int8()'s int8 activations), swaps those layers in; others stay nn.Linear."""
    if config["quant_method"] == "bitsandbytes" and config["load_in_8bit"]:
        layers = {n[: -len(".SCB")]: (tensors[n[: -len("SCB")] + "weight"], tensors[n]) for n in tensors if n.endswith(".SCB")}
        install_mixed_int8(model, layers, config["llm_int8_threshold"])


def _round_scale(scale: torch.Tensor) -> torch.Tensor:
    """Scales as checkpoints store them (float16), kept nonzero."""
    return scale.clamp(min=1e-4).to(torch.float16).float()


def _int_codes(w: torch.Tensor, group_of_col: torch.Tensor, groups: int, bits: int, sym: bool, min_zero: int = 0):
    """Round-to-nearest codes [out, in] with scales and zeros [out, groups] (unsigned codes)."""
    top = (1 << bits) - 1
    out, _ = w.shape
    scales = torch.empty(out, groups)
    zeros = torch.empty(out, groups, dtype=torch.int64)
    for g in range(groups):
        cols = w[:, group_of_col == g]
        if sym:
            scales[:, g] = _round_scale(cols.abs().amax(dim=1) / (top // 2))
            zeros[:, g] = (top + 1) // 2
        else:
            lo, hi = cols.amin(dim=1).clamp(max=0), cols.amax(dim=1).clamp(min=0)
            scales[:, g] = _round_scale((hi - lo) / top)
            zeros[:, g] = torch.round(-lo / scales[:, g]).clamp(min_zero, top).long()
    s = scales[:, group_of_col]
    z = zeros[:, group_of_col]
    codes = (torch.round(w / s) + z).clamp(0, top).long()
    dequantized = (codes - z).float() * s
    return codes, scales, zeros, dequantized


def _pack_fields(values: torch.Tensor, bits: int, dim: int, order=None) -> torch.Tensor:
    """Packs `bits`-bit unsigned values along `dim` into int32 words, field i of a word holding
    element order[i] of its run (natural order by default)."""
    per = 32 // bits
    v = values.long().movedim(dim, -1)
    pad = (-v.shape[-1]) % per
    v = torch.nn.functional.pad(v, (0, pad))
    v = v.reshape(*v.shape[:-1], -1, per)
    order = order or tuple(range(per))
    word = torch.zeros(v.shape[:-1], dtype=torch.int64)
    for field, element in enumerate(order):
        word |= v[..., element] << (bits * field)
    word = torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)
    return word.movedim(-1, dim).contiguous()


def pack_gptq(w, scheme, act_order):
    out, cols = w.shape
    bits, size = scheme["bits"], scheme["group"] or cols
    groups = math.ceil(cols / size)
    # Act-order: GPTQ quantizes columns in a random order here (by Hessian diagonal in real
    # runs), and each run of `size` columns of that order is a group.
    order = act_order if scheme["act_order"] else torch.arange(cols)
    position = torch.empty(cols, dtype=torch.int64)
    position[order] = torch.arange(cols)
    g_idx = position // size
    # v1 stores zero - 1, so a zero of 0 cannot be stored: asymmetric zeros start at 1.
    codes, scales, zeros, dequantized = _int_codes(w, g_idx, groups, bits, scheme["sym"], min_zero=1)
    tensors = {
        "qweight": _pack_fields(codes.t(), bits, dim=0),
        "qzeros": _pack_fields((zeros - 1).t(), bits, dim=1),
        "scales": scales.t().to(torch.float16).contiguous(),
        "g_idx": g_idx.to(torch.int32),
    }
    return tensors, dequantized


def pack_awq(w, scheme, _act_order):
    out, cols = w.shape
    size = scheme["group"]
    group_of_col = torch.arange(cols) // size
    codes, scales, zeros, dequantized = _int_codes(w, group_of_col, math.ceil(cols / size), 4, sym=False)
    tensors = {
        "qweight": _pack_fields(codes.t(), 4, dim=1, order=AWQ_ORDER),
        "qzeros": _pack_fields(zeros.t(), 4, dim=1, order=AWQ_ORDER),
        "scales": scales.t().to(torch.float16).contiguous(),
    }
    return tensors, dequantized


def pack_ct_int(w, scheme, _act_order):
    out, cols = w.shape
    bits, size = scheme["bits"], scheme["group"] or cols
    group_of_col = torch.arange(cols) // size
    codes, scales, zeros, dequantized = _int_codes(w, group_of_col, math.ceil(cols / size), bits, scheme["sym"])
    tensors = {
        # Unsigned codes are the signed values plus 2^(bits-1), which is what pack-quantized stores.
        "weight_packed": _pack_fields(codes, bits, dim=1),
        "weight_scale": scales.to(torch.bfloat16) if bits == 4 else scales.to(torch.float16),
        "weight_shape": torch.tensor([out, cols], dtype=torch.int64),
    }
    if bits == 4:
        # bf16 scales: recompute the codes against the scales as stored.
        s = tensors["weight_scale"].float()
        codes = (torch.round(w / s[:, group_of_col]) + 8).clamp(0, 15).long()
        tensors["weight_packed"] = _pack_fields(codes, bits, dim=1)
        dequantized = (codes - 8).float() * s[:, group_of_col]
    if not scheme["sym"]:
        tensors["weight_zero_point"] = _pack_fields(zeros, bits, dim=0)
    return tensors, dequantized


def pack_fp8(w, scheme, _act_order):
    out, cols = w.shape
    if scheme["scales"] == "channel":
        scale = (w.abs().amax(dim=1, keepdim=True) / 448).clamp(min=1e-6)
        full = scale.expand(out, cols)
    else:
        br, bc = scheme["block"]
        scale = torch.empty(math.ceil(out / br), math.ceil(cols / bc))
        for i in range(scale.shape[0]):
            for j in range(scale.shape[1]):
                scale[i, j] = (w[i * br:(i + 1) * br, j * bc:(j + 1) * bc].abs().amax() / 448).clamp(min=1e-6)
        full = scale.repeat_interleave(br, 0)[:out].repeat_interleave(bc, 1)[:, :cols]
    codes = (w / full).to(torch.float8_e4m3fn)
    dequantized = codes.float() * full
    return {"weight": codes, scheme["scale_name"]: scale.float().contiguous()}, dequantized


def pack_mxfp4(w: torch.Tensor):
    """MXFP4 of w [..., rows, cols] along cols, from the OCP Microscaling spec (6.3): a block of 32
    shares the scale 2^(floor(log2(max|v|)) - 2) (E8M0 code + 127), each value divided by it goes
    to the nearest E2M1 magnitude (the lower one at a tie: any code is a valid checkpoint, and the
    oracle runs on what was written), saturating at 6. Returns blocks U8 [..., rows, cols / 32, 16]
    with two codes a byte (element 2i low nibble), scales U8 [..., rows, cols / 32], and the
    dequantized w."""
    *lead, rows, cols = w.shape
    v = w.reshape(*lead, rows, cols // MX_BLOCK, MX_BLOCK)
    amax = v.abs().amax(dim=-1)
    exponent = torch.where(amax > 0, torch.floor(torch.log2(amax.clamp(min=1e-38))) - 2, torch.zeros_like(amax)).clamp(-127, 127)
    scale = torch.pow(2.0, exponent).unsqueeze(-1)
    magnitudes = torch.tensor(E2M1_MAGNITUDES)
    nearest = ((v / scale).abs().unsqueeze(-1) - magnitudes).abs().argmin(dim=-1)
    codes = torch.where((v < 0) & (nearest > 0), nearest + 8, nearest)
    dequantized = (magnitudes[nearest] * torch.sign(v) * scale).reshape(w.shape)
    pairs = codes.reshape(*lead, rows, cols // MX_BLOCK, MX_BLOCK // 2, 2)
    blocks = (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)
    return blocks.contiguous(), (exponent + 127).to(torch.uint8).contiguous(), dequantized


PACKERS = {"gptq": pack_gptq, "awq": pack_awq, "ct-int": pack_ct_int, "fp8": pack_fp8, "bnb4": pack_bnb4, "bnb8": pack_bnb8}


def write_checkpoint(out_dir: Path, scheme_name: str, packed: dict[str, torch.Tensor]) -> None:
    """Rewrites a saved 16-bit checkpoint with the packed tensors in place of the quantized
    layers' weights, and the scheme's quantization_config in config.json."""
    path = out_dir / "model.safetensors"
    tensors = load_file(str(path))
    replaced = set()
    for name in packed:
        # MXFP4 replaces a whole tensor NAME by NAME_blocks and NAME_scales; Llama 4's per-expert
        # layers replace the fused tensor they were cut from; other formats a layer's `.weight`.
        suffix = next((s for s in ("_blocks", "_scales") if name.endswith(s)), None)
        expert = PER_EXPERT_INPUT_MAJOR.match(name.rsplit(".", 1)[0])
        if expert:
            replaced.add(f"{expert.group(1)}.{'down_proj' if expert.group(3) == 'down' else 'gate_up_proj'}")
        else:
            replaced.add(name[: -len(suffix)] if suffix else f"{name.rsplit('.', 1)[0]}.weight")
    # A packed layer named otherwise than the checkpoint's tensor would leave both in the file.
    missing = sorted(replaced - set(tensors))
    if missing:
        raise RuntimeError(f"packed layers the saved checkpoint has no 16-bit tensor for: {missing[:4]}")
    for name in replaced:
        del tensors[name]
    tensors.update(packed)
    save_file(tensors, str(path), metadata={"format": "pt"})
    config = json.loads((out_dir / "config.json").read_text())
    config["quantization_config"] = SCHEMES[scheme_name]["config"]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# Reading back, independently of the packing above.


def _unpack(words: torch.Tensor, bits: int, dim: int, length: int, order=None) -> torch.Tensor:
    per = 32 // bits
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = w.movedim(dim, -1)
    fields = torch.stack([(w >> (bits * f)) & ((1 << bits) - 1) for f in range(per)], dim=-1)
    if order is not None:
        # Field f holds element order[f]: put it back at its element.
        fields = fields[..., [order.index(e) for e in range(per)]]
    values = fields.reshape(*w.shape[:-1], -1)[..., :length]
    return values.movedim(-1, dim)


def fuse_input_major_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with Llama 4's per-expert `.weight`s [out, in] stacked back into the fused
    input-major tensors transformers holds (gate_up_proj [E, hidden, 2n], down_proj [E, n, hidden])."""
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out = {}
    for name, t in state.items():
        m = PER_EXPERT_INPUT_MAJOR.match(name)
        if m and m.group(4):
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
        else:
            out[name] = t
    for prefix, by_expert in experts.items():
        order = [by_expert[e] for e in sorted(by_expert)]
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([p["gate"].t(), p["up"].t()], dim=1) for p in order]).contiguous()
        out[f"{prefix}.down_proj"] = torch.stack([p["down"].t() for p in order]).contiguous()
    return out


def dequantized_state(out_dir: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with every quantized layer dequantized to a float32 `.weight`."""
    config = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    t = load_file(str(out_dir / "model.safetensors"))
    method = config["quant_method"]
    out: dict[str, torch.Tensor] = {}
    for name in list(t):
        base, leaf = name.rsplit(".", 1)
        if method in ("gptq", "awq") and leaf == "qweight":
            bits = config["bits"]
            scales = t[f"{base}.scales"].float()
            groups, rows = scales.shape
            if method == "gptq":
                cols = t[name].shape[0] * (32 // bits)
                q = _unpack(t[name], bits, 0, cols)  # [in, out]
                z = _unpack(t[f"{base}.qzeros"], bits, 1, rows) + (1 if config.get("checkpoint_format", "gptq") == "gptq" else 0)
                g = t[f"{base}.g_idx"].long()
            else:
                cols = t[name].shape[0]
                q = _unpack(t[name], 4, 1, rows, AWQ_ORDER)
                z = _unpack(t[f"{base}.qzeros"], 4, 1, rows, AWQ_ORDER)
                g = torch.arange(cols) // config["group_size"]
            out[f"{base}.weight"] = ((q - z[g]).float() * scales[g]).t().contiguous()
        elif leaf == "weight_packed":
            rows, cols = t[f"{base}.weight_shape"].tolist()
            args = next(iter(config["config_groups"].values()))["weights"]
            bits = args["num_bits"]
            scales = t[f"{base}.weight_scale"].float()
            q = _unpack(t[name], bits, 1, cols) - (1 << (bits - 1))
            z = _unpack(t[f"{base}.weight_zero_point"], bits, 0, rows) - (1 << (bits - 1)) if f"{base}.weight_zero_point" in t else torch.zeros_like(scales, dtype=torch.int64)
            g = torch.arange(cols) // (args["group_size"] or cols)
            out[f"{base}.weight"] = (q - z[:, g]).float() * scales[:, g]
        elif method == "bitsandbytes" and name.endswith(".weight") and f"{base}.SCB" in t:
            out[name] = read_bnb8(t, base)
        elif method == "bitsandbytes" and name.endswith(".weight") and f"{name}.absmax" in t:
            out[name] = read_bnb4(t, base)
        elif method == "bitsandbytes" and (".weight." in name or leaf in ("SCB", "weight_format")):
            continue
        elif leaf == "weight" and t[name].dtype == torch.float8_e4m3fn:
            scale_name = "weight_scale_inv" if method == "fp8" else "weight_scale"
            s = t[f"{base}.{scale_name}"].float()
            rows, cols = t[name].shape
            # Block scales by the config, not the shape: a matrix one block wide has [row blocks, 1] scales.
            if config.get("weight_block_size"):
                br, bc = config["weight_block_size"]
                s = s.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]
            out[name] = t[name].float() * s
        elif method == "mxfp4" and leaf.endswith("_blocks"):
            name16 = name[: -len("_blocks")]
            b = t[name].to(torch.int64)
            exponent = t[f"{name16}_scales"].to(torch.int64) - 127
            nibbles = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(*b.shape[:-1], MX_BLOCK)
            sign = torch.where(nibbles >= 8, -1.0, 1.0)
            value = sign * torch.tensor(E2M1_MAGNITUDES)[nibbles & 7] * torch.pow(2.0, exponent.float()).unsqueeze(-1)
            *lead, rows, blocks, _ = value.shape
            out[name16] = value.reshape(*lead, rows, blocks * MX_BLOCK).transpose(-1, -2).contiguous()
        elif method == "mxfp4" and leaf.endswith("_scales"):
            continue
        elif method == "aqlm" and leaf == "codes":
            out[f"{base}.weight"] = dequantize_aqlm(t[name], t[f"{base}.codebooks"], t[f"{base}.scales"])
        elif method == "aqlm" and leaf in ("codebooks", "scales"):
            continue
        elif leaf in ("qzeros", "scales", "g_idx", "weight_scale", "weight_scale_inv", "weight_zero_point", "weight_shape"):
            continue
        else:
            out[name] = t[name].float()
    return out
