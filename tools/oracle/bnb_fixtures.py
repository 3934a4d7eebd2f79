"""bitsandbytes checkpoints (4-bit NF4/FP4 with or without double quantization, 8-bit LLM.int8()),
written without bitsandbytes, from the format's definition:

- 4-bit (QLoRA): the row-major weight cut into blocks of `blocksize` values; each block divided by
  its absmax and each value given the code of the nearest table value (ties to the lower value, as
  bitsandbytes' reference quantizer bucketizes over the midpoints); two codes a byte, the first in
  the high nibble. Double quantization: the absmax values, less their mean (`nested_offset`), are
  quantized blockwise (blocks of 256) to 8-bit codes of bitsandbytes' signed "dynamic" map.
- 8-bit (LLM.int8()): CB = round(W · 127 / SCB) with SCB each row's absmax; at run time the
  activations are split into outlier columns (some |x| >= llm_int8_threshold), multiplied in full
  precision by the dequantized weight columns, and the rest, quantized to int8 per row, multiplied
  by CB: MixedInt8Linear below, which the 8-bit fixtures' oracle runs.

Tensor names are those of transformers' state dicts for bitsandbytes' Linear4bit / Linear8bitLt.
"""

from __future__ import annotations

import json

import torch

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
# Bit 3 the sign, bits 0..2 e2m1 patterns whose values are divided by the largest (12).
FP4_PATTERNS = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
NESTED_BLOCKSIZE = 256


def code_table(quant_type: str) -> torch.Tensor:
    if quant_type == "nf4":
        return torch.tensor(NF4, dtype=torch.float32)
    values = torch.tensor(FP4_PATTERNS + [-v for v in FP4_PATTERNS], dtype=torch.float32)
    return values / 12.0


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic data type (Dettmers 2015): for each exponent e = 0..6, a
    sign and 2^e linearly spaced fractions (bin centres of [0.1, 1]) scaled by 10^(e - 6); then 0
    and 1; 256 values sorted."""
    values: list[float] = []
    for e in range(7):
        edges = torch.linspace(0.1, 1, 2 ** e + 1, dtype=torch.float32)
        centres = ((edges[:-1] + edges[1:]) / 2.0)
        scaled = (10 ** (e - 6)) * centres
        values += scaled.tolist() + (-scaled).tolist()
    values += [0.0, 1.0]
    assert len(values) == 256
    return torch.tensor(sorted(values), dtype=torch.float32)


def _bucket_codes(scaled: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Code of the nearest table value (a value between two goes to the lower one)."""
    order = torch.argsort(table, stable=True)
    mids = (table[order[:-1]] + table[order[1:]]) / 2
    return order[torch.bucketize(scaled, mids)]


def _blockwise(values: torch.Tensor, table: torch.Tensor, blocksize: int):
    blocks = values.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1)
    return _bucket_codes(scaled.reshape(-1), table), absmax


def pack_bnb4(w: torch.Tensor, scheme: dict, _act_order):
    out, cols = w.shape
    blocksize, quant_type = scheme["blocksize"], scheme["quant_type"]
    assert cols % blocksize == 0 and (out * cols) % 2 == 0
    table = code_table(quant_type)
    codes, absmax = _blockwise(w.reshape(-1).float(), table, blocksize)
    codes8 = codes.to(torch.uint8)
    state = {"quant_type": quant_type, "blocksize": blocksize, "dtype": scheme["dtype"], "shape": [out, cols]}
    tensors = {"weight": ((codes8[0::2] << 4) | codes8[1::2]).unsqueeze(1), "weight.quant_map": table.clone()}
    if scheme["double_quant"]:
        offset = absmax.mean()
        centred = absmax - offset
        pad = (-centred.numel()) % NESTED_BLOCKSIZE
        nested_codes, nested_absmax = _blockwise(torch.nn.functional.pad(centred, (0, pad)), dynamic_map(), NESTED_BLOCKSIZE)
        # Zero padding leaves each block's absmax, the last one's included, as it is.
        nested_codes = nested_codes[: centred.numel()]
        absmax = dynamic_map()[nested_codes] * nested_absmax.repeat_interleave(NESTED_BLOCKSIZE)[: centred.numel()] + offset
        tensors["weight.absmax"] = nested_codes.to(torch.uint8)
        tensors["weight.nested_absmax"] = nested_absmax.float()
        tensors["weight.nested_quant_map"] = dynamic_map()
        state.update({"nested_blocksize": NESTED_BLOCKSIZE, "nested_dtype": "float32", "nested_offset": float(offset)})
    else:
        tensors["weight.absmax"] = absmax.float()
    tensors[f"weight.quant_state.bitsandbytes__{quant_type}"] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
    dequantized = (table[codes].reshape(-1, blocksize) * absmax.float().unsqueeze(1)).reshape(out, cols)
    return tensors, dequantized


