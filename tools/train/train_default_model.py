#!/usr/bin/env python3
"""Train Keel's embedded default model family: keel-tiny and its speculative draft.

Usage:
    python3 tools/train/train_default_model.py --out DIR --target-seconds 330 \
        --draft-seconds 100 [--corpus-mb 120]

Everything is derived from what is installed on the machine that runs it, with no network:

1. corpus     Python source of installed distributions under permissive licences
              (MIT, BSD, Apache-2.0, PSF, ISC), ~1% of files held out for validation;
2. tokenizer  byte-level BPE with 8192 tokens trained on the training split;
3. keel-tiny  ~9.4M-parameter Llama trained from scratch for --target-seconds;
4. draft      ~1.4M-parameter Llama distilled from keel-tiny's logits for --draft-seconds;
5. save       both in bfloat16 safetensors with tokenizer and generation config;
6. oracle     transformers' CPU/float32 reference outputs for Keel's parity tests;
7. card       README.md model cards and train_log.json written from this run's numbers.

Outputs: DIR/keel-tiny/, DIR/keel-tiny-draft/, DIR/train_log.json.
"""

from __future__ import annotations

import os

# No network on the training host: make Hugging Face libraries fail fast, never retry.
# Must be set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "oracle"))
from greedy_reference import greedy_with_cache, load_fp32, top_logprobs  # noqa: E402

# --------------------------------------------------------------------------------------
# Fixed choices

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOT, "<|user|>", "<|assistant|>", "<|system|>", PAD]
VOCAB_SIZE = 8192
MAX_POSITIONS = 2048
MAX_FILE_BYTES = 200 * 1024
MIN_VAL_FILES = 8
MIN_VAL_BYTES = 256 * 1024  # comfortably more than 64 windows of 513 tokens

TARGET_ARCH = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=4,
                   num_attention_heads=6, num_key_value_heads=2)
DRAFT_ARCH = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)

# Role markers are single special tokens; each turn is "<|role|>\n{content}\n" and an
# assistant turn is closed by <|endoftext|>, the token generation stops on. Jinja string
# literals decode "\n" escapes, hence the doubled backslashes in the Python source.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{{ '<|endoftext|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

ORACLE_PROMPTS = [
    "def fibonacci(n):",
    "import numpy as np\n",
    "class Stack:\n    def __init__(self):",
    "# Compute the mean of a list\ndef mean(xs):",
]
ORACLE_MAX_NEW_TOKENS = 32

TOKENIZER_CASES = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i)\n",
    "héllo wörld",
    "你好，世界",
    "🙂👍🏽",
    "    four spaces, then        eight, then trailing   ",
    "tabs\tand\nnewlines\r\n\n\nend",
    "",
    "x = {'a': 1, \"b\": [2.5, -3e-4]}  # comment ~!@#$%^&*()_+`",
    "<|endoftext|>",
    "a<|user|>b<|assistant|>c<|system|>d<|pad|>e<|endoftext|>",
    "Ünïcödé ß ∑ λ → ∞ ½ 𝔘",
]
CHAT_EXAMPLE = [
    {"role": "system", "content": "You are Keel, a small code-completion model."},
    {"role": "user", "content": "Write a function that adds two numbers."},
]

# Training schedule details not exposed as flags.
CALIBRATE_FROM, CALIBRATE_TO = 5, 25  # steps timed to estimate the total (after compile)
LOG_EVERY, EVAL_EVERY = 50, 500
VAL_WINDOWS = 64
MIN_LR_RATIO = 0.1
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.1
TARGET_PEAK_LR, TARGET_WARMUP = 2e-3, 200
DRAFT_PEAK_LR, DRAFT_WARMUP = 3e-3, 100  # a smaller model tolerates a higher rate


def log(msg: str) -> None:
    print(msg, flush=True)


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


# --------------------------------------------------------------------------------------
# 1. Corpus: licence filter


# MIT-* and BSD-* cover the family variants (MIT-0, MIT-CMU, BSD-3-Clause, ...).
_PERMISSIVE_SPDX = re.compile(
    r"^(MIT(-[0-9A-Za-z.-]+)?|0BSD|BSD-[0-9A-Za-z.-]+|Apache-2\.0|PSF-2\.0|Python-2\.0(\.1)?|ISC)$", re.IGNORECASE)
# Permissive notices that commonly ride along with a main permissive licence (numpy, for
# instance, declares "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0"). They never make
# a package acceptable on their own.
_COMPATIBLE_SPDX = {"zlib", "cc0-1.0", "unlicense", "hpnd", "cnri-python", "unicode-dfs-2016",
                    "unicode-3.0", "bsl-1.0", "x11", "ncsa", "python-2.0"}
_PERMISSIVE_CLASSIFIERS = {
    "MIT License", "MIT No Attribution License (MIT-0)", "BSD License", "Apache Software License",
    "Python Software Foundation License", "ISC License (ISCL)",
}
_NEUTRAL_CLASSIFIERS = {
    "OSI Approved", "DFSG approved", "Public Domain", "The Unlicense (Unlicense)", "zlib/libpng License",
    "Historical Permission Notice and Disclaimer (HPND)", "Boost Software License 1.0 (BSL-1.0)",
    "University of Illinois/NCSA Open Source License",
}
_RESTRICTIVE_WORDS = re.compile(
    r"gpl|\bmpl\b|mozilla|\beupl\b|\bcddl\b|\bepl\b|proprietary|commercial|copyleft|nvidia", re.IGNORECASE)
_PERMISSIVE_WORDS = re.compile(
    r"\bmit\b|\bbsd\b|apache|\bpsf\b|python software foundation|\bisc\b", re.IGNORECASE)


def _spdx_ids(expr: str) -> list[str]:
    return [t for t in re.findall(r"[A-Za-z0-9.+-]+", expr) if t.upper() not in {"AND", "OR", "WITH"}]


def _spdx_conjunction_ok(ids: list[str]) -> bool:
    has_permissive = False
    for ident in ids:
        if ident.lower().endswith("-exception"):
            continue  # e.g. "Apache-2.0 WITH LLVM-exception" only adds permissions
        if _PERMISSIVE_SPDX.match(ident):
            has_permissive = True
        elif ident.lower() not in _COMPATIBLE_SPDX:
            return False
    return has_permissive


