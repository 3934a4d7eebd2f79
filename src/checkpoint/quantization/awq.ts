import { emptyQuantizedWeight, putCode, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import { checkGroupCount, checkShape, readFloats, readWords, unpackField } from './packed-tensors.ts';
import type { AwqConfig } from './quantization-config.ts';

/**
 * The 4-bit field of a packed word holding output column 8c + o: AutoAWQ's GEMM packing writes
 * columns 0, 2, 4, 6, 1, 3, 5, 7 into fields 0..7.
 */
const AWQ_FIELD_OF_COLUMN = [0, 4, 1, 5, 2, 6, 3, 7];

/**
 * AWQ layers in AutoAWQ's GEMM layout, per layer of [out, in]:
 *
 * - `qweight` I32 [in, out / 8]: output column j of input row i in word [i, j / 8], field
 *   AWQ_FIELD_OF_COLUMN[j % 8];
 * - `qzeros` I32 [in / group, out / 8], packed alike;
 * - `scales` F16 [in / group, out].
 *
 * W[j, i] = (q[i, j] - zero[i / group, j]) * scale[i / group, j].
 */
export function awqReader(ckpt: Checkpoint, config: AwqConfig): QuantizedLayerReader {
  const shape = (base: string): [number, number] => {
    const [cols, packedOut] = ckpt.info(`${base}.qweight`).shape;
    return [packedOut * 8, cols];
  };
  return {
    holds: (base) => ckpt.has(`${base}.qweight`),
    shape,
    read(base: string): QuantizedWeight {
      const [rows, cols] = shape(base);
      const where = `${ckpt.dir}: AWQ layer ${base}`;
      const w = emptyQuantizedWeight('int4', rows, cols, Math.min(config.groupSize ?? cols, cols), true);
      const scalesShape = ckpt.info(`${base}.scales`).shape;
      checkShape(ckpt, `${base}.scales`, scalesShape, [scalesShape[0], rows]);
      const groups = scalesShape[0];
      checkGroupCount(w, groups, where);
      const qweight = readWords(ckpt, `${base}.qweight`, [cols, rows / 8]);
      const qzeros = readWords(ckpt, `${base}.qzeros`, [groups, rows / 8]);
      const scales = readFloats(ckpt, `${base}.scales`, [groups, rows]);
      const field = (words: Uint32Array, row: number, j: number) => unpackField(words[row * (rows / 8) + (j >> 3)], AWQ_FIELD_OF_COLUMN[j & 7], 4);
      for (let g = 0; g < groups; g++) {
        for (let j = 0; j < rows; j++) {
          w.scales[j * groups + g] = scales[g * rows + j];
          w.zeros![j * groups + g] = field(qzeros, g, j);
        }
      }
      for (let i = 0; i < cols; i++) for (let j = 0; j < rows; j++) putCode(w, j, i, field(qweight, i, j));
      return w;
    },
  };
}
