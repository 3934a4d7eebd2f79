/*
 * 2:4 structured sparsity (docs/sparsity.md): in every group of 4 consecutive input columns of a
 * row, at most 2 values are non-zero, the pattern sparse tensor cores (Ampere and later) multiply
 * at twice the dense rate. A 2:4 weight W [rows, cols] is kept compressed, as those cores read it:
 *
 *   values [rows, cols / 2]  the 2 kept values of each group, in column order (the checkpoint's dtype)
 *   meta   [rows, cols / 8]  bytes of 2 groups: group g's first kept column (0..3) in bits 4(g & 1)..+1,
 *                            its second (larger) in bits 4(g & 1) + 2..+3 of byte g >> 1
 *
 * A group with more than 2 zeros keeps 2 of its columns anyway (a kept value may be 0).
 */

import { invalidModel } from '../errors.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from './host-dtype.ts';
import type { HostTensor } from './host-tensor.ts';

export type SparsityPattern = '2:4';
export const SPARSITY_PATTERNS: readonly SparsityPattern[] = ['2:4'];

export interface Sparse24Weight {
  pattern: '2:4';
  rows: number;
  cols: number;
  /** [rows, cols / 2] in the dtype the weight was read in. */
  values: HostTensor;
  /** [rows, cols / 8]. */
  meta: Uint8Array;
}

/** Compresses a dense 2:4-sparse weight [rows, cols]; throws, naming `name`, where a group holds more than 2 non-zeros. */
export function compressSparse24(t: HostTensor, name: string): Sparse24Weight {
  if (t.shape.length !== 2) throw invalidModel(`${name}: a 2:4 sparse weight must be a matrix (got shape [${t.shape.join(', ')}])`);
  const [rows, cols] = t.shape;
  if (cols % 8 !== 0) throw invalidModel(`${name} [${rows}, ${cols}]: 2:4 sparsity needs input features in multiples of 8`);
  const dense = hostTensorToFloat32(t);
  const values = new Float32Array((rows * cols) / 2);
  const meta = new Uint8Array((rows * cols) / 8);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / 4; g++) {
      const at = r * cols + 4 * g;
      const kept: number[] = [];
      for (let i = 0; i < 4; i++) if (dense[at + i] !== 0) kept.push(i);
      if (kept.length > 2) {
        throw invalidModel(`${name} is not 2:4 sparse: row ${r}, columns ${4 * g}..${4 * g + 3} hold ${kept.length} non-zero values (prune it with keel prune --pattern 2:4, or leave --sparsity out)`);
      }
      // Pad with the first zero columns so that every group names two distinct columns in order.
      for (let i = 0; kept.length < 2; i++) if (!kept.includes(i)) kept.push(i);
      kept.sort((a, b) => a - b);
      const out = (r * cols) / 2 + 2 * g;
      values[out] = dense[at + kept[0]];
      values[out + 1] = dense[at + kept[1]];
      const shift = (g & 1) * 4;
      meta[(r * cols) / 8 + (g >> 1)] |= (kept[0] | (kept[1] << 2)) << shift;
    }
  }
  return { pattern: '2:4', rows, cols, values: float32ToHostTensor(values, t.dtype, [rows, cols / 2]), meta };
}

/** The two kept columns (0..3) of group `g` of row `r`. */
export function keptColumns(w: Pick<Sparse24Weight, 'cols' | 'meta'>, r: number, g: number): [number, number] {
  const bits = (w.meta[(r * w.cols) / 8 + (g >> 1)] >> ((g & 1) * 4)) & 0xf;
  return [bits & 3, bits >> 2];
}

/** The dense weight [rows, cols] the compressed one stands for, in the values' dtype. */
export function expandSparse24(w: Sparse24Weight): HostTensor {
  const values = hostTensorToFloat32(w.values);
  const dense = new Float32Array(w.rows * w.cols);
  for (let r = 0; r < w.rows; r++) {
    for (let g = 0; g < w.cols / 4; g++) {
      const [a, b] = keptColumns(w, r, g);
      const from = (r * w.cols) / 2 + 2 * g;
      dense[r * w.cols + 4 * g + a] = values[from];
      dense[r * w.cols + 4 * g + b] = values[from + 1];
    }
  }
  return float32ToHostTensor(dense, w.values.dtype, [w.rows, w.cols]);
}

/** Weights of the same columns stacked along their rows (q/k/v, gate/up), still compressed. */
export function concatSparse24Rows(parts: Sparse24Weight[]): Sparse24Weight {
  const cols = parts[0].cols;
  const dtype = parts[0].values.dtype;
  const odd = parts.find((p) => p.cols !== cols || p.values.dtype !== dtype);
  if (odd !== undefined) throw new Error(`concatSparse24Rows: parts of [*, ${cols}] ${dtype} and [*, ${odd.cols}] ${odd.values.dtype}`);
  if (parts.length === 1) return parts[0];
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const data = new Uint8Array(parts.reduce((n, p) => n + p.values.data.byteLength, 0));
  const meta = new Uint8Array((rows * cols) / 8);
  let dataAt = 0;
  let metaAt = 0;
  for (const p of parts) {
    data.set(p.values.data, dataAt);
    meta.set(p.meta, metaAt);
    dataAt += p.values.data.byteLength;
    metaAt += p.meta.length;
  }
  return { pattern: '2:4', rows, cols, values: { dtype, shape: [rows, cols / 2], data }, meta };
}

export function isSparse24(w: object): w is Sparse24Weight {
  return 'pattern' in w && (w as Sparse24Weight).pattern === '2:4';
}
