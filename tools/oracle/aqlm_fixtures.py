"""AQLM checkpoints written by Keel (`keel quantize --method vq`), read back here from the format's
definition, without the `aqlm` library (not installed on this host, and no index to install it
from).

The format (the aqlm library's QuantizedLinear state dict, which transformers' AQLM integration
loads), per linear layer [out, in] with M codebooks of 2^B vectors of in_group_size values, one
output row each (out_group_size 1):

- `codes` [out, in / in_group_size, M], the smallest signed integer dtype of B bits: code c stored
  as c - 2^B when c >= 2^(B-1), read back as the stored value modulo 2^B;
- `codebooks` [M, 2^B, 1, in_group_size], float16;
- `scales` [out, 1, 1, 1];

W[o, g * in_group_size + j] = scales[o] * sum_m codebooks[m, codes[o, g, m], 0, j].

`dequantize` computes that (the sum over codebooks in float32 in codebook order, then the product
with the scale: float32 values as Keel's reference has them). `load_through_transformers` loads a
checkpoint with transformers' own AQLM path (AqlmHfQuantizer: every nn.Linear not in
linear_weights_not_to_quantize replaced by aqlm.QuantizedLinear, the state dict loaded into it),
with a stand-in `aqlm` module whose QuantizedLinear has the library's parameters (names, shapes,
dtypes) and multiplies by `dequantize`'s weight; transformers' availability checks for aqlm and
accelerate are bypassed, since neither is installed. So the fixture checks Keel's writer against
transformers' loader (names, shapes, which modules are quantized) and against this reading of the
layout, which is independent of Keel's reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
# A layer whose read-back weight is this far from the 16-bit one (relative Frobenius error) was
# not read in the layout it was written in: 2-bit k-means on Gaussian weights gives about 0.3.
MAX_RELATIVE_ERROR = 0.6


def dequantize(codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 weight [out, in] of one AQLM layer, from the format's definition."""
    num_codebooks, size, out_group, in_group = codebooks.shape
    if out_group != 1:
        raise ValueError(f"out_group_size {out_group}: this reference reads out_group_size 1")
    out_groups, in_groups, m = codes.shape
    if m != num_codebooks:
        raise ValueError(f"codes hold {m} codebooks, codebooks {num_codebooks}")
    index = codes.to(torch.int64) % size  # the signed storage read back modulo 2^B
    books = codebooks.to(torch.float32)[:, :, 0, :]  # [M, size, in_group]
    total = torch.zeros(out_groups, in_groups, in_group, dtype=torch.float32)
    for c in range(num_codebooks):
        total = total + books[c][index[:, :, c]]
    weight = total * scales.to(torch.float32).reshape(out_groups, 1, 1)
    return weight.reshape(out_groups, in_groups * in_group)


def quantize_with_keel(model, config: dict) -> dict[str, torch.Tensor]:
    """Writes the model's weights as a 16-bit checkpoint, runs `keel quantize --method vq` on it
    with the scheme's codebooks, and returns the AQLM tensors Keel wrote (codes, codebooks, scales
    per quantized layer), checking its quantization_config is `config`."""
    layout = f"{config['num_codebooks']}x{config['nbits_per_codebook']}"
    with tempfile.TemporaryDirectory(prefix="keel-vq-") as tmp:
        source, output = Path(tmp) / "bf16", Path(tmp) / "aqlm"
        source.mkdir()
        model.config.save_pretrained(source)
        state = {name: p.detach().to(torch.bfloat16).contiguous() for name, p in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(source / "model.safetensors"), metadata={"format": "pt"})
        subprocess.run(["node", str(REPO / "bin" / "keel"), "quantize", "--method", "vq", "--codebooks", layout,
                        "--model", str(source), "--output", str(output)], check=True, stdout=sys.stdout, stderr=sys.stderr)
        written = json.loads((output / "config.json").read_text())["quantization_config"]
        unordered = "linear_weights_not_to_quantize"
        if {**written, unordered: sorted(written[unordered])} != {**config, unordered: sorted(config[unordered])}:
            raise RuntimeError(f"keel quantize wrote quantization_config {written}, expected {config}")
        tensors = load_file(str(output / "model.safetensors"))
    return {name: t for name, t in tensors.items() if name.rsplit(".", 1)[1] in ("codes", "codebooks", "scales")}


