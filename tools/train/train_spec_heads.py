#!/usr/bin/env python3
"""Train speculative-decoding heads for keel-tiny: an EAGLE-3 head and Medusa heads.

Usage:
    python3 tools/train/train_spec_heads.py --out models --seconds 900 [--corpus-mb 24]

Both heads are distilled from keel-tiny with the target frozen, on the corpus keel-tiny was trained
on (Python source of permissively licensed installed distributions, collected and split by file
exactly as tools/train/train_default_model.py does; held-out files are only evaluated on):

- EAGLE-3 (Li et al., 2025), in the EAGLE authors' format (LlamaForCausalLMEagle3, `midlayer.*`):
  one decoder layer over [norm(embed(token after p)), norm(fc(s1, s2, s3)(p))] where s_l is the
  residual stream entering target layer l (`eagle_aux_hidden_state_layer_ids` [1, 2, 3]: low,
  middle, high of keel-tiny's four layers), its own LM head over a reduced draft vocabulary (the
  --draft-vocab most frequent tokens of the training split, `d2t`/`t2d`). Loss as EAGLE-3's:
  cross-entropy against the target's next-token distribution restricted to the draft vocabulary
  (positions whose target argmax lies outside it are masked), with training-time test: step j feeds
  the head's own output of step j - 1 as the feature and attends to the target-feature keys up to
  p - j and to its own earlier steps' keys on the diagonal, exactly the context a j-th drafted
  token sees in the engine; step j is weighted 0.8^j. The layer starts from keel-tiny's last
  layer (its input norm folded into the feature half of q/k/v), fc from [0, 0, I] and the LM head
  from the target's embedding rows of the draft vocabulary, so the head starts near the target.
- Medusa-1 (Cai et al., 2024), in FasterDecoding/Medusa's format: head k (a residual block
  h + SiLU(W h + b), W zero-initialised, then an LM head initialised from the target's) reads the
  target's final-norm output at p and predicts token p + k + 2; loss the KL divergence from the
  target's distribution there (Medusa's self-distillation), head k weighted 0.8^k.

One target forward per batch feeds both heads. CUDA when present, CPU otherwise; --seconds is the
wall-clock budget of the training loop (a cosine learning-rate schedule over elapsed time).

Outputs: OUT/keel-tiny-eagle3/ (config.json, model.safetensors, README.md, train_log.json) and
OUT/keel-tiny-medusa/ (config.json, medusa_lm_head.safetensors, README.md, train_log.json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "oracle"))
import train_default_model as base  # noqa: E402  (sets the offline environment before transformers loads)
import eagle_reference  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

AUX_LAYERS = [1, 2, 3]
MEDUSA_LAYERS = 1
LOSS_DECAY = 0.8  # EAGLE-3's per-step and Medusa-1's per-head loss weights
WARMUP_S_FRACTION = 0.03
EVAL_WINDOWS = 32
MASKED = -100


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------
# Data


def load_tokens(tokenizer_path: Path, corpus_mb: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    docs, packages, _rejected, _skipped, _candidates = base.collect_corpus(int(corpus_mb * 1e6), seed)
    if not docs:
        raise SystemExit("no permissively licensed Python source found")
    base.assign_split(docs)
    tok = Tokenizer.from_file(str(tokenizer_path))
    eot = tok.token_to_id(base.EOT)
    train = base.encode_documents(tok, [d.text for d in docs if d.split == "train"], eot)
    val = base.encode_documents(tok, [d.text for d in docs if d.split == "val"], eot)
    info = {"files": len(docs), "bytes": sum(d.nbytes for d in docs),
            "packages": sum(1 for p in packages.values() if p["files"] > 0),
            "train_tokens": int(len(train)), "val_tokens": int(len(val))}
    return train, val, info


def draft_vocabulary(tokens: np.ndarray, vocab: int, size: int) -> tuple[torch.Tensor, float]:
    """The `size` most frequent token ids of the training split (ties to the lower id), sorted, and their coverage."""
    counts = np.bincount(tokens.astype(np.int64), minlength=vocab)
    order = np.lexsort((np.arange(vocab), -counts))[:size]
    ids = np.sort(order)
    return torch.from_numpy(ids), float(counts[ids].sum() / counts.sum())


# --------------------------------------------------------------------------------------
# EAGLE-3 head


def eagle3_init(target, draft_ids: torch.Tensor, intermediate: int) -> dict[str, torch.Tensor]:
    """The head's weights, started from the target's last layer, embedding and final norm."""
    cfg = target.config
    h = cfg.hidden_size
    last = target.model.layers[cfg.num_hidden_layers - 1]
    gen = torch.Generator().manual_seed(0)
    folded = last.input_layernorm.weight.detach()  # the feature half of q/k/v reads hidden_norm(feature)

    def qkv(proj):
        w = proj.weight.detach()
        return torch.cat([torch.randn(w.shape, generator=gen) * 0.02, w * folded[None, :]], 1)

    w = {
        "fc.weight": torch.cat([torch.zeros(h, 2 * h), torch.eye(h)], 1),
        "midlayer.input_layernorm.weight": torch.ones(h),
        "midlayer.hidden_norm.weight": torch.ones(h),
        "midlayer.self_attn.q_proj.weight": qkv(last.self_attn.q_proj),
        "midlayer.self_attn.k_proj.weight": qkv(last.self_attn.k_proj),
        "midlayer.self_attn.v_proj.weight": qkv(last.self_attn.v_proj),
        "midlayer.self_attn.o_proj.weight": last.self_attn.o_proj.weight.detach().clone(),
        "midlayer.post_attention_layernorm.weight": last.post_attention_layernorm.weight.detach().clone(),
        "norm.weight": target.model.norm.weight.detach().clone(),
        "lm_head.weight": target.lm_head.weight.detach()[draft_ids].clone(),
    }
    mlp = last.mlp
    if intermediate == cfg.intermediate_size:
        w["midlayer.mlp.gate_proj.weight"] = mlp.gate_proj.weight.detach().clone()
        w["midlayer.mlp.up_proj.weight"] = mlp.up_proj.weight.detach().clone()
        w["midlayer.mlp.down_proj.weight"] = mlp.down_proj.weight.detach().clone()
    else:
        w["midlayer.mlp.gate_proj.weight"] = torch.randn(intermediate, h, generator=gen) * 0.02
        w["midlayer.mlp.up_proj.weight"] = torch.randn(intermediate, h, generator=gen) * 0.02
        w["midlayer.mlp.down_proj.weight"] = torch.randn(h, intermediate, generator=gen) * 0.02
    return w


def geometry(cfg) -> dict:
    return {"heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
            "theta": cfg.rope_parameters["rope_theta"], "eps": cfg.rms_norm_eps}


def qkv_of(x, w, g, positions):
    p = "midlayer.self_attn."
    q = (x @ w[p + "q_proj.weight"].T).unflatten(-1, (g["heads"], g["head_dim"]))
    k = (x @ w[p + "k_proj.weight"].T).unflatten(-1, (g["kv_heads"], g["head_dim"]))
    v = (x @ w[p + "v_proj.weight"].T).unflatten(-1, (g["kv_heads"], g["head_dim"]))
    group = g["heads"] // g["kv_heads"]
    k = eagle_reference.rotate(k, positions, g["theta"]).repeat_interleave(group, -2)
    return eagle_reference.rotate(q, positions, g["theta"]), k, v.repeat_interleave(group, -2)


def shift(x: torch.Tensor, by: int) -> torch.Tensor:
    """x[:, p - by] at p (zeros where p < by), along dim 1."""
    return x if by == 0 else F.pad(x, (0,) * (2 * (x.dim() - 2)) + (by, 0))[:, : x.shape[1]]


def eagle3_ttt(w, g, embeds, features, steps: int):
    """Head outputs and logits for steps 0..steps-1 over [B, T] positions.

    Step 0 reads the target's features; step j the head's step j - 1 output one position back.
    Step j's query at p attends to step 0's keys at positions <= p - j and to step i's key at
    p - j + i for i = 1..j: what the engine's j-th drafted token attends to.
    """
    b, t, _ = features.shape
    positions = torch.arange(t, device=features.device)
    eps = g["eps"]
    tok = eagle_reference.rms_norm(embeds, w["midlayer.input_layernorm.weight"], eps)
    scale = g["head_dim"] ** -0.5
    ks, vs, outs, logits = [], [], [], []
    feature = features
    for j in range(steps):
        if j > 0:
            feature = shift(outs[-1], 1)
        normed = eagle_reference.rms_norm(feature, w["midlayer.hidden_norm.weight"], eps)
        q, k, v = qkv_of(torch.cat([tok, normed], -1), w, g, positions)
        ks.append(k)
        vs.append(v)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, ks[0]) * scale
        allowed = torch.ones(t, t, dtype=torch.bool, device=features.device).tril(-j)
        scores = scores.masked_fill(~allowed, float("-inf"))
        diag = [torch.einsum("bqhd,bqhd->bhq", q, shift(ks[i], j - i))[..., None] * scale for i in range(1, j + 1)]
        probs = torch.cat([scores, *diag], -1).softmax(-1)
        attn = torch.einsum("bhqk,bkhd->bqhd", probs[..., :t], vs[0])
        for i in range(1, j + 1):
            attn = attn + probs[..., t + i - 1].transpose(1, 2)[..., None] * shift(vs[i], j - i)
        h = feature + attn.flatten(-2) @ w["midlayer.self_attn.o_proj.weight"].T
        h = h + eagle_reference.mlp(eagle_reference.rms_norm(h, w["midlayer.post_attention_layernorm.weight"], eps), w, "midlayer.")
        outs.append(h)
        logits.append(eagle_reference.rms_norm(h, w["norm.weight"], eps) @ w["lm_head.weight"].T)
    return outs, logits


# --------------------------------------------------------------------------------------
# Medusa heads


def medusa_init(target, num_heads: int) -> dict[str, torch.Tensor]:
    h = target.config.hidden_size
    w = {}
    for k in range(num_heads):
        w[f"{k}.0.linear.weight"] = torch.zeros(h, h)
        w[f"{k}.0.linear.bias"] = torch.zeros(h)
        w[f"{k}.{MEDUSA_LAYERS}.weight"] = target.lm_head.weight.detach().clone()
    return w


def medusa_logits(w, hidden, k: int):
    x = hidden + F.silu(hidden @ w[f"{k}.0.linear.weight"].T + w[f"{k}.0.linear.bias"])
    return x @ w[f"{k}.{MEDUSA_LAYERS}.weight"].T


# --------------------------------------------------------------------------------------
# Losses and metrics on one batch


@torch.no_grad()
def target_pass(target, windows):
    out = target(input_ids=windows, output_hidden_states=True, use_cache=False)
    return out.hidden_states, out.logits.float()


def eagle3_batch(w, g, target, draft_ids, t2d, windows, states, logits, steps):
    """Per-step losses and accuracies: position p (0..n-2) reads token p + 1 and predicts token p + 2."""
    embeds = target.model.embed_tokens.weight.detach()[windows[:, 1:]]
    features = torch.cat([states[i][:, :-1] for i in AUX_LAYERS], -1) @ w["fc.weight"].T
    _, step_logits = eagle3_ttt(w, g, embeds, features, steps)
    teacher = logits[:, 1:]
    argmax = teacher.argmax(-1)
    in_draft = t2d[argmax] >= 0
    teacher_p = teacher[..., draft_ids].softmax(-1)
    losses, accuracies = [], []
    t = windows.shape[1] - 1
    at = torch.arange(t, device=windows.device)
    for j, lg in enumerate(step_logits):
        valid = in_draft & (at >= j)[None, :]
        ce = -(teacher_p * lg.log_softmax(-1)).sum(-1)
        losses.append((ce * valid).sum() / valid.sum().clamp(min=1))
        # Accuracy counts every position the step can reach, also where the target's token lies outside the draft vocabulary.
        reach = (at >= j)[None, :].expand_as(argmax)
        hit = draft_ids[lg.argmax(-1)] == argmax
        accuracies.append(float(hit[reach].float().mean()))
    return losses, accuracies


def medusa_batch(w, num_heads, states, logits):
    hidden = states[-1]
    losses, accuracies, top5 = [], [], []
    n = hidden.shape[1]
    for k in range(num_heads):
        x = hidden[:, : n - k - 1]
        teacher = logits[:, k + 1:]
        lg = medusa_logits(w, x, k)
        losses.append(F.kl_div(lg.log_softmax(-1).flatten(0, 1), teacher.log_softmax(-1).flatten(0, 1),
                               log_target=True, reduction="batchmean"))
        target_tok = teacher.argmax(-1)
        accuracies.append(float((lg.argmax(-1) == target_tok).float().mean()))
        top5.append(float((lg.topk(5, -1).indices == target_tok[..., None]).any(-1).float().mean()))
    return losses, accuracies, top5


def weighted(losses):
    return sum(LOSS_DECAY**i * l for i, l in enumerate(losses)) / sum(LOSS_DECAY**i for i in range(len(losses)))


@torch.no_grad()
def evaluate(eagle, g, medusa, num_heads, target, draft_ids, t2d, windows, steps, device):
    e_acc, m_acc, m_top5 = np.zeros(steps), np.zeros(num_heads), np.zeros(num_heads)
    chunks = windows.split(8)
    for part in chunks:
        part = part.to(device)
        states, logits = target_pass(target, part)
        _, acc = eagle3_batch(eagle, g, target, draft_ids, t2d, part, states, logits, steps)
        e_acc += np.array(acc)
        _, acc, top5 = medusa_batch(medusa, num_heads, states, logits)
        m_acc += np.array(acc)
        m_top5 += np.array(top5)
    n = len(chunks)
    return {"eagle3_step_accuracy": [round(float(a / n), 4) for a in e_acc],
            "medusa_head_top1": [round(float(a / n), 4) for a in m_acc],
            "medusa_head_top5": [round(float(a / n), 4) for a in m_top5]}


# --------------------------------------------------------------------------------------
# Save


def save_eagle3(out: Path, w, draft_ids, target_dir: Path, intermediate: int) -> dict:
    out.mkdir(parents=True)
    size = len(draft_ids)
    vocab = json.loads((target_dir / "config.json").read_text())["vocab_size"]
    tensors = {name: t.detach().to(torch.bfloat16).contiguous() for name, t in w.items()}
    tensors["d2t"] = (draft_ids - torch.arange(size)).to(torch.int64)
    t2d = torch.zeros(vocab, dtype=torch.bool)
    t2d[draft_ids] = True
    tensors["t2d"] = t2d
    save_file(tensors, out / "model.safetensors")
    config = json.loads((target_dir / "config.json").read_text())
    config.update({"architectures": ["LlamaForCausalLMEagle3"], "num_hidden_layers": 1, "intermediate_size": intermediate,
                   "draft_vocab_size": size, "eagle_aux_hidden_state_layer_ids": AUX_LAYERS, "target_hidden_size": config["hidden_size"],
                   "dtype": "bfloat16"})
    config.pop("transformers_version", None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"model.safetensors": (out / "model.safetensors").stat().st_size}


def save_medusa(out: Path, w, num_heads: int, target_dir: Path) -> dict:
    out.mkdir(parents=True)
    save_file({name: t.detach().to(torch.bfloat16).contiguous() for name, t in w.items()}, out / "medusa_lm_head.safetensors")
    config = {"medusa_num_heads": num_heads, "medusa_num_layers": MEDUSA_LAYERS, "base_model_name_or_path": target_dir.name}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"medusa_lm_head.safetensors": (out / "medusa_lm_head.safetensors").stat().st_size}


@torch.no_grad()
def check_saved_eagle3(out: Path, g, target, windows) -> float:
    """The saved head (bf16) run by eagle_reference.eagle3 equals this script's step 0 on it: the format is what Keel reads."""
    saved = {k: v.float() for k, v in load_file(out / "model.safetensors").items() if k not in ("d2t", "t2d")}
    seq = windows[:1]
    states, _ = target_pass(target, seq)
    embed = target.model.embed_tokens.weight.detach()
    features = eagle_reference.eagle3_features(saved, [states[i][0, :-1] for i in AUX_LAYERS])
    _, ref = eagle_reference.eagle3(saved, g, embed, seq[0, 1:], features)
    _, mine = eagle3_ttt(saved, g, embed[seq[:, 1:]], features[None], 1)
    diff = float((ref - mine[0][0]).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"the saved EAGLE-3 head's reference logits differ from training's by {diff}")
    return diff


