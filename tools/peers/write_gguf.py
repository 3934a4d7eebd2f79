"""Writes the F16 GGUF file that llama.cpp benchmarks, for llama_cpp.sh: either random weights
straight from a config.json, or a Hugging Face checkpoint converted. numpy only: the GPU host
has no gguf package, and a random model has no tokenizer for llama.cpp's own converter to read.

    python3 tools/peers/write_gguf.py --random-from CONFIG OUT.gguf [--name NAME] [--seed S]
    python3 tools/peers/write_gguf.py --random-from CONFIG --size-only    # the file's size in bytes
    python3 tools/peers/write_gguf.py CHECKPOINT_DIR OUT.gguf [--name NAME]

CONFIG is a config.json or the directory holding one (bench/configs/ARCH); CHECKPOINT_DIR holds
config.json and *.safetensors (BF16, F16 or F32). Architectures, by config model_type:
- llama, mistral without a sliding window -> llama.cpp's `llama`;
- qwen3_moe -> `qwen3moe` (every layer sparse: llama.cpp has no dense layers for it);
- deepseek_v2 -> `deepseek2` (MLA, with or without q LoRA).

The random mode streams the file tensor by tensor, each tiled from a pool of about a million
random values from a place of its own, as Keel's dummy weights are (src/models/dummy-weights.ts):
matrices uniform in +-1/sqrt(fan_in) (fan_in = the row length, ggml's ne[0]), norms 1. Memory
holds the pools only (a few MB), never a tensor, and --workers threads (default the cores, up to
8) write tensors at their offsets at once: Qwen3-30B-A3B's 61 GB took 47 s on a 2-core machine.
It checks first that the file fits in the free space of OUT's file system (+256 MiB).

What it writes follows llama.cpp's converter (convert_hf_to_gguf.py with --outtype f16, the
version node-llama-cpp 3.22.1 bundles): GGUF version 3, little-endian, 32-byte alignment;
- general.* and ARCH.* hyperparameters as the converter's model class sets them (deepseek2:
  MLA as MQA with one KV head, key_length = kv_lora_rank + rope dim, value_length = kv_lora_rank,
  key_length_mla / value_length_mla the decompressed head sizes, YaRN keys with the
  yarn_log_multiplier 0.1 * mscale_all_dim; MoE counts, shared experts, gating function);
- a synthetic SentencePiece-style vocabulary of exactly vocab_size tokens (unknown, the config's
  BOS/EOS as control tokens, the 256 byte tokens llama.cpp looks up where they fit, the rest numbered):
  llama-bench and llama-batched-bench feed random token ids, so no real tokenizer is needed;
- matrices (experts stacked [experts, rows, cols] as ffn_{gate,up,down}_exps) as F16, norms and
  the MoE router (ffn_gate_inp) as F32, for llama3 rope scaling the per-frequency factors as
  rope_freqs.weight (F32);
- llama: q_proj/k_proj rows reordered per head from Hugging Face's rotate-half layout to the
  interleaved pairs llama.cpp's rope expects (qwen3moe: none, llama.cpp ropes it NeoX-style;
  deepseek2: none, its checkpoints already hold interleaved pairs);
- deepseek2: kv_b_proj split per head into attn_k_b [heads, kv_lora_rank, qk_nope] (transposed)
  and attn_v_b [heads, v_head_dim, kv_lora_rank], as the converter does for MLA's absorption.
One addition: deepseek2.attention.q_lora_rank is written as 0 when the config has no q LoRA.
llama.cpp reads that key unless the model has 26 or 27 layers (its test for "Lite"), so without
it a DeepSeek-V2-Lite shrunk to a few layers would not load; 0 means no q LoRA to it either way.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import struct
import sys
import zlib

import numpy as np

ALIGNMENT = 32
GGUF_VERSION = 3
# GGUF value types (ggml/include/gguf.h).
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types and llama.cpp's file type "mostly F16".
GGML_F32, GGML_F16 = 0, 1
FILE_TYPE_MOSTLY_F16 = 1
# llama.cpp's token types.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6
# gguf-py's ExpertGatingFuncType.
GATING_SOFTMAX, GATING_SIGMOID = 1, 2
# Elements converted at a time: bounds the float32 temporaries of large tensors.
CHUNK_ELEMENTS = 1 << 25
# The random pool: odd, so rows of a power-of-two width each start at a different place (as Keel's).
POOL_ELEMENTS = (1 << 20) + 1
# Pools repeated this many times per write: fewer, larger writes.
POOL_REPEATS = 8
BIAS_RANGE = 0.02
# Free space kept beyond the file when checking that it fits (logs beside it).
FREE_SPACE_MARGIN = 256 << 20

ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen3_moe": "qwen3moe", "deepseek_v2": "deepseek2"}


class ConversionError(Exception):
    """A model this writer cannot write; the message names what is wrong."""


# --- safetensors, read directly: an 8-byte header length, a JSON header, then raw tensors ---

SAFETENSORS_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}


def read_safetensors(path):
    """{name: (dtype name, shape, memory-mapped array of the raw elements)}."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ConversionError(f"{path}: tensor {name} has dtype {dtype}; only BF16, F16 and F32 are supported")
        begin, end = info["data_offsets"]
        count = math.prod(info["shape"])
        raw = np.memmap(path, dtype=SAFETENSORS_DTYPES[dtype], mode="r", offset=base + begin, shape=(count,)) if count else np.zeros(0, SAFETENSORS_DTYPES[dtype])
        if raw.nbytes != end - begin:
            raise ConversionError(f"{path}: tensor {name} spans {end - begin} bytes, its shape {info['shape']} needs {raw.nbytes}")
        tensors[name] = (dtype, list(info["shape"]), raw.reshape(info["shape"]))
    return tensors


