import assert from 'node:assert/strict';
import { test } from 'node:test';
import koffi from 'koffi';
import { LaunchParams } from './launch-params.ts';

// cuLaunchKernel reads each parameter where kernelParams[i] points: its value slot, or for a tensor
// map (`t`) the map's own 128 bytes. Checked on the native arrays, without a GPU.

function pointerAt(params: bigint, i: number): bigint {
  return new DataView(koffi.view(params, (i + 1) * 8)).getBigUint64(i * 8, true);
}

test('kernelParams point at each value, and a tensor map parameter at the map itself', () => {
  const params = new LaunchParams();
  const map = koffi.alloc('uint8_t', 128) as bigint;
  try {
    const kernelParams = params.pack('pift', [0x1234_5678_9abc, -7, 1.5, Number(map)]);
    const slot = (i: number) => new DataView(koffi.view(pointerAt(kernelParams, i), 8));
    assert.equal(slot(0).getBigUint64(0, true), 0x1234_5678_9abcn);
    assert.equal(slot(1).getInt32(0, true), -7);
    assert.equal(slot(2).getFloat32(0, true), 1.5);
    assert.equal(pointerAt(kernelParams, 3), map);
    // A later launch with a value in that position gets its slot back (one with fewer parameters
    // leaves it: the driver reads no further than the kernel's parameters).
    params.pack('pii', [1, 2, 3]);
    assert.equal(pointerAt(kernelParams, 3), map);
    params.pack('piii', [1, 2, 3, 42]);
    assert.notEqual(pointerAt(kernelParams, 3), map);
    assert.equal(new DataView(koffi.view(pointerAt(kernelParams, 3), 4)).getInt32(0, true), 42);
  } finally {
    koffi.free(map);
    params.dispose();
  }
});
