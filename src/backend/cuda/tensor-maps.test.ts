import assert from 'node:assert/strict';
import { test } from 'node:test';
import koffi from 'koffi';
import type { CudaDriver } from './driver-api.ts';
import { kvPoolMapShape, TensorMaps } from './tensor-maps.ts';
import { wgmmaTilesByTma } from './kernels/prefill-attention.ts';

// What the Hopper prefill's TMA loads are built from, checked without a GPU: the pool's map shape
// (prefill-attention-wgmma.cu's tma_tile issues a box per cache block and 64-column panel) and the
// maps' native buffers.

test("a K or V pool's map: (column, kv head, slot), a box of one block's slots by one 128-byte panel", () => {
  assert.deepEqual(kvPoolMapShape(8, 128, 16), { dims: [128, 8, 2 ** 31 - 1], strides: [256, 2048], box: [64, 1, 16] });
  assert.deepEqual(kvPoolMapShape(1, 256, 64).box, [64, 1, 64]);
  assert.throws(() => kvPoolMapShape(8, 96, 16), /multiple of 64/);
  assert.throws(() => kvPoolMapShape(8, 128, 512), /1 to 256 rows/);
});

test('whole tiles come by TMA only over a bf16 cache whose blocks tile a key tile in 8-row atoms', () => {
  assert.equal(wgmmaTilesByTma(true, 'auto', 16, 128), true);
  assert.equal(wgmmaTilesByTma(true, 'auto', 128, 128), true);
  assert.equal(wgmmaTilesByTma(true, 'auto', 64, 256), true);
  assert.equal(wgmmaTilesByTma(true, 'auto', 128, 256), false, 'a head dim 256 tile holds 64 keys');
  assert.equal(wgmmaTilesByTma(true, 'auto', 16, 96), false, 'a head padded in shared memory (96 as 128) is copied');
  assert.equal(wgmmaTilesByTma(true, 'auto', 4, 128), false, 'under a swizzle atom');
  assert.equal(wgmmaTilesByTma(true, 'auto', 24, 128), false, 'blocks that do not tile 128 keys');
  assert.equal(wgmmaTilesByTma(true, 'fp8_e4m3', 16, 128), false, 'codes are dequantized by the loader');
  assert.equal(wgmmaTilesByTma(false, 'auto', 16, 128), false, 'no tensor maps');
});

function recordingDriver(hasTensorMaps = true) {
  const calls: { map: bigint; address: number; dims: readonly number[]; strides: readonly number[]; box: readonly number[] }[] = [];
  const driver = {
    hasTensorMaps,
    encodeTensorMapBf16(map: bigint, address: number, dims: readonly number[], strides: readonly number[], box: readonly number[]) {
      calls.push({ map, address, dims, strides, box });
      new Uint8Array(koffi.view(map, 128)).fill(0xab);
    },
  };
  return { driver: driver as unknown as CudaDriver, calls };
}

test('maps are encoded once a pool and shape, 64-byte aligned, and a zero map serves unused parameters', () => {
  const { driver, calls } = recordingDriver();
  const maps = new TensorMaps(driver, true);
  try {
    const k = maps.kvPool(0x7000_0000, 8, 128, 16);
    assert.equal(k % 64, 0);
    assert.equal(maps.kvPool(0x7000_0000, 8, 128, 16), k);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0], { map: BigInt(k), address: 0x7000_0000, ...kvPoolMapShape(8, 128, 16) });
    assert.notEqual(maps.kvPool(0x7000_0000, 8, 128, 32), k, 'another block size is another map');
    assert.deepEqual([...new Uint8Array(koffi.view(BigInt(k), 128))].slice(0, 4), [0xab, 0xab, 0xab, 0xab]);
    const zero = maps.zero();
    assert.equal(zero % 64, 0);
    assert.ok(new Uint8Array(koffi.view(BigInt(zero), 128)).every((b) => b === 0));
    assert.equal(maps.zero(), zero);
  } finally {
    maps.dispose();
  }
});

test('without tensor maps (no Hopper GPU, or a driver before CUDA 12.0) nothing is encoded, the zero map still serves', () => {
  for (const [hopper, has] of [[false, true], [true, false]] as const) {
    const { driver, calls } = recordingDriver(has);
    const maps = new TensorMaps(driver, hopper);
    try {
      assert.equal(maps.encodes, false);
      assert.throws(() => maps.kvPool(0x7000_0000, 8, 128, 16), /Hopper GPU and a driver of CUDA 12.0/);
      assert.equal(calls.length, 0);
      assert.equal(maps.zero() % 64, 0);
    } finally {
      maps.dispose();
    }
  }
});
