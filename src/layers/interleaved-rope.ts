import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { gatherElements } from '../tensor/host-ops.ts';
import type { LoraTarget, WeightSource } from './parameters.ts';
import { selectedRows } from './row-selection.ts';

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
 * `target` as LoRA drives it, with an adapter's B rows of the tensors named in `rowsOf` permuted as
 * their weights' rows are at load, so that B · A adds to the rows it adapts in the checkpoint.
 */
export function withPermutedLoraRows(target: LoraTarget, rowsOf: Record<string, (row: number) => number>): LoraTarget {
  const permuted = (adapter: LoraAdapter): LoraAdapter => ({
    ...adapter,
    modules: new Map(
      [...adapter.modules].map(([module, weights]) => {
        const row = rowsOf[`${module}.weight`];
        if (row === undefined) return [module, weights];
        const [rows, rank] = weights.b.shape;
        return [module, { ...weights, b: gatherElements(weights.b, [rows, rank], (r, c) => row(r) * rank + c) }];
      }),
    ),
  });
  return {
    loraModules: target.loraModules,
    parts: target.parts,
    inFeatures: target.inFeatures,
    enableLora: (b, slots, maxRank) => target.enableLora(b, slots, maxRank),
    checkLoraAdapter: (adapter, what) => target.checkLoraAdapter(adapter, what),
    setLoraSlot: (b, slot, adapter) => target.setLoraSlot(b, slot, permuted(adapter)),
  };
}
