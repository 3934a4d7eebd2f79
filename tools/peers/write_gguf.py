"""Converts a Llama-architecture Hugging Face checkpoint (config.json + *.safetensors, as
`hf_peers.py --save-checkpoint` saves it) to a GGUF file with 16-bit weights that llama.cpp
loads, for llama_cpp.sh. numpy only: the GPU host has no gguf package, and a random checkpoint
has no tokenizer for llama.cpp's own converter to read.

    python3 tools/peers/write_gguf.py CHECKPOINT_DIR OUT.gguf [--name NAME]

What it writes (GGUF version 3, little-endian, 32-byte alignment):
- general.* and llama.* hyperparameters from config.json (model_type llama, or mistral without
  a sliding window: llama.cpp runs both as its `llama` architecture);
- a synthetic SentencePiece-style vocabulary of exactly vocab_size tokens (unknown, the config's
  BOS/EOS as control tokens, the 256 byte tokens llama.cpp looks up, the rest numbered):
  llama-bench feeds random token ids, so no real tokenizer is needed;
- every matrix as F16 (bf16 and f32 inputs are converted), norms as F32, and for llama3 rope
  scaling the per-frequency factors as rope_freqs.weight (F32), as llama.cpp's converter does;
- q_proj/k_proj rows reordered per head from Hugging Face's rotate-half layout to the
  interleaved pairs llama.cpp's rope expects.
"""
import argparse
import json
import math
import os
import struct
import sys

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
# Elements converted at a time: bounds the float32 temporaries of large tensors.
CHUNK_ELEMENTS = 1 << 25

LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


class ConversionError(Exception):
    """A checkpoint this writer cannot convert; the message names what is wrong."""


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


# --- the model: hyperparameters, tensor names, rope ---

def hyperparameters(config):
    if config.get("model_type") not in ("llama", "mistral"):
        raise ConversionError(f"model_type {config.get('model_type')!r} is not a Llama architecture (llama, mistral)")
    if config.get("model_type") == "mistral" and config.get("sliding_window"):
        raise ConversionError("a sliding window is not supported: llama.cpp's llama architecture attends to the whole context")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ConversionError("attention_bias/mlp_bias are not supported")
    heads = config["num_attention_heads"]
    return {
        "hidden": config["hidden_size"],
        "layers": config["num_hidden_layers"],
        "ffn": config["intermediate_size"],
        "heads": heads,
        "kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "vocab": config["vocab_size"],
        "context": config.get("max_position_embeddings", 4096),
        "rope_theta": rope_theta(config),
        "rms_eps": float(config.get("rms_norm_eps", 1e-5)),
    }


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


def gguf_name(hf_name, layers):
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit() and parts[3] in LAYER_TENSORS and int(parts[2]) < layers:
        return f"blk.{parts[2]}.{LAYER_TENSORS[parts[3]]}"
    raise ConversionError(f"unexpected tensor {hf_name} for a Llama checkpoint")


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
    try:
        unk = next(free)
        tokens[unk], types[unk] = "<unk>", TOKEN_UNKNOWN
        # SentencePiece vocabularies spell raw bytes <0xXX>; llama.cpp looks up <0x0A> as the newline.
        for byte in range(256):
            i = next(free)
            tokens[i], types[i] = f"<0x{byte:02X}>", TOKEN_BYTE
    except StopIteration:
        raise ConversionError(f"vocab_size {vocab_size} is too small for the unknown token and 256 byte tokens") from None
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


def metadata(config, hp, name):
    tokens, scores, types, special = vocabulary(config, hp["vocab"])
    kvs = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, name),
        ("general.file_type", UINT32, FILE_TYPE_MOSTLY_F16),
        ("llama.vocab_size", UINT32, hp["vocab"]),
        ("llama.context_length", UINT32, hp["context"]),
        ("llama.embedding_length", UINT32, hp["hidden"]),
        ("llama.block_count", UINT32, hp["layers"]),
        ("llama.feed_forward_length", UINT32, hp["ffn"]),
        ("llama.attention.head_count", UINT32, hp["heads"]),
        ("llama.attention.head_count_kv", UINT32, hp["kv_heads"]),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, hp["rms_eps"]),
        ("llama.rope.freq_base", FLOAT32, hp["rope_theta"]),
        ("llama.rope.dimension_count", UINT32, hp["head_dim"]),
    ]
    if hp["head_dim"] != hp["hidden"] // hp["heads"]:
        kvs += [("llama.attention.key_length", UINT32, hp["head_dim"]), ("llama.attention.value_length", UINT32, hp["head_dim"])]
    if rope_type(config) == "linear":
        kvs += [("llama.rope.scaling.type", STRING, "linear"), ("llama.rope.scaling.factor", FLOAT32, float(rope_scaling(config)["factor"]))]
    elif rope_type(config) not in ("default", "llama3"):
        raise ConversionError(f"rope type {rope_type(config)!r} is not supported (default, linear, llama3)")
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


