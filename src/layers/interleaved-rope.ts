import { gatherElements } from '../tensor/host-ops.ts';
import type { WeightSource } from './parameters.ts';
import { selectedRows, transformedTensors } from './row-selection.ts';

/*
 * Checkpoints whose rotary dims pair as (x[2i], x[2i+1]) (DeepSeek's MLA, GLM-5's indexer) are
 * loaded with the rows that produce those dims permuted into rotate_half order (pair i with
 * i + rope/2), so the backends' one rotation serves them. A score only ever dots a query's
 * rotary part with a key's, and a permutation applied to both leaves the dot product unchanged.
 */

/** Row k of a rotary block in rotate_half order is this row of the interleaved checkpoint's block of `ropeDim`. */
export function interleavedRow(k: number, ropeDim: number): number {
  const half = ropeDim / 2;
  return k < half ? 2 * k : 2 * (k - half) + 1;
}

/** `source` with the rows of the tensors named in `rowsOf` permuted: row r of the result is row `rowsOf[name](r)` of the checkpoint's. */
export function withPermutedRows(source: WeightSource, rowsOf: Record<string, (row: number) => number>): WeightSource {
  return selectedRows(source, Object.fromEntries(Object.entries(rowsOf).map(([name, row]) => [name, { row }])));
}

/**
 * `source` with the elements of the tensors named in `elementsOf` permuted, counted over the whole
 * tensor in row-major order: element i of the result is element `elementsOf[name](i)` of the
 * checkpoint's (a norm weight [heads, headDim] of the heads whose rows are permuted).
 */
export function withPermutedElements(source: WeightSource, elementsOf: Record<string, (element: number) => number>): WeightSource {
  return transformedTensors(source, (name) => {
    const element = elementsOf[name];
    if (element === undefined) return null;
    return (t) => ({ ...gatherElements(t, [t.shape.reduce((n, d) => n * d, 1)], element), shape: t.shape });
  });
}
