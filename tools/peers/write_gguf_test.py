"""Tests for write_gguf.py (numpy only):

    python3 tools/peers/write_gguf_test.py

A tiny random Llama checkpoint (bf16 safetensors, written here) is converted, read back with
a minimal GGUF reader and checked field by field. Qwen3-MoE and DeepSeek-V2: the published
configs of Qwen3-30B-A3B and DeepSeek-V2-Lite (copies in testdata/) are planned in full (every
key, tensor name, shape and type that llama.cpp's loader asks for, written out here by hand from
its llama-model.cpp), and shrunk copies are written with random weights and converted from tiny
Hugging Face-layout checkpoints (experts stacked, kv_b_proj split). Optional, each skipped with
a message when its variable is unset:
- LLAMA_CPP_SRC=/path/to/llama.cpp: gguf-py's reader reads the files, and gguf-py's tables check
  every key and tensor name against the architecture and the converter's Hugging Face mapping;
- LLAMA_BENCH=/path/to/llama-bench: llama.cpp itself loads each file and runs a short pp/tg
  benchmark on it (a CPU build is enough): the check that matters for loading;
- LLAMA_LOGITS=/path/to/llama-logits (tools/peers/llama_logits.cpp, built against the same
  llama.cpp) and KEEL_FIXTURES=test/fixtures: Keel's oracle fixtures llama-gqa and
  deepseek-v2-lite, converted, give transformers' last-token logits in llama.cpp.
"""
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import unittest.mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import write_gguf  # noqa: E402

TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1000,
    "eos_token_id": [1001, 1002],
    "tie_word_embeddings": False,
    # transformers 5 spelling: theta inside rope_parameters.
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}


def bf16(x):
    """float32 -> bf16 bits, rounded to nearest even."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors):
    """tensors: {name: (dtype name, array)}; arrays are written as they are."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_checkpoint(directory, config=TINY, seed=0, dtype="BF16"):
    """A random checkpoint in Hugging Face's layout, split over two files, in BF16 or F16;
    returns its values as float32."""
    rng = np.random.default_rng(seed)
    h, m, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (heads * d, h), p + "self_attn.k_proj.weight": (kv * d, h),
                       p + "self_attn.v_proj.weight": (kv * d, h), p + "self_attn.o_proj.weight": (h, heads * d),
                       p + "mlp.gate_proj.weight": (m, h), p + "mlp.up_proj.weight": (m, h), p + "mlp.down_proj.weight": (h, m)})
    values, files = {}, [{}, {}]
    for n, (name, shape) in enumerate(shapes.items()):
        x = rng.normal(0, 0.02, shape).astype(np.float32) if len(shape) == 2 else 1 + rng.normal(0, 0.1, shape).astype(np.float32)
        if dtype == "BF16":
            raw = bf16(x)
            values[name] = bf16_to_float32(raw)
        else:
            raw = x.astype(np.float16)
            values[name] = raw.astype(np.float32)
        files[n % 2][name] = (dtype, raw)
    os.makedirs(directory, exist_ok=True)
    for n, tensors in enumerate(files):
        write_safetensors(os.path.join(directory, f"model-0000{n + 1}-of-00002.safetensors"), tensors)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return values


class Reader:
    """A minimal GGUF reader: header, metadata, tensor infos, tensor data."""

    SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<b", 10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        assert self.take(4) == b"GGUF", "magic"
        self.version, n_tensors, n_kv = self.unpack("<Iqq")
        self.kv = {}
        self.kv_types = {}
        for _ in range(n_kv):
            key = self.string()
            (kind,) = self.unpack("<I")
            self.kv_types[key] = kind
            self.kv[key] = self.value(kind)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self.string()
            (n_dims,) = self.unpack("<I")
            dims = list(self.unpack(f"<{n_dims}q"))
            ggml_type, offset = self.unpack("<IQ")
            self.tensors[name] = (dims, ggml_type, offset)
        alignment = self.kv.get("general.alignment", 32)
        self.data_start = self.pos + (-self.pos % alignment)

    def take(self, n):
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def string(self):
        (n,) = self.unpack("<Q")
        return self.take(n).decode("utf-8")

    def value(self, kind):
        if kind == 8:
            return self.string()
        if kind == 9:
            element, count = self.unpack("<IQ")
            return [self.value(element) for _ in range(count)]
        return self.unpack(self.SCALARS[kind])[0]

    def array(self, name):
        dims, ggml_type, offset = self.tensors[name]
        dtype = {0: "<f4", 1: "<f2"}[ggml_type]
        count = math.prod(dims)
        start = self.data_start + offset
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).reshape(list(reversed(dims)))


class WriteGgufTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.checkpoint = os.path.join(cls.tmp.name, "tiny-llama")
        cls.values = make_checkpoint(cls.checkpoint)
        cls.gguf = os.path.join(cls.tmp.name, "tiny-llama-f16.gguf")
        cls.summary = write_gguf.write_gguf(cls.checkpoint, cls.gguf)
        cls.r = Reader(cls.gguf)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_header_and_size(self):
        self.assertEqual(self.r.version, 3)
        self.assertEqual(len(self.r.tensors), 2 * 9 + 3 + 1)
        self.assertEqual(os.path.getsize(self.gguf), self.summary["bytes"])
        self.assertFalse(os.path.exists(self.gguf + ".partial"))

    def test_hyperparameters(self):
        kv, types = self.r.kv, self.r.kv_types
        self.assertEqual(kv["general.architecture"], "llama")
        self.assertEqual(kv["general.name"], "tiny-llama")
        self.assertEqual(kv["general.file_type"], 1)
        expected = {"llama.embedding_length": 256, "llama.feed_forward_length": 512, "llama.block_count": 2,
                    "llama.attention.head_count": 8, "llama.attention.head_count_kv": 2, "llama.context_length": 4096,
                    "llama.vocab_size": 1024, "llama.rope.dimension_count": 32}
        for key, value in expected.items():
            self.assertEqual((kv[key], types[key]), (value, write_gguf.UINT32), key)
        self.assertEqual(types["llama.rope.freq_base"], write_gguf.FLOAT32)
        self.assertEqual(kv["llama.rope.freq_base"], 500000.0)
        self.assertAlmostEqual(kv["llama.attention.layer_norm_rms_epsilon"], 1e-5, places=10)
        self.assertNotIn("llama.attention.key_length", kv)

    def test_vocabulary(self):
        kv = self.r.kv
        tokens, types, scores = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.scores"]
        self.assertEqual(kv["tokenizer.ggml.model"], "llama")
        self.assertEqual((len(tokens), len(types), len(scores)), (1024, 1024, 1024))
        self.assertEqual(len(set(tokens)), 1024)
        self.assertEqual(self.r.kv_types["tokenizer.ggml.bos_token_id"], write_gguf.UINT32)
        self.assertEqual((kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]), (1000, 1001))
        self.assertEqual([types[i] for i in (1000, 1001, 1002)], [write_gguf.TOKEN_CONTROL] * 3)
        unk = kv["tokenizer.ggml.unknown_token_id"]
        self.assertEqual((tokens[unk], types[unk]), ("<unk>", write_gguf.TOKEN_UNKNOWN))
        newline = tokens.index("<0x0A>")
        self.assertEqual(types[newline], write_gguf.TOKEN_BYTE)
        self.assertEqual(sum(t == write_gguf.TOKEN_BYTE for t in types), 256)

    def test_tensor_layout(self):
        data_end = 0
        for name, (dims, ggml_type, offset) in self.r.tensors.items():
            self.assertEqual(offset % 32, 0, name)
            self.assertEqual(ggml_type, write_gguf.GGML_F32 if len(dims) == 1 else write_gguf.GGML_F16, name)
            data_end = max(data_end, offset + math.prod(dims) * (4 if ggml_type == 0 else 2))
        self.assertEqual(self.r.tensors["token_embd.weight"][0], [256, 1024])  # innermost dimension first
        self.assertEqual(self.r.tensors["blk.1.attn_k.weight"][0], [256, 64])
        self.assertEqual(self.r.tensors["blk.0.ffn_down.weight"][0], [512, 256])
        self.assertEqual(self.r.data_start % 32, 0)
        self.assertLessEqual(self.r.data_start + data_end, len(self.r.buf))

    def test_weights_are_the_checkpoint_in_f16(self):
        pairs = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
                 "blk.1.attn_v.weight": "model.layers.1.self_attn.v_proj.weight", "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
                 "blk.1.attn_output.weight": "model.layers.1.self_attn.o_proj.weight"}
        for gguf_name, hf_name in pairs.items():
            np.testing.assert_array_equal(self.r.array(gguf_name), self.values[hf_name].astype(np.float16), gguf_name)
        np.testing.assert_array_equal(self.r.array("blk.0.attn_norm.weight"), self.values["model.layers.0.input_layernorm.weight"])
        np.testing.assert_array_equal(self.r.array("output_norm.weight"), self.values["model.norm.weight"])

    def test_q_and_k_rows_pair_rotated_halves(self):
        d = 32
        for gguf_name, hf_name, heads in (("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 8),
                                          ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 2)):
            out, hf = self.r.array(gguf_name), self.values[hf_name].astype(np.float16)
            for h in range(heads):
                for j in range(d // 2):
                    np.testing.assert_array_equal(out[h * d + 2 * j], hf[h * d + j])
                    np.testing.assert_array_equal(out[h * d + 2 * j + 1], hf[h * d + d // 2 + j])

    def test_f16_checkpoint_is_copied(self):
        directory = os.path.join(self.tmp.name, "tiny-f16")
        values = make_checkpoint(directory, seed=1, dtype="F16")
        out = os.path.join(self.tmp.name, "tiny-f16.gguf")
        write_gguf.write_gguf(directory, out, name="from-f16")
        r = Reader(out)
        self.assertEqual(r.kv["general.name"], "from-f16")
        np.testing.assert_array_equal(r.array("token_embd.weight"), values["model.embed_tokens.weight"].astype(np.float16))
        np.testing.assert_array_equal(r.array("blk.1.attn_norm.weight"), values["model.layers.1.input_layernorm.weight"])
        q, hf = r.array("blk.1.attn_q.weight"), values["model.layers.1.self_attn.q_proj.weight"].astype(np.float16)
        np.testing.assert_array_equal(q[32 + 2 * 3 + 1], hf[32 + 16 + 3])

    def test_llama3_rope_factors(self):
        factors = self.r.array("rope_freqs.weight")
        self.assertEqual(factors.shape, (16,))
        # Short wavelengths are left alone, long ones divided by the factor, the middle blended.
        wavelengths = 2 * math.pi * 500000.0 ** (np.arange(0, 32, 2) / 32)
        np.testing.assert_array_equal(factors[wavelengths < 8192 / 4], 1.0)
        np.testing.assert_array_equal(factors[wavelengths > 8192], 8.0)
        middle = factors[(wavelengths >= 2048) & (wavelengths <= 8192)]
        self.assertTrue(np.all((middle >= 1) & (middle <= 8)))
        self.assertTrue(np.all(np.diff(factors) >= 0))

    def test_rejects_what_it_cannot_convert(self):
        bad = dict(TINY, model_type="qwen2")
        with self.assertRaisesRegex(write_gguf.ConversionError, "qwen2"):
            write_gguf.hyperparameters(bad)
        directory = os.path.join(self.tmp.name, "tiny-extra")
        make_checkpoint(directory, seed=2)
        write_safetensors(os.path.join(directory, "extra.safetensors"), {"model.layers.0.self_attn.q_proj.bias": ("F32", np.zeros(256, np.float32))})
        with self.assertRaisesRegex(write_gguf.ConversionError, "unexpected tensor model.layers.0.self_attn.q_proj.bias"):
            write_gguf.write_gguf(directory, os.path.join(self.tmp.name, "extra.gguf"))
        os.remove(os.path.join(directory, "model-00002-of-00002.safetensors"))
        with self.assertRaisesRegex(write_gguf.ConversionError, "lacks"):
            write_gguf.write_gguf(directory, os.path.join(self.tmp.name, "extra.gguf"))
        with self.assertRaisesRegex(write_gguf.ConversionError, "no room"):
            write_gguf.vocabulary({"bos_token_id": 0, "eos_token_id": 1}, 2)

    def test_a_tiny_vocabulary_has_no_byte_tokens(self):
        tokens, _, types, special = write_gguf.vocabulary({"bos_token_id": 1, "eos_token_id": 2}, 200)
        self.assertEqual(len(set(tokens)), 200)
        self.assertNotIn(write_gguf.TOKEN_BYTE, types)
        self.assertEqual(tokens[special["unk"]], "<unk>")

    def test_llama_cpp_loads_it(self):
        bench = os.environ.get("LLAMA_BENCH")
        if not bench:
            self.skipTest("set LLAMA_BENCH to a llama-bench binary to check that llama.cpp loads the file")
        run = subprocess.run([bench, "-m", self.gguf, "-p", "32", "-n", "8", "-r", "1", "-o", "json"], capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        rows = json.loads(run.stdout)
        self.assertEqual([(r["n_prompt"], r["n_gen"]) for r in rows], [(32, 0), (0, 8)])
        self.assertEqual(rows[0]["model_n_params"], sum(v.size for v in self.values.values()) + 16)
        self.assertTrue(all(r["avg_ts"] > 0 for r in rows))


# --- Qwen3-MoE and DeepSeek-V2 ---

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
F16, F32 = write_gguf.GGML_F16, write_gguf.GGML_F32
U32, FLT, BOOL, STR = write_gguf.UINT32, write_gguf.FLOAT32, write_gguf.BOOL, write_gguf.STRING


def published(name):
    """The Hub's config.json (copies of bench/configs/NAME/config.json)."""
    with open(os.path.join(TESTDATA, f"{name}.config.json")) as f:
        return json.load(f)


def shrunk(config, **changes):
    return {**config, **changes}


# Shrunk with the same structure: GQA and q/k norms; MLA without q LoRA, one dense layer, shared
# experts, YaRN. 3 layers: llama.cpp's DeepSeek "Lite" test (26 or 27 layers) does not hold.
TINY_QWEN3_MOE = shrunk(published("qwen3-30b-a3b"), num_hidden_layers=2, hidden_size=128, intermediate_size=384, moe_intermediate_size=32,
                        num_experts=8, num_experts_per_tok=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=1024,
                        bos_token_id=1000, eos_token_id=1001, max_window_layers=2)
TINY_DEEPSEEK_V2 = shrunk(published("deepseek-v2-lite"), num_hidden_layers=3, hidden_size=128, intermediate_size=256, moe_intermediate_size=32,
                          n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2, num_attention_heads=4, num_key_value_heads=4,
                          kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, vocab_size=1024,
                          bos_token_id=1000, eos_token_id=1001)


def expected_keys(c):
    """{key: (GGUF type, value)} beyond general.* and tokenizer.*: what the converter's
    Qwen3MoeModel / DeepseekV2Model write with --outtype f16 for config c."""
    if c["model_type"] == "qwen3_moe":
        a = "qwen3moe."
        return {
            a + "block_count": (U32, c["num_hidden_layers"]), a + "context_length": (U32, c["max_position_embeddings"]),
            a + "embedding_length": (U32, c["hidden_size"]), a + "feed_forward_length": (U32, c["intermediate_size"]),
            a + "attention.head_count": (U32, c["num_attention_heads"]), a + "attention.head_count_kv": (U32, c["num_key_value_heads"]),
            a + "rope.freq_base": (FLT, c["rope_theta"]), a + "attention.layer_norm_rms_epsilon": (FLT, c["rms_norm_eps"]),
            a + "expert_count": (U32, c["num_experts"]), a + "expert_used_count": (U32, c["num_experts_per_tok"]),
            a + "attention.key_length": (U32, c["head_dim"]), a + "attention.value_length": (U32, c["head_dim"]),
            a + "expert_feed_forward_length": (U32, c["moe_intermediate_size"]),
        }
    a, rope = "deepseek2.", c["rope_scaling"]
    lora, nope, r = c["kv_lora_rank"], c["qk_nope_head_dim"], c["qk_rope_head_dim"]
    return {
        a + "block_count": (U32, c["num_hidden_layers"]), a + "context_length": (U32, c["max_position_embeddings"]),
        a + "embedding_length": (U32, c["hidden_size"]), a + "feed_forward_length": (U32, c["intermediate_size"]),
        a + "attention.head_count": (U32, c["num_attention_heads"]), a + "attention.head_count_kv": (U32, 1),
        a + "rope.freq_base": (FLT, c["rope_theta"]), a + "attention.layer_norm_rms_epsilon": (FLT, c["rms_norm_eps"]),
        a + "expert_count": (U32, c["n_routed_experts"]), a + "expert_used_count": (U32, c["num_experts_per_tok"]),
        a + "expert_group_count": (U32, 1), a + "expert_group_used_count": (U32, 1), a + "expert_gating_func": (U32, 1),  # softmax
        a + "leading_dense_block_count": (U32, 1), a + "vocab_size": (U32, c["vocab_size"]),
        a + "attention.q_lora_rank": (U32, 0),  # the one key the converter leaves out (see write_gguf.py)
        a + "attention.kv_lora_rank": (U32, lora), a + "attention.key_length": (U32, lora + r), a + "attention.value_length": (U32, lora),
        a + "attention.key_length_mla": (U32, nope + r), a + "attention.value_length_mla": (U32, c["v_head_dim"]),
        a + "expert_feed_forward_length": (U32, c["moe_intermediate_size"]), a + "expert_shared_count": (U32, c["n_shared_experts"]),
        a + "expert_weights_scale": (FLT, 1.0), a + "rope.dimension_count": (U32, r),
        a + "rope.scaling.type": (STR, "yarn"), a + "rope.scaling.factor": (FLT, 40.0),
        a + "rope.scaling.original_context_length": (U32, rope["original_max_position_embeddings"]),
        a + "rope.scaling.yarn_beta_fast": (FLT, 32.0), a + "rope.scaling.yarn_beta_slow": (FLT, 1.0),
        a + "rope.scaling.yarn_log_multiplier": (FLT, 0.1 * 0.707),
    }


def expected_tensors(c):
    """{name: (ggml dims, innermost first; ggml type)}: the shapes llama.cpp's loader creates
    (src/models/qwen3moe.cpp, deepseek2.cpp) with every matrix F16, norms and the router F32."""
    h, v, layers = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    out = {"token_embd.weight": ([h, v], F16), "output_norm.weight": ([h], F32), "output.weight": ([h, v], F16)}
    for i in range(layers):
        b = f"blk.{i}."
        out.update({b + "attn_norm.weight": ([h], F32), b + "ffn_norm.weight": ([h], F32)})
        if c["model_type"] == "qwen3_moe":
            d, heads, kv, e, m = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["num_experts"], c["moe_intermediate_size"]
            out.update({b + "attn_q.weight": ([h, heads * d], F16), b + "attn_k.weight": ([h, kv * d], F16), b + "attn_v.weight": ([h, kv * d], F16),
                        b + "attn_output.weight": ([heads * d, h], F16), b + "attn_q_norm.weight": ([d], F32), b + "attn_k_norm.weight": ([d], F32),
                        b + "ffn_gate_inp.weight": ([h, e], F32), b + "ffn_gate_exps.weight": ([h, m, e], F16),
                        b + "ffn_down_exps.weight": ([m, h, e], F16), b + "ffn_up_exps.weight": ([h, m, e], F16)})
            continue
        heads, lora, nope, r, vd = c["num_attention_heads"], c["kv_lora_rank"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        out.update({b + "attn_q.weight": ([h, heads * (nope + r)], F16), b + "attn_kv_a_mqa.weight": ([h, lora + r], F16),
                    b + "attn_kv_a_norm.weight": ([lora], F32), b + "attn_k_b.weight": ([nope, lora, heads], F16),
                    b + "attn_v_b.weight": ([lora, vd, heads], F16), b + "attn_output.weight": ([heads * vd, h], F16)})
        if i < c["first_k_dense_replace"]:
            f = c["intermediate_size"]
            out.update({b + "ffn_gate.weight": ([h, f], F16), b + "ffn_down.weight": ([f, h], F16), b + "ffn_up.weight": ([h, f], F16)})
        else:
            e, m, s = c["n_routed_experts"], c["moe_intermediate_size"], c["moe_intermediate_size"] * c["n_shared_experts"]
            out.update({b + "ffn_gate_inp.weight": ([h, e], F32), b + "ffn_gate_exps.weight": ([h, m, e], F16),
                        b + "ffn_down_exps.weight": ([m, h, e], F16), b + "ffn_up_exps.weight": ([h, m, e], F16),
                        b + "ffn_gate_shexp.weight": ([h, s], F16), b + "ffn_down_shexp.weight": ([s, h], F16), b + "ffn_up_shexp.weight": ([h, s], F16)})
    return out


def hf_shapes(c):
    """{Hugging Face tensor name: shape [out, in]} of a qwen3_moe / deepseek_v2 checkpoint (Hub layout, experts one by one)."""
    h, v = c["hidden_size"], c["vocab_size"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h]})
        if c["model_type"] == "qwen3_moe":
            d, heads, kv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
            shapes.update({p + "self_attn.q_proj.weight": [heads * d, h], p + "self_attn.k_proj.weight": [kv * d, h],
                           p + "self_attn.v_proj.weight": [kv * d, h], p + "self_attn.o_proj.weight": [h, heads * d],
                           p + "self_attn.q_norm.weight": [d], p + "self_attn.k_norm.weight": [d]})
            experts, m, shared = c["num_experts"], c["moe_intermediate_size"], 0
        else:
            heads, lora, nope, r, vd = c["num_attention_heads"], c["kv_lora_rank"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
            shapes.update({p + "self_attn.q_proj.weight": [heads * (nope + r), h], p + "self_attn.kv_a_proj_with_mqa.weight": [lora + r, h],
                           p + "self_attn.kv_a_layernorm.weight": [lora], p + "self_attn.kv_b_proj.weight": [heads * (nope + vd), lora],
                           p + "self_attn.o_proj.weight": [h, heads * vd]})
            experts, m, shared = c["n_routed_experts"], c["moe_intermediate_size"], c["n_shared_experts"]
            if i < c["first_k_dense_replace"]:
                f = c["intermediate_size"]
                shapes.update({p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h], p + "mlp.down_proj.weight": [h, f]})
                continue
        shapes[p + "mlp.gate.weight"] = [experts, h]
        for e in range(experts):
            shapes.update({f"{p}mlp.experts.{e}.gate_proj.weight": [m, h], f"{p}mlp.experts.{e}.up_proj.weight": [m, h],
                           f"{p}mlp.experts.{e}.down_proj.weight": [h, m]})
        if shared:
            shapes.update({p + "mlp.shared_experts.gate_proj.weight": [m * shared, h], p + "mlp.shared_experts.up_proj.weight": [m * shared, h],
                           p + "mlp.shared_experts.down_proj.weight": [h, m * shared]})
    return shapes


def make_hf_checkpoint(directory, config, seed=0):
    """A random F32 checkpoint of config's Hub layout; returns its values."""
    rng = np.random.default_rng(seed)
    values = {n: rng.normal(0, 0.1, s).astype(np.float32) for n, s in hf_shapes(config).items()}
    os.makedirs(directory, exist_ok=True)
    write_safetensors(os.path.join(directory, "model.safetensors"), {n: ("F32", x) for n, x in values.items()})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return values


def gguf_py():
    """gguf-py from the llama.cpp checkout in LLAMA_CPP_SRC, or None."""
    src = os.environ.get("LLAMA_CPP_SRC")
    if not src:
        return None
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    import gguf  # noqa: E402
    return gguf


class PublishedConfigsTest(unittest.TestCase):
    """Qwen3-30B-A3B and DeepSeek-V2-Lite planned in full (nothing written)."""

    def check(self, name, parameters, tensors):
        config = published(name)
        kvs, planned = write_gguf.random_model(os.path.join(TESTDATA, f"{name}.config.json"), name=name)
        keys = {k: (t, v) for k, t, v in kvs if not k.startswith(("general.", "tokenizer."))}
        expected = expected_keys(config)
        self.assertEqual(sorted(keys), sorted(expected))
        for key, (kind, value) in expected.items():
            self.assertEqual(keys[key][0], kind, key)
            if kind == FLT:
                self.assertAlmostEqual(keys[key][1], value, places=6, msg=key)
            else:
                self.assertEqual(keys[key][1], value, key)
        self.assertEqual({t.name: (list(reversed(t.shape)), t.ggml_type) for t in planned}, expected_tensors(config))
        self.assertEqual(len(planned), tensors)
        self.assertEqual(sum(math.prod(t.shape) for t in planned), parameters)
        header, size, _ = write_gguf.layout(kvs, planned)
        data = sum(math.prod(t.shape) * (4 if t.ggml_type == F32 else 2) for t in planned)
        self.assertTrue(0 <= size - len(header) - data < 32 * len(planned))  # padding only
        return size

    def test_qwen3_30b_a3b(self):
        # 30,532,122,624 parameters, as the Hub's model card and Keel's roofline count them.
        size = self.check("qwen3-30b-a3b", 30_532_122_624, 3 + 48 * 12)
        self.assertAlmostEqual(size / 1e9, 61.1, delta=0.1)

    def test_deepseek_v2_lite(self):
        # The 15,706,484,224 values of its safetensors (the model card's "15.7B"): kv_b_proj's split keeps the count.
        size = self.check("deepseek-v2-lite", 15_706_484_224, 3 + 11 + 26 * 15)
        self.assertAlmostEqual(size / 1e9, 31.4, delta=0.1)

    def test_size_only_prints_the_size_without_writing(self):
        run = subprocess.run([sys.executable, write_gguf.__file__, "--random-from", os.path.join(TESTDATA, "deepseek-v2-lite.config.json"), "--size-only"],
                             capture_output=True, text=True, check=True)
        kvs, tensors = write_gguf.random_model(os.path.join(TESTDATA, "deepseek-v2-lite.config.json"))
        self.assertEqual(int(run.stdout), write_gguf.layout(kvs, tensors)[1])

    def test_rejects_what_llama_cpp_cannot_run(self):
        with self.assertRaisesRegex(write_gguf.ConversionError, "dense layers"):
            write_gguf.hyperparameters(shrunk(TINY_QWEN3_MOE, mlp_only_layers=[1]))
        with self.assertRaisesRegex(write_gguf.ConversionError, "scoring_func"):
            write_gguf.hyperparameters(shrunk(TINY_DEEPSEEK_V2, scoring_func="sqrtsoftplus"))
        with self.assertRaisesRegex(write_gguf.ConversionError, "rope type 'llama3' is not supported for qwen3moe"):
            write_gguf.metadata(shrunk(TINY_QWEN3_MOE, rope_scaling={"rope_type": "llama3", "factor": 8.0}), write_gguf.hyperparameters(TINY_QWEN3_MOE), "x")

    def test_free_space_is_checked_before_writing(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "big.gguf")
            with unittest.mock.patch("shutil.disk_usage", return_value=shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9)):
                with self.assertRaisesRegex(write_gguf.ConversionError, r"needs 31\.4\d GB .* has 1\.00 GB free"):
                    write_gguf.write_random_gguf(os.path.join(TESTDATA, "deepseek-v2-lite.config.json"), out)
            self.assertEqual(os.listdir(tmp), [])


class RandomPoolTest(unittest.TestCase):
    def test_tensors_larger_than_the_pool_are_tiled_from_their_own_start(self):
        pool = write_gguf.RandomPool(seed=3)
        t = write_gguf.Tensor("blk.0.ffn_up_exps.weight", F16, [3, 1000, 1024], "matrix", None)  # 3M elements, ~3 pools
        data = np.frombuffer(b"".join(pool.chunks(t)()), dtype="<f2")
        self.assertEqual(data.size, 3 * 1000 * 1024)
        p, start = write_gguf.POOL_ELEMENTS, pool.start(t.name)
        self.assertNotEqual(start, pool.start("blk.1.ffn_up_exps.weight"))
        np.testing.assert_array_equal(data[:1000], data[p : p + 1000])
        np.testing.assert_array_equal(data[5], (pool.unit[start + 5] / 32).astype(np.float16))
        np.testing.assert_array_equal(data[p - start], (pool.unit[0] / 32).astype(np.float16))
        self.assertLessEqual(np.abs(data.astype(np.float32)).max(), 1 / 32)

    def test_threads_write_the_same_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "config.json")
            with open(config, "w") as f:
                json.dump(TINY_DEEPSEEK_V2, f)
            files = [os.path.join(tmp, f"{n}.gguf") for n in (1, 3)]
            for n, out in zip((1, 3), files):
                write_gguf.write_random_gguf(config, out, name="same", workers=n)
            with open(files[0], "rb") as a, open(files[1], "rb") as b:
                self.assertEqual(a.read(), b.read())

    def test_the_same_seed_gives_the_same_values(self):
        t = write_gguf.Tensor("output.weight", F16, [64, 64], "matrix", None)
        a, b, c = (b"".join(write_gguf.RandomPool(seed).chunks(t)()) for seed in (1, 1, 2))
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)


