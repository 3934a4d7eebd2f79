import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { quantizeAtLoad, quantizedCheckpoint } from '../checkpoint/quantization/quantized-checkpoint.ts';
import type { CheckpointQuantization } from '../checkpoint/quantization/quantization-config.ts';
import { invalidArgument } from '../errors.ts';
import type { LoadTimeQuantization } from '../tensor/quantize-rtn.ts';

/**
 * The checkpoint a model loads from, in the format its linear layers will have: a quantized
 * checkpoint read as it is stored (`quantization_config`), or a 16-bit one quantized at load
 * (`--quantization`), or as it is.
 */
export function withQuantization(ckpt: Checkpoint, stored: CheckpointQuantization | null, atLoad: LoadTimeQuantization | null): Checkpoint {
  if (stored !== null && atLoad !== null) {
    throw invalidArgument(`--quantization ${atLoad}: ${ckpt.dir} is already quantized (quant_method ${stored.method}); Keel reads it as it is, so leave --quantization out`);
  }
  if (stored !== null) return quantizedCheckpoint(ckpt, stored);
  return atLoad === null ? ckpt : quantizeAtLoad(ckpt, atLoad);
}