def read_checkpoint(directory):
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise ConversionError(f"no .safetensors files in {directory}")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(directory, f)))
    return tensors


def to_float32(dtype, raw):
    if dtype == "BF16":
        # bf16 is the top half of a float32: on a little-endian machine, the odd uint16 of each
        # pair (several times faster than widening and shifting).
        halves = np.zeros(raw.size * 2, dtype=np.uint16)
        halves[1::2] = raw.reshape(-1)
        return halves.view(np.float32).reshape(raw.shape)
    return raw.astype(np.float32)


# --- hyperparameters ---

def rope_scaling(config):
    """Rope parameters: transformers 5 saves them as rope_parameters (theta included), older
    versions as rope_scaling beside a top-level rope_theta."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return params.get("full_attention", params)


def rope_type(config):
    params = rope_scaling(config)
    return str(params.get("rope_type", params.get("type", "default"))).lower()


def rope_theta(config):
    return float(config.get("rope_theta") or rope_scaling(config).get("rope_theta") or 10000.0)


def architecture(config):
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConversionError(f"model_type {model_type!r} is not supported ({', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[model_type]


def hyperparameters(config):
    arch = architecture(config)
    heads = config["num_attention_heads"]
    hp = {
        "arch": arch,
        "hidden": config["hidden_size"],
        "layers": config["num_hidden_layers"],
        "ffn": config.get("intermediate_size"),
        "heads": heads,
        "kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "vocab": config["vocab_size"],
        "context": config.get("max_position_embeddings", 4096),
        "rope_theta": rope_theta(config),
        "rms_eps": float(config.get("rms_norm_eps", 1e-6 if arch == "deepseek2" else 1e-5)),
        "tied": bool(config.get("tie_word_embeddings", False)),
    }
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ConversionError("attention_bias/mlp_bias are not supported")
    if arch == "llama":
        if config.get("model_type") == "mistral" and config.get("sliding_window"):
            raise ConversionError("a sliding window is not supported: llama.cpp's llama architecture attends to the whole context")
    elif arch == "qwen3moe":
        if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
            raise ConversionError("dense layers (mlp_only_layers, decoder_sparse_step != 1) are not supported: llama.cpp's qwen3moe makes every layer sparse")
        if config.get("use_sliding_window"):
            raise ConversionError("a sliding window is not supported by llama.cpp's qwen3moe")
        hp.update(experts=config["num_experts"], experts_used=config["num_experts_per_tok"], expert_ffn=config["moe_intermediate_size"])
    elif arch == "deepseek2":
        if config.get("n_routed_experts") is None:
            raise ConversionError("deepseek_v2 without routed experts is not supported")
        dense = config.get("first_k_dense_replace") or 0
        hp.update(
            experts=config["n_routed_experts"], experts_used=config["num_experts_per_tok"], expert_ffn=config["moe_intermediate_size"],
            shared_experts=config.get("n_shared_experts") or 0, dense_layers=dense,
            q_lora=config.get("q_lora_rank"), kv_lora=config.get("kv_lora_rank", 512),
            qk_nope=config["qk_nope_head_dim"], qk_rope=config["qk_rope_head_dim"], v_head=config["v_head_dim"],
        )
        if config.get("moe_layer_freq", 1) != 1:
            raise ConversionError("moe_layer_freq != 1 is not supported: llama.cpp makes every layer after the leading dense ones sparse")
        scoring = config.get("scoring_func", "softmax")
        if scoring not in ("softmax", "sigmoid"):
            raise ConversionError(f"scoring_func {scoring!r} is not supported (softmax, sigmoid)")
    return hp


def llama3_rope_factors(config, head_dim):
    """Per-frequency divisors of Llama 3's rope scaling (wavelengths between the two bounds blend
    smoothly), which llama.cpp reads from rope_freqs.weight; None for other rope types."""
    if rope_type(config) != "llama3":
        return None
    scaling = rope_scaling(config)
    theta = rope_theta(config)
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    original = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * theta ** (i / head_dim)
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def rope_row_order(heads, head_dim):
    """Rows of a q/k projection in llama.cpp's order: Hugging Face keeps each head's rotated
    pairs half a head apart (j, j + head_dim/2); llama.cpp wants them adjacent (2j, 2j+1)."""
    return np.arange(heads * head_dim).reshape(heads, 2, head_dim // 2).transpose(0, 2, 1).reshape(-1)


# --- the synthetic vocabulary ---

def token_ids(value):
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def vocabulary(config, vocab_size):
    """(tokens, scores, types, special ids): unique token strings, one per id."""
    bos = token_ids(config.get("bos_token_id"))
    eos = token_ids(config.get("eos_token_id"))
    tokens = [None] * vocab_size
    types = [TOKEN_NORMAL] * vocab_size
    for name, ids in (("bos", bos), ("eos", eos)):
        for i, token in enumerate(ids):
            if not 0 <= token < vocab_size:
                raise ConversionError(f"{name}_token_id {token} is outside the vocabulary of {vocab_size}")
            if tokens[token] is None:
                tokens[token] = f"<|{name}{'' if i == 0 else i}|>"
                types[token] = TOKEN_CONTROL
    free = (i for i in range(vocab_size) if tokens[i] is None)
    unk = next(free, None)
    if unk is None:
        raise ConversionError(f"vocab_size {vocab_size} leaves no room for the unknown token")
    tokens[unk], types[unk] = "<unk>", TOKEN_UNKNOWN
    # SentencePiece vocabularies spell raw bytes <0xXX>; llama.cpp looks up <0x0A> as the newline
    # (and warns, using no newline token, where a tiny vocabulary has no room for them).
    if tokens.count(None) >= 256:
        for byte in range(256):
            i = next(free)
            tokens[i], types[i] = f"<0x{byte:02X}>", TOKEN_BYTE
    for i in free:
        tokens[i] = f"\u2581t{i}"
    # SentencePiece scores rank merges: earlier ids first.
    scores = [0.0 if types[i] != TOKEN_NORMAL else -float(i) for i in range(vocab_size)]
    special = {"bos": bos[0] if bos else None, "eos": eos[0] if eos else None, "unk": unk}
    return tokens, scores, types, special


# --- GGUF encoding ---

def encode_string(s):
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def encode_value(kind, value):
    if kind == UINT32:
        return struct.pack("<I", value)
    if kind == INT32:
        return struct.pack("<i", value)
    if kind == FLOAT32:
        return struct.pack("<f", value)
    if kind == BOOL:
        return struct.pack("<b", 1 if value else 0)
    if kind == STRING:
        return encode_string(value)
    raise ValueError(f"no encoding for GGUF type {kind}")


def encode_kv(key, kind, value):
    head = encode_string(key) + struct.pack("<I", kind)
    if kind != ARRAY:
        return head + encode_value(kind, value)
    element_kind, items = value
    body = struct.pack("<IQ", element_kind, len(items))
    if element_kind == STRING:
        return head + body + b"".join(encode_string(s) for s in items)
    packed = np.asarray(items, dtype={INT32: "<i4", FLOAT32: "<f4", UINT32: "<u4"}[element_kind]).tobytes()
    return head + body + packed


def rope_scaling_kvs(config, arch):
    """The converter's rope scaling keys (TextModel.set_gguf_parameters): linear and YaRN."""
    kind, params = rope_type(config), rope_scaling(config)
    if kind == "linear" and params.get("factor") is not None:
        return [(f"{arch}.rope.scaling.type", STRING, "linear"), (f"{arch}.rope.scaling.factor", FLOAT32, float(params["factor"]))]
    if kind == "yarn" and params.get("factor") is not None:
        kvs = [(f"{arch}.rope.scaling.type", STRING, "yarn"), (f"{arch}.rope.scaling.factor", FLOAT32, float(params["factor"])),
               (f"{arch}.rope.scaling.original_context_length", UINT32, int(params["original_max_position_embeddings"]))]
        for key, names in (("yarn_ext_factor", ("extrapolation_factor",)), ("yarn_attn_factor", ("attention_factor", "attn_factor")),
                           ("yarn_beta_fast", ("beta_fast",)), ("yarn_beta_slow", ("beta_slow",))):
            value = next((params[n] for n in names if params.get(n) is not None), None)
            if value is not None:
                kvs.append((f"{arch}.rope.scaling.{key}", FLOAT32, float(value)))
        return kvs
    if kind in ("default", "none") or (kind == "llama3" and arch == "llama"):
        return []
    raise ConversionError(f"rope type {kind!r} is not supported for {arch} (default, linear, yarn{', llama3' if arch == 'llama' else ''})")