def pack_bnb8(w: torch.Tensor, _scheme: dict, _act_order):
    scb = w.abs().amax(dim=1).float()
    cb = torch.round(w * (127.0 / scb).unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    dequantized = cb.float() * (scb / 127).unsqueeze(1)
    return {"weight": cb, "SCB": scb, "weight_format": torch.tensor(0, dtype=torch.uint8)}, dequantized


# ---------------------------------------------------------------------------------------------
# Reading back (separate code: bytes split the other way round, absmax decoded from the state).


def read_bnb4(t: dict[str, torch.Tensor], base: str) -> torch.Tensor:
    key = next(k for k in t if k.startswith(f"{base}.weight.quant_state.bitsandbytes__"))
    state = json.loads(bytes(t[key].tolist()).decode())
    out, cols = state["shape"]
    packed = t[f"{base}.weight"].reshape(-1).long()
    codes = torch.stack([packed // 16, packed % 16], dim=1).reshape(-1)
    absmax = t[f"{base}.weight.absmax"]
    if "nested_offset" in state:
        nested = t[f"{base}.weight.nested_absmax"]
        index = torch.arange(absmax.numel()) // state["nested_blocksize"]
        absmax = t[f"{base}.weight.nested_quant_map"][absmax.long()] * nested[index] + state["nested_offset"]
    values = t[f"{base}.weight.quant_map"][codes] * absmax.float().repeat_interleave(state["blocksize"])
    return values.reshape(out, cols)


def read_bnb8(t: dict[str, torch.Tensor], base: str) -> torch.Tensor:
    return t[f"{base}.weight"].float() * (t[f"{base}.SCB"].float() / 127).unsqueeze(1)


class MixedInt8Linear(torch.nn.Module):
    """LLM.int8()'s forward for one bias-free linear layer: outlier columns (any |x| >= threshold)
    in full precision against the dequantized weight, the rest int8 x int8 with row-wise
    activation scales (absmax of the row's values below the threshold) and SCB row scales."""

    def __init__(self, cb: torch.Tensor, scb: torch.Tensor, threshold: float):
        super().__init__()
        self.weight = torch.nn.Parameter(cb.float() * (scb.float() / 127).unsqueeze(1), requires_grad=False)
        self.register_buffer("cb", cb.to(torch.int8), persistent=False)
        self.register_buffer("scale", (scb.float() / 127), persistent=False)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, x.shape[-1]).float()
        big = a.abs() >= self.threshold if self.threshold > 0 else torch.zeros_like(a, dtype=torch.bool)
        cols = big.any(dim=0)
        below = a.masked_fill(big, 0)
        absmax = below.abs().amax(dim=1)
        q = torch.round(below * (127.0 / absmax).unsqueeze(1)).clamp(-127, 127)
        q = torch.where(absmax.unsqueeze(1) > 0, q, torch.zeros_like(q))
        q[:, cols] = 0
        acc = q.double() @ self.cb.double().t()
        row_scale = (absmax / 127).double()
        out = acc * row_scale.unsqueeze(1) * self.scale.float().double().unsqueeze(0)
        w_cols = (self.cb[:, cols].float() * self.scale.float().unsqueeze(1)).double()
        out = out + a[:, cols].double() @ w_cols.t()
        return out.float().to(x.dtype).reshape(*x.shape[:-1], -1)


def install_mixed_int8(model, layers: dict[str, tuple[torch.Tensor, torch.Tensor]], threshold: float) -> None:
    """Replaces each named linear layer by MixedInt8Linear over its (CB, SCB)."""
    for base, (cb, scb) in layers.items():
        parent_name, child = base.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), child, MixedInt8Linear(cb, scb, threshold))