def spdx_acceptable(expr: str) -> bool:
    if "(" in expr:
        # Nested expressions are rare here; read them strictly: every identifier must pass.
        return _spdx_conjunction_ok(_spdx_ids(expr))
    # Each OR branch is an alternative grant: one acceptable branch is enough.
    return any(_spdx_conjunction_ok(_spdx_ids(branch)) for branch in re.split(r"\s+OR\s+", expr, flags=re.I))


def classify_license(meta) -> tuple[bool, str, str]:
    """(accepted, licence as declared, which metadata decided it)."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return spdx_acceptable(expr), expr, "License-Expression"

    leaves = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    informative = [leaf for leaf in leaves if leaf not in _NEUTRAL_CLASSIFIERS]
    if informative:
        # Several licence classifiers usually mean dual licensing, but they can also list
        # bundled code; require all of them to be permissive to stay on the safe side.
        ok = all(leaf in _PERMISSIVE_CLASSIFIERS for leaf in informative)
        return ok, "; ".join(informative), "classifiers"

    text = (meta.get("License") or "").strip()
    first = text.splitlines()[0].strip() if text else ""
    if not first:
        return False, "(none declared)", "none"
    shown = first if len(first) <= 80 else first[:77] + "..."
    if len(first) > 100:
        return False, shown, "License (unrecognised long text)"
    if _RESTRICTIVE_WORDS.search(first) or re.search(r"apache.*\b1\.[01]\b", first, re.I):
        return False, shown, "License"
    if _PERMISSIVE_WORDS.search(first) or spdx_acceptable(first):
        return True, shown, "License"
    return False, shown, "License (unrecognised)"


# --------------------------------------------------------------------------------------
# 1. Corpus: files


@dataclass
class Doc:
    key: str  # "<package>/<path inside the distribution>", stable across machines
    package: str
    text: str
    nbytes: int
    bucket: int = 0
    split: str = "train"


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def collect_corpus(cap_bytes: int, seed: int):
    packages: dict[str, dict] = {}
    rejected: dict[str, dict] = {}
    candidates = []
    seen_paths = set()
    for dist in metadata.distributions():
        try:
            meta = dist.metadata
            name = meta.get("Name")
        except Exception:  # noqa: BLE001 - a broken dist-info must not stop the run
            continue
        if not name:
            continue
        norm = _norm_name(name)
        if norm in packages or norm in rejected:
            continue  # the same distribution seen through a second sys.path entry
        ok, licence, source = classify_license(meta)
        if not ok:
            rejected[norm] = {"name": name, "version": dist.version, "license": licence, "decided_by": source}
            continue
        packages[norm] = {"name": name, "version": dist.version, "license": licence, "decided_by": source,
                          "files": 0, "bytes": 0}
        for rel in dist.files or []:
            if rel.suffix != ".py" or ".." in rel.parts:
                continue  # ".." entries are scripts installed outside site-packages
            path = Path(dist.locate_file(rel))
            try:
                real = path.resolve()
                size = real.stat().st_size
            except OSError:
                continue
            if real in seen_paths or not real.is_file() or size == 0 or size > MAX_FILE_BYTES:
                continue
            seen_paths.add(real)
            candidates.append((f"{norm}/{rel.as_posix()}", norm, real))

    # Sort first so the shuffle depends only on what is installed, not on directory order.
    candidates.sort(key=lambda c: c[0])
    random.Random(seed).shuffle(candidates)

    docs: list[Doc] = []
    skipped = collections.Counter()
    total = 0
    for key, norm, path in candidates:
        if total >= cap_bytes:
            skipped["over --corpus-mb cap"] += 1
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped["not utf-8"] += 1
            continue
        except OSError:
            skipped["unreadable"] += 1
            continue
        text = text.replace("\r\n", "\n")
        if not text.strip():
            skipped["blank"] += 1
            continue
        if "\x00" in text:
            skipped["contains NUL"] += 1
            continue
        # Tokenizer code quotes these strings; encoded as text they would turn into the real
        # control tokens and teach the model to emit them mid-document.
        if any(tok in text for tok in SPECIAL_TOKENS):
            skipped["contains a special-token string"] += 1
            continue
        nbytes = len(text.encode("utf-8"))
        docs.append(Doc(key=key, package=norm, text=text, nbytes=nbytes))
        packages[norm]["files"] += 1
        packages[norm]["bytes"] += nbytes
        total += nbytes
    return docs, packages, rejected, dict(skipped), len(candidates)


def assign_split(docs: list[Doc]) -> None:
    """Hold out files (not windows) whose key hashes to bucket 0 of 100, ~1%."""
    for doc in docs:
        doc.bucket = int(hashlib.sha1(doc.key.encode("utf-8")).hexdigest(), 16) % 100
        doc.split = "val" if doc.bucket == 0 else "train"
    val = [d for d in docs if d.split == "val"]
    val_bytes = sum(d.nbytes for d in val)
    if len(val) >= MIN_VAL_FILES and val_bytes >= MIN_VAL_BYTES:
        return
    # Small corpora: top the split up from the next buckets, deterministically, but never
    # take more than a fifth of the files.
    limit = max(1, len(docs) // 5)
    for doc in sorted((d for d in docs if d.split == "train"), key=lambda d: (d.bucket, d.key)):
        if (len(val) >= MIN_VAL_FILES and val_bytes >= MIN_VAL_BYTES) or len(val) >= limit:
            break
        doc.split = "val"
        val.append(doc)
        val_bytes += doc.nbytes


# --------------------------------------------------------------------------------------
# 2. Tokenizer


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Adds no tokens; it only keeps offsets byte-level-consistent. No BOS is ever added.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer=trainer, length=len(texts))
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise RuntimeError(f"special token {token!r} got id {tok.token_to_id(token)}, expected {expected_id}")
    if tok.get_vocab_size(with_added_tokens=True) > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens > {VOCAB_SIZE}")
    return tok


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=MAX_POSITIONS,
        # Decoding must return the exact source text; the legacy clean-up rewrites " ." etc.
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    probe = "def f(x):\n    return x  # é"
    with_special = hf_tok(probe)["input_ids"]
    plain = tok.encode(probe, add_special_tokens=False).ids
    if with_special != plain:
        raise RuntimeError(f"tokenizer adds tokens by default: {with_special} vs {plain}")
    if hf_tok.decode(plain) != probe:
        raise RuntimeError("tokenizer does not round-trip text")
    return hf_tok


def encode_documents(tok: Tokenizer, texts: list[str], eot_id: int) -> np.ndarray:
    """Token ids of all documents, each followed by <|endoftext|>, as one uint16 array."""
    encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch  # fast: skips offsets
    eot = np.array([eot_id], dtype=np.uint16)
    parts = []
    for start in range(0, len(texts), 4096):
        for enc in encode(texts[start:start + 4096], add_special_tokens=False):
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
            parts.append(eot)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def save_tokenizer(hf_tok: PreTrainedTokenizerFast, out_dir: Path) -> None:
    hf_tok.save_pretrained(out_dir)
    if not (out_dir / "tokenizer.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no tokenizer.json in {out_dir}")
    # transformers 5 stores the template in chat_template.jinja; engines that only read
    # tokenizer_config.json (the older convention) need it there too.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    if cfg.get("chat_template") != CHAT_TEMPLATE:
        cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------
# 3/4. Models and training


def llama_config(arch: dict, eot_id: int, pad_id: int) -> LlamaConfig:
    fields = dict(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=pad_id,
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
        **arch,
    )
    # transformers 5 spells RoPE settings as rope_parameters; 4.x as rope_theta.
    declared = getattr(LlamaConfig, "__dataclass_fields__", {}) or inspect.signature(LlamaConfig.__init__).parameters
    if "rope_parameters" in declared:
        return LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **fields)
    return LlamaConfig(rope_theta=10000.0, **fields)


def build_model(config: LlamaConfig, attn_implementation: str):
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation).float()
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        model.tie_weights()
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError("lm_head is not tied to the input embedding")
    return model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def make_optimizer(model, lr: float, device: torch.device):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    if device.type == "cuda":
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, total: int | None, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


class WindowSampler:
    """Random (seq_len + 1)-token windows drawn from a token array kept on the device."""

    def __init__(self, tokens: np.ndarray, seq_len: int, device: torch.device, seed: int):
        if len(tokens) < seq_len + 2:
            raise RuntimeError(f"only {len(tokens)} training tokens for windows of {seq_len + 1}")
        self.data = torch.from_numpy(tokens.astype(np.int64)).to(device)
        self.offsets = torch.arange(seq_len + 1, device=device)
        self.high = len(tokens) - seq_len - 1
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def sample(self, batch: int) -> torch.Tensor:
        starts = torch.randint(0, self.high, (batch,), device=self.device, generator=self.gen)
        return self.data[starts[:, None] + self.offsets]


def fixed_windows(tokens: np.ndarray, count: int, seq_len: int, seed: int) -> torch.Tensor:
    if len(tokens) < seq_len + 2:
        raise RuntimeError(f"validation split has only {len(tokens)} tokens; need > {seq_len + 1}")
    starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len - 1, size=count)
    return torch.from_numpy(np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64))


class Runner:
    """The model's forward, through torch.compile when that works, eagerly otherwise."""

    def __init__(self, model, want_compile: bool, label: str):
        self.model = model
        self.fn = model
        self.compiled = False
        self.label = label
        if want_compile:
            try:
                self.fn = torch.compile(model)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001
                log(f"[{label}] torch.compile unavailable ({type(exc).__name__}: {exc}); using eager mode")

    def fall_back(self, exc: BaseException) -> None:
        log(f"[{self.label}] torch.compile failed at run time ({type(exc).__name__}: {str(exc)[:300]}); "
            "continuing in eager mode")
        self.fn = self.model
        self.compiled = False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_training(*, label, model, loss_fn, sampler, batch_size, seq_len, budget_s, peak_lr, warmup,
                   device, want_compile, eval_fn) -> dict:
    """AdamW with warmup and cosine decay to 10%, stopped by wall-clock time.

    The cosine needs a total step count: it is estimated from steps CALIBRATE_FROM..TO
    (after any compilation) and re-estimated at every log line from the measured pace,
    evaluations included, so the decay ends close to the deadline.
    """
    model.train()
    opt = make_optimizer(model, peak_lr, device)
    runner = Runner(model, want_compile, label)
    params = [p for p in model.parameters() if p.requires_grad]
    tokens_per_step = batch_size * seq_len
    recent = collections.deque(maxlen=LOG_EVERY)
    history, evals = [], []
    total_steps = None
    step = 0
    t0 = time.perf_counter()
    t_cal_from = t_cal_to = None
    grad_norm = torch.zeros(())

    def forward_backward(batch):
        loss = loss_fn(runner.fn, batch)
        loss.backward()
        return loss

    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s or (total_steps is not None and step >= total_steps):
            break
        lr = lr_at(step, total_steps, warmup, peak_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sampler.sample(batch_size)
        try:
            loss = forward_backward(batch)
        except Exception as exc:  # noqa: BLE001 - compile errors surface on first use
            if not runner.compiled:
                raise
            runner.fall_back(exc)
            opt.zero_grad(set_to_none=True)
            loss = forward_backward(batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recent.append(loss.detach())
        step += 1

        if step == CALIBRATE_FROM:
            sync(device)
            t_cal_from = time.perf_counter()
        elif step == CALIBRATE_TO:
            sync(device)
            t_cal_to = time.perf_counter()
            per_step = (t_cal_to - t_cal_from) / (CALIBRATE_TO - CALIBRATE_FROM)
            remaining = budget_s - (t_cal_to - t0)
            total_steps = step + max(1, int(0.97 * remaining / per_step))
            # Keep warmup a minor part of short runs.
            warmup = min(warmup, max(10, total_steps // 10))
            log(f"[{label}] {per_step * 1000:.1f} ms/step -> about {total_steps} steps in {budget_s:.0f} s "
                f"(warmup {warmup})")

        if step % LOG_EVERY == 0:
            sync(device)
            now = time.perf_counter()
            if t_cal_to is not None and step > CALIBRATE_TO:
                pace = (now - t_cal_to) / (step - CALIBRATE_TO)
                total_steps = max(step + 1, step + int((budget_s - (now - t0)) / pace))
            train_loss = float(torch.stack(list(recent)).float().mean())
            entry = {"step": step, "tokens": step * tokens_per_step, "loss": round(train_loss, 5), "lr": lr,
                     "grad_norm": round(float(grad_norm), 4), "elapsed_s": round(now - t0, 2)}
            history.append(entry)
            log(f"[{label}] step {step:6d} | {entry['tokens'] / 1e6:8.1f}M tok | loss {train_loss:.4f} | "
                f"lr {lr:.2e} | gnorm {entry['grad_norm']:.3f} | {now - t0:6.1f}s | "
                f"{step * tokens_per_step / (now - t0) / 1e3:7.0f}K tok/s")
        if eval_fn is not None and step % EVAL_EVERY == 0:
            val = eval_fn()
            evals.append({"step": step, "val_loss": round(val, 5), "elapsed_s": round(time.perf_counter() - t0, 2)})
            log(f"[{label}] step {step:6d} | val loss {val:.4f} | ppl {math.exp(val):.2f}")

    sync(device)
    seconds = time.perf_counter() - t0
    final_loss = float(torch.stack(list(recent)).float().mean()) if recent else float("nan")
    model.eval()
    return {
        "steps": step,
        "tokens_seen": step * tokens_per_step,
        "seconds": round(seconds, 2),
        "final_train_loss": round(final_loss, 5),
        "estimated_total_steps": total_steps,
        "warmup_steps": warmup,
        "compiled": runner.compiled,
        "history": history,
        "evals": evals,
    }


def autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def val_cross_entropy(model, windows: torch.Tensor, device: torch.device, chunk: int = 16) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for part in windows.split(chunk):
        part = part.to(device)
        with autocast(device):
            logits = model(input_ids=part[:, :-1], use_cache=False).logits
        total += float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), part[:, 1:].reshape(-1),
                                       reduction="sum"))
        count += part[:, 1:].numel()
    model.train(was_training)
    return total / count


@torch.no_grad()
def teacher_forced_agreement(target, draft, windows: torch.Tensor, device: torch.device, chunk: int = 16) -> float:
    agree, count = 0, 0
    for part in windows.split(chunk):
        inputs = part.to(device)[:, :-1]
        with autocast(device):
            t_pred = target(input_ids=inputs, use_cache=False).logits.argmax(-1)
            d_pred = draft(input_ids=inputs, use_cache=False).logits.argmax(-1)
        agree += int((t_pred == d_pred).sum())
        count += t_pred.numel()
    return agree / count


@torch.no_grad()
def greedy_batch(model, prompts: torch.Tensor, new_tokens: int, device: torch.device) -> torch.Tensor:
    """Greedy continuation of equal-length prompts (no padding needed) with a KV cache."""
    with autocast(device):
        out = model(input_ids=prompts, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1)
        generated = [nxt]
        for _ in range(new_tokens - 1):
            out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1)
            generated.append(nxt)
    return torch.stack(generated, dim=1)


