import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gatherElements } from './host-ops.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from './host-dtype.ts';

test('gatherElements reorders elements as stored, whatever the dtype and byte offset', () => {
  const values = Float32Array.from({ length: 12 }, (_, i) => i - 5.5);
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    const t = float32ToHostTensor(values, dtype, [3, 4]);
    // The same bytes at an odd offset inside a larger buffer, as a checkpoint read may hand them out.
    const shifted = new Uint8Array(t.data.length + 1);
    shifted.set(t.data, 1);
    for (const source of [t, { ...t, data: shifted.subarray(1) }]) {
      const transposed = gatherElements(source, [4, 3], (r, c) => c * 4 + r);
      assert.equal(transposed.dtype, dtype);
      assert.deepEqual(transposed.shape, [4, 3]);
      assert.deepEqual(Array.from(hostTensorToFloat32(transposed)), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11].map((i) => values[i]));
    }
  }
});
