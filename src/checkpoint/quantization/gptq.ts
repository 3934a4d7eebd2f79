import { invalidModel } from '../../errors.ts';
import { emptyQuantizedWeight, putCode, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import { checkGroupCount, checkShape, permutationFromGroupIndex, readFloats, readIndices, readWords, unpackField, withoutSymmetricZeros } from './packed-tensors.ts';
import type { GptqConfig } from './quantization-config.ts';

/**
 * GPTQ layers (AutoGPTQ, GPTQModel, optimum), per layer of [out, in] with pack = 32 / bits:
 *
 * - `qweight` I32 [in / pack, out]: input column i of output j in word [i / pack, j], field i % pack;
 * - `qzeros` I32 [groups, out / pack]: the zero of (group g, output j) in word [g, j / pack], field
 *   j % pack, stored minus one in the v1 `gptq` format;
 * - `scales` F16 [groups, out];
 * - `g_idx` I32 [in], optional: the group of each input column (act-order checkpoints list them
 *   in the order GPTQ quantized the columns).
 *
 * W[j, i] = (q[i, j] - zero[g_idx[i], j]) * scale[g_idx[i], j].
 */
export function gptqReader(ckpt: Checkpoint, config: GptqConfig): QuantizedLayerReader {
  const pack = 32 / config.bits;
  const shape = (base: string): [number, number] => {
    const [packedIn, out] = ckpt.info(`${base}.qweight`).shape;
    return [out, packedIn * pack];
  };
  return {
    holds: (base) => ckpt.has(`${base}.qweight`),
    shape,
    read(base: string): QuantizedWeight {
      const [rows, cols] = shape(base);
      const where = `${ckpt.dir}: GPTQ layer ${base}`;
      if (rows % pack !== 0) throw invalidModel(`${where}: ${rows} output columns do not pack into ${pack}s`);
      const groupSize = config.groupSize ?? cols;
      const format = config.bits === 4 ? 'int4' : 'int8';
      const w = emptyQuantizedWeight(format, rows, cols, Math.min(groupSize, cols), true);
      const scalesShape = ckpt.info(`${base}.scales`).shape;
      checkShape(ckpt, `${base}.scales`, scalesShape, [scalesShape[0], rows]);
      const groups = scalesShape[0];
      checkGroupCount(w, groups, where);
      const qweight = readWords(ckpt, `${base}.qweight`, [cols / pack, rows]);
      const qzeros = readWords(ckpt, `${base}.qzeros`, [groups, rows / pack]);
      const scales = readFloats(ckpt, `${base}.scales`, [groups, rows]);
      if (ckpt.has(`${base}.g_idx`)) {
        const gIdx = readIndices(ckpt, `${base}.g_idx`);
        checkShape(ckpt, `${base}.g_idx`, gIdx.shape, [cols]);
        w.perm = permutationFromGroupIndex(gIdx.values, w.groupSize, where);
      }
      const offset = config.zerosMinusOne ? 1 : 0;
      for (let g = 0; g < groups; g++) {
        for (let j = 0; j < rows; j++) {
          w.scales[j * groups + g] = scales[g * rows + j];
          w.zeros![j * groups + g] = unpackField(qzeros[g * (rows / pack) + (j / pack | 0)], j % pack, config.bits) + offset;
        }
      }
      for (let stored = 0; stored < cols; stored++) {
        const i = w.perm === null ? stored : w.perm[stored];
        const wordRow = (i / pack | 0) * rows;
        const field = i % pack;
        for (let j = 0; j < rows; j++) putCode(w, j, stored, unpackField(qweight[wordRow + j], field, config.bits));
      }
      return withoutSymmetricZeros(w);
    },
  };
}
