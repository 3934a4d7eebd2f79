"""Speculative-decoding heads for an oracle fixture, in the formats their authors publish.

No real head checkpoint can be downloaded in tests, so this writes tiny ones for
test/fixtures/llama-gqa (hidden 64, vocabulary 256):

  test/fixtures/spec-heads/medusa-llama-gqa/
    config.json                  FasterDecoding/Medusa's MedusaConfig: medusa_num_heads, medusa_num_layers
    medusa_lm_head.safetensors   the heads' state dict as Medusa saves it: head k's residual block j
                                 "k.j.linear.weight/bias", its LM head "k.<num_layers>.weight" (bf16)
    heads_oracle.json            two hidden rows and each head's top-5 tokens on them (PyTorch's
                                 ResBlock + Linear, float32), for the loader's parity test

The heads are fitted, not random, so that verification accepts some drafts: each residual block is
a small random layer (so the block is exercised), and each LM head is trained for a few hundred Adam
steps on the target's own greedy continuations of random prompts (head k predicts the token k + 2
positions after the hidden state's), as Medusa-1 trains its heads with the base model frozen.

Usage: /work/.venv-oracle/bin/python tools/oracle/make_spec_heads.py [--out test/fixtures/spec-heads]
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "test/fixtures/llama-gqa"
NUM_HEADS = 3
NUM_LAYERS = 1
SEED = 15


def greedy_states(model, num_prompts=96, prompt_len=12, new_tokens=48):
    """Final-norm hidden states of the target's greedy continuations, and the tokens they precede."""
    g = torch.Generator().manual_seed(SEED)
    prompts = torch.randint(3, model.config.vocab_size, (num_prompts, prompt_len), generator=g)
    with torch.no_grad():
        out = model.generate(prompts, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens, pad_token_id=0)
        hidden = model(out, output_hidden_states=True).hidden_states[-1]
    return hidden, out


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "test/fixtures/spec-heads"))
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(TARGET, dtype=torch.float32).eval()
    hidden, tokens = greedy_states(model)

    heads = fit_medusa(model, hidden.detach(), tokens)
    out = Path(args.out) / "medusa-llama-gqa"
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
