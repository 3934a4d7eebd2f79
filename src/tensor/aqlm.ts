/*
 * Building AQLM weights in Keel's layout (src/tensor/quantized-weight.ts): a row's code words one
 * per group of 8 columns, 16 bits each (one 16-bit index, or two 8-bit indices with the first
 * codebook's in the low byte), and one float32 scale per row.
 */

import { AQLM_GROUP, aqlmLayout, emptyQuantizedWeight, rowBytes, type AqlmFormat, type QuantizedWeight } from './quantized-weight.ts';

/** An AQLM weight [rows, cols] with one codebook set `values` [codebooks, size, 8], codes 0 and scales 0; fill it with putAqlmCodes. */
export function emptyAqlmWeight(format: AqlmFormat, rows: number, cols: number, values: Float32Array): QuantizedWeight {
  const { codebooks, size } = aqlmLayout(format);
  if (cols % AQLM_GROUP !== 0) throw new Error(`AQLM weights need a multiple of ${AQLM_GROUP} columns (got ${cols})`);
  if (values.length !== codebooks * size * AQLM_GROUP) throw new Error(`${format} codebooks hold ${codebooks * size * AQLM_GROUP} values, not ${values.length}`);
  const w = emptyQuantizedWeight(format, rows, cols, cols, false);
  w.codebooks = { values, partRows: [rows] };
  return w;
}

/** Sets the codes (one per codebook) of group `group` of row `row`. */
export function putAqlmCodes(w: QuantizedWeight, row: number, group: number, codes: readonly number[]): void {
  const at = row * rowBytes(w.format, w.cols) + 2 * group;
  const word = codes.length === 1 ? codes[0] : codes[0] | (codes[1] << 8);
  w.codes[at] = word & 0xff;
  w.codes[at + 1] = word >> 8;
}

/** The codes (one per codebook) of group `group` of row `row`. */
export function aqlmCodes(w: QuantizedWeight, row: number, group: number): number[] {
  const at = row * rowBytes(w.format, w.cols) + 2 * group;
  const lo = w.codes[at];
  const hi = w.codes[at + 1];
  return aqlmLayout(w.format as AqlmFormat).codebooks === 1 ? [lo | (hi << 8)] : [lo, hi];
}
