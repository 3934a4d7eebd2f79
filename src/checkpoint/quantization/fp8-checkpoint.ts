import type { Checkpoint } from '../checkpoint.ts';
import { isFp8Layer, readFp8Layer } from './fp8.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import type { Fp8Config } from './quantization-config.ts';

/**
 * `quant_method: fp8` layers: `.weight` F8_E4M3 with `.weight_scale_inv` block scales
 * (`weight_block_size`; despite its name the value multiplies the codes), or without a block size
 * one `.weight_scale` per tensor. Activation scales (`input_scale`) are not read: Keel multiplies
 * bf16 activations by the dequantized weights.
 */
export function fp8Reader(ckpt: Checkpoint, config: Fp8Config): QuantizedLayerReader {
  return {
    holds: (base) => isFp8Layer(ckpt, base),
    shape: (base) => ckpt.info(`${base}.weight`).shape as [number, number],
    read: (base) =>
      config.blockSize === null
        ? readFp8Layer(ckpt, base, 'weight_scale', { kind: 'tensor' })
        : readFp8Layer(ckpt, base, 'weight_scale_inv', { kind: 'block', rows: config.blockSize[0], cols: config.blockSize[1] }),
  };
}
