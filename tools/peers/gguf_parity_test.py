"""Tests for gguf_parity.py's judgement of a continuation (standard library only):

    python3 tools/peers/gguf_parity_test.py
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_parity  # noqa: E402


def step(token, keel_top, llama_argmax, llama_of_token, candidates):
    """One step: Keel's token and top [id, logprob] pairs; llama.cpp's argmax and logits."""
    return token, keel_top, {"argmax": llama_argmax, "other": [token, llama_of_token], "candidates": candidates}


def judge(steps, greedy=None, tolerance=0.25):
    tokens = [s[0] for s in steps]
    keel = {"tokens": tokens, "top": [s[1] for s in steps]}
    llama = {"scored": [s[2] for s in steps], "greedy": greedy or tokens, "greedy_top2": [[[t, 1.0], [0, 0.5]] for t in tokens]}
    return gguf_parity.compare_prompt([1, 2, 3], keel, llama, tolerance)


class ComparePrompt(unittest.TestCase):
    def test_agreement_and_the_relative_logit_error(self):
        # Keel: 5 above 6 by 0.5; llama.cpp: by 0.45 -> error 0.05.
        r = judge([step(5, [[5, -1.0], [6, -1.5]], [5, 3.0], 3.0, [[5, 3.0], [6, 2.55]])])
        self.assertTrue(r["passed"])
        self.assertEqual(r["steps_agreeing"], 1)
        self.assertAlmostEqual(r["max_relative_logit_error"], 0.05)
        self.assertEqual(r["identical_greedy_prefix"], 1)

    def test_a_near_tie_passes_and_a_clear_difference_fails(self):
        tie = step(5, [[5, -1.0], [6, -1.1]], [6, 3.05], 3.0, [[5, 3.0], [6, 3.05]])
        self.assertTrue(judge([tie])["passed"])
        self.assertEqual(judge([tie])["disagreements"][0]["llama_cpp_token"], 6)
        apart = step(5, [[5, -1.0], [6, -1.1]], [6, 4.0], 3.0, [[5, 3.0], [6, 4.0]])
        self.assertFalse(judge([apart])["passed"])

    def test_a_choice_keel_does_not_list_is_no_near_tie(self):
        unlisted = step(5, [[5, -1.0], [6, -1.05]], [9, 3.01], 3.0, [[5, 3.0], [6, 2.95]])
        r = judge([unlisted])
        self.assertFalse(r["passed"])
        self.assertFalse(r["disagreements"][0]["keel_lists_llama_cpp_token"])

    def test_identical_prefix_counts_until_the_first_difference(self):
        steps = [step(t, [[t, -1.0]], [t, 1.0], 1.0, []) for t in (4, 5, 6)]
        self.assertEqual(judge(steps, greedy=[4, 5, 7])["identical_greedy_prefix"], 2)

    def test_mismatched_lengths_are_an_error(self):
        keel = {"tokens": [1, 2], "top": [[[1, -1.0]], [[2, -1.0]]]}
        with self.assertRaises(ValueError):
            gguf_parity.compare_prompt([0], keel, {"scored": [], "greedy": [], "greedy_top2": []}, 0.25)


if __name__ == "__main__":
    unittest.main()
