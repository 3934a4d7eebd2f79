import type { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import type { DevicePtr } from '../backend/cuda/driver-api.ts';
import { bf16Tensor, randomBf16Values, type Rng } from './synthetic-batch.ts';

/**
 * Median milliseconds of one run, each sample replaying a graph of `reps` runs (CUDA events, so
 * host launch cost stays out). `prepare` begins a step and returns its run: first for `reps` runs
 * uncaptured (the kernels compile and load, and an arena those runs outgrow grows at the next
 * step), then for the capture, which must not allocate device memory.
 */
export function medianGraphMs(backend: CudaBackend, prepare: () => () => void, reps: number, samples = 7): number {
  const warmUp = prepare();
  for (let i = 0; i < reps; i++) warmUp();
  const run = prepare();
  const graph = backend.captureGraph(() => {
    for (let i = 0; i < reps; i++) run();
  });
  graph.replay();
  const times: number[] = [];
  for (let s = 0; s < samples; s++) times.push(backend.device.timeMs(() => graph.replay()) / reps);
  graph.dispose();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Fills device memory with random bf16 (never zeros: they can run faster than real data). */
export function fillRandomBf16(backend: CudaBackend, rng: Rng, ptr: DevicePtr, bytes: number): void {
  const chunk = bf16Tensor([1 << 22], randomBf16Values(rng, 1 << 22, 1)).data; // 8 MiB
  for (let at = 0; at < bytes; at += chunk.byteLength) {
    backend.device.uploadSync(ptr + at, chunk.subarray(0, Math.min(chunk.byteLength, bytes - at)));
  }
}