@torch.no_grad()
def speculative_estimate(target, draft, val_tokens: np.ndarray, device: torch.device, prompts_n: int = 32,
                         prompt_len: int = 32, gen_len: int = 64, seed: int = 2) -> dict:
    """Estimate greedy speculative decoding with the draft proposing up to k tokens.

    With greedy verification the j-th proposal of a round is accepted iff the draft's argmax
    after the target's own continuation so far equals the target's next token, so one
    teacher-forced draft pass over prompt + target continuation decides every round.
    """
    starts = np.random.default_rng(seed).integers(0, len(val_tokens) - prompt_len - 1, size=prompts_n)
    prompts = torch.from_numpy(np.stack([val_tokens[s:s + prompt_len] for s in starts]).astype(np.int64)).to(device)
    t_gen = greedy_batch(target, prompts, gen_len, device)
    d_gen = greedy_batch(draft, prompts, gen_len, device)
    seq = torch.cat([prompts, t_gen], dim=1)
    with autocast(device):
        d_logits = draft(input_ids=seq[:, :-1], use_cache=False).logits
    matches = (d_logits[:, prompt_len - 1:].argmax(-1) == t_gen).cpu().numpy()

    result = {"prompts": prompts_n, "prompt_len": prompt_len, "gen_len": gen_len}
    for k in (2, 4, 8):
        accepted = []
        for row in matches:
            i = 0
            while i < gen_len:
                a = 0
                while a < k and i + a < gen_len and row[i + a]:
                    a += 1
                accepted.append(a)
                i += a + 1  # the target's own token follows every round
        result[f"k{k}_mean_accepted"] = round(float(np.mean(accepted)), 4)
        result[f"k{k}_tokens_per_target_pass"] = round(float(np.mean(accepted)) + 1.0, 4)
    mismatch = (t_gen != d_gen).cpu().numpy()
    prefix = [int(np.argmax(r)) if r.any() else gen_len for r in mismatch]
    result["free_run_common_prefix_mean"] = round(float(np.mean(prefix)), 4)
    result["teacher_forced_match_rate"] = round(float(matches.mean()), 4)
    return result


