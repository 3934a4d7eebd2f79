import { DTYPE_BYTES } from './host-dtype.ts';
import type { HostTensor } from './host-tensor.ts';

/** Indices start .. start + count - 1 of one dimension of a tensor (a tensor-parallel shard). */
export interface TensorSlice {
  dim: number;
  start: number;
  count: number;
}

/**
 * How a slice lies in a row-major tensor's bytes: `runs` runs of `runBytes` each, run i at byte
 * `firstByte + i * strideBytes`. Used to read only a slice from a file, and to cut one from a
 * tensor in memory.
 */
export function sliceRuns(shape: readonly number[], elementBytes: number, slice: TensorSlice): { runs: number; runBytes: number; strideBytes: number; firstByte: number } {
  const { dim, start, count } = slice;
  if (!(dim >= 0 && dim < shape.length)) throw new Error(`slice of dimension ${dim} of a tensor [${shape.join(', ')}]`);
  if (!(start >= 0 && count >= 1 && start + count <= shape[dim])) throw new Error(`slice ${start}..${start + count - 1} of dimension ${dim} of a tensor [${shape.join(', ')}]`);
  const inner = shape.slice(dim + 1).reduce((a, b) => a * b, 1) * elementBytes;
  const runs = shape.slice(0, dim).reduce((a, b) => a * b, 1);
  return { runs, runBytes: count * inner, strideBytes: shape[dim] * inner, firstByte: start * inner };
}

/** The slice of a tensor in memory, as a tensor of its own. */
export function sliceTensor(t: HostTensor, slice: TensorSlice): HostTensor {
  const { runs, runBytes, strideBytes, firstByte } = sliceRuns(t.shape, DTYPE_BYTES[t.dtype], slice);
  const data = new Uint8Array(runs * runBytes);
  for (let i = 0; i < runs; i++) data.set(t.data.subarray(firstByte + i * strideBytes, firstByte + i * strideBytes + runBytes), i * runBytes);
  const shape = t.shape.slice();
  shape[slice.dim] = slice.count;
  return { dtype: t.dtype, shape, data };
}
