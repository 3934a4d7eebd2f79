import { invalidModel } from '../../errors.ts';
import { emptyAqlmWeight } from '../../tensor/aqlm.ts';
import { AQLM_GROUP, aqlmLayout, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import { checkShape, readFloats } from './packed-tensors.ts';
import type { AqlmConfig } from './quantization-config.ts';

/**
 * AQLM layers as the aqlm library's QuantizedLinear saves them (and transformers loads them), per
 * layer of [out, in] with M codebooks of 2^B vectors (1×16 or 2×8), in_group_size 8 and
 * out_group_size 1:
 *
 * - `codes` [out, in / 8, M], I16 (B = 16) or I8 (B = 8): the index of each group's vector in
 *   each codebook, stored signed (a code c ≥ 2^(B−1) as c − 2^B; read back modulo 2^B);
 * - `codebooks` F16 [M, 2^B, 1, 8];
 * - `scales` [out, 1, 1, 1]: each output row's scale;
 *
 * W[r, 8g + j] = scales[r] · Σ_c codebooks[c, codes[r, g, c], 0, j]. The codes' little-endian
 * bytes are already Keel's code words (an I16 code's two bytes; an I8 pair's first code in the low
 * byte), so they are copied as they are. Layers left 16-bit (linear_weights_not_to_quantize) have
 * a plain `.weight`.
 */
export function aqlmReader(ckpt: Checkpoint, config: AqlmConfig): QuantizedLayerReader {
  const { codebooks, bits, size } = aqlmLayout(config.format);
  const shape = (base: string): [number, number] => {
    const [rows, groups] = ckpt.info(`${base}.codes`).shape;
    return [rows, groups * AQLM_GROUP];
  };
  return {
    holds: (base) => ckpt.has(`${base}.codes`),
    shape,
    read(base: string): QuantizedWeight {
      const where = `${ckpt.dir}: AQLM layer ${base}`;
      const codes = ckpt.readRaw(`${base}.codes`);
      const codeDtype = bits === 16 ? 'I16' : 'I8';
      if (codes.dtype !== codeDtype) throw invalidModel(`${where}: codes are ${codes.dtype}, expected ${codeDtype} for ${config.format} (${bits}-bit codes)`);
      const [rows, cols] = shape(base);
      // AQLM stores no weight shape: [out, in] comes from the codes, and the scales' rows confirm it.
      const scaleRows = ckpt.info(`${base}.scales`).shape[0];
      if (scaleRows !== rows) throw invalidModel(`${where}: codes [${codes.shape.join(', ')}] have ${rows} output rows and scales ${scaleRows}; Keel reads codes as [out, in / 8, codebooks]`);
      checkShape(ckpt, `${base}.codes`, codes.shape, [rows, cols / AQLM_GROUP, codebooks]);
      const bookInfo = ckpt.info(`${base}.codebooks`);
      if (bookInfo.shape.length === 4 && bookInfo.shape[2] !== 1) {
        throw invalidModel(`${where}: codebook vectors span ${bookInfo.shape[2]} output rows (out_group_size ${bookInfo.shape[2]}); Keel reads out_group_size 1`);
      }
      checkShape(ckpt, `${base}.codebooks`, bookInfo.shape, [codebooks, size, 1, AQLM_GROUP]);
      // Keel keeps codebooks in float16 on the GPU, as AQLM's kernels do: other dtypes would round.
      if (bookInfo.dtype !== 'F16') throw invalidModel(`${where}: codebooks are ${bookInfo.dtype}; Keel reads float16 codebooks (AQLM's inference kernels take float16 only)`);
      const w = emptyAqlmWeight(config.format, rows, cols, readFloats(ckpt, `${base}.codebooks`, null));
      w.codes.set(codes.data);
      w.scales.set(readFloats(ckpt, `${base}.scales`, [rows, 1, 1, 1]));
      return w;
    },
  };
}
