import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CudaDevice } from './cuda-device.ts';
import { GemmTuner, type GemmChoice } from './gemm-tuner.ts';

// The tuner's choices without a GPU: a device whose GEMMs "take" the milliseconds a table gives
// each contender, and which refuses to time while a graph records.

function fakeDevice(msOf: (choice: GemmChoice) => number, candidates = 3) {
  const log: { timed: GemmChoice[]; allocated: number; freed: number } = { timed: [], allocated: 0, freed: 0 };
  let last: GemmChoice | null = null;
  const device = {
    alloc: () => ++log.allocated,
    free: () => void log.freed++,
    fillBytes: () => {},
    timeMs: (run: () => void) => {
      run();
      log.timed.push(last!);
      return msOf(last!);
    },
    cublas: { linearBf16: () => void (last = 'cublas') },
    cublasLt: { bf16Candidates: () => candidates, bf16: (...args: unknown[]) => void (last = args[6] as number) },
  };
  return { device: device as unknown as CudaDevice, log };
}

test('a candidate replaces cuBLAS only when more than 3 % faster, and each shape is timed once', () => {
  const { device, log } = fakeDevice((c) => (c === 'cublas' ? 10 : c === 1 ? 9 : 9.8));
  const tuner = new GemmTuner(device);
  assert.equal(tuner.choice(64, 4096, 4096, 1, null), 1);
  assert.deepEqual(log.timed, ['cublas', 0, 1, 2]);
  assert.equal(tuner.choice(64, 4096, 4096, 1, null), 1, 'remembered');
  assert.equal(log.timed.length, 4, 'not timed again');
  assert.equal(log.freed, log.allocated, 'scratch freed');
  const close = fakeDevice((c) => (c === 'cublas' ? 10 : 9.8)).device;
  assert.equal(new GemmTuner(close).choice(64, 4096, 4096, 1, null), 'cublas', '2 % is within noise');
});

test('a shape met while recording runs cuBLAS untimed and is timed between steps, naming the graphs to record again', () => {
  const { device, log } = fakeDevice((c) => (c === 'cublas' ? 10 : 5));
  const tuner = new GemmTuner(device);
  assert.equal(tuner.choice(16, 6144, 4096, 1, 'graph 16'), 'cublas');
  assert.equal(tuner.choice(16, 6144, 4096, 1, 'graph 16 lora'), 'cublas');
  tuner.choice(16, 4096, 4096, 2, 'graph 16');
  assert.equal(log.timed.length, 0, 'nothing timed while recording');
  assert.deepEqual([...tuner.tunePending()].sort(), ['graph 16', 'graph 16 lora']);
  assert.equal(tuner.choice(16, 6144, 4096, 1, 'graph 16'), 0, 'the recording now takes the tuned choice');
  assert.equal(tuner.tunePending().size, 0, 'nothing left');
  const slow = new GemmTuner(fakeDevice((c) => (c === 'cublas' ? 5 : 10)).device);
  slow.choice(16, 6144, 4096, 1, 'graph 16');
  assert.equal(slow.tunePending().size, 0, 'cuBLAS kept: the recorded graphs stay');
});
