import { DTYPE_BYTES, hostTensorToFloat32 } from './host-dtype.ts';
import type { HostTensor } from './host-tensor.ts';

/** Stacks tensors along their first dimension; mixed dtypes are widened to float32 first. */
export function concatRows(parts: HostTensor[]): HostTensor {
  const shape = [parts.reduce((rows, t) => rows + t.shape[0], 0), ...parts[0].shape.slice(1)];
  const dtype = parts[0].dtype;
  if (parts.some((t) => t.dtype !== dtype)) {
    const widened = parts.map(hostTensorToFloat32);
    const values = new Float32Array(widened.reduce((n, w) => n + w.length, 0));
    let offset = 0;
    for (const w of widened) {
      values.set(w, offset);
      offset += w.length;
    }
    return float32Tensor(values, shape);
  }
  const data = new Uint8Array(parts.reduce((n, t) => n + t.data.length, 0));
  let offset = 0;
  for (const t of parts) {
    data.set(t.data, offset);
    offset += t.data.length;
  }
  return { dtype, shape, data };
}

/** A float32 host tensor holding `values` (by reference). */
export function float32Tensor(values: Float32Array, shape: number[]): HostTensor {
  return { dtype: 'f32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** `t`'s values with `f` applied to each, as float32 (a layer's load-time change of format). */
export function mapValues(t: HostTensor, f: (value: number) => number): HostTensor {
  const values = hostTensorToFloat32(t);
  for (let i = 0; i < values.length; i++) values[i] = f(values[i]);
  return float32Tensor(values, [...t.shape]);
}

/**
 * A tensor of `shape` (1 to 3 dimensions) whose element at each index is `t`'s element at
 * `sourceIndex(...index)`, copied as raw elements so that the dtype (and memory) stays as stored:
 * the load-time reorderings of layers (transposed or interleaved experts, absorbed projections,
 * permuted rotary rows).
 */
export function gatherElements(t: HostTensor, shape: number[], sourceIndex: (...index: number[]) => number): HostTensor {
  const width = DTYPE_BYTES[t.dtype];
  const count = shape.reduce((n, d) => n * d, 1);
  const data = new Uint8Array(count * width);
  // Typed views need aligned offsets; a tensor read from a file may start anywhere.
  const aligned = t.data.byteOffset % width === 0 ? t.data : t.data.slice();
  const [src, dst] =
    width === 2
      ? [new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.length / 2), new Uint16Array(data.buffer)]
      : [new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4), new Uint32Array(data.buffer)];
  let at = 0;
  if (shape.length === 1) {
    for (let a = 0; a < shape[0]; a++) dst[at++] = src[sourceIndex(a)];
  } else if (shape.length === 2) {
    for (let a = 0; a < shape[0]; a++) for (let c = 0; c < shape[1]; c++) dst[at++] = src[sourceIndex(a, c)];
  } else if (shape.length === 3) {
    for (let a = 0; a < shape[0]; a++) for (let r = 0; r < shape[1]; r++) for (let c = 0; c < shape[2]; c++) dst[at++] = src[sourceIndex(a, r, c)];
  } else {
    throw new Error(`gatherElements: shape [${shape.join(', ')}] has ${shape.length} dimensions, not 1 to 3`);
  }
  return { dtype: t.dtype, shape, data };
}