def metadata(config, hp, name):
    arch = hp["arch"]
    tokens, scores, types, special = vocabulary(config, hp["vocab"])
    a = arch
    kvs = [
        ("general.architecture", STRING, arch),
        ("general.name", STRING, name),
        ("general.file_type", UINT32, FILE_TYPE_MOSTLY_F16),
        (f"{a}.block_count", UINT32, hp["layers"]),
        (f"{a}.context_length", UINT32, hp["context"]),
        (f"{a}.embedding_length", UINT32, hp["hidden"]),
        (f"{a}.attention.head_count", UINT32, hp["heads"]),
        (f"{a}.attention.layer_norm_rms_epsilon", FLOAT32, hp["rms_eps"]),
        (f"{a}.rope.freq_base", FLOAT32, hp["rope_theta"]),
    ]
    if hp["ffn"] is not None:
        kvs.append((f"{a}.feed_forward_length", UINT32, hp["ffn"]))
    if arch == "llama":
        kvs += [
            (f"{a}.vocab_size", UINT32, hp["vocab"]),
            (f"{a}.attention.head_count_kv", UINT32, hp["kv_heads"]),
            (f"{a}.rope.dimension_count", UINT32, hp["head_dim"]),
        ]
        if hp["head_dim"] != hp["hidden"] // hp["heads"]:
            kvs += [(f"{a}.attention.key_length", UINT32, hp["head_dim"]), (f"{a}.attention.value_length", UINT32, hp["head_dim"])]
    elif arch == "qwen3moe":
        # Qwen3MoeModel: the base keys, key/value length from head_dim, expert counts and size; no
        # rope.dimension_count (llama.cpp ropes the whole head) and no vocab_size (the token list has it).
        kvs += [
            (f"{a}.attention.head_count_kv", UINT32, hp["kv_heads"]),
            (f"{a}.expert_count", UINT32, hp["experts"]),
            (f"{a}.expert_used_count", UINT32, hp["experts_used"]),
            (f"{a}.attention.key_length", UINT32, hp["head_dim"]),
            (f"{a}.attention.value_length", UINT32, hp["head_dim"]),
            (f"{a}.expert_feed_forward_length", UINT32, hp["expert_ffn"]),
        ]
    elif arch == "deepseek2":
        # DeepseekV2Model: MLA stored as MQA (one KV head of the latent plus the shared rope key),
        # decompressed per head by attn_k_b / attn_v_b.
        kvs += [
            (f"{a}.attention.head_count_kv", UINT32, 1),
            (f"{a}.expert_count", UINT32, hp["experts"]),
            (f"{a}.expert_used_count", UINT32, hp["experts_used"]),
        ]
        for key, field in (("expert_group_count", "n_group"), ("expert_group_used_count", "topk_group")):
            if config.get(field) is not None:
                kvs.append((f"{a}.{key}", UINT32, int(config[field])))
        kvs += [
            (f"{a}.expert_gating_func", UINT32, GATING_SIGMOID if config.get("scoring_func") == "sigmoid" else GATING_SOFTMAX),
            (f"{a}.leading_dense_block_count", UINT32, hp["dense_layers"]),
            (f"{a}.vocab_size", UINT32, hp["vocab"]),
            (f"{a}.attention.q_lora_rank", UINT32, hp["q_lora"] or 0),
            (f"{a}.attention.kv_lora_rank", UINT32, hp["kv_lora"]),
            (f"{a}.attention.key_length", UINT32, hp["kv_lora"] + hp["qk_rope"]),
            (f"{a}.attention.value_length", UINT32, hp["kv_lora"]),
            (f"{a}.attention.key_length_mla", UINT32, hp["qk_nope"] + hp["qk_rope"]),
            (f"{a}.attention.value_length_mla", UINT32, hp["v_head"]),
            (f"{a}.expert_feed_forward_length", UINT32, hp["expert_ffn"]),
            (f"{a}.expert_shared_count", UINT32, hp["shared_experts"]),
        ]
        if config.get("routed_scaling_factor") is not None:
            kvs.append((f"{a}.expert_weights_scale", FLOAT32, float(config["routed_scaling_factor"])))
        if config.get("norm_topk_prob"):
            kvs.append((f"{a}.expert_weights_norm", BOOL, True))
        kvs.append((f"{a}.rope.dimension_count", UINT32, hp["qk_rope"]))
    kvs += rope_scaling_kvs(config, arch)
    if arch == "deepseek2" and rope_scaling(config).get("mscale_all_dim") is not None:
        # The converter's [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: 0.1 * mscale_all_dim, divided back by llama.cpp.
        kvs.append((f"{a}.rope.scaling.yarn_log_multiplier", FLOAT32, 0.1 * float(rope_scaling(config)["mscale_all_dim"])))
    kvs += [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (FLOAT32, scores)),
        ("tokenizer.ggml.token_type", ARRAY, (INT32, types)),
        ("tokenizer.ggml.unknown_token_id", UINT32, special["unk"]),
    ]
    for key in ("bos", "eos"):
        if special[key] is not None:
            kvs.append((f"tokenizer.ggml.{key}_token_id", UINT32, special[key]))
    return kvs


