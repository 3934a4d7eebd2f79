"""Speculative-decoding heads for an oracle fixture, in the formats their authors publish.

No real head checkpoint can be downloaded in tests, so this writes tiny ones for
test/fixtures/llama-gqa (hidden 64, vocabulary 256):

  test/fixtures/spec-heads/medusa-llama-gqa/
    config.json                  FasterDecoding/Medusa's MedusaConfig: medusa_num_heads, medusa_num_layers
    medusa_lm_head.safetensors   the heads' state dict as Medusa saves it: head k's residual block j
                                 "k.j.linear.weight/bias", its LM head "k.<num_layers>.weight" (bf16)
    heads_oracle.json            two hidden rows and each head's top-5 tokens on them (PyTorch's
                                 ResBlock + Linear, float32), for the loader's parity test
  test/fixtures/spec-heads/eagle-llama-gqa/
    config.json, model.safetensors   an EAGLE-1/2 head as the EAGLE authors publish it (a LlamaConfig of
                                 one layer; fc.weight/.bias, layers.0.* without input_layernorm; no
                                 embedding or LM head: the target's), bf16, saved as safetensors
  test/fixtures/spec-heads/eagle3-llama-gqa/
    config.json, model.safetensors   an EAGLE-3 head in the authors' format (LlamaForCausalLMEagle3,
                                 draft_vocab_size 128, midlayer.*, fc over three target layers' states,
                                 norm, lm_head, d2t/t2d); eagle_aux_hidden_state_layer_ids [0, 1, 1]
                                 since llama-gqa has two layers
  test/fixtures/spec-heads/eagle3-speculators-llama-gqa/
    config.json, model.safetensors   the same EAGLE-3 weights in vLLM's speculators format
                                 (speculators_model_type eagle3, transformer_layer_config, layers.0.*,
                                 its own embed_tokens), with norm_before_residual true
  test/fixtures/spec-heads/mtp-{deepseek-v3,glm4-moe,glm-moe-dsa}/head_oracle.json
                                 the same (glm-moe-dsa's: twelve positions) for the MTP layer that make_fixtures.py stores
                                 in test/fixtures/deepseek-v3, glm4-moe and glm-moe-dsa (layer
                                 num_hidden_layers: enorm, hnorm, eh_proj, a MoE decoder block of the
                                 family, GLM-5's with its indexer, shared_head), its block run by
                                 transformers' own decoder layer
  test/fixtures/spec-heads/mtp-{qwen3.5-hybrid,qwen3-next-moe}/head_oracle.json
                                 the same for the Qwen MTP layer make_fixtures.py stores in
                                 test/fixtures/qwen3.5-hybrid and qwen3-next-moe (mtp.fc over
                                 [embedding, hidden] with their pre-fc norms, a full-attention
                                 decoder block of the family, mtp.norm, the target's lm_head)
  each EAGLE dir: head_oracle.json  six positions of one sequence: the tokens, the target's states,
                                 and the head's outputs and logits there (eagle_reference.py, float32
                                 on the bf16 weights), for the head's parity test

The heads are fitted, not random, so that verification accepts some drafts: each residual block is
a small random layer (so the block is exercised), and each LM head is trained for a few hundred Adam
steps on the target's own greedy continuations of random prompts (head k predicts the token k + 2
positions after the hidden state's), as Medusa-1 trains its heads with the base model frozen. The
EAGLE heads are trained the same way (the target frozen, teacher-forced on its own states), EAGLE-1
with its feature regression loss beside the token loss.

Usage: /work/.venv-oracle/bin/python tools/oracle/make_spec_heads.py [--out test/fixtures/spec-heads] [--only medusa eagle mtp]
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import eagle_reference

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "test/fixtures/llama-gqa"
NUM_HEADS = 3
NUM_LAYERS = 1
SEED = 15


def greedy_states(model, num_prompts=96, prompt_len=12, new_tokens=48):
    """The target's greedy continuations of random prompts and every hidden state on them
    (hidden_states[i] enters layer i; the last is the final norm's output)."""
    g = torch.Generator().manual_seed(SEED)
    prompts = torch.randint(3, model.config.vocab_size, (num_prompts, prompt_len), generator=g)
    with torch.no_grad():
        out = model.generate(prompts, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens, pad_token_id=0)
        states = model(out, output_hidden_states=True).hidden_states
    return states, out


class ResBlock(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, hidden)

    def forward(self, x):
        return x + torch.nn.functional.silu(self.linear(x))


def fit_medusa(model, hidden, tokens):
    h = model.config.hidden_size
    v = model.config.vocab_size
    torch.manual_seed(SEED)
    heads = torch.nn.ModuleList()
    for k in range(NUM_HEADS):
        blocks = [ResBlock(h) for _ in range(NUM_LAYERS)]
        for block in blocks:
            torch.nn.init.normal_(block.linear.weight, std=0.05)
            torch.nn.init.normal_(block.linear.bias, std=0.05)
            block.requires_grad_(False)
        lm_head = torch.nn.Linear(h, v, bias=False)
        lm_head.weight.data.copy_(model.lm_head.weight.data)
        head = torch.nn.Sequential(*blocks, lm_head)
        # Hidden state at t predicts token t + k + 2.
        x = hidden[:, : -(k + 2)].reshape(-1, h)
        y = tokens[:, k + 2 :].reshape(-1)
        optimizer = torch.optim.Adam(lm_head.parameters(), lr=3e-2)
        for _ in range(300):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(x), y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (head(x).argmax(-1) == y).float().mean().item()
        print(f"medusa head {k}: loss {loss.item():.3f}, top-1 accuracy {accuracy:.3f} on its training states")
        heads.append(head)
    return heads


EAGLE_STEPS = 400
# llama-gqa has two layers: the default (2, L/2, L-3) does not exist there.
AUX_LAYERS = [0, 1, 1]
DRAFT_VOCAB = 128
ORACLE_POSITIONS = 6


def head_geometry(config):
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    return {"heads": heads, "kv_heads": kv_heads, "head_dim": config["head_dim"], "theta": config["rope_parameters"]["rope_theta"], "eps": config["rms_norm_eps"]}


def layer_weights(config, prefix, in_features, gen, hidden_norm):
    h, inter, dim = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * dim, config["num_key_value_heads"] * dim
    shapes = {
        "self_attn.q_proj.weight": (q, in_features), "self_attn.k_proj.weight": (kv, in_features),
        "self_attn.v_proj.weight": (kv, in_features), "self_attn.o_proj.weight": (h, q),
        "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h), "mlp.down_proj.weight": (h, inter),
    }
    w = {prefix + name: torch.randn(shape, generator=gen) * 0.05 for name, shape in shapes.items()}
    norms = ["post_attention_layernorm.weight"] + (["input_layernorm.weight", "hidden_norm.weight"] if hidden_norm else [])
    w.update({prefix + name: torch.ones(h) for name in norms})
    return w


def train(w, loss_of, label):
    params = list(w.values())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(EAGLE_STEPS):
        optimizer.zero_grad()
        loss, accuracy = loss_of()
        loss.backward()
        optimizer.step()
    print(f"{label}: loss {loss.item():.3f}, next-token accuracy {accuracy:.3f} on its training states")
    return {name: p.detach() for name, p in w.items()}


def fit_eagle1(config, embed, lm_head, states, tokens):
    """EAGLE-1: position p reads token p + 1 and the target's final state at p, predicts token p + 2 and state p + 1."""
    gen = torch.Generator().manual_seed(SEED + 1)
    h = config["hidden_size"]
    w = layer_weights(config, "layers.0.", h, gen, hidden_norm=False)
    w["fc.weight"] = torch.randn(h, 2 * h, generator=gen) * 0.05
    w["fc.bias"] = torch.zeros(h)
    final = states[-1].detach()
    cfg = head_geometry(config)

    def loss_of():
        out, logits = eagle_reference.eagle1(w, cfg, embed, lm_head, tokens[:, 1:], final[:, :-1])
        target = tokens[:, 2:]
        token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten())
        feature_loss = torch.nn.functional.smooth_l1_loss(out[:, :-1], final[:, 1:-1])
        accuracy = (logits[:, :-1].argmax(-1) == target).float().mean().item()
        return token_loss + feature_loss, accuracy

    return train(w, loss_of, "eagle-1 head")