class Tensor:
    """One GGUF tensor: its name, ggml type, shape in Hugging Face's (row-major) order, and how
    to produce its bytes in chunks."""

    def __init__(self, name, ggml_type, shape, chunks):
        self.name = name
        self.ggml_type = ggml_type
        self.shape = shape
        self.chunks = chunks

    @property
    def nbytes(self):
        return math.prod(self.shape) * (4 if self.ggml_type == GGML_F32 else 2)

    def info(self, offset):
        # GGUF lists dimensions innermost first (ggml's ne[0] is the row length).
        dims = list(reversed(self.shape))
        return encode_string(self.name) + struct.pack(f"<I{len(dims)}qIQ", len(dims), *dims, self.ggml_type, offset)


def converted_chunks(dtype, raw, out_dtype, rows=None):
    """raw (optionally with its rows reordered) as out_dtype, a block of rows at a time."""
    flat_rows = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, flat_rows.shape[1]))
    for begin in range(0, flat_rows.shape[0], per_chunk):
        index = slice(begin, begin + per_chunk) if rows is None else rows[begin : begin + per_chunk]
        block = flat_rows[index]
        if dtype == "F16" and out_dtype == np.float16:
            yield np.ascontiguousarray(block).astype("<f2").tobytes()
        else:
            yield to_float32(dtype, np.asarray(block)).astype("<f2" if out_dtype == np.float16 else "<f4").tobytes()


def plan_tensors(config, hp, checkpoint):
    tensors = []
    order_q = rope_row_order(hp["heads"], hp["head_dim"])
    order_k = rope_row_order(hp["kv_heads"], hp["head_dim"])
    for hf_name, (dtype, shape, raw) in checkpoint.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope.freq_base
        name = gguf_name(hf_name, hp["layers"])
        rows = None
        if name.endswith("attn_q.weight"):
            rows = order_q
        elif name.endswith("attn_k.weight"):
            rows = order_k
        if rows is not None and shape[0] != len(rows):
            raise ConversionError(f"{hf_name} has {shape[0]} rows, {len(rows)} expected from the head counts")
        # Norms stay float32, as llama.cpp's converter keeps 1-D tensors; matrices become f16.
        out = np.float32 if len(shape) == 1 else np.float16
        tensors.append(Tensor(name, GGML_F32 if out == np.float32 else GGML_F16, shape,
                              lambda d=dtype, r=raw, o=out, rw=rows: converted_chunks(d, r, o, rw)))
    factors = llama3_rope_factors(config, hp["head_dim"])
    if factors is not None:
        tensors.append(Tensor("rope_freqs.weight", GGML_F32, [len(factors)], lambda: iter([factors.astype("<f4").tobytes()])))
    names = {t.name for t in tensors}
    required = ["token_embd.weight", "output_norm.weight"] + [f"blk.{i}.{n}" for i in range(hp["layers"]) for n in LAYER_TENSORS.values()]
    missing = [n for n in required if n not in names]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    return tensors


def write_gguf(checkpoint_dir, out_path, name=None):
    if sys.byteorder != "little":
        raise ConversionError("GGUF and safetensors are little-endian; this writer reads them as native arrays")
    with open(os.path.join(checkpoint_dir, "config.json")) as f:
        config = json.load(f)
    hp = hyperparameters(config)
    tensors = plan_tensors(config, hp, read_checkpoint(checkpoint_dir))
    kvs = metadata(config, hp, name or os.path.basename(os.path.normpath(checkpoint_dir)))
    offsets, offset = [], 0
    for t in tensors:
        offsets.append(offset)
        offset += t.nbytes + padding(t.nbytes)
    header = b"GGUF" + struct.pack("<Iqq", GGUF_VERSION, len(tensors), len(kvs))
    header += b"".join(encode_kv(*kv) for kv in kvs)
    header += b"".join(t.info(o) for t, o in zip(tensors, offsets))
    header += b"\0" * padding(len(header))
    tmp = out_path + ".partial"
    with open(tmp, "wb") as f:
        f.write(header)
        for t in tensors:
            written = 0
            for chunk in t.chunks():
                f.write(chunk)
                written += len(chunk)
            if written != t.nbytes:
                raise AssertionError(f"{t.name}: wrote {written} bytes, planned {t.nbytes}")
            f.write(b"\0" * padding(written))
    os.replace(tmp, out_path)
    return {"tensors": len(tensors), "kvs": len(kvs), "bytes": len(header) + offset}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="directory with config.json and *.safetensors")
    p.add_argument("out", help="the GGUF file to write")
    p.add_argument("--name", help="general.name (default: the checkpoint directory's name)")
    args = p.parse_args()
    try:
        summary = write_gguf(args.checkpoint, args.out, args.name)
    except (ConversionError, OSError, KeyError) as e:
        sys.exit(f"write_gguf: {type(e).__name__ + ': ' if not isinstance(e, ConversionError) else ''}{e}")
    print(f"wrote {args.out}: {summary['tensors']} tensors, {summary['kvs']} metadata keys, {summary['bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