# --------------------------------------------------------------------------------------
# 5. Save


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_model(model, out_dir: Path, eot_id: int, pad_id: int, max_shard_size: str | None) -> None:
    model = model.to("cpu").to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=pad_id, do_sample=False)
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out_dir, **kwargs)
    if not (out_dir / "config.json").is_file():
        model.config.save_pretrained(out_dir)
    if not (out_dir / "generation_config.json").is_file():
        model.generation_config.save_pretrained(out_dir)
    if not list(out_dir.glob("*.safetensors")) or list(out_dir.glob("*.bin")):
        raise RuntimeError(f"unexpected weight files in {out_dir}: {sorted(os.listdir(out_dir))}")


# --------------------------------------------------------------------------------------
# 6. Oracle


def write_oracle(model_dir: Path, hf_tok, description: str, versions: dict) -> dict:
    model = load_fp32(model_dir)
    prompts = [hf_tok.encode(text, add_special_tokens=False) for text in ORACLE_PROMPTS]
    last_logits, greedy, greedy_top = [], [], []
    for ids in prompts:
        tokens, step_logits = greedy_with_cache(model, ids, ORACLE_MAX_NEW_TOKENS)
        last_logits.append([float(f"{v:.6g}") for v in step_logits[0].tolist()])
        greedy.append(tokens)
        greedy_top.append(top_logprobs(step_logits))
    oracle = {
        "name": model_dir.name,
        "model_type": model.config.model_type,
        "description": description,
        "stored_dtype": "bfloat16",
        "prompts": prompts,
        "texts": ORACLE_PROMPTS,
        "last_logits": last_logits,
        "greedy": greedy,
        "greedy_top_logprobs": greedy_top,
        "greedy_text": [hf_tok.decode(t) for t in greedy],
        "max_new_tokens": ORACLE_MAX_NEW_TOKENS,
        "versions": versions,
        "reference": "transformers on CPU, float32 (upcast from the bf16 checkpoint), attn_implementation=eager, "
                     "batch 1, KV-cached greedy loop (EOS does not stop generation)",
    }
    (model_dir / "oracle.json").write_text(json.dumps(oracle, ensure_ascii=False, separators=(",", ":")) + "\n")
    return oracle