# --------------------------------------------------------------------------------------
# Cards


def eagle3_card(r: dict) -> str:
    e = r["eagle3"]
    acc = r["eval"]["eagle3_step_accuracy"]
    return "\n".join([
        "# keel-tiny-eagle3",
        "",
        f"An EAGLE-3 head for `keel-tiny` in the EAGLE authors' format (`LlamaForCausalLMEagle3`): one Llama decoder "
        f"layer (hidden 384, 6 heads / 2 KV heads, MLP {e['intermediate']}) over the target's token embedding and "
        f"the fused residual streams entering its layers {AUX_LAYERS}, with its own LM head over a draft vocabulary of "
        f"{e['draft_vocab']} tokens (the most frequent of the training split, {100 * e['draft_coverage']:.1f}% of its "
        f"tokens; `d2t`/`t2d` map them). {e['params']:,} parameters, {e['bytes'] / 1e6:.2f} MB in bfloat16.",
        "",
        f"Distilled from keel-tiny (frozen) by `tools/train/train_spec_heads.py` on {r['device']} for "
        f"{r['train_s']:.0f} s ({r['steps']} steps of {r['args']['batch_size']} windows of {r['args']['seq_len'] + 1} "
        f"tokens, {r['tokens'] / 1e6:.2f}M tokens) from {r['corpus']['train_tokens'] / 1e6:.1f}M training tokens "
        f"of keel-tiny's corpus ({r['corpus']['packages']} packages on that machine). Loss: cross-entropy against "
        f"keel-tiny's next-token distribution over the draft vocabulary, with EAGLE-3's training-time test over "
        f"{e['ttt_steps']} steps (weights 0.8^j). Started from keel-tiny's last layer.",
        "",
        "| metric (held-out files, teacher-forced) | value |",
        "| --- | --- |",
        *(f"| top-1 agreement with keel-tiny's greedy token, draft step {j + 1} | {a:.3f} |" for j, a in enumerate(acc)),
        "",
        "Step j + 1 feeds the head its own output of step j, as the j + 1-th drafted token sees it. Mean accepted "
        "length in Keel on held-out code: docs/speculative-decoding.md (`scripts/speculative-heads-acceptance.ts`).",
        "",
        "```bash",
        "keel generate --prompt 'def parse(path):' --speculative-method eagle3 --speculative-model models/keel-tiny-eagle3",
        "```",
        "",
        "## Reproduce",
        "",
        "```",
        r["command"],
        "```",
        "",
        f"Versions: {r['versions']}. Raw figures: `train_log.json`.",
        "",
    ])


