"""Tests for write_gguf.py (numpy only):

    python3 tools/peers/write_gguf_test.py

A tiny random Llama checkpoint (bf16 safetensors, written here) is converted, read back with
a minimal GGUF reader and checked field by field. With LLAMA_BENCH=/path/to/llama-bench set,
llama.cpp itself also loads the file and runs a short pp/tg benchmark on it (a CPU build is
enough): the check that matters, since the reader here shares the writer's reading of the spec.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

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
        with self.assertRaisesRegex(write_gguf.ConversionError, "unexpected tensor"):
            write_gguf.gguf_name("model.layers.0.self_attn.q_proj.bias", 2)
        with self.assertRaisesRegex(write_gguf.ConversionError, "too small"):
            write_gguf.vocabulary({}, 200)

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


if __name__ == "__main__":
    unittest.main()
