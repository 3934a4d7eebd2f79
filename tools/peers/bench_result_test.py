"""Tests for bench_result.py's llama.cpp parts (standard library only):

    python3 tools/peers/bench_result_test.py

(test/bench/result-schema.test.ts checks the results it writes against Keel's schema.)
"""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_result  # noqa: E402


def config(path):
    with open(path) as f:
        return json.load(f)


class ParameterCountTest(unittest.TestCase):
    def test_moe_configs_count_every_expert(self):
        # The Hub's safetensors of Qwen3-30B-A3B and DeepSeek-V2-Lite hold these many values.
        self.assertEqual(bench_result.parameter_count(config(os.path.join(HERE, "testdata", "qwen3-30b-a3b.config.json"))), 30_532_122_624)
        self.assertEqual(bench_result.parameter_count(config(os.path.join(HERE, "testdata", "deepseek-v2-lite.config.json"))), 15_706_484_224)

    def test_dense_configs_are_unchanged(self):
        root = os.path.join(HERE, "..", "..", "bench", "configs")
        self.assertEqual(bench_result.parameter_count(config(os.path.join(root, "llama-3.1-8b", "config.json"))), 8_030_261_248)
        self.assertEqual(bench_result.parameter_count(config(os.path.join(root, "qwen3-0.6b", "config.json"))), 596_049_920)

    def test_dense_layers_and_q_lora(self):
        qwen = config(os.path.join(HERE, "testdata", "qwen3-30b-a3b.config.json"))
        sparse = bench_result._qwen3_moe_layer(qwen, 0)
        dense = bench_result._qwen3_moe_layer(dict(qwen, mlp_only_layers=[0]), 0)
        self.assertEqual(sparse - dense, 128 * 2048 + 128 * 3 * 2048 * 768 - 3 * 2048 * 6144)
        deepseek = config(os.path.join(HERE, "testdata", "deepseek-v2-lite.config.json"))
        with_lora = bench_result._deepseek_v2_layer(dict(deepseek, q_lora_rank=1536), 1)
        without = bench_result._deepseek_v2_layer(deepseek, 1)
        self.assertEqual(with_lora - without, 1536 * 2048 + 1536 + 16 * 192 * 1536 - 16 * 192 * 2048)


class BatchedBenchTest(unittest.TestCase):
    def test_rows_become_runs(self):
        row = {"pp": 128, "tg": 128, "pl": 64, "n_kv": 16384, "t_pp": 0.5, "speed_pp": 16384.0, "t_tg": 1.28, "speed_tg": 6400.0, "t": 1.78, "speed": 9204.5}
        [run] = bench_result.batched_bench_runs([row])
        self.assertEqual((run["sequences"], run["prompt_tokens"], run["generated_tokens"], run["kv_tokens"]), (64, 128, 128, 16384))
        self.assertAlmostEqual(run["decode_ms_per_step"], 10.0)
        self.assertEqual(run["decode_tokens_per_s"], 6400.0)

    def test_requested_lists(self):
        args = "-npp 128 -ntg 128 -npl 1,64 -fa on"
        self.assertEqual([bench_result._int_list(args, f) for f in ("-npp", "-ntg", "-npl")], [[128], [128], [1, 64]])
        self.assertIsNone(bench_result._int_list(args, "-c"))


if __name__ == "__main__":
    unittest.main()
