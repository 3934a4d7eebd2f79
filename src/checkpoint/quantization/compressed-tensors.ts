import { invalidModel } from '../../errors.ts';
import { emptyQuantizedWeight, fillInt4Padding, putCode, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import { isFp8Layer, readFp8Layer } from './fp8.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import { checkGroupCount, checkShape, permutationFromGroupIndex, readFloats, readIndices, readWords, unpackField } from './packed-tensors.ts';
import type { CompressedTensorsConfig, CompressedTensorsScheme } from './quantization-config.ts';

/**
 * compressed-tensors layers (llm-compressor). The scheme of a layer is the first config group
 * whose targets name it (its module name, a `re:` expression, or `Linear`).
 *
 * pack-quantized, per layer of [out, in] with pack = 32 / bits:
 * - `weight_packed` I32 [out, ceil(in / pack)]: column i of row j in word [j, i / pack], field
 *   i % pack, as the signed value plus 2^(bits - 1);
 * - `weight_scale` [out, groups] (`group`) or [out, 1] (`channel`);
 * - `weight_zero_point` I32 [ceil(out / pack), groups], asymmetric schemes only: the zero of row j
 *   in word [j / pack, g], field j % pack, offset alike;
 * - `weight_g_idx` I32 [in], optional (act-order); `weight_shape` [2] = [out, in].
 * W[j, i] = (q - zero) * scale, the symmetric zero being the offset itself.
 *
 * float-quantized: `weight` F8_E4M3 [out, in] with `weight_scale` per tensor, channel or block.
 */
export function compressedTensorsReader(ckpt: Checkpoint, config: CompressedTensorsConfig): QuantizedLayerReader {
  const packed = config.format === 'pack-quantized';
  const scheme = (base: string): CompressedTensorsScheme => {
    const found = config.schemes.find((s) => s.targets.some((t) => targetsModule(t, base)));
    if (found === undefined) throw invalidModel(`${ckpt.dir}: layer ${base} is quantized but no config_groups entry of quantization_config targets it`);
    return found;
  };
  return {
    holds: (base) => (packed ? ckpt.has(`${base}.weight_packed`) : isFp8Layer(ckpt, base)),
    shape(base) {
      if (!packed) return ckpt.info(`${base}.weight`).shape as [number, number];
      const shape = readIndices(ckpt, `${base}.weight_shape`).values;
      if (shape.length !== 2) throw invalidModel(`${ckpt.dir}: ${base}.weight_shape holds ${shape.length} values, expected [out, in]`);
      return [shape[0], shape[1]];
    },
    read(base) {
      const s = scheme(base);
      if (!packed) {
        const scales = s.strategy === 'block' ? { kind: 'block' as const, rows: s.blockStructure![0], cols: s.blockStructure![1] } : { kind: s.strategy as 'tensor' | 'channel' };
        return readFp8Layer(ckpt, base, 'weight_scale', scales);
      }
      return readPacked(ckpt, base, s, this.shape(base));
    },
  };
}

/** Whether a config entry's target (a module name, a `re:` expression, or `Linear`) names module `base`. */
export function targetsModule(target: string, base: string): boolean {
  if (target === 'Linear') return true;
  if (target.startsWith('re:')) return new RegExp(target.slice(3)).test(base);
  return target === base;
}

function readPacked(ckpt: Checkpoint, base: string, s: CompressedTensorsScheme, [rows, cols]: [number, number]): QuantizedWeight {
  const where = `${ckpt.dir}: compressed-tensors layer ${base}`;
  const pack = 32 / s.bits;
  const groupSize = s.strategy === 'group' ? Math.min(s.groupSize!, cols) : cols;
  const w = emptyQuantizedWeight(s.bits === 4 ? 'int4' : 'int8', rows, cols, groupSize, !s.symmetric);
  const scalesShape = ckpt.info(`${base}.weight_scale`).shape;
  checkShape(ckpt, `${base}.weight_scale`, scalesShape, [rows, scalesShape[1]]);
  const groups = scalesShape[1];
  checkGroupCount(w, groups, where);
  const words = readWords(ckpt, `${base}.weight_packed`, [rows, Math.ceil(cols / pack)]);
  w.scales.set(readFloats(ckpt, `${base}.weight_scale`, [rows, groups]));
  if (!s.symmetric) {
    const zeroWords = readWords(ckpt, `${base}.weight_zero_point`, [Math.ceil(rows / pack), groups]);
    for (let j = 0; j < rows; j++) for (let g = 0; g < groups; g++) w.zeros![j * groups + g] = unpackField(zeroWords[(j / pack | 0) * groups + g], j % pack, s.bits);
  }
  if (ckpt.has(`${base}.weight_g_idx`)) {
    const gIdx = readIndices(ckpt, `${base}.weight_g_idx`);
    checkShape(ckpt, `${base}.weight_g_idx`, gIdx.shape, [cols]);
    w.perm = permutationFromGroupIndex(gIdx.values, w.groupSize, where);
  }
  const wordsPerRow = Math.ceil(cols / pack);
  for (let j = 0; j < rows; j++) {
    for (let stored = 0; stored < cols; stored++) {
      const i = w.perm === null ? stored : w.perm[stored];
      putCode(w, j, stored, unpackField(words[j * wordsPerRow + (i / pack | 0)], i % pack, s.bits));
    }
  }
  fillInt4Padding(w);
  return w;
}
