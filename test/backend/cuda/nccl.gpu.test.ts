import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { CudaDevice } from '../../../src/backend/cuda/cuda-device.ts';
import { launchColumnBlocks } from '../../../src/backend/cuda/kernels/rows.ts';
import { NcclCommunicator, ncclUniqueId } from '../../../src/backend/cuda/nccl.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { describeBatch } from '../../../src/step/batch.ts';

// The NCCL path on one GPU: a communicator of one rank, its collectives on device buffers queued
// on the device's stream, eagerly and recorded in a CUDA graph (multi-rank runs: issue 20).

const N = 1024;

test('NCCL, one rank: all-reduce and all-gather on device buffers, eagerly and replayed from a CUDA graph with new data', () => {
  const device = new CudaDevice(0);
  const [x, y, scratch] = [device.alloc(4 * N), device.alloc(4 * N), device.alloc(4)];
  const comm = new NcclCommunicator(ncclUniqueId(), 1, 0, device.stream, scratch, () => device.synchronize());
  try {
    const values = (seed: number) => Float32Array.from({ length: N }, (_, i) => Math.fround(Math.sin(seed + i)));
    device.uploadSync(x, values(1));
    comm.allReduceSum({ ptr: x, dtype: 'f32' }, N);
    comm.allGather({ ptr: x, dtype: 'f32' }, { ptr: y, dtype: 'f32' }, N);
    const out = new Float32Array(N);
    device.download(out, y);
    assert.deepEqual(out, values(1), 'eager: the sum over one rank is its own values, gathered');
    const graph = device.captureGraph(() => {
      comm.allReduceSum({ ptr: x, dtype: 'f32' }, N);
      comm.allGather({ ptr: x, dtype: 'f32' }, { ptr: y, dtype: 'f32' }, N);
    });
    try {
      device.uploadSync(x, values(2));
      graph.replay();
      device.download(out, y);
      assert.deepEqual(out, values(2), 'replayed: the recorded collectives read the buffers as they are now');
    } finally {
      graph.dispose();
    }
    comm.barrier();
  } finally {
    comm.destroy();
    for (const ptr of [x, y, scratch]) device.free(ptr);
    device.dispose();
  }
});

test('the column-block kernel lays an all-gather\'s blocks side by side as the CPU backend does', () => {
  const device = new CudaDevice(0);
  const [rows, cols, blocks] = [5, 24, 3];
  const input = device.alloc(2 * rows * cols * blocks);
  const out = device.alloc(2 * rows * cols * blocks);
  try {
    // bf16 bit patterns of small integers, so the check is exact.
    const bits = Uint16Array.from({ length: rows * cols * blocks }, (_, i) => new Uint16Array(Float32Array.of(i % 251).buffer)[1]);
    device.uploadSync(input, bits);
    launchColumnBlocks(device, out, input, rows, cols, blocks);
    const got = new Uint16Array(rows * cols * blocks);
    device.download(got, out);
    const expected = new Uint16Array(rows * cols * blocks);
    for (let b = 0; b < blocks; b++) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expected[(r * blocks + b) * cols + c] = bits[(b * rows + r) * cols + c];
    assert.deepEqual(got, expected);
  } finally {
    device.free(input);
    device.free(out);
    device.dispose();
  }
});

test('a CUDA backend in a one-rank group: vocab-parallel embedding rows and the collectives equal the CPU backend\'s', () => {
  const id = ncclUniqueId();
  const group = { id, size: 1, rank: 0 };
  const gpu = new CudaBackend({ parallel: { tensor: group, pipeline: { id: ncclUniqueId(), size: 1, rank: 0 } } });
  const cpu = new CpuBackend();
  try {
    const table = float32Tensor(Float32Array.from({ length: 6 * 16 }, (_, i) => i % 13), [6, 16]);
    const batch = describeBatch([{ tokens: [3, 9, 4, 8, 2], startPos: 0, blockTables: [[0]] }], 16);
    // A shard holding ids 3..8: ids 9 and 2 are another shard's, zero rows.
    const embed = (b: CpuBackend | CudaBackend) => b.toHost(b.allGatherColumns(b.allReduce(b.embedding(b.loadWeight(table), b.beginStep(batch), 1, 3))));
    assert.deepEqual(embed(gpu), embed(cpu));
  } finally {
    gpu.dispose();
  }
});