def medusa_card(r: dict) -> str:
    m = r["medusa"]
    ev = r["eval"]
    return "\n".join([
        "# keel-tiny-medusa",
        "",
        f"{m['heads']} Medusa head{'s' if m['heads'] > 1 else ''} for `keel-tiny` in FasterDecoding/Medusa's format "
        f"(`medusa_num_heads` {m['heads']}, `medusa_num_layers` {MEDUSA_LAYERS}): head k is a residual block "
        f"h + SiLU(W h + b) on keel-tiny's final hidden state and an LM head over the full 8192-token vocabulary, "
        f"and guesses the token k + 2 positions on. {m['params']:,} parameters, {m['bytes'] / 1e6:.2f} MB in bfloat16 "
        "(each head's LM head alone is 6.3 MB, which is why few heads are shipped: the repository must stay small).",
        "",
        f"Distilled from keel-tiny (frozen) by `tools/train/train_spec_heads.py` in the same run as keel-tiny-eagle3, on "
        f"{r['device']} for {r['train_s']:.0f} s ({r['steps']} steps, {r['tokens'] / 1e6:.2f}M tokens): "
        "KL divergence from keel-tiny's distribution at the head's position (Medusa's self-distillation), head k "
        "weighted 0.8^k; residual blocks zero-initialised, LM heads started from keel-tiny's.",
        "",
        "| head (held-out files, teacher-forced) | top-1 | top-5 |",
        "| --- | --- | --- |",
        *(f"| {k} (token +{k + 2}) | {a:.3f} | {t:.3f} |" for k, (a, t) in
          enumerate(zip(ev["medusa_head_top1"], ev["medusa_head_top5"]))),
        "",
        "Agreement is with keel-tiny's greedy token at that position. Mean accepted length in Keel on held-out "
        "code: docs/speculative-decoding.md.",
        "",
        "```bash",
        "keel generate --prompt 'def parse(path):' --speculative-method medusa --speculative-model models/keel-tiny-medusa",
        "```",
        "",
        "## Reproduce",
        "",
        "```",
        r["command"],
        "```",
        "",
    ])