def write_tokenizer_oracle(model_dir: Path, hf_tok) -> dict:
    # Reload from disk so the oracle describes the files Keel will read.
    reloaded = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    cases = []
    for text in TOKENIZER_CASES:
        ids = reloaded.encode(text, add_special_tokens=False)
        if ids != hf_tok.encode(text, add_special_tokens=False):
            raise RuntimeError(f"reloaded tokenizer encodes {text!r} differently")
        cases.append({"text": text, "ids": ids, "decoded": reloaded.decode(ids)})
    rendered = reloaded.apply_chat_template(CHAT_EXAMPLE, tokenize=False, add_generation_prompt=True)
    data = {
        "add_special_tokens": False,
        "special_tokens": {tok: reloaded.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS},
        "cases": cases,
        "chat": {
            "messages": CHAT_EXAMPLE,
            "add_generation_prompt": True,
            "rendered": rendered,
            "ids": reloaded.encode(rendered, add_special_tokens=False),
        },
    }
    (model_dir / "tokenizer_oracle.json").write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    return data


# --------------------------------------------------------------------------------------
# 7. Model cards


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code_block(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}python\n{text}\n{fence}"


def target_card(r: dict) -> str:
    t, d, c, tk, s = r["target"], r["draft"], r["corpus"], r["tokenizer"], r["speculative"]
    lines = [
        "# keel-tiny",
        "",
        "keel-tiny is the default model embedded in Keel. It is a "
        f"{t['params'] / 1e6:.2f}M-parameter Llama-architecture causal language model trained from scratch, "
        f"in {t['seconds']:.0f} seconds on one {r['device']}, on Python source code. It is a **tiny "
        "code-completion model**: it continues Python with plausible-looking syntax and identifiers, but what "
        "it writes is usually not correct, it knows nothing beyond the code it saw, and it cannot follow "
        "instructions. The chat template exists so Keel's chat plumbing can be exercised end to end; the "
        "model was never trained on conversations. Use it for smoke tests, demos and engine benchmarks, not "
        "for anything whose output matters.",
        "",
        "Its draft model for speculative decoding is `keel-tiny-draft` (same tokenizer).",
        "",
        "## Results of this run",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| training steps | {t['steps']:,} |",
        f"| tokens seen | {t['tokens_seen'] / 1e6:.1f}M ({t['tokens_seen'] / max(1, c['train_tokens']):.2f} "
        "passes over the training split) |",
        f"| training wall time | {t['seconds']:.0f} s |",
        f"| hardware | {r['device']} |",
        f"| final train loss (mean of last 50 steps) | {t['final_train_loss']:.4f} |",
        f"| validation loss / perplexity | {t['val_loss']:.4f} / {t['val_ppl']:.2f} |",
        f"| validation bytes per token | {tk['val_bytes_per_token']:.3f} |",
        f"| validation bits per byte | {t['val_loss'] / math.log(2) / tk['val_bytes_per_token']:.3f} |",
        f"| draft validation loss / perplexity | {d['val_loss']:.4f} / {d['val_ppl']:.2f} |",
        f"| draft greedy agreement (teacher-forced) | {d['greedy_agreement']:.3f} |",
        f"| draft mean accepted tokens per round, k=4 | {s['k4_mean_accepted']:.2f} |",
        "",
        "Validation loss is the mean next-token cross-entropy (nats) over "
        f"{VAL_WINDOWS} fixed windows of {r['args']['seq_len']} tokens from held-out files.",
        "",
        "## Architecture",
        "",
        "| | |",
        "| --- | --- |",
        "| type | LlamaForCausalLM (RMSNorm, SwiGLU MLP, RoPE, grouped-query attention) |",
        f"| parameters | {t['params']:,} (input embedding tied to the output layer) |",
        f"| layers / hidden / MLP | {TARGET_ARCH['num_hidden_layers']} / {TARGET_ARCH['hidden_size']} / "
        f"{TARGET_ARCH['intermediate_size']} |",
        f"| attention heads / KV heads / head dim | {TARGET_ARCH['num_attention_heads']} / "
        f"{TARGET_ARCH['num_key_value_heads']} / "
        f"{TARGET_ARCH['hidden_size'] // TARGET_ARCH['num_attention_heads']} |",
        f"| context | {MAX_POSITIONS} positions (trained on {r['args']['seq_len']}-token windows), RoPE theta 10000 |",
        f"| vocabulary | {VOCAB_SIZE} |",
        "| weights | bfloat16 safetensors, sharded at 12 MB |",
        "",
        "## Tokenizer",
        "",
        f"Byte-level BPE (GPT-2-style pre-tokenization, no prefix space) with {tk['vocab_size']} tokens, "
        f"trained with the `tokenizers` library on {tk['trained_on_mb']:.1f} MB of the training split. "
        "Special tokens: " + ", ".join(f"`{t_}` = {i}" for i, t_ in enumerate(SPECIAL_TOKENS)) + ". "
        f"`{EOT}` separates documents and is the BOS/EOS token; `{PAD}` is padding. Encoding never adds "
        "tokens on its own. Chat template: each message is `<|role|>` + newline + content + newline, "
        f"assistant messages end with `{EOT}`, and the generation prompt is `<|assistant|>` + newline.",
        "",
        "## Training",
        "",
        f"From scratch, AdamW (betas 0.9/0.95, weight decay {WEIGHT_DECAY} on matrices), peak learning rate "
        f"{TARGET_PEAK_LR:g}, {t['warmup_steps']} warmup steps, cosine decay to {MIN_LR_RATIO:.0%} over the "
        f"time budget, gradient clipping {GRAD_CLIP}, bf16 autocast, batch {r['args']['batch_size']} x "
        f"{r['args']['seq_len']} tokens of random windows, seed {r['args']['seed']}, "
        f"torch.compile {'on' if t['compiled'] else 'off'}.",
        "",
        "## Training data",
        "",
        f"Python files (`*.py`, at most {MAX_FILE_BYTES // 1024} KB each) from the installed Python packages "
        "whose declared licence is permissive (MIT, BSD, Apache-2.0, PSF, ISC), decided from each "
        "distribution's `License-Expression`, licence classifiers or `License` field; anything else, "
        "including dual licences with a copyleft or proprietary part, was excluded. "
        f"{c['files']:,} files, {mb(c['bytes'])} ({c['train_files']:,} files / {c['train_tokens']:,} tokens "
        f"for training, {c['val_files']:,} files / {c['val_tokens']:,} tokens held out by file for "
        "validation). Files were shuffled with a fixed seed and the corpus capped at "
        f"{r['args']['corpus_mb']} MB.",
        "",
        "| package | version | licence | files | bytes |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for p in sorted(c["packages"], key=lambda p: -p["bytes"]):
        lines.append(f"| {_md_escape(p['name'])} | {_md_escape(p['version'])} | {_md_escape(p['license'])} | "
                     f"{p['files']:,} | {p['bytes']:,} |")
    lines += ["", "## Greedy continuations", "",
              "From `oracle.json` (transformers, CPU, float32, 32 new tokens):", ""]
    for text, cont in zip(ORACLE_PROMPTS, r["oracle"]["keel-tiny"]):
        lines += [_code_block(text + cont), ""]
    lines += [
        "## Files",
        "",
        "`config.json`, `generation_config.json`, `model-*.safetensors` + `model.safetensors.index.json`, "
        "`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja` (if written by transformers), "
        "and test data for Keel: `oracle.json` (reference logits and greedy tokens) and "
        "`tokenizer_oracle.json` (reference encodings and a rendered chat).",
        "",
        "## Reproduce",
        "",
        "```",
        r["command"],
        "```",
        "",
        f"Versions used: Python {r['versions']['python']}, torch {r['versions']['torch']}, transformers "
        f"{r['versions']['transformers']}, tokenizers {r['versions']['tokenizers']}. The corpus depends on "
        "the packages installed where the script runs, and timing-based schedules depend on the hardware, "
        "so another machine gives a similar but not identical model. Raw metrics are in `train_log.json` "
        "next to the model folders.",
        "",
    ]
    return "\n".join(lines)


def draft_card(r: dict) -> str:
    d, s = r["draft"], r["speculative"]
    lines = [
        "# keel-tiny-draft",
        "",
        f"A {d['params'] / 1e6:.2f}M-parameter Llama ({DRAFT_ARCH['num_hidden_layers']} layers, hidden "
        f"{DRAFT_ARCH['hidden_size']}, {DRAFT_ARCH['num_attention_heads']} heads / "
        f"{DRAFT_ARCH['num_key_value_heads']} KV heads, tied embeddings) that proposes tokens for "
        "speculative decoding with `keel-tiny`, whose tokenizer it shares. It was distilled from keel-tiny's "
        f"logits (KL divergence at temperature 1, same data) for {d['seconds']:.0f} s "
        f"({d['steps']:,} steps, {d['tokens_seen'] / 1e6:.1f}M tokens) on one {r['device']}. On its own it "
        "is an even weaker code-completion model than keel-tiny.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| validation loss / perplexity | {d['val_loss']:.4f} / {d['val_ppl']:.2f} |",
        f"| keel-tiny validation loss, for comparison | {r['target']['val_loss']:.4f} |",
        f"| greedy agreement with keel-tiny (teacher-forced, validation) | {d['greedy_agreement']:.3f} |",
        f"| mean accepted tokens per round, k = 2 / 4 / 8 | {s['k2_mean_accepted']:.2f} / "
        f"{s['k4_mean_accepted']:.2f} / {s['k8_mean_accepted']:.2f} |",
        f"| common prefix of free-running greedy continuations (of {s['gen_len']}) | "
        f"{s['free_run_common_prefix_mean']:.1f} tokens |",
        "",
        f"Acceptance is simulated for greedy verification on {s['prompts']} held-out prompts of "
        f"{s['prompt_len']} tokens and {s['gen_len']} generated tokens: each round the draft proposes up to k "
        "tokens and the target keeps the longest prefix equal to its own greedy choice.",
        "",
        "## Greedy continuations",
        "",
    ]
    for text, cont in zip(ORACLE_PROMPTS, r["oracle"]["keel-tiny-draft"]):
        lines += [_code_block(text + cont), ""]
    lines += ["## Reproduce", "", "See `keel-tiny/README.md`; both models come from one run of:", "",
              "```", r["command"], "```", ""]
    return "\n".join(lines)


def rewrite_oracles(out: Path) -> int:
    """Recomputes both models' oracle.json from their saved files (e.g. after the oracle gains a field)."""
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("keel-tiny", "keel-tiny-draft"):
        model_dir = out / name
        description = json.loads((model_dir / "oracle.json").read_text())["description"]
        hf_tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        oracle = write_oracle(model_dir, hf_tok, description, versions)
        log(f"{name}: oracle rewritten, greedy {oracle['greedy_text']!r}")
    return 0


# --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--target-seconds", type=float, default=330.0, help="training budget for keel-tiny")
    parser.add_argument("--draft-seconds", type=float, default=100.0, help="distillation budget for the draft")
    parser.add_argument("--corpus-mb", type=float, default=120.0, help="cap on corpus size (MB of source)")
    parser.add_argument("--tokenizer-mb", type=float, default=32.0,
                        help="train the BPE on at most this much of the training split (speed)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the training forward (auto: on CUDA only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle-only", action="store_true",
                        help="only rewrite oracle.json of the models already in --out (no training)")
    args = parser.parse_args()
    if args.oracle_only:
        return rewrite_oracles(args.out)

    run_start = time.perf_counter()
    phases: dict[str, float] = {}
    torch.manual_seed(args.seed)
    hf_logging.disable_progress_bar()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        try:
            # TF32 only affects float32 matmuls outside autocast; legacy flags on purpose,
            # mixing them with torch's newer fp32_precision API is an error.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        except Exception:  # noqa: BLE001
            pass
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    want_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    command = "python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    log(f"device {device_name}; torch {versions['torch']}, transformers {versions['transformers']}, "
        f"tokenizers {versions['tokenizers']}")

    out: Path = args.out
    target_dir, draft_dir = out / "keel-tiny", out / "keel-tiny-draft"
    for d in (target_dir, draft_dir):
        if d.exists():
            shutil.rmtree(d)  # stale shards would be picked up by loaders
        d.mkdir(parents=True)

    # 1. Corpus -------------------------------------------------------------------------
    t = time.perf_counter()
    docs, packages, rejected, skipped, n_candidates = collect_corpus(int(args.corpus_mb * 1e6), args.seed)
    if not docs:
        raise SystemExit("no permissively licensed Python source found")
    assign_split(docs)
    train_docs = [d for d in docs if d.split == "train"]
    val_docs = [d for d in docs if d.split == "val"]
    used_packages = [dict(p) for p in packages.values() if p["files"] > 0]
    phases["corpus_s"] = time.perf_counter() - t
    log(f"corpus: {len(docs):,} files, {mb(sum(d.nbytes for d in docs))} from {len(used_packages)} packages "
        f"({len(packages)} accepted, {len(rejected)} rejected by licence, {n_candidates:,} candidate files); "
        f"val {len(val_docs)} files; skipped {skipped}; {phases['corpus_s']:.1f}s")

    # 2. Tokenizer ----------------------------------------------------------------------
    t = time.perf_counter()
    tok_texts, tok_bytes = [], 0
    for doc in train_docs:
        if tok_bytes >= args.tokenizer_mb * 1e6:
            break
        tok_texts.append(doc.text)
        tok_bytes += doc.nbytes
    raw_tok = train_tokenizer(tok_texts)
    hf_tok = wrap_tokenizer(raw_tok)
    eot_id, pad_id = raw_tok.token_to_id(EOT), raw_tok.token_to_id(PAD)
    phases["tokenizer_s"] = time.perf_counter() - t
    log(f"tokenizer: {raw_tok.get_vocab_size()} tokens from {mb(tok_bytes)}; {phases['tokenizer_s']:.1f}s")

    t = time.perf_counter()
    train_tokens = encode_documents(raw_tok, [d.text for d in train_docs], eot_id)
    val_tokens = encode_documents(raw_tok, [d.text for d in val_docs], eot_id)
    val_bytes = sum(d.nbytes for d in val_docs)
    phases["encode_s"] = time.perf_counter() - t
    log(f"encoded: {len(train_tokens):,} train / {len(val_tokens):,} val tokens "
        f"({val_bytes / max(1, len(val_tokens)):.2f} bytes/token); {phases['encode_s']:.1f}s")
    del tok_texts
    for doc in docs:
        doc.text = ""  # the token arrays are all training needs from here on

    corpus_info = {
        "files": len(docs), "bytes": sum(d.nbytes for d in docs),
        "train_files": len(train_docs), "train_bytes": sum(d.nbytes for d in train_docs),
        "train_tokens": int(len(train_tokens)),
        "val_files": len(val_docs), "val_bytes": val_bytes, "val_tokens": int(len(val_tokens)),
        "candidate_files": n_candidates, "skipped": skipped,
        "packages": sorted(used_packages, key=lambda p: _norm_name(p["name"])),
        "accepted_packages_without_files": sorted(p["name"] for p in packages.values() if p["files"] == 0),
        "rejected_packages": sorted(rejected.values(), key=lambda p: _norm_name(p["name"])),
    }
    tokenizer_info = {"vocab_size": raw_tok.get_vocab_size(), "trained_on_mb": tok_bytes / 1e6,
                      "special_tokens": {s: raw_tok.token_to_id(s) for s in SPECIAL_TOKENS},
                      "val_bytes_per_token": val_bytes / max(1, len(val_tokens))}

    sampler = WindowSampler(train_tokens, args.seq_len, device, seed=args.seed)
    val_windows = fixed_windows(val_tokens, VAL_WINDOWS, args.seq_len, seed=1)

    # 3. Target ---------------------------------------------------------------------------
    target = build_model(llama_config(TARGET_ARCH, eot_id, pad_id), "sdpa").to(device)
    target_params = count_params(target)
    log(f"keel-tiny: {target_params:,} parameters")

    def target_loss(fn, batch):
        with autocast(device):
            logits = fn(input_ids=batch[:, :-1], use_cache=False).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))

    t = time.perf_counter()
    target_run = timed_training(
        label="keel-tiny", model=target, loss_fn=target_loss, sampler=sampler, batch_size=args.batch_size,
        seq_len=args.seq_len, budget_s=args.target_seconds, peak_lr=TARGET_PEAK_LR, warmup=TARGET_WARMUP,
        device=device, want_compile=want_compile,
        eval_fn=lambda: val_cross_entropy(target, val_windows, device))
    target_run["val_loss"] = round(val_cross_entropy(target, val_windows, device), 5)
    target_run["val_ppl"] = round(math.exp(target_run["val_loss"]), 4)
    target_run["params"] = target_params
    phases["target_s"] = time.perf_counter() - t
    log(f"keel-tiny: {target_run['steps']} steps, train loss {target_run['final_train_loss']:.4f}, "
        f"val loss {target_run['val_loss']:.4f} (ppl {target_run['val_ppl']:.2f})")

    # 4. Draft ----------------------------------------------------------------------------
    target.eval()
    target.requires_grad_(False)
    torch.manual_seed(args.seed + 1)
    draft = build_model(llama_config(DRAFT_ARCH, eot_id, pad_id), "sdpa").to(device)
    draft_params = count_params(draft)
    log(f"keel-tiny-draft: {draft_params:,} parameters")

    def distill_loss(fn, batch):
        inputs = batch[:, :-1]
        with torch.no_grad(), autocast(device):
            teacher_logits = target(input_ids=inputs, use_cache=False).logits
        with autocast(device):
            student_logits = fn(input_ids=inputs, use_cache=False).logits
        vocab = student_logits.size(-1)
        teacher_logp = F.log_softmax(teacher_logits.float().reshape(-1, vocab), dim=-1)
        student_logp = F.log_softmax(student_logits.float().reshape(-1, vocab), dim=-1)
        # KL(teacher || student), averaged over token positions.
        return F.kl_div(student_logp, teacher_logp, log_target=True, reduction="batchmean")

    t = time.perf_counter()
    # The draft budget is short, so compilation time would eat a large share of it.
    draft_run = timed_training(
        label="draft", model=draft, loss_fn=distill_loss, sampler=sampler, batch_size=args.batch_size,
        seq_len=args.seq_len, budget_s=args.draft_seconds, peak_lr=DRAFT_PEAK_LR, warmup=DRAFT_WARMUP,
        device=device, want_compile=False,
        eval_fn=lambda: val_cross_entropy(draft, val_windows, device))
    phases["draft_s"] = time.perf_counter() - t

    t = time.perf_counter()
    draft_run["val_loss"] = round(val_cross_entropy(draft, val_windows, device), 5)
    draft_run["val_ppl"] = round(math.exp(draft_run["val_loss"]), 4)
    draft_run["params"] = draft_params
    draft_run["greedy_agreement"] = round(teacher_forced_agreement(target, draft, val_windows, device), 5)
    spec = speculative_estimate(target, draft, val_tokens, device)
    phases["draft_metrics_s"] = time.perf_counter() - t
    log(f"draft: {draft_run['steps']} steps, val loss {draft_run['val_loss']:.4f}, greedy agreement "
        f"{draft_run['greedy_agreement']:.3f}, mean accepted (k=4) {spec['k4_mean_accepted']:.2f}, "
        f"free-run common prefix {spec['free_run_common_prefix_mean']:.1f}")

    # 5. Save -----------------------------------------------------------------------------
    t = time.perf_counter()
    save_model(target, target_dir, eot_id, pad_id, max_shard_size="12MB")
    save_model(draft, draft_dir, eot_id, pad_id, max_shard_size=None)
    for d in (target_dir, draft_dir):
        save_tokenizer(hf_tok, d)
    sizes = {d.name: dir_bytes(d) for d in (target_dir, draft_dir)}
    largest = max((p for d in (target_dir, draft_dir) for p in d.iterdir()), key=lambda p: p.stat().st_size)
    log("saved: " + ", ".join(f"{k} {mb(v)}" for k, v in sizes.items())
        + f"; total {mb(sum(sizes.values()))}; largest file {largest.name} {mb(largest.stat().st_size)}")
    assert largest.stat().st_size <= 13_000_000, f"{largest} is larger than ~12 MB"
    assert sum(sizes.values()) <= 25_000_000, f"model folders total {mb(sum(sizes.values()))} > 25 MB"
    phases["save_s"] = time.perf_counter() - t

    # 6. Oracles --------------------------------------------------------------------------
    t = time.perf_counter()
    oracle_versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    target_oracle = write_oracle(target_dir, hf_tok, "keel-tiny, Keel's default code-completion model", oracle_versions)
    draft_oracle = write_oracle(draft_dir, hf_tok, "keel-tiny-draft, speculative draft for keel-tiny", oracle_versions)
    tok_oracle = write_tokenizer_oracle(target_dir, hf_tok)
    phases["oracle_s"] = time.perf_counter() - t
    for name, oracle in (("keel-tiny", target_oracle), ("keel-tiny-draft", draft_oracle)):
        for text, cont in zip(ORACLE_PROMPTS, oracle["greedy_text"]):
            log(f"--- {name} greedy: {text!r} -> {cont!r}")
    log(f"chat template render: {tok_oracle['chat']['rendered']!r}")

    # 7. Cards and log --------------------------------------------------------------------
    phases["total_s"] = time.perf_counter() - run_start
    report = {
        "command": command,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": versions,
        "device": device_name,
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "corpus": corpus_info,
        "tokenizer": tokenizer_info,
        "target": {"arch": TARGET_ARCH, "peak_lr": TARGET_PEAK_LR, **target_run},
        "draft": {"arch": DRAFT_ARCH, "peak_lr": DRAFT_PEAK_LR, **draft_run},
        "speculative": spec,
        "oracle": {"keel-tiny": target_oracle["greedy_text"], "keel-tiny-draft": draft_oracle["greedy_text"]},
        "sizes_bytes": sizes,
    }
    (target_dir / "README.md").write_text(target_card(report))
    (draft_dir / "README.md").write_text(draft_card(report))
    final_sizes = {d.name: dir_bytes(d) for d in (target_dir, draft_dir)}
    report["final_sizes_bytes"] = final_sizes
    (out / "train_log.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")

    log("final folder sizes (with oracle and README): "
        + ", ".join(f"{k} {mb(v)}" for k, v in final_sizes.items()) + f"; total {mb(sum(final_sizes.values()))}")
    log(f"done in {phases['total_s']:.0f}s: {target_dir}, {draft_dir}, {out / 'train_log.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
