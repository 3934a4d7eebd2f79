import { toFloat16 } from '../../src/quantize/group-quantizer.ts';
import { emptyAqlmWeight, putAqlmCodes } from '../../src/tensor/aqlm.ts';
import { AQLM_GROUP, aqlmLayout, concatQuantizedRows, type AqlmFormat, type QuantizedWeight } from '../../src/tensor/quantized-weight.ts';

/** An AQLM weight with its codes also kept unpacked, for references written from the format's definition. */
export interface RandomAqlm {
  w: QuantizedWeight;
  /** [rows][groups][codebooks]. */
  codes: number[][][];
}

/**
 * Random AQLM weights of `partRows` stacked parts (each with its own codebooks, as q/k/v are):
 * float16 codebook values in ±1, scales in [0.001, 0.1), codes anywhere in their range (1x16 codes
 * are drawn from `codeRange` values, so a small test still hits high codes).
 */
export function randomAqlmWeight(format: AqlmFormat, partRows: number[], cols: number, uniform: () => number, codeRange = 4096): RandomAqlm {
  const { codebooks, size } = aqlmLayout(format);
  const int = (n: number) => Math.floor(uniform() * n);
  const allCodes: number[][][] = [];
  const parts = partRows.map((rows) => {
    const values = Float32Array.from({ length: codebooks * size * AQLM_GROUP }, () => toFloat16(2 * uniform() - 1));
    const w = emptyAqlmWeight(format, rows, cols, values);
    // 1x16: codes spread over the whole 16 bits, the top ones included (stored negative in checkpoints).
    const pool = Array.from({ length: Math.min(size, codeRange) }, (_, i) => (size === 256 ? i : (i * 40503 + int(40503)) % size));
    for (let r = 0; r < rows; r++) {
      const rowCodes: number[][] = [];
      for (let g = 0; g < cols / AQLM_GROUP; g++) {
        const codes = Array.from({ length: codebooks }, () => pool[int(pool.length)]);
        putAqlmCodes(w, r, g, codes);
        rowCodes.push(codes);
      }
      allCodes.push(rowCodes);
      w.scales[r] = Math.fround(0.001 + 0.099 * uniform());
    }
    return w;
  });
  return { w: concatQuantizedRows(parts), codes: allCodes };
}

/** The dequantized weight by AQLM's definition: Σ over codebooks of the code's vector (float32), times the row's scale. */
export function aqlmReference({ w, codes }: RandomAqlm): Float32Array {
  const { codebooks, size } = aqlmLayout(w.format as AqlmFormat);
  const books = w.codebooks!;
  const out = new Float32Array(w.rows * w.cols);
  let part = 0;
  let partEnd = books.partRows[0];
  for (let r = 0; r < w.rows; r++) {
    if (r === partEnd) partEnd += books.partRows[++part];
    for (let g = 0; g < w.cols / AQLM_GROUP; g++) {
      for (let j = 0; j < AQLM_GROUP; j++) {
        let sum = 0;
        codes[r][g].forEach((code, c) => {
          sum = Math.fround(sum + books.values[((part * codebooks + c) * size + code) * AQLM_GROUP + j]);
        });
        out[r * w.cols + g * AQLM_GROUP + j] = Math.fround(sum * w.scales[r]);
      }
    }
  }
  return out;
}
