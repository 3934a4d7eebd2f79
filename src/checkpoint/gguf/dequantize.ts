import { float32ToHostTensor } from '../../tensor/host-dtype.ts';
import type { HostTensor, WeightDType } from '../../tensor/host-tensor.ts';
import { dequantizeQ4_0, dequantizeQ4_1, dequantizeQ5_0, dequantizeQ5_1, dequantizeQ8_0 } from './dequantize-blocks.ts';
import { dequantizeQ2_K, dequantizeQ3_K, dequantizeQ4_K, dequantizeQ5_K, dequantizeQ6_K, dequantizeQ8_K } from './dequantize-k-blocks.ts';
import type { GgmlType } from './ggml-types.ts';

const PLAIN: Record<string, WeightDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

const DEQUANTIZERS: Record<string, (src: Uint8Array, out: Float32Array) => void> = {
  Q4_0: dequantizeQ4_0,
  Q4_1: dequantizeQ4_1,
  Q5_0: dequantizeQ5_0,
  Q5_1: dequantizeQ5_1,
  Q8_0: dequantizeQ8_0,
  Q2_K: dequantizeQ2_K,
  Q3_K: dequantizeQ3_K,
  Q4_K: dequantizeQ4_K,
  Q5_K: dequantizeQ5_K,
  Q6_K: dequantizeQ6_K,
  Q8_K: dequantizeQ8_K,
};

export function isQuantized(type: GgmlType): boolean {
  return !(type.name in PLAIN);
}

/** The values of a tensor's bytes (blocks of `type`) as float32. */
export function dequantizeToFloat32(type: GgmlType, data: Uint8Array, elements: number): Float32Array {
  const out = new Float32Array(elements);
  const dequantize = DEQUANTIZERS[type.name];
  if (dequantize === undefined) throw new Error(`no dequantizer for ${type.name}`);
  dequantize(data, out);
  return out;
}

/**
 * A GGUF tensor as a host tensor of `shape` (Hugging Face order, outermost first): F32, F16 and
 * BF16 bytes as they are, quantized blocks dequantized to `dequantizedDType`.
 */
export function toHostTensor(type: GgmlType, data: Uint8Array, shape: number[], dequantizedDType: WeightDType): HostTensor {
  const plain = PLAIN[type.name];
  if (plain !== undefined) return { dtype: plain, shape, data };
  const values = dequantizeToFloat32(type, data, shape.reduce((a, b) => a * b, 1));
  return float32ToHostTensor(values, dequantizedDType, shape);
}