def padding(n):
    return -n % ALIGNMENT


# --- the tensors: names, shapes, types, and where their values come from ---

class Tensor:
    """One GGUF tensor: its name, ggml type, shape in Hugging Face's (row-major) order, its kind
    for random values (matrix, norm, bias), and its source in a checkpoint:
      ("copy", hf_name, rows or None)      the tensor, rows optionally reordered
      ("stack", [hf_name, ...])            tensors of equal shape stacked on a new first dimension
      ("kv_b", hf_name, part)              DeepSeek's kv_b_proj split per head into k_b (transposed) or v_b
      ("values", array)                    computed here (llama3 rope factors)."""

    def __init__(self, name, ggml_type, shape, kind, source):
        self.name = name
        self.ggml_type = ggml_type
        self.shape = list(shape)
        self.kind = kind
        self.source = source
        self.chunks = None  # set by the writer: () -> iterator of bytes

    @property
    def nbytes(self):
        return math.prod(self.shape) * (4 if self.ggml_type == GGML_F32 else 2)

    def info(self, offset):
        # GGUF lists dimensions innermost first (ggml's ne[0] is the row length).
        dims = list(reversed(self.shape))
        return encode_string(self.name) + struct.pack(f"<I{len(dims)}qIQ", len(dims), *dims, self.ggml_type, offset)