@torch.no_grad()
def replace_by_dequantized(model, packed: dict[str, torch.Tensor]) -> None:
    """Puts each quantized layer's dequantized weight into the float32 model, checking it is near
    the 16-bit weight it was made from."""
    params = dict(model.named_parameters())
    bases = sorted({name.rsplit(".", 1)[0] for name in packed})
    for base in bases:
        weight = params[f"{base}.weight"]
        dequantized = dequantize(packed[f"{base}.codes"], packed[f"{base}.codebooks"], packed[f"{base}.scales"])
        error = float((dequantized - weight).norm() / weight.norm())
        if dequantized.shape != weight.shape or error > MAX_RELATIVE_ERROR:
            raise RuntimeError(f"{base}: read back as {tuple(dequantized.shape)} with relative error {error:.3f}: "
                               "the layout read is not the one written")
        weight.copy_(dequantized)


class QuantizedLinear(torch.nn.Module):
    """aqlm.QuantizedLinear's parameters (as the library declares them), multiplied by `dequantize`."""

    def __init__(self, in_features, out_features, in_group_size, out_group_size, num_codebooks, nbits_per_codebook,
                 bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        size = 2 ** nbits_per_codebook
        int_dtype = torch.int8 if nbits_per_codebook <= 8 else torch.int16 if nbits_per_codebook <= 16 else torch.int32
        self.codebooks = torch.nn.Parameter(torch.empty(num_codebooks, size, out_group_size, in_group_size, device=device, dtype=dtype),
                                            requires_grad=False)
        self.codes = torch.nn.Parameter(torch.empty(out_features // out_group_size, in_features // in_group_size, num_codebooks,
                                                    device=device, dtype=int_dtype), requires_grad=False)
        self.scales = torch.nn.Parameter(torch.empty(out_features // out_group_size, 1, 1, 1, device=device, dtype=dtype),
                                         requires_grad=False)
        self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = dequantize(self.codes, self.codebooks, self.scales).to(x.dtype)
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


def load_through_transformers(path: Path):
    """The checkpoint loaded by transformers' AQLM integration in float32, with the stand-in
    `aqlm` module (see the module docstring)."""
    import transformers
    from transformers.quantizers import quantizer_aqlm

    stand_in = types.ModuleType("aqlm")
    stand_in.QuantizedLinear = QuantizedLinear
    sys.modules.setdefault("aqlm", stand_in)
    quantizer_aqlm.is_aqlm_available = lambda: True
    quantizer_aqlm.is_accelerate_available = lambda: True
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                                              local_files_only=True).eval()
    # transformers keeps the modules it leaves 16-bit in the checkpoint's dtype when quantizing
    # (and refuses .float() on a quantized model): cast them here, the oracle being float32.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.float32)
    converted = [name for name, module in model.named_modules() if isinstance(module, QuantizedLinear)]
    saved = load_file(str(path / "model.safetensors"))
    expected = sorted(name.rsplit(".", 1)[0] for name in saved if name.endswith(".codes"))
    if sorted(converted) != expected:
        raise RuntimeError(f"transformers made QuantizedLinear of {sorted(converted)}, but the checkpoint quantized {expected}")
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            for key in ("codes", "codebooks", "scales"):
                stored = saved[f"{name}.{key}"]
                loaded = getattr(module, key)
                same = torch.equal(loaded.to(torch.float64), stored.to(torch.float64))
                if loaded.shape != stored.shape or not same:
                    raise RuntimeError(f"{name}.{key}: transformers loaded {tuple(loaded.shape)} {loaded.dtype}, stored {tuple(stored.shape)} {stored.dtype}")
    return model
