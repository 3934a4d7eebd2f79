import { gatherElements } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { WeightSource } from './parameters.ts';

/**
 * Which rows (the first dimension; each element of a 1-D tensor) of a checkpoint tensor a layer
 * reads under its name: `count` rows (absent: as many as the tensor has), row r being the
 * tensor's row `row(r)`.
 */
export interface RowSelection {
  count?: number;
  row: (r: number) => number;
}

/**
 * `source` where each tensor named in `selections` reads as the rows its selection picks, in
 * order: how a layer puts a checkpoint's rows in the order its ops take (rotary rows permuted,
 * interleaved-rope.ts) or splits one tensor into parts (an attention projection holding each
 * head's query and output gate side by side, Qwen3-Next's projections grouped by key head). It
 * reads through `read` alone, so such a layer loads 16-bit weights.
 */
export function selectedRows(source: WeightSource, selections: Readonly<Record<string, RowSelection>>): WeightSource {
  return transformedTensors(source, (name) => {
    const selection = selections[name];
    if (selection === undefined) return null;
    return (t) => selectRows(t, selection);
  });
}

/** The rows of `t` (a matrix, or the elements of a vector) that `selection` picks, in order. */
export function selectRows(t: HostTensor, selection: RowSelection): HostTensor {
  const cols = t.shape.length === 2 ? t.shape[1] : 1;
  const count = selection.count ?? t.shape[0];
  const shape = t.shape.length === 2 ? [count, cols] : [count];
  return gatherElements(t, shape, (row, col = 0) => selection.row(row) * cols + col);
}

/**
 * `source` where a tensor reads as `transformOf(name)` makes it of the checkpoint's (null: as
 * stored). It reads through `read` alone (see selectedRows).
 */
export function transformedTensors(source: WeightSource, transformOf: (name: string) => ((t: HostTensor) => HostTensor) | null): WeightSource {
  return {
    ...(source.shard === undefined ? {} : { shard: source.shard }),
    read: (name) => {
      const t = source.read(name);
      return transformOf(name)?.(t) ?? t;
    },
  };
}