def matrix(name, shape, source, ggml_type=GGML_F16):
    return Tensor(name, ggml_type, shape, "matrix", source)


def norm(name, size, source):
    return Tensor(name, GGML_F32, [size], "norm", source)


def copy(hf_name, rows=None):
    return ("copy", hf_name, rows)


def plan_tensors(config, hp, include_output=None):
    """Every tensor llama.cpp's loader asks of the architecture, in the converter's names and
    layout. include_output: whether to write output.weight (default: unless tied embeddings)."""
    arch, h, layers, vocab = hp["arch"], hp["hidden"], hp["layers"], hp["vocab"]
    tensors = [matrix("token_embd.weight", [vocab, h], copy("model.embed_tokens.weight")),
               norm("output_norm.weight", h, copy("model.norm.weight"))]
    if include_output if include_output is not None else not hp["tied"]:
        tensors.append(matrix("output.weight", [vocab, h], copy("lm_head.weight")))
    factors = llama3_rope_factors(config, hp["head_dim"]) if arch == "llama" else None
    if factors is not None:
        tensors.append(Tensor("rope_freqs.weight", GGML_F32, [len(factors)], "values", ("values", factors)))
    for i in range(layers):
        hf, blk = f"model.layers.{i}.", f"blk.{i}."
        add = tensors.append
        add(norm(blk + "attn_norm.weight", h, copy(hf + "input_layernorm.weight")))
        add(norm(blk + "ffn_norm.weight", h, copy(hf + "post_attention_layernorm.weight")))
        if arch in ("llama", "qwen3moe"):
            d, heads, kv = hp["head_dim"], hp["heads"], hp["kv_heads"]
            order_q = rope_row_order(heads, d) if arch == "llama" else None
            order_k = rope_row_order(kv, d) if arch == "llama" else None
            add(matrix(blk + "attn_q.weight", [heads * d, h], copy(hf + "self_attn.q_proj.weight", order_q)))
            add(matrix(blk + "attn_k.weight", [kv * d, h], copy(hf + "self_attn.k_proj.weight", order_k)))
            add(matrix(blk + "attn_v.weight", [kv * d, h], copy(hf + "self_attn.v_proj.weight")))
            add(matrix(blk + "attn_output.weight", [h, heads * d], copy(hf + "self_attn.o_proj.weight")))
        if arch == "llama":
            m = hp["ffn"]
            add(matrix(blk + "ffn_gate.weight", [m, h], copy(hf + "mlp.gate_proj.weight")))
            add(matrix(blk + "ffn_up.weight", [m, h], copy(hf + "mlp.up_proj.weight")))
            add(matrix(blk + "ffn_down.weight", [h, m], copy(hf + "mlp.down_proj.weight")))
        elif arch == "qwen3moe":
            add(norm(blk + "attn_q_norm.weight", hp["head_dim"], copy(hf + "self_attn.q_norm.weight")))
            add(norm(blk + "attn_k_norm.weight", hp["head_dim"], copy(hf + "self_attn.k_norm.weight")))
            tensors += moe_tensors(hp, hf, blk)
        elif arch == "deepseek2":
            tensors += mla_tensors(hp, hf, blk)
            if i < hp["dense_layers"]:
                m = hp["ffn"]
                add(matrix(blk + "ffn_gate.weight", [m, h], copy(hf + "mlp.gate_proj.weight")))
                add(matrix(blk + "ffn_up.weight", [m, h], copy(hf + "mlp.up_proj.weight")))
                add(matrix(blk + "ffn_down.weight", [h, m], copy(hf + "mlp.down_proj.weight")))
            else:
                tensors += moe_tensors(hp, hf, blk)
                s = hp["expert_ffn"] * hp["shared_experts"]
                if s:
                    add(matrix(blk + "ffn_gate_shexp.weight", [s, h], copy(hf + "mlp.shared_experts.gate_proj.weight")))
                    add(matrix(blk + "ffn_up_shexp.weight", [s, h], copy(hf + "mlp.shared_experts.up_proj.weight")))
                    add(matrix(blk + "ffn_down_shexp.weight", [h, s], copy(hf + "mlp.shared_experts.down_proj.weight")))
    return tensors


