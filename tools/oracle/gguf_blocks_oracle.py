#!/usr/bin/env python3
"""Record llama.cpp's own dequantization of random GGUF blocks, the oracle of Keel's dequantizers.

    LLAMA_CPP_SRC=/path/to/llama.cpp python3 tools/oracle/gguf_blocks_oracle.py --out test/fixtures/gguf-blocks.json

For each quantized type gguf-py (llama.cpp's Python package, from LLAMA_CPP_SRC/gguf-py) knows how
to dequantize, a few blocks of random bytes, their fp16 scale fields overwritten with small finite
values (random bytes there would be infinities and NaNs), and the float32 values gguf-py's
`dequantize` gives them. Random bytes reach every bit of every field, which values a quantizer
chose would not. numpy is the only other dependency.

Q8_K is not here: gguf-py has no dequantizer for it (llama.cpp only uses it for activations).
"""
import argparse
import base64
import json
import os
import sys

import numpy as np

BLOCKS = 3
SEED = 20260
# Byte offsets of each type's fp16 scale fields within a block (ggml-common.h's block structs).
HALF_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    src = os.environ.get("LLAMA_CPP_SRC")
    if not src:
        sys.exit("set LLAMA_CPP_SRC to a llama.cpp checkout (its gguf-py is the reference)")
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    rng = np.random.default_rng(SEED)
    cases = []
    for name, halves in HALF_FIELDS.items():
        qtype = GGMLQuantizationType[name]
        block_elements, block_bytes = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for at in halves:
            scales = (rng.standard_normal(BLOCKS) * 0.05).astype(np.float16)
            blocks[:, at : at + 2] = scales.view(np.uint8).reshape(BLOCKS, 2)
        values = quants.dequantize(blocks.reshape(-1), qtype).astype("<f4")
        assert values.size == BLOCKS * block_elements and np.isfinite(values).all(), name
        cases.append({
            "type": name,
            "blocks": BLOCKS,
            "bytes_base64": base64.b64encode(blocks.tobytes()).decode(),
            "float32_base64": base64.b64encode(values.tobytes()).decode(),
        })
    with open(args.out, "w") as f:
        json.dump({"generated_by": "tools/oracle/gguf_blocks_oracle.py", "reference": "gguf-py quants.dequantize", "seed": SEED, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {', '.join(c['type'] for c in cases)}")


if __name__ == "__main__":
    main()