def fit_eagle3(config, embed, states, tokens):
    """EAGLE-3 on a draft vocabulary of the DRAFT_VOCAB tokens the target's continuations use most."""
    gen = torch.Generator().manual_seed(SEED + 3)
    h, vocab = config["hidden_size"], config["vocab_size"]
    counts = torch.bincount(tokens.flatten(), minlength=vocab)
    draft_ids = counts.argsort(descending=True, stable=True)[:DRAFT_VOCAB].sort().values
    t2d = torch.full((vocab,), -100, dtype=torch.long)
    t2d[draft_ids] = torch.arange(DRAFT_VOCAB)
    w = layer_weights(config, "midlayer.", 2 * h, gen, hidden_norm=True)
    w["fc.weight"] = torch.randn(h, 3 * h, generator=gen) * 0.05
    w["norm.weight"] = torch.ones(h)
    w["lm_head.weight"] = torch.randn(DRAFT_VOCAB, h, generator=gen) * 0.05
    aux = [states[i].detach() for i in AUX_LAYERS]
    cfg = head_geometry(config)

    def loss_of():
        features = eagle_reference.eagle3_features(w, [s[:, :-1] for s in aux])
        _, logits = eagle_reference.eagle3(w, cfg, embed, tokens[:, 1:], features)
        target = t2d[tokens[:, 2:]]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100)
        known = target >= 0
        accuracy = (logits[:, :-1].argmax(-1) == target)[known].float().mean().item()
        return loss, accuracy

    return train(w, loss_of, "eagle-3 head"), draft_ids