def moe_tensors(hp, hf, blk):
    """The router (F32, as the converter keeps it) and the experts stacked [experts, out, in]."""
    h, e, m = hp["hidden"], hp["experts"], hp["expert_ffn"]
    experts = lambda proj: ("stack", [f"{hf}mlp.experts.{x}.{proj}.weight" for x in range(e)])  # noqa: E731
    return [
        matrix(blk + "ffn_gate_inp.weight", [e, h], copy(hf + "mlp.gate.weight"), GGML_F32),
        matrix(blk + "ffn_gate_exps.weight", [e, m, h], experts("gate_proj")),
        matrix(blk + "ffn_up_exps.weight", [e, m, h], experts("up_proj")),
        matrix(blk + "ffn_down_exps.weight", [e, h, m], experts("down_proj")),
    ]


def mla_tensors(hp, hf, blk):
    h, heads, rope, nope, v, kv_lora = hp["hidden"], hp["heads"], hp["qk_rope"], hp["qk_nope"], hp["v_head"], hp["kv_lora"]
    attn = hf + "self_attn."
    out = []
    if hp["q_lora"]:
        out += [matrix(blk + "attn_q_a.weight", [hp["q_lora"], h], copy(attn + "q_a_proj.weight")),
                norm(blk + "attn_q_a_norm.weight", hp["q_lora"], copy(attn + "q_a_layernorm.weight")),
                matrix(blk + "attn_q_b.weight", [heads * (nope + rope), hp["q_lora"]], copy(attn + "q_b_proj.weight"))]
    else:
        out.append(matrix(blk + "attn_q.weight", [heads * (nope + rope), h], copy(attn + "q_proj.weight")))
    return out + [
        matrix(blk + "attn_kv_a_mqa.weight", [kv_lora + rope, h], copy(attn + "kv_a_proj_with_mqa.weight")),
        norm(blk + "attn_kv_a_norm.weight", kv_lora, copy(attn + "kv_a_layernorm.weight")),
        matrix(blk + "attn_k_b.weight", [heads, kv_lora, nope], ("kv_b", attn + "kv_b_proj.weight", "k")),
        matrix(blk + "attn_v_b.weight", [heads, v, kv_lora], ("kv_b", attn + "kv_b_proj.weight", "v")),
        matrix(blk + "attn_output.weight", [h, heads * v], copy(attn + "o_proj.weight")),
    ]


# --- values from a checkpoint ---

def encoded(dtype, block, out_dtype):
    """A block of checkpoint elements (any shape, any layout) as little-endian out_dtype bytes."""
    if dtype == "F16" and out_dtype == np.float16:
        return np.ascontiguousarray(block).astype("<f2").tobytes()
    return to_float32(dtype, np.ascontiguousarray(block)).astype("<f2" if out_dtype == np.float16 else "<f4").tobytes()


def converted_chunks(dtype, raw, out_dtype, rows=None):
    """raw (optionally with its rows reordered) as out_dtype, a block of rows at a time."""
    flat_rows = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, flat_rows.shape[1]))
    for begin in range(0, flat_rows.shape[0], per_chunk):
        index = slice(begin, begin + per_chunk) if rows is None else rows[begin : begin + per_chunk]
        yield encoded(dtype, flat_rows[index], out_dtype)


