import assert from 'node:assert/strict';
import { TIME_MARKS_KEPT, type Backend } from '../../src/backend/backend.ts';
import { f32HostTensor } from './cpu-random-llama.ts';

/**
 * Backend.markTime on any backend: marks around queued work time it, consecutive spans add up to
 * the whole, and a mark past the readable window is refused rather than read from a reused slot.
 */
export function checkTimeMarks(backend: Backend): void {
  const n = 256;
  const weight = backend.loadWeight(f32HostTensor(Float32Array.from({ length: n * n }, (_, i) => Math.sin(i)), [n, n]));
  const x = backend.loadWeight(f32HostTensor(Float32Array.from({ length: 64 * n }, (_, i) => Math.cos(i)), [64, n]));
  const a = backend.markTime();
  for (let i = 0; i < 8; i++) backend.linear(x, weight, null);
  const b = backend.markTime();
  backend.linear(x, weight, null);
  const c = backend.markTime();
  const [ab, bc, ac] = [backend.elapsedMs(a, b), backend.elapsedMs(b, c), backend.elapsedMs(a, c)];
  assert.ok(ab > 0 && bc > 0, `the work between marks takes time: ${ab} ms, ${bc} ms`);
  // CUDA reports event times to about half a microsecond.
  assert.ok(Math.abs(ab + bc - ac) < 0.005, `${ab} + ${bc} ms = ${ac} ms`);
  for (let i = 0; i < TIME_MARKS_KEPT - 3; i++) backend.markTime();
  assert.equal(typeof backend.elapsedMs(a, c), 'number', `the mark ${TIME_MARKS_KEPT} marks back is readable`);
  backend.markTime();
  assert.throws(() => backend.elapsedMs(a, c), new RegExp(`only the latest ${TIME_MARKS_KEPT} stay readable`));
}
