"""Checks that a fixture exercises what its description claims, for tools/oracle/make_fixtures.py.

- MoE routing: every router's top-k choice is recomputed here from its input, independently of
  transformers' code, and must agree with what transformers chose (so docs/oracle-fixtures.md
  describes the routing a re-implementation must copy, not a guess). From the same numbers come
  the routing margin (how far the k-th choice is from the (k+1)-th, in the space the choice is
  made in) and how often each expert was used.
- Evidence probes: the same model with one feature switched off (sliding window, sinks,
  soft-capping, ...) must give different logits, or the fixture would not test that feature.
- Soft-capping statistics: the largest |value| before the cap, for logits and attention scores.
- Checkpoint layout: the tensor names written are those of real Hub checkpoints of the family.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------
# MoE routing, recomputed


def _sorted_gap(values: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, values' k-th largest minus the (k+1)-th largest (inf if there is no (k+1)-th)."""
    if values.shape[-1] <= k:
        return torch.full(values.shape[:-1], math.inf)
    top = torch.topk(values, k + 1, dim=-1).values
    return top[..., k - 1] - top[..., k]


def _finite_gap(values: torch.Tensor, k: int) -> torch.Tensor:
    """_sorted_gap over the finite entries only (masked-out experts are -inf)."""
    gaps = []
    for row in values:
        finite = row[torch.isfinite(row)]
        gaps.append(_sorted_gap(finite.unsqueeze(0), k)[0])
    return torch.stack(gaps)


# The families routing as DeepSeek-V3 does (noaux_tc: sigmoid scores, selection bias, groups).
SIGMOID_GROUP_ROUTED = ("deepseek_v3", "deepseek_v32", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "dots1", "glm4v_moe", "mimo_v2_flash",
                        "exaone_moe", "solar_open", "kimi_linear")
# GraniteMoE's routers return (indices, weights, logits); the others (logits, weights, indices).
INDEX_FIRST_ROUTERS = ("granitemoe", "granitemoeshared", "granitemoehybrid")


def _top_k(config) -> int:
    """Experts per token: num_experts_per_tok, or Gemma 4's top_k_experts."""
    return getattr(config, "num_experts_per_tok", None) or config.top_k_experts