# --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--target", type=Path, default=Path(__file__).resolve().parents[2] / "models/keel-tiny")
    parser.add_argument("--seconds", type=float, default=900.0, help="wall-clock budget of the training loop")
    parser.add_argument("--corpus-mb", type=float, default=24.0, help="cap on corpus size (MB of source)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--draft-vocab", type=int, default=1024, help="EAGLE-3 draft vocabulary size")
    parser.add_argument("--eagle-intermediate", type=int, default=1024,
                        help="EAGLE-3 MLP width (keel-tiny's 1024 starts it from the target's last layer)")
    parser.add_argument("--ttt-steps", type=int, default=3, help="EAGLE-3 training-time-test steps")
    parser.add_argument("--medusa-heads", type=int, default=1, help="Medusa heads (6.6 MB each in bf16)")
    parser.add_argument("--eagle-lr", type=float, default=1e-3)
    parser.add_argument("--medusa-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 training; TF32 matmuls are ample for distillation
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    command = "python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    log(f"device {device_name}")

    # On the CPU until the heads are initialised from it.
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval()
    target.requires_grad_(False)
    cfg = target.config
    g = geometry(cfg)

    t0 = time.perf_counter()
    train_tokens, val_tokens, corpus = load_tokens(args.target / "tokenizer.json", args.corpus_mb, args.seed)
    draft_ids, coverage = draft_vocabulary(train_tokens, cfg.vocab_size, args.draft_vocab)
    log(f"corpus {corpus}; draft vocabulary covers {100 * coverage:.1f}% of training tokens; {time.perf_counter() - t0:.0f}s")
    draft_ids = draft_ids.to(device)
    t2d = torch.full((cfg.vocab_size,), MASKED, dtype=torch.long, device=device)
    t2d[draft_ids] = torch.arange(len(draft_ids), device=device)

    eagle = {k: v.to(device).requires_grad_(True) for k, v in eagle3_init(target, draft_ids.cpu(), args.eagle_intermediate).items()}
    medusa = {k: v.to(device).requires_grad_(True) for k, v in medusa_init(target, args.medusa_heads).items()}
    target.to(device)
    opt_e = torch.optim.AdamW(list(eagle.values()), lr=args.eagle_lr, betas=(0.9, 0.95), weight_decay=0.0)
    opt_m = torch.optim.AdamW(list(medusa.values()), lr=args.medusa_lr, betas=(0.9, 0.95), weight_decay=0.0)
    sampler = base.WindowSampler(train_tokens, args.seq_len, device, seed=args.seed)
    val_windows = base.fixed_windows(val_tokens, EVAL_WINDOWS, args.seq_len, seed=1)

    before = evaluate(eagle, g, medusa, args.medusa_heads, target, draft_ids, t2d, val_windows, args.ttt_steps, device)
    log(f"before training: {before}")
    start = time.perf_counter()
    step, history = 0, []
    while (elapsed := time.perf_counter() - start) < args.seconds:
        frac = elapsed / args.seconds
        scale = min(1.0, frac / WARMUP_S_FRACTION) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for opt, lr in ((opt_e, args.eagle_lr), (opt_m, args.medusa_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        windows = sampler.sample(args.batch_size)
        states, logits = target_pass(target, windows)
        e_losses, e_acc = eagle3_batch(eagle, g, target, draft_ids, t2d, windows, states, logits, args.ttt_steps)
        m_losses, m_acc, _ = medusa_batch(medusa, args.medusa_heads, states, logits)
        loss = weighted(e_losses) + weighted(m_losses)
        opt_e.zero_grad(set_to_none=True)
        opt_m.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(eagle.values()), 1.0)
        torch.nn.utils.clip_grad_norm_(list(medusa.values()), 1.0)
        opt_e.step()
        opt_m.step()
        step += 1
        if step % 20 == 0 or step == 1:
            row = {"step": step, "s": round(elapsed, 1), "eagle3_losses": [round(l.item(), 4) for l in e_losses],
                   "eagle3_acc": [round(a, 3) for a in e_acc], "medusa_losses": [round(l.item(), 4) for l in m_losses],
                   "medusa_acc": [round(a, 3) for a in m_acc]}
            history.append(row)
            log(json.dumps(row))
    train_s = time.perf_counter() - start
    after = evaluate(eagle, g, medusa, args.medusa_heads, target, draft_ids, t2d, val_windows, args.ttt_steps, device)
    log(f"after {step} steps, {train_s:.0f}s: {after}")

    eagle_dir, medusa_dir = args.out / "keel-tiny-eagle3", args.out / "keel-tiny-medusa"
    for d in (eagle_dir, medusa_dir):
        if d.exists():
            shutil.rmtree(d)
    cpu_eagle = {k: v.detach().cpu() for k, v in eagle.items()}
    e_files = save_eagle3(eagle_dir, cpu_eagle, draft_ids.cpu(), args.target, args.eagle_intermediate)
    m_files = save_medusa(medusa_dir, {k: v.detach().cpu() for k, v in medusa.items()}, args.medusa_heads, args.target)
    diff = check_saved_eagle3(eagle_dir, g, target.cpu(), val_windows)
    log(f"saved {e_files}, {m_files}; saved head vs eagle_reference: max |diff| {diff:.2e}")

    report = {
        "command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": versions, "device": device_name, "corpus": corpus, "steps": step, "train_s": round(train_s, 1),
        "tokens": step * args.batch_size * (args.seq_len + 1),
        "eval_before": before, "eval": after, "history": history,
        "eagle3": {"draft_vocab": args.draft_vocab, "draft_coverage": round(coverage, 4), "intermediate": args.eagle_intermediate,
                   "ttt_steps": args.ttt_steps, "aux_layers": AUX_LAYERS, "params": sum(v.numel() for v in eagle.values()),
                   "bytes": e_files["model.safetensors"]},
        "medusa": {"heads": args.medusa_heads, "params": sum(v.numel() for v in medusa.values()),
                   "bytes": m_files["medusa_lm_head.safetensors"]},
    }
    (eagle_dir / "README.md").write_text(eagle3_card(report))
    (medusa_dir / "README.md").write_text(medusa_card(report))
    for d in (eagle_dir, medusa_dir):
        (d / "train_log.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"done: {eagle_dir}, {medusa_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
