#!/usr/bin/env python3
"""Recovery fine-tune of a 2:4-pruned checkpoint (one `keel prune` wrote), its sparsity mask fixed.

Usage:
    python3 tools/train/recover_sparse.py --model PRUNED_DIR --output DIR \
        [--loss kl --teacher DENSE_DIR | --loss ce] [--steps 40] [--batch-size 8] [--seq-len 256]

Pruning zeroes half of every attention and MLP projection and leaves the model's other weights
as training left them; a short fine-tune lets the kept weights (and the dense ones: embeddings,
norms) adapt to the loss. Every weight the checkpoint's `sparsity_config` names keeps its zeros
exactly: their gradients are masked before the optimizer step and the mask is applied again after
it, so the output is as 2:4 sparse as the input, position for position.

Data: the default model's own recipe (train_default_model.py's corpus of permissively licensed
Python source of the installed packages, its held-out files kept out), capped at --corpus-mb
and tokenized with the checkpoint's tokenizer. Loss `ce`: next-token cross-entropy on it; loss
`kl`: KL(teacher || student) against the dense model's logits on the same windows.

Given a dense checkpoint (no sparsity declared), it fine-tunes every weight unmasked: the control
that tells what the pruned model recovers from what the data alone changes.

Output: a checkpoint in keel prune's layout (model.safetensors in the input's dtypes,
config.json with its sparsity declaration, the tokenizer files), read back and checked 2:4 in
every pruned weight, and recovery_log.json (steps, seconds, held-out loss before and after).
Runs on CUDA when torch sees a GPU, else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The default model's corpus, sampler and optimizer, so the fine-tune sees data made as its training data was.
from train_default_model import (  # noqa: E402
    EOT,
    WindowSampler,
    assign_split,
    collect_corpus,
    encode_documents,
    fixed_windows,
    lr_at,
    make_optimizer,
)

# Files keel prune copies beside the weights (src/checkpoint/write-model-directory.ts).
COPIED_FILES = re.compile(r"^(tokenizer|special_tokens_map|generation_config|chat_template|vocab|merges|added_tokens)")
GRAD_CLIP = 1.0
LOG_EVERY = 10


def log(msg: str) -> None:
    print(msg, flush=True)


def read_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"{model_dir} holds no *.safetensors weights")
    tensors = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return tensors


def sparsity_targets(config: dict, source: Path) -> list[str]:
    """The weight names the checkpoint declares 2:4 (keel prune lists module names); none for a
    plain 16-bit checkpoint, which is fine-tuned unmasked as the control run (docs/sparsity.md)."""
    quantization = config.get("quantization_config")
    if quantization is None:
        return []
    sparsity = quantization.get("sparsity_config") or {}
    if sparsity.get("sparsity_structure") != "2:4" or sparsity.get("format", "dense") != "dense" \
            or quantization.get("config_groups"):
        raise SystemExit(f"{source}/config.json declares quantization, not 2:4 sparsity stored dense: "
                         "fine-tune a checkpoint `keel prune --pattern 2:4` wrote")
    targets = sparsity.get("targets") or []
    if not targets or any(t == "Linear" or t.startswith("re:") for t in targets):
        raise SystemExit(f"{source}: sparsity_config.targets must list module names, as keel prune writes them "
                         f"(got {targets[:3]})")
    return [f"{t}.weight" for t in targets]


def check_2of4(name: str, w: torch.Tensor) -> None:
    groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
    if int(groups.max()) > 2:
        row, group = (groups > 2).nonzero()[0].tolist()
        raise SystemExit(f"{name} is not 2:4 sparse: row {row}, columns {group * 4}..{group * 4 + 3} hold "
                         f"{int(groups[row, group])} non-zeros")


def load_model(model_dir: Path, device: torch.device):
    """The checkpoint as a float32 transformers model. Its compressed-tensors declaration is left
    out of the config: the weights are plain dense tensors, and transformers would otherwise want
    the compressed-tensors package to read them."""
    config = json.loads((model_dir / "config.json").read_text())
    plain = {k: v for k, v in config.items() if k != "quantization_config"}
    hf_config = AutoConfig.for_model(**plain)
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa").float()
    tensors = read_checkpoint(model_dir)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if hf_config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise SystemExit(f"{model_dir}: weights do not match the config (missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    return model.to(device), config, tensors


def corpus_tokens(tokenizer_file: Path, corpus_mb: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    docs, *_ = collect_corpus(int(corpus_mb * 1e6), seed)
    if not docs:
        raise SystemExit("no permissively licensed Python source is installed to fine-tune on")
    # The held-out files are assign_split's: the default model's held-out bucket, topped up for a
    # corpus this small with files of the next buckets, which that model did train on. The fine-tune
    # never samples them; keel perplexity on text neither saw is the measure that counts.
    assign_split(docs)
    tok = Tokenizer.from_file(str(tokenizer_file))
    eot = tok.token_to_id(EOT)
    train = encode_documents(tok, [d.text for d in docs if d.split == "train"], eot)
    val = encode_documents(tok, [d.text for d in docs if d.split == "val"], eot)
    return train, val


def autocast(device: torch.device):
    # bf16 autocast on CUDA as the default model was trained; the CPU runs float32, which it does faster.
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def logits_of(model, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        return model(input_ids=inputs, use_cache=False).logits.float()


@torch.no_grad()
def held_out_loss(model, windows: torch.Tensor, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for part in windows.split(4):
        part = part.to(device)
        logits = logits_of(model, part[:, :-1], device)
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), part[:, 1:].reshape(-1), reduction="sum"))
    model.train(was_training)
    return total / windows[:, 1:].numel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="a 2:4 checkpoint keel prune wrote (a dense one is fine-tuned unmasked: the control)")
    parser.add_argument("--output", required=True, type=Path, help="where the fine-tuned checkpoint goes")
    parser.add_argument("--loss", choices=["ce", "kl"], default="kl",
                        help="ce: next-token cross-entropy; kl: distillation from --teacher's logits (default)")
    parser.add_argument("--teacher", type=Path, help="the dense model the checkpoint was pruned from (--loss kl)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (warmup, cosine decay to 10%%)")
    parser.add_argument("--corpus-mb", type=float, default=2.0, help="MB of installed Python source to draw from")
    parser.add_argument("--val-windows", type=int, default=16, help="held-out windows scored before and after")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.loss == "kl" and args.teacher is None:
        parser.error("--loss kl distills from the dense model: give it as --teacher DIR")
    if args.output.resolve() == args.model.resolve():
        parser.error("--output must be a new directory, not the model directory")

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    student, config, stored = load_model(args.model, device)
    targets = sparsity_targets(config, args.model)
    params = dict(student.named_parameters())
    masks = {}
    for name in targets:
        if name not in params:
            raise SystemExit(f"{args.model}: sparsity_config names {name[:-len('.weight')]}, which the model lacks")
        check_2of4(name, params[name].data)
        masks[name] = (params[name].data != 0).to(params[name].dtype)
        params[name].register_hook(lambda grad, mask=masks[name]: grad * mask)
    teacher = None
    if args.loss == "kl":
        teacher, _, _ = load_model(args.teacher, device)
        teacher.eval().requires_grad_(False)

    train_tokens, val_tokens = corpus_tokens(args.model / "tokenizer.json", args.corpus_mb, args.seed)
    sampler = WindowSampler(train_tokens, args.seq_len, device, seed=args.seed)
    val_windows = fixed_windows(val_tokens, args.val_windows, args.seq_len, seed=1)
    log(f"{device.type}: {len(masks)} 2:4 weights; corpus {len(train_tokens):,} train / {len(val_tokens):,} "
        f"held-out tokens; {args.steps} steps of {args.batch_size} x {args.seq_len} tokens, loss {args.loss}")
    val_before = held_out_loss(student, val_windows, device)
    val_teacher = None if teacher is None else held_out_loss(teacher, val_windows, device)
    log(f"held-out loss before {val_before:.4f} (ppl {math.exp(val_before):.2f})"
        + ("" if val_teacher is None else f"; the dense teacher's {val_teacher:.4f} (ppl {math.exp(val_teacher):.2f})"))

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        inputs = batch[:, :-1]
        logits = logits_of(student, inputs, device).reshape(-1, student.config.vocab_size)
        if teacher is None:
            return F.cross_entropy(logits, batch[:, 1:].reshape(-1))
        with torch.no_grad():
            teacher_logp = F.log_softmax(logits_of(teacher, inputs, device).reshape(-1, logits.size(-1)), dim=-1)
        return F.kl_div(F.log_softmax(logits, dim=-1), teacher_logp, log_target=True, reduction="batchmean")

    student.train()
    optimizer = make_optimizer(student, args.lr, device)
    warmup = max(1, args.steps // 10)
    history = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, warmup, args.lr)
        loss = loss_of(sampler.sample(args.batch_size))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # Masked gradients already keep a pruned weight's Adam update at zero; the mask makes it certain.
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
        history.append(round(float(loss.detach()), 5))
        if (step + 1) % LOG_EVERY == 0 or step + 1 == args.steps:
            log(f"step {step + 1:5d} | loss {np.mean(history[-LOG_EVERY:]):.4f} | {time.perf_counter() - t0:6.1f}s")
    train_seconds = time.perf_counter() - t0
    val_after = held_out_loss(student, val_windows, device)
    log(f"held-out loss after {val_after:.4f} (ppl {math.exp(val_after):.2f}); {args.steps} steps in {train_seconds:.0f}s")

    write_checkpoint(student, stored, targets, args.model, args.output)
    report = {
        "command": "python3 " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU",
        "threads": torch.get_num_threads(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "corpus_tokens": {"train": int(len(train_tokens)), "held_out": int(len(val_tokens))},
        "steps": args.steps,
        "tokens_seen": args.steps * args.batch_size * args.seq_len,
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "held_out_loss_before": round(val_before, 5),
        "held_out_loss_after": round(val_after, 5),
        "teacher_held_out_loss": None if val_teacher is None else round(val_teacher, 5),
        "train_loss": history,
    }
    (args.output / "recovery_log.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {args.output}")
    return 0


def write_checkpoint(model, stored: dict[str, torch.Tensor], targets: list[str], source: Path, output: Path) -> None:
    """keel prune's layout: the input's tensor names and dtypes in one model.safetensors, its
    config.json (the sparsity declaration with it) and tokenizer files copied; then the written
    weights are read back and every declared one checked 2:4."""
    if output.exists():
        shutil.rmtree(output)  # stale shards would be picked up by loaders
    output.mkdir(parents=True)
    state = model.state_dict()
    tensors = {name: state[name].detach().to("cpu", t.dtype).contiguous() for name, t in stored.items()}
    save_file(tensors, str(output / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(source / "config.json", output / "config.json")
    for file in source.iterdir():
        if COPIED_FILES.match(file.name):
            shutil.copyfile(file, output / file.name)
    written = read_checkpoint(output)
    for name in targets:
        check_2of4(name, written[name])
        if bool(written[name][stored[name] == 0].any()):
            raise SystemExit(f"{name}: a weight pruned to zero is no longer zero")


if __name__ == "__main__":
    sys.exit(main())