def _best_groups(choice: torch.Tensor, config, group_score) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek's group-limited choice: each group's score (`group_score` of its [tokens, groups, per-group] choices)
    and which experts belong to the topk_group best groups."""
    # Every expert's choice score: n_routed_experts of them, or EXAONE MoE's num_experts.
    n_experts = choice.shape[-1]
    n_group, per = config.n_group, n_experts // config.n_group
    group_scores = group_score(choice.view(-1, n_group, per))
    group_idx = torch.topk(group_scores, config.topk_group, dim=-1).indices
    allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, group_idx, True)
    return group_scores, allowed.unsqueeze(-1).expand(-1, n_group, per).reshape(-1, n_experts)


def _top2_sum(groups: torch.Tensor) -> torch.Tensor:
    return groups.topk(2, dim=-1).values.sum(dim=-1)


def route(model_type: str, router, config, hidden: torch.Tensor, selection_bias: torch.Tensor | None = None) -> dict:
    """transformers' routing decision for each token, recomputed from the router's input
    (`selection_bias`: the e_score_correction_bias a MiniMax-M2 router is passed by its block).

    Returns the chosen expert ids [tokens, k], their weights [tokens, k] and the margin per token:
    the gap between the k-th and (k+1)-th candidate in the space the choice is made in (and, for
    grouped routing, the gap between the last chosen and the first rejected group, whichever is
    smaller). For softmax routers the margin is taken on the logits: softmax is monotone, so the
    order is the same, and logits are where a re-implementation's rounding error is absolute.
    """
    k = _top_k(config)
    h = hidden.reshape(-1, hidden.shape[-1])
    if model_type in ("gemma4_text", "gemma4"):
        # Gemma4TextRouter: a weightless RMSNorm of the residual, times scale and hidden^-0.5, softmax,
        # top k renormalised, each weight times its expert's per_expert_scale.
        x = h.float() * torch.pow(h.float().pow(2).mean(-1, keepdim=True) + config.rms_norm_eps, -0.5)
        logits = F.linear(x * router.scale * h.shape[-1] ** -0.5, router.proj.weight)
        probs = torch.softmax(logits.float(), dim=-1)
        weights, idx = torch.topk(probs, k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True) * router.per_expert_scale[idx]
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(logits.float(), k)}
    if model_type in ("mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe", "qwen3_vl_moe", "olmoe", *INDEX_FIRST_ROUTERS):
        logits = F.linear(h, router.weight)
        probs = torch.softmax(logits.float(), dim=-1)
        weights, idx = torch.topk(probs, k, dim=-1)
        # Mixtral, Qwen3.5-MoE, Qwen3-VL-MoE and GraniteMoE (a softmax over the k best logits) always renormalise
        # the k probabilities; Qwen and OLMoE otherwise only with norm_topk_prob.
        if model_type in ("mixtral", "qwen3_5_moe", "qwen3_vl_moe", *INDEX_FIRST_ROUTERS) or config.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(logits.float(), k)}
    if model_type == "deepseek_v2":
        logits = F.linear(h.float(), router.weight.float())
        probs = logits.softmax(dim=-1, dtype=torch.float32)
        if config.topk_method == "greedy":
            weights, idx = torch.topk(probs, k, dim=-1)
            margin = _sorted_gap(logits, k)
        elif config.topk_method == "group_limited_greedy":
            n_group, per = config.n_group, config.n_routed_experts // config.n_group
            _, allowed = _best_groups(probs, config, lambda groups: groups.max(dim=-1).values)
            masked = probs.masked_fill(~allowed, 0.0)
            weights, idx = torch.topk(masked, k, dim=-1)
            group_logits = logits.view(-1, n_group, per).max(dim=-1).values
            margin = torch.minimum(_sorted_gap(group_logits, config.topk_group),
                                   _finite_gap(logits.masked_fill(~allowed, -math.inf), k))
        else:
            raise ValueError(f"unknown topk_method {config.topk_method!r}")
        weights = weights * config.routed_scaling_factor
        return {"idx": idx, "weights": weights, "margin": margin}
    if model_type in SIGMOID_GROUP_ROUTED:
        logits = F.linear(h.float(), router.weight.float())
        scores = logits.sigmoid()
        choice = scores + router.e_score_correction_bias
        group_scores, allowed = _best_groups(choice, config, _top2_sum)
        masked = choice.masked_fill(~allowed, -math.inf)
        idx = torch.topk(masked, k, dim=-1).indices
        weights = scores.gather(1, idx)  # the bias picks experts but does not weight them
        if config.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * config.routed_scaling_factor
        margin = torch.minimum(_sorted_gap(group_scores, config.topk_group), _finite_gap(masked, k))
        return {"idx": idx, "weights": weights, "margin": margin}
    if model_type == "mistral4":
        # DeepSeek-V2's softmax scores, V3's groups (the sum of each group's two best probabilities), no bias.
        logits = F.linear(h.float(), router.weight.float())
        probs = logits.softmax(dim=-1)
        group_scores, allowed = _best_groups(probs, config, _top2_sum)
        masked = probs.masked_fill(~allowed, -math.inf)
        weights, idx = torch.topk(masked, k, dim=-1)
        if config.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * config.routed_scaling_factor
        # The experts' order is the logits' within the kept groups; the groups' order is their probability sums'.
        margin = torch.minimum(_sorted_gap(group_scores, config.topk_group), _finite_gap(logits.masked_fill(~allowed, -math.inf), k))
        return {"idx": idx, "weights": weights, "margin": margin}
    if model_type == "laguna":
        # Sigmoid of the (optionally tanh soft-capped) float32 logits; the bias picks, the scores weigh, always renormalised.
        logits = F.linear(h, router.weight).float()
        cap = config.moe_router_logit_softcapping
        if cap > 0:
            logits = torch.tanh(logits / cap) * cap
        scores = logits.sigmoid()
        choice = scores + router.e_score_correction_bias.float()
        idx = torch.topk(choice, k, dim=-1).indices
        weights = scores.gather(1, idx)
        return {"idx": idx, "weights": weights / weights.sum(dim=-1, keepdim=True), "margin": _sorted_gap(choice, k)}
    if model_type == "hunyuan_v1_moe":
        # Mixtral's rule with the router's own top k (moe_topk may differ per layer), over gate.wg.
        logits = F.linear(h.float(), router.wg.weight.float())
        weights, idx = torch.topk(torch.softmax(logits, dim=-1), router.top_k, dim=-1)
        return {"idx": idx, "weights": weights / weights.sum(dim=-1, keepdim=True), "margin": _sorted_gap(logits, router.top_k)}
    if model_type == "ernie4_5_moe":
        # Softmax scores in float32; the top k by score + moe_statics' bias, weighted by their scores over max(sum, moe_norm_min).
        scores = torch.softmax(F.linear(h.float(), router.weight.float()), dim=-1)
        choice = scores + router.moe_statics.e_score_correction_bias.squeeze()
        idx = torch.topk(choice, k, dim=-1).indices
        weights = scores.gather(1, idx)
        weights = weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=config.moe_norm_min)
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(choice, k)}
    if model_type == "minimax_m2":
        # DeepSeek-V3's rule in one group, weights renormalised without epsilon or scaling.
        scores = F.linear(h.float(), router.weight.float()).sigmoid()
        choice = scores + selection_bias
        idx = torch.topk(choice, k, dim=-1).indices
        weights = scores.gather(1, idx)
        return {"idx": idx, "weights": weights / weights.sum(dim=-1, keepdim=True), "margin": _sorted_gap(choice, k)}
    if model_type in ("hy_v3", "afmoe"):
        # MiniMax-M2's rule, renormalised over sum + 1e-20, times router_scaling_factor (AFMoE's route_scale).
        # AFMoE's router holds its linear as `gate`.
        weight = router.gate.weight if model_type == "afmoe" else router.weight
        scores = F.linear(h.float(), weight.float()).sigmoid()
        choice = scores + selection_bias
        idx = torch.topk(choice, k, dim=-1).indices
        weights = scores.gather(1, idx)
        scale = config.route_scale if model_type == "afmoe" else config.router_scaling_factor
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20) * scale
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(choice, k)}
    if model_type == "cohere2_moe":
        # The top-k logits, then a softmax over them, or their sigmoids renormalised with norm_topk_prob.
        logits = F.linear(h, router.weight)
        top, idx = torch.topk(logits, k, dim=-1)
        if config.expert_selection_fn == "softmax":
            weights = torch.softmax(top.float(), dim=-1)
        else:
            weights = torch.sigmoid(top.float())
            if config.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(logits.float(), k)}
    if model_type == "gpt_oss":
        logits = F.linear(h, router.weight, router.bias)
        top, idx = torch.topk(logits, k, dim=-1)
        weights = torch.softmax(top, dim=-1)  # softmax over the k chosen logits only
        return {"idx": idx, "weights": weights, "margin": _sorted_gap(logits, k)}
    if model_type in ("llama4", "llama4_text"):
        logits = F.linear(h, router.weight)
        top, idx = torch.topk(logits, k, dim=-1)
        return {"idx": idx, "weights": torch.sigmoid(top.float()), "margin": _sorted_gap(logits, k)}
    raise ValueError(f"no routing rule for {model_type!r}")


def moe_routers(model) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, router module) for every sparse MoE layer."""
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        # GraniteMoE's layers hold their block as `block_sparse_moe` (None in a dense Granite 4.0 hybrid).
        mlp = getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None) or getattr(layer, "feed_forward", None)
        # Gemma 4's layers hold their router and experts beside their dense mlp.
        if hasattr(layer, "experts") and hasattr(layer, "router"):
            mlp = layer
        if not hasattr(mlp, "experts"):
            continue
        router = getattr(mlp, "router", None) or getattr(mlp, "gate", None)
        if router is None:
            raise RuntimeError(f"layer {i} has experts but no router")
        out.append((i, router))
    return out


def _as_sets(idx: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(sorted(row)) for row in idx.tolist()]


