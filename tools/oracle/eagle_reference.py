"""EAGLE-1 and EAGLE-3 heads written out from their definitions, in plain PyTorch (float32).

Used by make_spec_heads.py both to fit the fixture heads and as the reference the engine's head
forward is checked against. One sequence at a time, full causal attention over its positions;
position p reads the token after p and a feature row of p.

EAGLE-1 (SafeAILab/EAGLE cnets.py): x = fc([embed(token), feature]) (fc with a bias); one Llama
decoder layer without its input norm; the output h is the next feature; logits = target lm_head(h).

EAGLE-3 (SafeAILab/EAGLE, vLLM llama_eagle3.py, speculators Eagle3DecoderLayer): the target's
feature is fc([s_a, s_b, s_c]) (no bias) over the residual states entering three target layers;
attention over [input_norm(embed(token)), hidden_norm(feature)] (q/k/v read 2H); residual = the
feature (or hidden_norm(feature) with norm_before_residual); h = residual + attn, h += mlp(post_norm(h));
logits = lm_head(norm(h)) over the draft vocabulary; h is the next feature.
"""

import torch


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate(x, positions, theta):
    """Llama's rotate-half RoPE over the whole head dim: x [..., n, heads, dim]."""
    dim = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    angles = positions.float()[:, None] * inv[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], -1)[:, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[:, None, :]
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention(x, w, prefix, cfg, positions):
    """Causal GQA attention: x [..., n, in] -> [..., n, hidden]."""
    n = x.shape[-2]
    heads, kv_heads, dim = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    q = (x @ w[prefix + "self_attn.q_proj.weight"].T).unflatten(-1, (heads, dim))
    k = (x @ w[prefix + "self_attn.k_proj.weight"].T).unflatten(-1, (kv_heads, dim))
    v = (x @ w[prefix + "self_attn.v_proj.weight"].T).unflatten(-1, (kv_heads, dim))
    q, k = rotate(q, positions, cfg["theta"]), rotate(k, positions, cfg["theta"])
    group = heads // kv_heads
    k, v = k.repeat_interleave(group, -2), v.repeat_interleave(group, -2)
    scores = torch.einsum("...qhd,...khd->...hqk", q, k) / dim**0.5
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.einsum("...hqk,...khd->...qhd", scores.softmax(-1), v).flatten(-2)
    return out @ w[prefix + "self_attn.o_proj.weight"].T


def mlp(x, w, prefix):
    gate = x @ w[prefix + "mlp.gate_proj.weight"].T
    up = x @ w[prefix + "mlp.up_proj.weight"].T
    return (torch.nn.functional.silu(gate) * up) @ w[prefix + "mlp.down_proj.weight"].T


def eagle1(w, cfg, embed, lm_head, tokens, features):
    """Returns (outputs h [..., n, H], logits [..., n, vocab]) for positions 0..n-1."""
    positions = torch.arange(tokens.shape[-1])
    x = torch.cat([embed[tokens], features], -1) @ w["fc.weight"].T + w["fc.bias"]
    h = x + attention(x, w, "layers.0.", cfg, positions)
    h = h + mlp(rms_norm(h, w["layers.0.post_attention_layernorm.weight"], cfg["eps"]), w, "layers.0.")
    return h, h @ lm_head.T


def eagle3_features(w, states):
    """The feature rows fc([s_a, s_b, s_c]) of the target's three layer-input states."""
    return torch.cat(states, -1) @ w["fc.weight"].T


def eagle3(w, cfg, embed, tokens, features, prefix="midlayer.", norm_before_residual=False):
    positions = torch.arange(tokens.shape[-1])
    eps = cfg["eps"]
    embeds = rms_norm(embed[tokens], w[prefix + "input_layernorm.weight"], eps)
    normed = rms_norm(features, w[prefix + "hidden_norm.weight"], eps)
    residual = normed if norm_before_residual else features
    h = residual + attention(torch.cat([embeds, normed], -1), w, prefix, cfg, positions)
    h = h + mlp(rms_norm(h, w[prefix + "post_attention_layernorm.weight"], eps), w, prefix)
    return h, rms_norm(h, w["norm.weight"], eps) @ w["lm_head.weight"].T
