import { invalidArgument } from '../errors.ts';
import { concatRows } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { sliceTensor, type TensorSlice } from '../tensor/tensor-slice.ts';
import type { TensorParallelShard, WeightSource } from './parameters.ts';

/** One device: the whole of every layer. */
export const WHOLE: TensorParallelShard = { rank: 0, size: 1, expertParallel: false };

/** The shard a source loads: its own, or the whole model. */
export function shardOf(source: WeightSource): TensorParallelShard {
  return source.shard ?? WHOLE;
}

/** Rank `shard.rank`'s equal part of `total` units (heads, rows, experts); a clear error unless they split evenly. */
export function evenPart(total: number, shard: TensorParallelShard, what: string): { start: number; count: number } {
  if (total % shard.size !== 0) throw invalidArgument(`tensor-parallel size ${shard.size} does not divide ${what} (${total}): choose a size that divides it`);
  const count = total / shard.size;
  return { start: shard.rank * count, count };
}

/** A slice of tensor `name`: read alone where the source can, else cut from the whole tensor. */
export function readSlice(source: WeightSource, name: string, slice: TensorSlice): HostTensor {
  return source.readSlice ? source.readSlice(name, slice) : sliceTensor(source.read(name), slice);
}

/** Several row ranges of tensor `name`, stacked in order (a fused q/k/v tensor's parts of one rank). */
export function readRowRanges(source: WeightSource, name: string, ranges: readonly { start: number; count: number }[]): HostTensor {
  const parts = ranges.map((r) => readSlice(source, name, { dim: 0, ...r }));
  return parts.length === 1 ? parts[0] : concatRows(parts);
}