@torch.no_grad()
def routing_stats(model, model_type: str, prompts: list[list[int]], greedy: list[list[int]]) -> dict | None:
    """Routing over every token the reference fed (each prompt and its greedy tokens but the last).

    Runs one uncached forward per sequence with hooks on the routers; the cached greedy loop
    routes the same tokens from hidden states equal to ~1e-6, far inside the margin required.
    """
    routers = moe_routers(model)
    if not routers:
        return None
    seen: dict[int, list[dict]] = {i: [] for i, _ in routers}

    config = model.config.get_text_config()

    def make_hook(layer: int):
        def hook(module, args, output):
            mine = route(model_type, module, config, *args)
            if model_type in ("llama4", "llama4_text"):
                # Llama4Router returns every expert's score (sigmoid of the chosen logits, 0 elsewhere) and the logits.
                their_weights, their_idx = torch.topk(output[0], config.num_experts_per_tok, dim=-1)
            elif model_type in INDEX_FIRST_ROUTERS:
                their_idx, their_weights, _ = output
            else:
                _, their_weights, their_idx = output
            seen[layer].append({"mine": mine, "idx": their_idx.detach(), "weights": their_weights.detach()})
        return hook

    handles = [router.register_forward_hook(make_hook(i)) for i, router in routers]
    try:
        for prompt, tokens in zip(prompts, greedy):
            model(input_ids=torch.tensor([prompt + tokens[:-1]], dtype=torch.long), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()

    k = _top_k(config)
    # Hunyuan MoE's router holds its linear as `wg`, Gemma 4's as `proj`, AFMoE's as `gate`.
    first = routers[0][1]
    n_experts = (getattr(first, "wg", None) or getattr(first, "proj", None) or getattr(first, "gate", None) or first).weight.shape[0]
    layers = {}
    worst_margin, worst_weight_diff, disagreements = math.inf, 0.0, 0
    for layer, calls in seen.items():
        counts = torch.zeros(n_experts, dtype=torch.long)
        sets: set[tuple[int, ...]] = set()
        tokens = 0
        layer_margin = math.inf
        for call in calls:
            mine, their_idx, their_w = call["mine"], call["idx"], call["weights"].float()
            mine_sets, their_sets = _as_sets(mine["idx"]), _as_sets(their_idx)
            for t, (a, b) in enumerate(zip(mine_sets, their_sets)):
                if a != b:
                    disagreements += 1
                    continue
                # Compare weights expert by expert (either side may be unsorted).
                order_m = torch.argsort(mine["idx"][t])
                order_t = torch.argsort(their_idx[t])
                diff = float((mine["weights"][t][order_m].float() - their_w[t][order_t]).abs().max())
                worst_weight_diff = max(worst_weight_diff, diff)
            counts += torch.bincount(their_idx.reshape(-1).cpu(), minlength=n_experts)
            sets.update(their_sets)
            tokens += their_idx.shape[0]
            layer_margin = min(layer_margin, float(mine["margin"].min()))
        worst_margin = min(worst_margin, layer_margin)
        layers[str(layer)] = {
            "tokens": tokens,
            "expert_counts": counts.tolist(),
            "distinct_topk_sets": len(sets),
            "min_routing_margin": layer_margin,
        }
    usage_ok = all(min(v["expert_counts"]) > 0 and v["distinct_topk_sets"] > 1 for v in layers.values())
    return {
        "top_k": k,
        "num_experts": n_experts,
        "layers": layers,
        "min_routing_margin": worst_margin,
        "every_expert_used": usage_ok,
        "recomputed_vs_transformers": {"token_choices_disagreeing": disagreements,
                                       "max_abs_weight_diff": worst_weight_diff},
    }


# ---------------------------------------------------------------------------------------
# DeepSeek-V3.2's lightning indexer, recomputed


def index_scores(indexer, hidden: torch.Tensor, q_resid: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 interleaved: bool = False) -> torch.Tensor:
    """[B, S, T] index scores of an uncached forward, from the indexer's inputs and weights alone:
    sum_h w[s,h] / sqrt(H) * relu(q[s,h] . k[t] / sqrt(D)), q and k rotated over their leading rope
    dims (rotate_half pairs; `interleaved`, GLM-5's: adjacent pairs, emitted as [evens | odds]),
    future positions -inf."""
    b, s, _ = hidden.shape
    heads, dim, rope = indexer.n_heads, indexer.head_dim, indexer.qk_rope_head_dim
    half = rope // 2
    c, sn = cos[..., :half], sin[..., :half]

    def rotate(x, c, sn):
        if interleaved:
            x = torch.cat([x[..., 0:rope:2], x[..., 1:rope:2], x[..., rope:]], dim=-1)
        x1, x2 = x[..., :half], x[..., half:rope]
        return torch.cat([x1 * c - x2 * sn, x2 * c + x1 * sn, x[..., rope:]], dim=-1)

    q = rotate(F.linear(q_resid, indexer.wq_b.weight).view(b, s, heads, dim), c.unsqueeze(2), sn.unsqueeze(2))
    norm = indexer.k_norm
    k = rotate(F.layer_norm(F.linear(hidden, indexer.wk.weight), (dim,), norm.weight, norm.bias, norm.eps), c, sn)
    per_head = torch.relu(torch.einsum("bshd,btd->bsht", q, k) * dim ** -0.5)
    weights = F.linear(hidden, indexer.weights_proj.weight) * heads ** -0.5
    scores = torch.einsum("bsh,bsht->bst", weights, per_head)
    future = torch.ones(s, s, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, -math.inf)


@torch.no_grad()
def index_selection_stats(model, prompts: list[list[int]], greedy: list[list[int]]) -> dict:
    """Every indexer's top-k choice over every token the reference fed, recomputed by index_scores
    and compared with transformers' (uncached forwards, as routing_stats). A query that sees no more
    than index_topk positions attends to all of them; for the others (`sparse_rows`) the margin is
    the gap between the k-th and (k+1)-th score."""
    topk = model.config.index_topk
    interleaved = model.config.model_type == "glm_moe_dsa"
    rows = sparse_rows = disagreements = 0
    margin = math.inf

    def hook(module, args, kwargs, output):
        nonlocal rows, sparse_rows, disagreements, margin
        hidden, q_resid, (cos, sin) = args[0], args[1], args[2]
        scores = index_scores(module, hidden, q_resid, cos, sin, interleaved)[0]
        chosen = output[0]
        for s in range(scores.shape[0]):
            rows += 1
            visible = s + 1
            theirs = {int(t) for t in chosen[s].tolist() if t <= s}
            if visible <= topk:
                mine = set(range(visible))
            else:
                sparse_rows += 1
                mine = set(torch.topk(scores[s, :visible], topk).indices.tolist())
                margin = min(margin, float(_sorted_gap(scores[s, :visible].unsqueeze(0), topk)[0]))
            disagreements += mine != theirs

    # GLM-5's shared layers have no indexer: they reuse the choice of the full layer before them.
    handles = [layer.self_attn.indexer.register_forward_hook(hook, with_kwargs=True) for layer in model.model.layers
               if layer.self_attn.indexer is not None]
    try:
        for prompt, tokens in zip(prompts, greedy):
            model(input_ids=torch.tensor([prompt + tokens[:-1]], dtype=torch.long), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {"index_topk": topk, "rows": rows, "sparse_rows": sparse_rows, "min_index_margin": margin,
            "rows_disagreeing": disagreements}


# ---------------------------------------------------------------------------------------
# Evidence that features matter: switch one off, compare prefill logits


@torch.no_grad()
def last_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    out = []
    for prompt in prompts:
        m = copy.deepcopy(model)  # stateful rotary modules (dynamic/longrope) start fresh
        logits = m(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=False).logits[0, -1]
        out.append(logits.float())
    return out


def _layers(model):
    return decoder_layers(model)


def decoder_layers(model):
    """The decoder layers of a causal LM, or of a vision-language model's language model."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    return layers if layers is not None else decoder.model.layers


def _no_sliding_window(model):
    model.config.sliding_window = 1 << 20
    for layer in _layers(model):
        if getattr(layer.self_attn, "sliding_window", None):
            layer.self_attn.sliding_window = 1 << 20


def _no_sinks(model):
    for layer in _layers(model):
        # MiMo-V2-Flash's full-attention layers have none.
        if layer.self_attn.sinks is not None:
            layer.self_attn.sinks.data.fill_(-1e30)


def _no_attn_softcap(model):
    for layer in _layers(model):
        layer.self_attn.attn_logit_softcapping = None


def _no_final_softcap(model):
    model.config.final_logit_softcapping = None


def _no_embed_scale(model):
    model.model.embed_tokens.embed_scale.fill_(1.0)


def _scale_head_dim(model):
    for layer in _layers(model):
        layer.self_attn.scaling = layer.self_attn.head_dim ** -0.5


def _no_mscale_on_softmax(model):
    for layer in _layers(model):
        layer.self_attn.scaling = layer.self_attn.qk_head_dim ** -0.5


def _no_e_score_bias(model):
    # A buffer on the router (DeepSeek-V3, GLM) or on its MoE block (MiniMax-M2), or a frozen parameter (ERNIE 4.5's moe_statics).
    for name, tensor in [*model.named_buffers(), *model.named_parameters()]:
        if name.endswith("e_score_correction_bias"):
            tensor.data.zero_()


def _routed_scale_one(model):
    for _, router in moe_routers(model):
        router.routed_scaling_factor = 1.0


def _kda_decay_per_head(model):
    """Kimi Delta Attention's decay per head, not per key channel: each head's channels take their mean g."""
    for layer in _layers(model):
        gate = getattr(layer.self_attn, "forget_gate", None)
        if gate is None:
            continue
        per_channel = gate.forward
        gate.forward = lambda x, f=per_channel: (lambda g: g.mean(-1, keepdim=True).expand_as(g))(f(x))


def _flip_norm_topk(model):
    for _, router in moe_routers(model):
        router.norm_topk_prob = not router.norm_topk_prob


def _shared_expert_ungated(model):
    """Replace sigmoid(shared_expert_gate(x)) by 1, i.e. the shared expert added as is."""
    for layer in _layers(model):
        mlp = layer.mlp
        if hasattr(mlp, "shared_expert_gate"):
            mlp.shared_expert_gate = _ConstantOne()


class _ConstantOne(torch.nn.Module):
    def forward(self, x):
        return torch.full((*x.shape[:-1], 1), 1e4, dtype=x.dtype)  # sigmoid(1e4) == 1


def _no_swiglu_clamp(model):
    for layer in _layers(model):
        layer.mlp.experts.limit = math.inf


def _rope_not_interleaved(model):
    model.config.rope_interleave = False


def _rope_halves(model):
    """ERNIE 4.5's and GLM's interleaved pairs read as rotate_half's halves: q/k rows reordered so that
    their (x[2i], x[2i+1]) rotation of the leading r rotary dims turns the original rows' (x[i], x[i + r/2]) pairs."""
    r = model.get_decoder().rotary_emb.inv_freq.shape[0] * 2
    for layer in _layers(model):
        attn = layer.self_attn
        d = attn.head_dim
        perm = torch.cat([torch.arange(r).view(2, r // 2).t().reshape(-1), torch.arange(r, d)])  # 0, r/2, 1, r/2 + 1, ..., then the unrotated dims
        for proj in (attn.q_proj, attn.k_proj):
            rows = torch.cat([h * d + perm for h in range(proj.out_features // d)])
            proj.weight.data = proj.weight.data[rows]
            if proj.bias is not None:
                proj.bias.data = proj.bias.data[rows]


def _longrope_short_only(model):
    params = model.config.rope_parameters
    params["long_factor"] = list(params["short_factor"])


def _global_rope_unscaled(model):
    rotary = model.model.rotary_emb
    factor = model.config.rope_parameters["full_attention"]["factor"]
    rotary.full_attention_inv_freq = rotary.full_attention_inv_freq * factor
    rotary.full_attention_original_inv_freq = rotary.full_attention_original_inv_freq * factor


def _local_rope_as_global(model):
    rotary = model.model.rotary_emb
    theta = model.config.rope_parameters["full_attention"]["rope_theta"]
    dim = rotary.sliding_attention_inv_freq.shape[0] * 2
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    rotary.sliding_attention_inv_freq = inv
    rotary.sliding_attention_original_inv_freq = inv.clone()


def _no_qk_norm(model):
    for layer in _layers(model):
        layer.self_attn.q_norm = torch.nn.Identity()
        layer.self_attn.k_norm = torch.nn.Identity()


def _no_attention_chunks(model):
    model.config.get_text_config().attention_chunk_size = 1 << 20


def _no_attn_temperature(model):
    for layer in _layers(model):
        layer.self_attn.attn_temperature_tuning = False


def _no_qk_l2_norm(model):
    for layer in _layers(model):
        if hasattr(layer.self_attn, "qk_norm"):
            del layer.self_attn.qk_norm


def _expert_weights_on_outputs(model):
    """Llama 4's routed experts run on x and their outputs are weighted, w · expert(x), instead of expert(w · x)."""
    for layer in _layers(model):
        moe = layer.feed_forward
        if not hasattr(moe, "experts"):
            continue

        def forward(hidden_states, moe=moe):
            hidden_states = hidden_states.reshape(-1, moe.hidden_dim)
            scores, logits = moe.router(hidden_states)
            routed = moe.experts(hidden_states.repeat(scores.shape[1], 1))
            routed = routed * scores.transpose(0, 1).reshape(-1, 1)
            out = moe.shared_expert(hidden_states)
            return out + routed.reshape(scores.shape[1], -1, routed.shape[-1]).sum(dim=0), logits

        moe.forward = forward


def _index_topk_dense(model):
    for layer in _layers(model):
        if layer.self_attn.indexer is not None:
            layer.self_attn.indexer.index_topk = 1 << 20


def _shared_layers_dense(model):
    """GLM-5's shared layers attend to every position instead of reusing the previous full layer's top-k."""
    for layer in _layers(model):
        attn = layer.self_attn
        if attn.indexer is not None:
            continue

        def forward(*args, attn_forward=attn.forward, prev_topk_indices=None, **kwargs):
            b, s = prev_topk_indices.shape[:2]
            every = torch.arange(s, dtype=prev_topk_indices.dtype).expand(b, s, s)
            return attn_forward(*args, prev_topk_indices=every, **kwargs)

        attn.forward = forward


@torch.no_grad()
def _indexer_rope_half(model):
    """GLM-5's indexer rotating rotate_half pairs (DeepSeek-V3.2's) instead of interleaved ones: its
    rows interleaved (row 2i the old row i, row 2i+1 the old row half + i), which its interleaved
    rotation reads back as the old rows in rotate_half order."""
    for layer in _layers(model):
        indexer = layer.self_attn.indexer
        if indexer is None:
            continue
        rope, dim, heads = indexer.qk_rope_head_dim, indexer.head_dim, indexer.n_heads
        perm = torch.arange(dim)
        perm[0:rope:2] = torch.arange(rope // 2)
        perm[1:rope:2] = torch.arange(rope // 2, rope)
        wq = indexer.wq_b.weight
        wq.copy_(wq.view(heads, dim, -1)[:, perm].reshape(wq.shape))
        for t in (indexer.wk.weight, indexer.k_norm.weight, indexer.k_norm.bias):
            t.copy_(t[perm])


def _no_sandwich_norms(model):
    for layer in _layers(model):
        layer.post_self_attn_layernorm = torch.nn.Identity()
        layer.post_mlp_layernorm = torch.nn.Identity()


def _rotary_whole_head(model):
    """GLM-4.5's partial rotary (half of each head) replaced by rotating the whole head."""
    rotary = model.model.rotary_emb
    cfg = model.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    rotary.inv_freq = inv
    rotary.original_inv_freq = inv.clone()


def _value_scale_one(model):
    for layer in _layers(model):
        layer.self_attn.v_scale = 1.0


def _no_router_softcap(model):
    for _, router in moe_routers(model):
        router.router_logit_softcapping = 0.0


class _ConstantGate(torch.nn.Module):
    """A g_proj whose every output is ln(e - 1), so that softplus of it is 1."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, h):
        return torch.full((*h.shape[:-1], self.width), math.log(math.e - 1), dtype=h.dtype)


def _output_gate_one(model):
    for layer in _layers(model):
        layer.self_attn.g_proj = _ConstantGate(layer.self_attn.g_proj.out_features)


def _no_llama4_scaling(model):
    # get_llama_4_attn_scale reads the beta from the config at every forward.
    model.config.get_text_config().rope_parameters["llama_4_scaling_beta"] = 0.0


def _rope_yarn_attention_factor_one(model):
    model.model.rotary_emb.attention_scaling = 1.0


PROBES = {
    "sliding_window_off": ("sliding window ignored (every layer attends to the whole prefix)", _no_sliding_window),
    "sinks_off": ("attention sinks removed (sink logit -inf)", _no_sinks),
    "attn_softcap_off": ("attention-logit soft-capping removed", _no_attn_softcap),
    "final_softcap_off": ("final-logit soft-capping removed", _no_final_softcap),
    "embed_scale_off": ("embedding not multiplied by sqrt(hidden_size)", _no_embed_scale),
    "scaling_head_dim": ("attention scale head_dim^-0.5 instead of query_pre_attn_scalar^-0.5", _scale_head_dim),
    "mscale_off": ("softmax scale without the YaRN mscale(factor, mscale_all_dim)^2 correction", _no_mscale_on_softmax),
    "e_score_bias_off": ("e_score_correction_bias zeroed", _no_e_score_bias),
    "routed_scale_one": ("routed_scaling_factor replaced by 1", _routed_scale_one),
    "norm_topk_flipped": ("norm_topk_prob flipped", _flip_norm_topk),
    "shared_expert_ungated": ("shared expert added without its sigmoid gate", _shared_expert_ungated),
    "swiglu_clamp_off": ("SwiGLU clamp (limit 7) removed", _no_swiglu_clamp),
    "rope_not_interleaved": ("rope_interleave=False (rotate_half pairing instead of adjacent pairs)", _rope_not_interleaved),
    "longrope_short_only": ("long_factor replaced by short_factor", _longrope_short_only),
    "global_rope_unscaled": ("linear RoPE scaling on the global layers removed", _global_rope_unscaled),
    "local_rope_global_base": ("sliding layers use the global rope_theta", _local_rope_as_global),
    "qk_norm_off": ("q_norm/k_norm removed", _no_qk_norm),
    "index_topk_dense": ("DeepSeek sparse attention off: every position selected (index_topk unbounded)", _index_topk_dense),
    "shared_layers_dense": ("GLM-5's shared layers attend to every position, not the previous full layer's top-k", _shared_layers_dense),
    "indexer_rope_half": ("GLM-5's indexer rotates rotate_half pairs instead of interleaved ones", _indexer_rope_half),
    "rotary_whole_head": ("partial_rotary_factor ignored: the whole head rotates", _rotary_whole_head),
    "sandwich_norms_off": ("GLM-4's post_self_attn_layernorm / post_mlp_layernorm removed", _no_sandwich_norms),
    "rope_halves": ("interleaved RoPE pairs read as rotate_half halves", _rope_halves),
    "rope_attention_factor_one": ("YaRN/longrope cos/sin attention factor replaced by 1", _rope_yarn_attention_factor_one),
    "attention_chunks_off": ("chunked attention off (attention_chunk_size unbounded: the chunked layers attend to the whole prefix)", _no_attention_chunks),
    "attn_temperature_off": ("attention temperature tuning of the NoPE layers off", _no_attn_temperature),
    "router_softcap_off": ("router logits not soft-capped (moe_router_logit_softcapping 0)", _no_router_softcap),
    "output_gate_one": ("attention output gate softplus(g_proj(x)) replaced by 1", _output_gate_one),
    "value_scale_one": ("attention_value_scale replaced by 1 (values cached unscaled)", _value_scale_one),
    "llama4_scaling_off": ("queries not scaled by 1 + llama_4_scaling_beta * ln(1 + floor(p / original)) (beta 0)", _no_llama4_scaling),
    "qk_l2_norm_off": ("L2 norm of q and k on the RoPE layers removed", _no_qk_l2_norm),
    "expert_output_weighted": ("routing weight on the expert's output, w * expert(x), not its input", _expert_weights_on_outputs),
    "kda_decay_per_head": ("Kimi Delta Attention's decay shared by each head's key channels (their mean)", _kda_decay_per_head),
}


@torch.no_grad()
def evidence(model, prompts: list[list[int]], names: tuple[str, ...]) -> dict:
    """max |Δ last-token logit| over the prompts when one feature is switched off."""
    base = last_logits(model, prompts)
    out = {}
    for name in names:
        label, mutate = PROBES[name]
        m = copy.deepcopy(model)
        mutate(m)
        other = last_logits(m, prompts)
        out[name] = {"what": label,
                     "max_abs_dlogit": float(max((a - b).abs().max() for a, b in zip(base, other)))}
    return out


# ---------------------------------------------------------------------------------------
# Soft-capping and attention-score statistics


@contextlib.contextmanager
def _record_attention_scores(model, sink: dict):
    """Wrap the modeling module's eager_attention_forward to record max |q.k * scaling| (pre-cap, unmasked)."""
    module = importlib.import_module(type(model).__module__)
    original = module.eager_attention_forward

    def wrapped(attn, query, key, value, attention_mask, *args, **kwargs):
        scaling = kwargs.get("scaling", args[1] if len(args) > 1 else None)
        if scaling is None:
            scaling = attn.head_dim ** -0.5
        k = module.repeat_kv(key, attn.num_key_value_groups)
        scores = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            allowed = attention_mask[..., : k.shape[-2]] == 0
            scores = scores.masked_fill(~allowed, 0.0)
        sink["max_abs_attn_score_before_cap"] = max(sink.get("max_abs_attn_score_before_cap", 0.0),
                                                    float(scores.abs().max()))
        return original(attn, query, key, value, attention_mask, *args, **kwargs)

    module.eager_attention_forward = wrapped
    try:
        yield
    finally:
        module.eager_attention_forward = original


@torch.no_grad()
def softcap_stats(model, prompts: list[list[int]], greedy: list[list[int]]) -> dict:
    cfg = model.config
    stats: dict = {
        "attn_logit_softcapping": getattr(cfg, "attn_logit_softcapping", None),
        "final_logit_softcapping": getattr(cfg, "final_logit_softcapping", None),
    }
    pre = {"max": 0.0}
    post = {"max": 0.0}

    def head_hook(module, args, output):
        pre["max"] = max(pre["max"], float(output.abs().max()))

    handle = model.lm_head.register_forward_hook(head_hook)
    try:
        with _record_attention_scores(model, stats):
            for prompt, tokens in zip(prompts, greedy):
                out = model(input_ids=torch.tensor([prompt + tokens[:-1]], dtype=torch.long), use_cache=False)
                post["max"] = max(post["max"], float(out.logits.abs().max()))
    finally:
        handle.remove()
    stats["max_abs_logit_before_cap"] = pre["max"]
    stats["max_abs_logit_after_cap"] = post["max"]
    for key, cap, value in (("attn", stats["attn_logit_softcapping"], stats.get("max_abs_attn_score_before_cap")),
                            ("final", stats["final_logit_softcapping"], pre["max"])):
        if cap and value is not None:
            # How much the largest value is pulled in: cap*tanh(v/cap) vs v.
            stats[f"{key}_largest_value_bent_to"] = cap * math.tanh(value / cap)
    return stats


# ---------------------------------------------------------------------------------------
# Checkpoint layout: the names real Hub checkpoints of each family use

# (regexes every checkpoint of the family must contain at least once, regexes none may match)
HUB_LAYOUT = {
    # Vision-language checkpoints nest the language model as the Hub's do; the vision tower and
    # projector are saved too (the engine must skip them).
    "gemma3": (
        [r"^language_model\.model\.layers\.\d+\.self_attn\.q_norm\.weight$", r"^language_model\.model\.embed_tokens\.weight$",
         r"^vision_tower\.", r"^multi_modal_projector\."],
        [r"^model\.", r"lm_head"],
    ),
    "llama4": (
        [r"^language_model\.model\.layers\.\d+\.feed_forward\.experts\.gate_up_proj$",
         r"^language_model\.model\.layers\.\d+\.feed_forward\.experts\.down_proj$",
         r"^language_model\.model\.layers\.\d+\.feed_forward\.router\.weight$",
         r"^language_model\.model\.layers\.\d+\.feed_forward\.shared_expert\.(gate|up|down)_proj\.weight$",
         r"^language_model\.model\.layers\.\d+\.feed_forward\.gate_proj\.weight$",
         r"^language_model\.lm_head\.weight$", r"^vision_model\.", r"^multi_modal_projector\."],
        [r"^model\.", r"^lm_head", r"q_norm|k_norm"],
    ),
    "llama4_text": (
        [r"^model\.layers\.\d+\.feed_forward\.experts\.gate_up_proj$", r"^model\.layers\.\d+\.feed_forward\.experts\.down_proj$",
         r"^model\.layers\.\d+\.feed_forward\.router\.weight$",
         r"^model\.layers\.\d+\.feed_forward\.shared_expert\.(gate|up|down)_proj\.weight$", r"^lm_head\.weight$"],
        [r"language_model", r"vision", r"q_norm|k_norm"],
    ),
    "mistral3": (
        [r"^language_model\.model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"^language_model\.lm_head\.weight$",
         r"^vision_tower\.", r"^multi_modal_projector\."],
        [r"^model\.", r"^lm_head"],
    ),
    # Qwen2-VL and Qwen2.5-VL keep the causal LM's own names beside visual.*; Qwen3-VL nests them.
    "qwen2_vl": (
        [r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$", r"^model\.embed_tokens\.weight$", r"^lm_head\.weight$", r"^visual\."],
        [r"language_model", r"o_proj\.bias"],
    ),
    "qwen2_5_vl": (
        [r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$", r"^model\.embed_tokens\.weight$", r"^visual\."],
        [r"language_model", r"o_proj\.bias", r"lm_head"],
    ),
    "qwen3_vl": (
        [r"^model\.language_model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$", r"^model\.language_model\.embed_tokens\.weight$",
         r"^model\.visual\.deepstack_merger_list\."],
        [r"^language_model\.", r"_proj\.bias", r"lm_head"],
    ),
    "qwen3_vl_moe": (
        [r"^model\.language_model\.layers\.\d+\.mlp\.experts\.gate_up_proj$", r"^model\.language_model\.layers\.\d+\.mlp\.experts\.down_proj$",
         r"^model\.language_model\.layers\.\d+\.mlp\.gate\.weight$", r"^model\.language_model\.layers\.\d+\.mlp\.gate_proj\.weight$",
         r"^model\.language_model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$", r"^lm_head\.weight$", r"^model\.visual\."],
        [r"experts\.\d+\.", r"shared_expert", r"_proj\.bias"],
    ),
    "mixtral": (
        [r"^model\.layers\.\d+\.block_sparse_moe\.gate\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w1\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w2\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w3\.weight$"],
        [r"\.mlp\.", r"gate_up_proj", r"experts\.(gate|down|up)_proj"],
    ),
    "minimax_m2": (
        [r"^model\.layers\.\d+\.block_sparse_moe\.gate\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w[123]\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"\.mlp\.", r"gate_up_proj", r"experts\.(gate|down|up)_proj", r"gate\.e_score_correction_bias"],
    ),
    "olmoe": (
        [r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"shared_expert"],
    ),
    # GraniteMoE's Hub layout: experts fused output-major as input_linear / output_linear, router under router.layer.
    "granitemoe": (
        [r"^model\.layers\.\d+\.block_sparse_moe\.router\.layer\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.input_linear\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.output_linear\.weight$"],
        [r"\.mlp\.", r"gate_up_proj", r"experts\.", r"shared_mlp"],
    ),
    "granitemoeshared": (
        [r"^model\.layers\.\d+\.block_sparse_moe\.router\.layer\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.input_linear\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.output_linear\.weight$",
         r"^model\.layers\.\d+\.shared_mlp\.input_linear\.weight$",
         r"^model\.layers\.\d+\.shared_mlp\.output_linear\.weight$"],
        [r"\.mlp\.", r"gate_up_proj", r"experts\."],
    ),
    "granitemoehybrid": (
        [r"^model\.layers\.\d+\.mamba\.in_proj\.weight$", r"^model\.layers\.\d+\.mamba\.conv1d\.weight$",
         r"^model\.layers\.\d+\.mamba\.A_log$", r"^model\.layers\.\d+\.shared_mlp\.input_linear\.weight$"],
        [r"\.mlp\.", r"gate_up_proj", r"experts\.", r"router\.weight$"],
    ),
    "dots1": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$"],
    ),
    "exaone_moe": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"gate\.e_score_correction_bias"],
    ),
    "hy_v3": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.router\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.expert_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_mlp\.(gate|up|down)_proj\.weight$"],
        [r"gate_up_proj", r"e_score_correction_bias", r"shared_experts", r"mlp\.gate\.weight$"],
    ),
    "qwen2_moe": (
        [r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_expert\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_expert_gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate_proj\.weight$",  # the dense (mlp_only) layer
         r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$"],
    ),
    "qwen3_moe": (
        [r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"shared_expert"],
    ),
    "deepseek_v2": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_layernorm\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_b_proj\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$"],
    ),
    "deepseek_v3": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_layernorm\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_b_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"self_attn\.q_proj"],
    ),
    "deepseek_v32": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.wq_b\.weight$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.wk\.weight$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.k_norm\.(weight|bias)$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.weights_proj\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"self_attn\.q_proj"],
    ),
    "mistral4": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.gate_up_proj$",
         r"^model\.layers\.\d+\.mlp\.experts\.down_proj$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_b_proj\.weight$"],
        [r"experts\.\d+\.", r"e_score_correction_bias", r"self_attn\.q_proj"],
    ),
    "mimo_v2_flash": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.[12]\.self_attn\.attention_sink_bias$",
         r"^model\.layers\.\d+\.self_attn\.v_proj\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"shared_expert", r"self_attn\.sinks", r"o_proj\.bias",
         r"^model\.layers\.0\.self_attn\.attention_sink_bias"],
    ),
    "laguna": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.weight$",
         r"^model\.layers\.\d+\.mlp\.experts\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_expert\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.g_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"shared_experts\.", r"mlp\.gate\.e_score_correction_bias"],
    ),
    "glm4_moe": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"self_attn\.o_proj\.bias"],
    ),
    "glm4_moe_lite": (
        [r"^model\.layers\.\d+\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$",
         r"^model\.layers\.\d+\.self_attn\.kv_b_proj\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"self_attn\.q_proj"],
    ),
    "glm_moe_dsa": (
        [r"^model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.q_a_proj\.weight$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.wq_b\.weight$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.k_norm\.(weight|bias)$",
         r"^model\.layers\.\d+\.self_attn\.indexer\.weights_proj\.weight$"],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"self_attn\.q_proj", r"^model\.layers\.1\.self_attn\.indexer\."],
    ),
    "gemma2": (
        [r"^model\.layers\.\d+\.(pre|post)_feedforward_layernorm\.weight$",
         r"^model\.layers\.\d+\.post_attention_layernorm\.weight$"],
        [r"^lm_head\."],
    ),
    "gemma3_text": (
        [r"^model\.layers\.\d+\.(pre|post)_feedforward_layernorm\.weight$",
         r"^model\.layers\.\d+\.self_attn\.[qk]_norm\.weight$"],
        [r"^lm_head\.", r"language_model"],
    ),
    "glm": (
        [r"^model\.layers\.\d+\.mlp\.gate_up_proj\.weight$", r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$"],
        [r"mlp\.(gate|up)_proj", r"o_proj\.bias", r"post_self_attn_layernorm", r"post_mlp_layernorm"],
    ),
    "glm4": (
        [r"^model\.layers\.\d+\.mlp\.gate_up_proj\.weight$", r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$",
         r"^model\.layers\.\d+\.post_self_attn_layernorm\.weight$", r"^model\.layers\.\d+\.post_mlp_layernorm\.weight$"],
        [r"mlp\.(gate|up)_proj", r"o_proj\.bias"],
    ),
    # GLM-4.1V and GLM-4.5V nest the language model under model.language_model.*.
    "glm4v": (
        [r"^model\.language_model\.layers\.\d+\.mlp\.gate_up_proj\.weight$", r"^model\.language_model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$",
         r"^model\.language_model\.layers\.\d+\.post_self_attn_layernorm\.weight$", r"^model\.visual\."],
        [r"^language_model\.", r"o_proj\.bias", r"lm_head"],
    ),
    "glm4v_moe": (
        [r"^model\.language_model\.layers\.0\.mlp\.gate_proj\.weight$",
         r"^model\.language_model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias$",
         r"^model\.language_model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$",
         r"^model\.language_model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight$",
         r"^model\.language_model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$", r"^lm_head\.weight$", r"^model\.visual\."],
        [r"gate_up_proj", r"experts\.(gate|down|up)_proj$", r"o_proj\.bias", r"[qk]_norm"],
    ),
    "phi3": (
        [r"^model\.layers\.\d+\.self_attn\.qkv_proj\.weight$",
         r"^model\.layers\.\d+\.mlp\.gate_up_proj\.weight$"],
        [r"self_attn\.[qkv]_proj", r"mlp\.(gate|up)_proj"],
    ),
    "gpt_oss": (
        [r"^model\.layers\.\d+\.self_attn\.sinks$",
         r"^model\.layers\.\d+\.self_attn\.[qkvo]_proj\.bias$",
         r"^model\.layers\.\d+\.mlp\.router\.(weight|bias)$",
         r"^model\.layers\.\d+\.mlp\.experts\.gate_up_proj$",
         r"^model\.layers\.\d+\.mlp\.experts\.gate_up_proj_bias$",
         r"^model\.layers\.\d+\.mlp\.experts\.down_proj$",
         r"^model\.layers\.\d+\.mlp\.experts\.down_proj_bias$"],
        [r"experts\.\d+\.", r"_blocks$", r"_scales$"],
    ),
    # Kimi Linear as the Hub's checkpoints: KDA's three convolutions and its forget gate's tensors
    # beside the projections, MoE layers under block_sparse_moe with Mixtral-style per-expert w1/w2/w3,
    # dense layers under mlp.
    "kimi_linear": (
        [r"^model\.layers\.\d+\.self_attn\.q_conv1d\.weight$", r"^model\.layers\.\d+\.self_attn\.A_log$",
         r"^model\.layers\.\d+\.self_attn\.f_b_proj\.weight$", r"^model\.layers\.\d+\.self_attn\.kv_a_proj_with_mqa\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w[123]\.weight$",
         r"^model\.layers\.\d+\.block_sparse_moe\.gate\.e_score_correction_bias$", r"^model\.layers\.0\.mlp\.gate_proj\.weight$"],
        [r"\.forget_gate\.", r"self_attn\.conv1d", r"experts\.(gate_up|down)_proj$", r"^model\.layers\.0\.block_sparse_moe\."],
    ),
}


