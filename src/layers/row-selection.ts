import { gatherElements } from '../tensor/host-ops.ts';
import type { WeightSource } from './parameters.ts';

/** Which rows of a checkpoint tensor a layer reads under its name: `count` rows, row r being the tensor's row `row(r)`. */
export interface RowSelection {
  count: number;
  row: (r: number) => number;
}

/**
 * `source` where each tensor named in `selections` reads as the rows its selection picks, in
 * order: how a layer splits one checkpoint tensor into parts its ops take apart (an attention
 * projection holding each head's query and output gate side by side, Qwen3-Next's projections
 * grouped by key head). It reads through `read` alone, so such a layer loads 16-bit weights.
 */
export function selectedRows(source: WeightSource, selections: Readonly<Record<string, RowSelection>>): WeightSource {
  return {
    ...(source.shard === undefined ? {} : { shard: source.shard }),
    read: (name) => {
      const t = source.read(name);
      const selection = selections[name];
      if (selection === undefined) return t;
      const cols = t.shape.length === 2 ? t.shape[1] : 1;
      const shape = t.shape.length === 2 ? [selection.count, cols] : [selection.count];
      return gatherElements(t, shape, (row, col = 0) => selection.row(row) * cols + col);
    },
  };
}
