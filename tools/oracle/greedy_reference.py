"""transformers' own greedy decoding, the reference Keel's greedy output is compared with."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

# Vision-language checkpoints, run on text prompts through their ...ForConditionalGeneration class
# (AutoModelForCausalLM has no entry for some of them, and builds Llama 4's text model alone).
VISION_LANGUAGE_MODEL_TYPES = {"gemma3", "mistral3", "llama4", "qwen3_5", "qwen3_5_moe", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe",
                              "glm4v", "glm4v_moe", "gemma4"}
# Causal LMs transformers 5.18 registers under AutoModelForImageTextToText (and pre-training) but not
# AutoModelForCausalLM: Mistral 4, whose checkpoints usually come wrapped in mistral3.
IMAGE_TEXT_AUTO_CAUSAL_LMS = {"mistral4"}


def auto_class(model_type: str):
    """The Auto class that builds a model_type's checkpoint as the Hub ships it."""
    image_text = model_type in VISION_LANGUAGE_MODEL_TYPES or model_type in IMAGE_TEXT_AUTO_CAUSAL_LMS
    return AutoModelForImageTextToText if image_text else AutoModelForCausalLM


def load_fp32(path: Path):
    """Reload a saved checkpoint the way a user would, forced to float32 on CPU, eager attention."""
    kwargs = dict(attn_implementation="eager", local_files_only=True)
    cls = auto_class(json.loads((Path(path) / "config.json").read_text()).get("model_type"))
    try:
        model = cls.from_pretrained(path, dtype=torch.float32, **kwargs)
    except TypeError:
        # transformers < 4.56 spells it torch_dtype.
        model = cls.from_pretrained(path, torch_dtype=torch.float32, **kwargs)
    return model.float().eval()


# Candidates kept per greedy step, so that a bf16 backend whose greedy path leaves transformers'
# at a near-tie can be checked for picking a token transformers itself nearly picked: at least the
# GREEDY_TOP_K best, and every token within CANDIDATE_WINDOW nats of the best (random-weight models'
# distributions are flat, so more than five tokens can sit within a bf16 backend's logit error).
GREEDY_TOP_K = 5
CANDIDATE_WINDOW = 1.0


@torch.no_grad()
def greedy_with_cache(model, prompt: list[int], max_new_tokens: int):
    """Prefill once, then decode one token per forward through the KV cache.

    Deliberately not model.generate(): that would consult generation_config and stop at
    EOS. A fresh deep copy per prompt matters for dynamic RoPE, whose rotary module keeps
    the largest sequence length seen so far as state. Returns the tokens and the logits of
    every step ([max_new_tokens, vocab], float32; row 0 is the prompt's last position).
    """
    model = copy.deepcopy(model)
    ids = torch.tensor([prompt], dtype=torch.long)
    positions = torch.arange(len(prompt), dtype=torch.long).unsqueeze(0)
    out = model(input_ids=ids, position_ids=positions, use_cache=True)
    step_logits = [out.logits[0, -1].float().clone()]
    past = out.past_key_values
    tokens: list[int] = []
    for i in range(max_new_tokens):
        nxt = int(torch.argmax(step_logits[-1]))
        tokens.append(nxt)
        if i == max_new_tokens - 1:
            break
        out = model(
            input_ids=torch.tensor([[nxt]], dtype=torch.long),
            position_ids=torch.tensor([[len(prompt) + i]], dtype=torch.long),
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        step_logits.append(out.logits[0, -1].float().clone())
    return tokens, torch.stack(step_logits)


def top_logprobs(step_logits: torch.Tensor) -> list[list[list[float]]]:
    """Per step, the candidate [token id, logprob] pairs (see CANDIDATE_WINDOW), most likely first."""
    rows = []
    for row in torch.log_softmax(step_logits.double(), dim=-1):
        values, ids = torch.sort(row, descending=True)
        keep = max(GREEDY_TOP_K, int((values >= values[0] - CANDIDATE_WINDOW).sum()))
        rows.append([[int(i), float(f"{v:.6g}")] for i, v in zip(ids[:keep].tolist(), values[:keep].tolist())])
    return rows
