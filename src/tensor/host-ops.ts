import { hostTensorToFloat32 } from './host-dtype.ts';
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