def saved_tensors(out_dir: Path) -> dict[str, list]:
    """{name: [shape, dtype]} over every .safetensors file in out_dir."""
    from safetensors import safe_open

    names: dict[str, list] = {}
    for path in sorted(out_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                names[name] = [list(t.get_shape()), t.get_dtype()]
    return dict(sorted(names.items(), key=lambda kv: _natural_key(kv[0])))


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def check_hub_layout(model_type: str, tensors: dict[str, list], config) -> None:
    rules = HUB_LAYOUT.get(model_type)
    if rules is None:
        return
    required, forbidden = rules
    names = list(tensors)
    missing = [r for r in required if not any(re.search(r, n) for n in names)]
    bad = sorted({n for n in names for r in forbidden if re.search(r, n)})
    if missing or bad:
        raise RuntimeError(f"{model_type} checkpoint is not in the Hub layout: missing {missing}, unexpected {bad[:8]}")
    if model_type == "gpt_oss":
        e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size
        want = {"gate_up_proj": [e, h, 2 * i], "gate_up_proj_bias": [e, 2 * i], "down_proj": [e, i, h],
                "down_proj_bias": [e, h]}
        for name, (shape, _) in tensors.items():
            tail = name.rsplit(".", 1)[-1]
            if ".mlp.experts." in name and shape != want[tail]:
                raise RuntimeError(f"{name} has shape {shape}, the Hub layout is {want[tail]}")
    if model_type == "qwen3_vl_moe":
        text = config.get_text_config()
        e, h, i = text.num_experts, text.hidden_size, text.moe_intermediate_size
        want = {"gate_up_proj": [e, h, 2 * i], "down_proj": [e, i, h]}
        for name, (shape, _) in tensors.items():
            tail = name.rsplit(".", 1)[-1]
            if ".mlp.experts." in name and shape != want[tail]:
                raise RuntimeError(f"{name} has shape {shape}, the Hub layout (input-major) is {want[tail]}")
