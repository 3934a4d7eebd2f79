#!/usr/bin/env python3
"""Write a random-weight Hugging Face checkpoint of a bench config, with another model's tokenizer.

The bench configs (bench/configs/*) hold config.json only: `keel bench` makes their dummy weights
in memory. Commands that read a checkpoint from disk (`keel quantize`, `keel perplexity`) need
one: this builds the config's model in transformers with its own random initialization (bf16,
on the GPU when there is one), with the vocabulary of the tokenizer taken (its tokenizer files
copied), and saves it.

Usage:
    python3 tools/oracle/random_checkpoint.py CONFIG_DIR OUT_DIR --tokenizer MODEL_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--tokenizer", required=True, help="model directory whose tokenizer files are copied")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer_dir = Path(args.tokenizer)
    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    config = AutoConfig.from_pretrained(args.config_dir)
    config.vocab_size = vocab
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, key, getattr(AutoConfig.from_pretrained(tokenizer_dir), key, None))
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    out = Path(args.out_dir)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {params / 1e9:.2f}B parameters, vocabulary {vocab}")


if __name__ == "__main__":
    main()