def stored(w):
    """The weights as written (bf16), and back in float32 for the oracle."""
    saved = {name: t.to(torch.bfloat16).contiguous() for name, t in w.items()}
    return saved, {name: t.float() for name, t in saved.items()}


def head_oracle(tokens, states, out, logits, n=ORACLE_POSITIONS):
    return {"tokens": tokens[:n].tolist(), "states": [s[:n].tolist() for s in states], "hidden": out[:n].tolist(), "logits": logits[:n].tolist()}


def write_eagle1(out, w, target_config, embed, lm_head, states, tokens):
    out.mkdir(parents=True, exist_ok=True)
    saved, as_read = stored(w)
    save_file(saved, out / "model.safetensors")
    config = {**target_config, "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1, "bias": True, "dtype": "bfloat16"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    final = states[-1][0].detach()
    with torch.no_grad():
        h, logits = eagle_reference.eagle1(as_read, head_geometry(target_config), embed, lm_head, tokens[0, 1:], final[:-1])
    (out / "head_oracle.json").write_text(json.dumps(head_oracle(tokens[0, 1:], [final[:-1]], h, logits)) + "\n")
    print(f"wrote {out}")


def write_eagle3(root, w, draft_ids, target_config, embed, states, tokens):
    saved, as_read = stored(w)
    d2t = draft_ids - torch.arange(DRAFT_VOCAB)
    t2d = torch.zeros(target_config["vocab_size"], dtype=torch.bool)
    t2d[draft_ids] = True
    maps = {"d2t": d2t.to(torch.int64), "t2d": t2d}
    cfg = head_geometry(target_config)
    aux = [states[i][0, :-1].detach() for i in AUX_LAYERS]
    layer_config = {**target_config, "num_hidden_layers": 1, "dtype": "bfloat16"}

    authors = root / "eagle3-llama-gqa"
    authors.mkdir(parents=True, exist_ok=True)
    save_file({**saved, **maps}, authors / "model.safetensors")
    config = {**layer_config, "architectures": ["LlamaForCausalLMEagle3"], "draft_vocab_size": DRAFT_VOCAB, "eagle_aux_hidden_state_layer_ids": AUX_LAYERS}
    (authors / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    with torch.no_grad():
        h, logits = eagle_reference.eagle3(as_read, cfg, embed, tokens[0, 1:], eagle_reference.eagle3_features(as_read, aux))
    (authors / "head_oracle.json").write_text(json.dumps(head_oracle(tokens[0, 1:], aux, h, logits)) + "\n")
    print(f"wrote {authors}")

    speculators = root / "eagle3-speculators-llama-gqa"
    speculators.mkdir(parents=True, exist_ok=True)
    renamed = {name.replace("midlayer.", "layers.0."): t for name, t in saved.items()}
    renamed["embed_tokens.weight"] = embed.to(torch.bfloat16).contiguous()
    save_file({**renamed, **maps}, speculators / "model.safetensors")
    config = {
        "architectures": ["Eagle3Speculator"],
        "speculators_model_type": "eagle3",
        "speculators_version": "0.1.0",
        "transformer_layer_config": {**layer_config, "architectures": ["LlamaForCausalLM"]},
        "draft_vocab_size": DRAFT_VOCAB,
        "norm_before_residual": True,
        "eagle_aux_hidden_state_layer_ids": AUX_LAYERS,
        "speculators_config": {
            "algorithm": "eagle3",
            "default_proposal_method": "greedy",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": 3}],
            "verifier": {"name_or_path": "test/fixtures/llama-gqa", "architectures": ["LlamaForCausalLM"]},
        },
    }
    (speculators / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    as_read = {name.replace("midlayer.", "layers.0."): t for name, t in as_read.items()}
    embed_read = embed.to(torch.bfloat16).float()
    with torch.no_grad():
        h, logits = eagle_reference.eagle3(as_read, cfg, embed_read, tokens[0, 1:], eagle_reference.eagle3_features(as_read, aux), prefix="layers.0.", norm_before_residual=True)
    (speculators / "head_oracle.json").write_text(json.dumps(head_oracle(tokens[0, 1:], aux, h, logits)) + "\n")
    print(f"wrote {speculators}")


# The fixtures whose checkpoints make_fixtures.py gives an MTP layer: the head directory of each and
# the positions its oracle holds (glm-moe-dsa's more than its index_topk, 8, so that the indexer selects).
MTP_TARGETS = {"deepseek-v3": ("mtp-deepseek-v3", ORACLE_POSITIONS), "glm4-moe": ("mtp-glm4-moe", ORACLE_POSITIONS), "glm-moe-dsa": ("mtp-glm-moe-dsa", 12)}
# What each per-layer list of a config says of an MTP layer: a MoE block, with an indexer of its own.
MTP_LAYER_ENTRIES = {"mlp_layer_types": "sparse", "indexer_types": "full"}


@torch.no_grad()
def write_mtp_oracle(target, out, n):
    """A target's MTP module (DeepSeek-V3's, GLM-4.5's, GLM-5's) on its final states of one greedy
    sequence: x = eh_proj([enorm(embed(token after p)), hnorm(state p)]), the decoder block
    (transformers' own decoder layer of the family, loaded as layer num_hidden_layers of a
    one-layer-longer model), then shared_head.head(shared_head.norm(h))."""
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    config = model.config
    if getattr(config, "num_nextn_predict_layers", 0) < 1:
        raise RuntimeError(f"{target} carries no MTP layer: rebuild it with make_fixtures.py --only {target.name}")
    layer = config.num_hidden_layers
    # Per-layer lists gain the MTP layer's entry (layer_types: the same kind as the decoder's last layer).
    lists = {key: getattr(config, key) + [MTP_LAYER_ENTRIES.get(key, getattr(config, key)[-1])]
             for key in ("layer_types", "mlp_layer_types", "indexer_types") if getattr(config, key, None) is not None}
    longer = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, num_hidden_layers=layer + 1, attn_implementation="eager", **lists).eval()
    block, rotary = longer.model.layers[layer], longer.model.rotary_emb
    w = {name: t.float() for name, t in load_file(target / "model.safetensors").items()}
    p = f"model.layers.{layer}."
    eps = config.rms_norm_eps
    g = torch.Generator().manual_seed(SEED + 7)
    prompt = torch.randint(3, config.vocab_size, (1, 10), generator=g)
    sequence = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    final = model(sequence, output_hidden_states=True).hidden_states[-1][0]
    tokens, features = sequence[0, 1 : n + 1], final[:n]
    embeds = eagle_reference.rms_norm(model.model.embed_tokens.weight[tokens], w[p + "enorm.weight"], eps)
    x = torch.cat([embeds, eagle_reference.rms_norm(features, w[p + "hnorm.weight"], eps)], -1) @ w[p + "eh_proj.weight"].T
    positions = torch.arange(n)[None]
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    h = block(x[None], attention_mask=mask, position_ids=positions, position_embeddings=rotary(x[None], positions))
    h = (h[0] if isinstance(h, tuple) else h)[0]
    logits = eagle_reference.rms_norm(h, w[p + "shared_head.norm.weight"], eps) @ w[p + "shared_head.head.weight"].T
    out.mkdir(parents=True, exist_ok=True)
    (out / "head_oracle.json").write_text(json.dumps(head_oracle(tokens, [features], h, logits, n)) + "\n")
    print(f"wrote {out}")


# The hybrid fixtures whose checkpoints make_fixtures.py gives a Qwen MTP layer (mtp.*), and the head directory of each.
HYBRID_MTP_TARGETS = {"qwen3.5-hybrid": "mtp-qwen3.5-hybrid", "qwen3-next-moe": "mtp-qwen3-next-moe"}


@torch.no_grad()
def write_hybrid_mtp_oracle(target, out, n):
    """A Qwen3-Next / Qwen3.5 MTP module on the target's final states of one greedy sequence, as
    vLLM and SGLang run it: x = mtp.fc([pre_fc_norm_embedding(embed(token after p)),
    pre_fc_norm_hidden(state p)]), mtp.layers.0 (transformers' own full-attention decoder layer of
    the family, loaded as layer num_hidden_layers of a one-layer-longer model from a copy of the
    checkpoint whose mtp.layers.0.* are renamed so, its experts fused by from_pretrained), then
    h = mtp.norm(block output) and logits = the target's lm_head(h). Every norm multiplies by (1 + w)."""
    import tempfile
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    config = model.config
    if getattr(config, "mtp_num_hidden_layers", 0) < 1:
        raise RuntimeError(f"{target} carries no MTP layer: rebuild it with make_fixtures.py --only {target.name}")
    layer = config.num_hidden_layers
    w = {name: t.float() for name, t in load_file(target / "model.safetensors").items()}
    with tempfile.TemporaryDirectory() as tmp:
        renamed = {name.replace("mtp.layers.0.", f"model.layers.{layer}."): t for name, t in w.items() if not name.startswith("mtp.") or name.startswith("mtp.layers.0.")}
        save_file(renamed, Path(tmp) / "model.safetensors", metadata={"format": "pt"})
        saved = json.loads((target / "config.json").read_text())
        saved.update(num_hidden_layers=layer + 1, layer_types=saved["layer_types"] + ["full_attention"])
        (Path(tmp) / "config.json").write_text(json.dumps(saved))
        longer = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager").eval()
    block, rotary = longer.model.layers[layer], longer.model.rotary_emb
    eps = config.rms_norm_eps
    norm = lambda x, name: eagle_reference.rms_norm(x, 1 + w[f"mtp.{name}.weight"], eps)
    g = torch.Generator().manual_seed(SEED + 7)
    prompt = torch.randint(3, config.vocab_size, (1, 10), generator=g)
    sequence = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    final = model(sequence, output_hidden_states=True).hidden_states[-1][0]
    tokens, features = sequence[0, 1 : n + 1], final[:n]
    x = torch.cat([norm(model.model.embed_tokens.weight[tokens], "pre_fc_norm_embedding"), norm(features, "pre_fc_norm_hidden")], -1) @ w["mtp.fc.weight"].T
    positions = torch.arange(n)[None]
    # Qwen3.5's rotary is mRoPE: a text token's temporal, height and width positions are its own.
    rope_positions = positions.expand(3, 1, n) if hasattr(rotary, "mrope_section") else positions
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    h = block(x[None], attention_mask=mask, position_ids=positions, position_embeddings=rotary(x[None], rope_positions))
    h = norm((h[0] if isinstance(h, tuple) else h)[0], "norm")
    logits = model.lm_head(h)
    out.mkdir(parents=True, exist_ok=True)
    (out / "head_oracle.json").write_text(json.dumps(head_oracle(tokens, [features], h, logits, n)) + "\n")
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "test/fixtures/spec-heads"))
    parser.add_argument("--only", nargs="*", choices=["medusa", "eagle", "mtp"], default=None, help="write only these heads")
    args = parser.parse_args()
    wanted = set(args.only or ["medusa", "eagle", "mtp"])
    root = Path(args.out)
    if wanted & {"medusa", "eagle"}:
        model = AutoModelForCausalLM.from_pretrained(TARGET, dtype=torch.float32).eval()
        states, tokens = greedy_states(model)
    if "medusa" in wanted:
        write_medusa(root / "medusa-llama-gqa", model, states[-1], tokens)
    if "eagle" in wanted:
        target_config = json.loads((TARGET / "config.json").read_text())
        embed = model.model.embed_tokens.weight.detach()
        lm_head = model.lm_head.weight.detach()
        write_eagle1(root / "eagle-llama-gqa", fit_eagle1(target_config, embed, lm_head, states, tokens), target_config, embed, lm_head, states, tokens)
        eagle3, draft_ids = fit_eagle3(target_config, embed, states, tokens)
        write_eagle3(root, eagle3, draft_ids, target_config, embed, states, tokens)
    if "mtp" in wanted:
        for target, (head, positions) in MTP_TARGETS.items():
            write_mtp_oracle(ROOT / "test/fixtures" / target, root / head, positions)
        for target, head in HYBRID_MTP_TARGETS.items():
            write_hybrid_mtp_oracle(ROOT / "test/fixtures" / target, root / head, ORACLE_POSITIONS)


def write_medusa(out, model, hidden, tokens):
    heads = fit_medusa(model, hidden.detach(), tokens)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to(torch.bfloat16).contiguous() for name, t in heads.state_dict().items()}
    save_file(state, out / "medusa_lm_head.safetensors")
    config = {"medusa_num_heads": NUM_HEADS, "medusa_num_layers": NUM_LAYERS, "base_model_name_or_path": "test/fixtures/llama-gqa"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # Parity data: the heads as stored (bf16 weights) run in float32 on two hidden rows.
    rows = hidden[0, 20:22].detach()
    with torch.no_grad():
        for name, t in heads.state_dict().items():
            t.copy_(state[name].float())
        top = [head(rows).topk(5, dim=-1).indices.tolist() for head in heads]
    oracle = {"hidden": rows.tolist(), "top5": top}
    (out / "heads_oracle.json").write_text(json.dumps(oracle) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
