import { storedTensors, type Checkpoint } from '../checkpoint/checkpoint.ts';
import { quantizeAtLoad, quantizedCheckpoint } from '../checkpoint/quantization/quantized-checkpoint.ts';
import type { CheckpointQuantization } from '../checkpoint/quantization/quantization-config.ts';
import { invalidArgument } from '../errors.ts';
import type { LoadTimeQuantization } from '../tensor/quantize-rtn.ts';
import { compressSparse24, type SparsityPattern } from '../tensor/sparse24.ts';
import { sparsityCovers, type CheckpointSparsity } from '../checkpoint/sparsity-config.ts';

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

/**
 * The checkpoint with every linear layer read 16-bit (`read`, its dequantized values): for a GGUF
 * file, whose repacked int8/int4 weights cannot be sharded over tensor-parallel devices or made
 * 2:4 sparse.
 */
export function withLinearsDequantized(ckpt: Checkpoint): Checkpoint {
  const plain = storedTensors(ckpt);
  if (ckpt.readSlice !== undefined) plain.readSlice = ckpt.readSlice.bind(ckpt);
  return plain;
}

/**
 * The checkpoint whose linear layers covered by `sparsity` are read 2:4 compressed
 * (src/tensor/sparse24.ts), each checked to hold at most 2 non-zeros in every group of 4 (an
 * error names the first weight that does not); null leaves it as it is. Sparsity applies to
 * 16-bit weights only.
 */
export function withSparsity(ckpt: Checkpoint, sparsity: CheckpointSparsity | null): Checkpoint {
  if (sparsity === null) return ckpt;
  if (ckpt.readLinear !== undefined) {
    throw invalidArgument(`${sparsity.pattern} sparsity runs 16-bit weights: ${ckpt.dir} is read quantized (its quantization_config, or --quantization); leave one of the two out`);
  }
  const sparse = Object.assign(storedTensors(ckpt), {
    readLinear: (name: string) => {
      const t = ckpt.read(name);
      return sparsityCovers(sparsity, name.replace(/\.weight$/, '')) ? compressSparse24(t, name) : t;
    },
  });
  if (ckpt.readSlice !== undefined) sparse.readSlice = ckpt.readSlice.bind(ckpt);
  return sparse;
}

/**
 * The sparsity a model runs with: the checkpoint's declaration (config.json's sparsity_config),
 * or with `requested` every linear layer the model runs through `readLinear` (attention and MLP
 * projections; the LM head and MoE routers stay dense).
 */
export function resolveSparsity(declared: CheckpointSparsity | null, requested: SparsityPattern | null): CheckpointSparsity | null {
  if (requested === null) return declared;
  return declared ?? { pattern: requested, targets: ['Linear'], ignore: [] };
}