def checkpoint_chunks(t, checkpoint, hp):
    """() -> the bytes of tensor t from the checkpoint, in pieces."""
    out = np.float32 if t.ggml_type == GGML_F32 else np.float16
    kind = t.source[0]

    def source(hf_name, shape):
        dtype, actual, raw = checkpoint[hf_name]
        if actual != list(shape):
            raise ConversionError(f"{hf_name} has shape {actual}, {list(shape)} expected for {t.name}")
        return dtype, raw

    if kind == "values":
        values = t.source[1]
        return lambda: iter([values.astype("<f4").tobytes()])
    if kind == "copy":
        dtype, raw = source(t.source[1], t.shape)
        return lambda: converted_chunks(dtype, raw, out, t.source[2])
    if kind == "stack":
        parts = [source(n, t.shape[1:]) for n in t.source[1]]
        return lambda: (chunk for dtype, raw in parts for chunk in converted_chunks(dtype, raw, out))
    if kind == "kv_b":
        heads, nope, v, kv_lora = hp["heads"], hp["qk_nope"], hp["v_head"], hp["kv_lora"]
        dtype, raw = source(t.source[1], [heads * (nope + v), kv_lora])
        per_head = raw.reshape(heads, nope + v, kv_lora)
        if t.source[2] == "k":  # [nope, kv_lora] per head, transposed to [kv_lora, nope]
            return lambda: (encoded(dtype, per_head[i, :nope].T, out) for i in range(heads))
        return lambda: (encoded(dtype, per_head[i, nope:], out) for i in range(heads))
    raise AssertionError(kind)


def sources_of(t):
    kind = t.source[0]
    if kind in ("copy", "kv_b"):
        return [t.source[1]]
    if kind == "stack":
        return list(t.source[1])
    return []


def checkpoint_tensors(config, hp, checkpoint):
    tensors = plan_tensors(config, hp, include_output="lm_head.weight" in checkpoint)
    needed = {n for t in tensors for n in sources_of(t)}
    missing = sorted(needed - checkpoint.keys())
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    unused = sorted(n for n in checkpoint.keys() - needed if not n.endswith("rotary_emb.inv_freq"))
    if unused:
        raise ConversionError(f"unexpected tensor {unused[0]} for a {hp['arch']} checkpoint ({len(unused)} unused)")
    for t in tensors:
        t.chunks = checkpoint_chunks(t, checkpoint, hp)
    return tensors


# --- random values ---

class RandomPool:
    """About a million values uniform in [-1, 1), drawn once; each tensor is tiled from them
    starting at a place of its own (from its name, so independent of the order of writing)."""

    def __init__(self, seed):
        self.seed = seed
        self.unit = np.random.default_rng(seed).uniform(-1.0, 1.0, POOL_ELEMENTS).astype(np.float32)
        self.tiles = {}

    def tile(self, value_range, ggml_type):
        """The pool scaled to value_range (0: all ones, for norms), encoded, repeated POOL_REPEATS times."""
        key = (value_range, ggml_type)
        if key not in self.tiles:
            values = np.ones(POOL_ELEMENTS, np.float32) if value_range == 0 else self.unit * np.float32(value_range)
            encoded_pool = values.astype("<f4" if ggml_type == GGML_F32 else "<f2")
            self.tiles[key] = memoryview(np.tile(encoded_pool, POOL_REPEATS).tobytes())
        return self.tiles[key]

    def start(self, name):
        return zlib.crc32(f"{self.seed}:{name}".encode()) % POOL_ELEMENTS

    def chunks(self, t):
        if t.kind == "values":
            values = t.source[1]
            return lambda: iter([values.astype("<f4").tobytes()])
        value_range = 0 if t.kind == "norm" else BIAS_RANGE if t.kind == "bias" else 1 / math.sqrt(t.shape[-1])
        element = 4 if t.ggml_type == GGML_F32 else 2

        def generate():
            tile = self.tile(value_range, t.ggml_type)
            left = t.nbytes
            at = self.start(t.name) * element
            while left:
                piece = tile[at : at + left]
                yield piece
                left -= len(piece)
                at = 0  # the tile is a whole number of pools: its end joins its start
        return generate


def random_tensors(config, hp, seed):
    pool = RandomPool(seed)
    tensors = plan_tensors(config, hp)
    for t in tensors:
        t.chunks = pool.chunks(t)
    return tensors


# --- the file ---

def layout(kvs, tensors):
    """(header bytes, total file size, each tensor's offset in the file)."""
    offsets, offset = [], 0
    for t in tensors:
        offsets.append(offset)
        offset += t.nbytes + padding(t.nbytes)
    header = b"GGUF" + struct.pack("<Iqq", GGUF_VERSION, len(tensors), len(kvs))
    header += b"".join(encode_kv(*kv) for kv in kvs)
    header += b"".join(t.info(o) for t, o in zip(tensors, offsets))
    header += b"\0" * padding(len(header))
    return header, len(header) + offset, [len(header) + o for o in offsets]


