import type { HostTensor } from './host-tensor.ts';
import { isMxfp4, type Mxfp4Weight } from './mxfp4.ts';
import { isQuantized, type QuantizedWeight } from './quantized-weight.ts';
import { isSparse24, type Sparse24Weight } from './sparse24.ts';

/**
 * What a weight occupies once a backend holds it, in two parts because one depends on the backend:
 * `elements` values kept in the backend's weight dtype (float32 on the CPU backend, bf16 on CUDA)
 * and `bytes` of data every backend keeps as the host layout has it. Benchmarks weigh the bytes a
 * step reads with it (src/bench/roofline.ts).
 */
export interface StoredSize {
  elements: number;
  bytes: number;
}

/**
 * The size of a weight in the form it is uploaded: a 16-bit tensor's values; a quantized weight's
 * codes, float32 scales, zero codes, mins and permutation as its arrays hold them, and AQLM's
 * codebooks (float16 on CUDA, float32 on the CPU: the weight dtype's width); a 2:4 weight's kept
 * values and its metadata; MXFP4's packed codes and scale codes.
 */
export function storedSize(w: HostTensor | QuantizedWeight | Sparse24Weight | Mxfp4Weight): StoredSize {
  if (isMxfp4(w)) return { elements: 0, bytes: w.blocks.byteLength + w.scales.byteLength };
  if (isQuantized(w)) {
    const arrays = [w.codes, w.scales, w.zeros, w.mins, w.perm];
    return { elements: w.codebooks?.values.length ?? 0, bytes: arrays.reduce((n, a) => n + (a?.byteLength ?? 0), 0) };
  }
  if (isSparse24(w)) return { elements: (w.rows * w.cols) / 2, bytes: w.meta.byteLength };
  return { elements: w.shape.reduce((n, d) => n * d, 1), bytes: 0 };
}

/** `fraction` of a stored weight: one part of a stack whose parts share its format row for row. */
export function storedShare(size: StoredSize, fraction: number): StoredSize {
  return { elements: size.elements * fraction, bytes: size.bytes * fraction };
}