class MoeArchitecturesTest(unittest.TestCase):
    """Shrunk Qwen3-MoE and DeepSeek-V2, with random weights and converted from checkpoints."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.files, cls.values = {}, {}
        for name, config in (("qwen3moe", TINY_QWEN3_MOE), ("deepseek2", TINY_DEEPSEEK_V2)):
            directory = os.path.join(cls.tmp.name, f"tiny-{name}")
            cls.values[name] = make_hf_checkpoint(directory, config)
            cls.files[name] = {"random": os.path.join(cls.tmp.name, f"random-{name}.gguf"), "converted": os.path.join(cls.tmp.name, f"converted-{name}.gguf")}
            write_gguf.write_random_gguf(os.path.join(directory, "config.json"), cls.files[name]["random"], name=f"random-{name}")
            write_gguf.write_gguf(directory, cls.files[name]["converted"])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def configs(self):
        return (("qwen3moe", TINY_QWEN3_MOE), ("deepseek2", TINY_DEEPSEEK_V2))

    def test_keys_and_tensors(self):
        for arch, config in self.configs():
            for mode in ("random", "converted"):
                r = Reader(self.files[arch][mode])
                self.assertEqual(r.kv["general.architecture"], arch)
                self.assertEqual(r.kv["general.file_type"], 1)
                keys = {k: (r.kv_types[k], v) for k, v in r.kv.items() if not k.startswith(("general.", "tokenizer."))}
                expected = expected_keys(config)
                self.assertEqual(sorted(keys), sorted(expected), (arch, mode))
                for key, (kind, value) in expected.items():
                    self.assertEqual(keys[key][0], kind, key)
                    self.assertAlmostEqual(keys[key][1], value, places=6, msg=key) if kind == FLT else self.assertEqual(keys[key][1], value, key)
                self.assertEqual(len(r.kv["tokenizer.ggml.tokens"]), 1024)
                self.assertEqual({n: (dims, t) for n, (dims, t, _) in r.tensors.items()}, expected_tensors(config), (arch, mode))
                for name, (dims, ggml_type, offset) in r.tensors.items():
                    self.assertEqual(offset % 32, 0, name)

    def test_random_values(self):
        for arch, _ in self.configs():
            r = Reader(self.files[arch]["random"])
            self.assertEqual(r.kv["general.name"], f"random-{arch}")
            for name, (dims, _, _) in r.tensors.items():
                x = r.array(name).astype(np.float32)
                if len(dims) == 1:
                    np.testing.assert_array_equal(x, 1.0, name)
                else:
                    bound = 1 / math.sqrt(dims[0])  # fan_in: the row length
                    self.assertLessEqual(np.abs(x).max(), bound * (1 + 1e-3), name)
                    self.assertGreater(x.std(), bound / 2, name)  # uniform: std = bound / sqrt(3)

    def test_converted_experts_are_stacked_in_order(self):
        for arch, _ in self.configs():
            r, v = Reader(self.files[arch]["converted"]), self.values[arch]
            layer = 1  # sparse in both
            for proj, short in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
                stacked = r.array(f"blk.{layer}.ffn_{short}_exps.weight")
                for e in range(stacked.shape[0]):
                    np.testing.assert_array_equal(stacked[e], v[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"].astype(np.float16))
            np.testing.assert_array_equal(r.array(f"blk.{layer}.ffn_gate_inp.weight"), v[f"model.layers.{layer}.mlp.gate.weight"])
            # q and k as they are: llama.cpp ropes qwen3moe NeoX-style, and DeepSeek's rope dims are interleaved already.
            np.testing.assert_array_equal(r.array("blk.0.attn_q.weight"), v["model.layers.0.self_attn.q_proj.weight"].astype(np.float16))
            np.testing.assert_array_equal(r.array("output.weight"), v["lm_head.weight"].astype(np.float16))
        r, v = Reader(self.files["qwen3moe"]["converted"]), self.values["qwen3moe"]
        np.testing.assert_array_equal(r.array("blk.1.attn_k.weight"), v["model.layers.1.self_attn.k_proj.weight"].astype(np.float16))
        np.testing.assert_array_equal(r.array("blk.1.attn_q_norm.weight"), v["model.layers.1.self_attn.q_norm.weight"])

    def test_converted_kv_b_is_split_per_head(self):
        r, v, c = Reader(self.files["deepseek2"]["converted"]), self.values["deepseek2"], TINY_DEEPSEEK_V2
        heads, nope, lora = c["num_attention_heads"], c["qk_nope_head_dim"], c["kv_lora_rank"]
        kv_b = v["model.layers.2.self_attn.kv_b_proj.weight"].reshape(heads, -1, lora)
        k_b, v_b = r.array("blk.2.attn_k_b.weight"), r.array("blk.2.attn_v_b.weight")
        self.assertEqual((k_b.shape, v_b.shape), ((heads, lora, nope), (heads, c["v_head_dim"], lora)))
        for h in range(heads):
            np.testing.assert_array_equal(k_b[h], kv_b[h, :nope].T.astype(np.float16))
            np.testing.assert_array_equal(v_b[h], kv_b[h, nope:].astype(np.float16))
        np.testing.assert_array_equal(r.array("blk.0.ffn_down.weight"), v["model.layers.0.mlp.down_proj.weight"].astype(np.float16))
        np.testing.assert_array_equal(r.array("blk.1.ffn_up_shexp.weight"), v["model.layers.1.mlp.shared_experts.up_proj.weight"].astype(np.float16))
        np.testing.assert_array_equal(r.array("blk.1.attn_kv_a_norm.weight"), v["model.layers.1.self_attn.kv_a_layernorm.weight"])

    def test_gguf_py_reads_them_and_knows_every_name(self):
        gguf = gguf_py()
        if gguf is None:
            self.skipTest("set LLAMA_CPP_SRC to a llama.cpp checkout to check the files with its gguf-py")
        templates = {value for group in vars(gguf.Keys).values() if isinstance(group, type)
                     for value in vars(group).values() if isinstance(value, str) and "{arch}" in value}
        for arch, config in self.configs():
            model_arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
            layers = config["num_hidden_layers"]
            known = {gguf.TENSOR_NAMES[t].format(bid=i) + ".weight" for t in gguf.MODEL_TENSORS[model_arch] for i in range(layers)}
            hf_map = gguf.get_tensor_name_map(model_arch, layers)
            ours = Reader(self.files[arch]["converted"])
            for mode in ("random", "converted"):
                reader = gguf.GGUFReader(self.files[arch][mode])
                self.assertEqual(reader.fields["general.architecture"].contents(), arch)
                for key, field in reader.fields.items():
                    if key.startswith("GGUF.") or key.startswith(("general.", "tokenizer.")):
                        continue
                    self.assertIn(key, {t.replace("{arch}", arch) for t in templates}, f"{key} is not a gguf-py key")
                    self.assertEqual(field.types[0].value, ours.kv_types[key], key)
                for tensor in reader.tensors:
                    self.assertIn(tensor.name, known, f"{tensor.name} is not a {arch} tensor in gguf-py")
                    dims, ggml_type, _ = ours.tensors[tensor.name]
                    self.assertEqual((list(map(int, tensor.shape)), int(tensor.tensor_type)), (dims, ggml_type), tensor.name)
                    if mode == "converted":
                        self.assertEqual(tensor.data.shape, tuple(reversed(dims)))
            # The converter's own mapping from Hugging Face names: direct tensors, the merged
            # experts (model.layers.N.mlp.experts.PROJ.weight) and kv_b_proj's halves (k_b_proj, v_b_proj).
            hp = write_gguf.hyperparameters(config)
            for t in write_gguf.plan_tensors(config, hp):
                kind = t.source[0]
                if kind == "copy":
                    hf_name = t.source[1]
                elif kind == "stack":
                    hf_name = re.sub(r"\.experts\.0\.", ".experts.", t.source[1][0])
                else:
                    hf_name = t.source[1].replace("kv_b_proj", f"{t.source[2]}_b_proj")
                self.assertEqual(hf_map.get_name(hf_name, try_suffixes=(".weight",)), t.name, hf_name)

    def test_llama_cpp_loads_and_runs_them(self):
        bench = os.environ.get("LLAMA_BENCH")
        if not bench:
            self.skipTest("set LLAMA_BENCH to a llama-bench binary to check that llama.cpp loads the files")
        for arch, config in self.configs():
            for mode in ("random", "converted"):
                run = subprocess.run([bench, "-m", self.files[arch][mode], "-p", "32", "-n", "8", "-r", "1", "-o", "json"], capture_output=True, text=True, timeout=300)
                self.assertEqual(run.returncode, 0, run.stderr[-2000:])
                rows = json.loads(run.stdout)
                self.assertEqual([(r["n_prompt"], r["n_gen"]) for r in rows], [(32, 0), (0, 8)])
                self.assertEqual(rows[0]["model_n_params"], sum(math.prod(s) for s in hf_shapes(config).values()), (arch, mode))
                self.assertTrue(all(r["avg_ts"] > 0 for r in rows))


class FixtureParityTest(unittest.TestCase):
    """Keel's oracle fixtures (tiny random checkpoints with transformers' float32 logits),
    converted here and run by llama.cpp: F16 weights keep the logits within a few 1e-3."""

    def check(self, fixture):
        logits, fixtures = os.environ.get("LLAMA_LOGITS"), os.environ.get("KEEL_FIXTURES")
        if not logits or not fixtures:
            self.skipTest("set LLAMA_LOGITS (tools/peers/llama_logits.cpp built) and KEEL_FIXTURES (test/fixtures) to compare logits with transformers'")
        directory = os.path.join(fixtures, fixture)
        with open(os.path.join(directory, "oracle.json")) as f:
            oracle = json.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, f"{fixture}.gguf")
            write_gguf.write_gguf(directory, out)
            run = subprocess.run([logits, out, *(",".join(map(str, p)) for p in oracle["prompts"])], capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        for got, want in zip(json.loads(run.stdout), oracle["last_logits"]):
            got, want = np.array(got), np.array(want)
            self.assertLess(np.abs(got - want).max(), 0.02, fixture)
            self.assertEqual(got.argmax(), want.argmax(), fixture)

    def test_llama_gqa(self):
        self.check("llama-gqa")

    def test_deepseek_v2_lite(self):
        # MLA without q LoRA, 3 layers (q_lora_rank 0 written), YaRN with mscale, routed scale 1.5, a shared expert.
        self.check("deepseek-v2-lite")


if __name__ == "__main__":
    unittest.main()