def check_free_space(out_path, size):
    directory = os.path.dirname(os.path.abspath(out_path))
    free = shutil.disk_usage(directory).free
    if os.path.exists(out_path):
        free += os.path.getsize(out_path)
    if free < size + FREE_SPACE_MARGIN:
        raise ConversionError(f"{out_path} needs {size / 1e9:.2f} GB (+{FREE_SPACE_MARGIN / 1e9:.2f} GB kept free); "
                              f"{directory} has {free / 1e9:.2f} GB free")


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_file(out_path, kvs, tensors, workers=1):
    """Writes the file beside out_path, then renames it. The file is sized first (the padding
    between tensors stays a zero-filled hole) and each tensor written at its offset, by `workers`
    threads at once: writing is the kernel's copying, which threads do in parallel."""
    if sys.byteorder != "little":
        raise ConversionError("GGUF and safetensors are little-endian; this writer handles them as native arrays")
    header, size, offsets = layout(kvs, tensors)
    check_free_space(out_path, size)
    tmp = out_path + ".partial"

    def write_tensor(fd, t, offset):
        written = 0
        for chunk in t.chunks():
            pwrite_all(fd, chunk, offset + written)
            written += len(chunk)
        if written != t.nbytes:
            raise AssertionError(f"{t.name}: wrote {written} bytes, planned {t.nbytes}")

    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            pwrite_all(fd, header, 0)
            jobs = sorted(zip(tensors, offsets), key=lambda job: -job[0].nbytes)  # the largest first: even shares
            if workers > 1:
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    for done in [pool.submit(write_tensor, fd, t, o) for t, o in jobs]:
                        done.result()
            else:
                for t, o in jobs:
                    write_tensor(fd, t, o)
        finally:
            os.close(fd)
        os.replace(tmp, out_path)
    except BaseException:
        # A half-written file is of no use, and a large one holds the disk others need.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {"tensors": len(tensors), "kvs": len(kvs), "bytes": size}


def load_config(path):
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        return json.load(f)


def default_name(path):
    path = os.path.normpath(path)
    return os.path.basename(os.path.dirname(path) if path.endswith(".json") else path)


def write_gguf(checkpoint_dir, out_path, name=None):
    """Converts a Hugging Face checkpoint directory."""
    config = load_config(checkpoint_dir)
    hp = hyperparameters(config)
    tensors = checkpoint_tensors(config, hp, read_checkpoint(checkpoint_dir))
    return write_file(out_path, metadata(config, hp, name or default_name(checkpoint_dir)), tensors)


def random_model(config_path, name=None, seed=0):
    """(metadata, tensors) of a model with random weights from a config.json (or its directory)."""
    config = load_config(config_path)
    hp = hyperparameters(config)
    return metadata(config, hp, name or default_name(config_path)), random_tensors(config, hp, seed)


def write_random_gguf(config_path, out_path, name=None, seed=0, workers=None):
    kvs, tensors = random_model(config_path, name, seed)
    return write_file(out_path, kvs, tensors, workers or min(8, os.cpu_count() or 1))


def random_gguf_size(config_path):
    kvs, tensors = random_model(config_path)
    return layout(kvs, tensors)[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="directory with config.json and *.safetensors (not with --random-from)")
    p.add_argument("out", nargs="?", help="the GGUF file to write")
    p.add_argument("--random-from", metavar="CONFIG", help="write random weights for this config.json (or directory holding one) instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--workers", type=int, help="with --random-from: threads writing at once (default: the cores, at most 8)")
    p.add_argument("--size-only", action="store_true", help="with --random-from: print the file's size in bytes and write nothing")
    p.add_argument("--name", help="general.name (default: the config's or checkpoint's directory name)")
    args = p.parse_args()
    if args.random_from:
        if args.out is None and args.checkpoint is not None:
            args.out, args.checkpoint = args.checkpoint, None
        if args.checkpoint is not None:
            p.error("give either CHECKPOINT_DIR or --random-from, not both")
        if args.out is None and not args.size_only:
            p.error("give OUT.gguf")
    elif args.checkpoint is None or args.out is None or args.size_only:
        p.error("give CHECKPOINT_DIR OUT.gguf, or --random-from CONFIG OUT.gguf (--size-only: --random-from only)")
    try:
        if args.size_only:
            print(random_gguf_size(args.random_from))
            return
        if args.random_from:
            summary = write_random_gguf(args.random_from, args.out, args.name, args.seed, args.workers)
        else:
            summary = write_gguf(args.checkpoint, args.out, args.name)
    except (ConversionError, OSError, KeyError) as e:
        sys.exit(f"write_gguf: {type(e).__name__ + ': ' if not isinstance(e, ConversionError) else ''}{e}")
    print(f"wrote {args.out}: {summary['tensors']} tensors, {summary['kvs']} metadata keys, {summary['bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
