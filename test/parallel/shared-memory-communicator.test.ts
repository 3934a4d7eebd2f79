import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createFailureBoard, reportFailure, type FailureBoard } from '../../src/parallel/failure-board.ts';
import { createSharedMemoryGroup, type SharedMemoryGroup } from '../../src/parallel/shared-memory-communicator.ts';

const BOOT = new URL('../../src/threads/ts-worker-boot.mjs', import.meta.url);
const RANK = new URL('./communicator-rank.ts', import.meta.url);

function runRank(settings: { group: SharedMemoryGroup; rank: number; failures: FailureBoard; count: number; action: string }): { worker: Worker; result: Promise<Record<string, Float32Array> & { error?: string }> } {
  const worker = new Worker(BOOT, { workerData: { entry: RANK.href, settings }, execArgv: [] });
  const result = new Promise<Record<string, Float32Array> & { error?: string }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return { worker, result };
}

const values = (seed: number, n: number) => Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 1000 + i)));

for (const { size, count, capacity } of [
  { size: 2, count: 37, capacity: 1 << 10 },
  // Transfers larger than a slot go through in chunks (all-to-all's size · count too).
  { size: 3, count: 1000, capacity: 96 },
]) {
  test(`${size} ranks in threads: all-reduce, all-gather, all-to-all, broadcast and send/recv give every rank what a single sum or copy would (${count} values, slots of ${capacity})`, async () => {
    const group = createSharedMemoryGroup(size, capacity);
    const failures = createFailureBoard();
    const ranks = Array.from({ length: size }, (_, rank) => runRank({ group, rank, failures, count, action: 'collectives' }));
    const results = await Promise.all(ranks.map((r) => r.result));
    await Promise.all(ranks.map((r) => r.worker.terminate()));
    const inputs = Array.from({ length: size }, (_, r) => values(r, count));
    // The sum in rank order, in float64 rounded once: what every rank must hold, bit for bit.
    const sum = Float32Array.from({ length: count }, (_, i) => inputs.reduce((s, v) => s + v[i], 0));
    results.forEach((result, rank) => {
      assert.equal(result.error, undefined, `rank ${rank}: ${result.error}`);
      assert.deepEqual(result.sum, sum, `rank ${rank}'s all-reduce`);
      assert.deepEqual(result.gathered, Float32Array.from(inputs.flatMap((v) => Array.from(v))), `rank ${rank}'s all-gather`);
      const toAll = Float32Array.from(Array.from({ length: size }, (_, from) => Array.from(values(from, size * count).subarray(rank * count, (rank + 1) * count))).flat());
      assert.deepEqual(result.toAll, toAll, `rank ${rank}'s all-to-all`);
      assert.deepEqual(result.broadcast, values(77, count), `rank ${rank}'s broadcast from rank 1`);
      assert.deepEqual(result.received, values(((rank + size - 1) % size) + 100, count), `rank ${rank}'s receive from the previous rank`);
    });
  });
}

test('a rank reported failed makes the others stop waiting at a barrier and name it, instead of hanging', async () => {
  const group = createSharedMemoryGroup(3);
  const failures = createFailureBoard();
  const waiting = [0, 1].map((rank) => runRank({ group, rank, failures, count: 0, action: 'wait-forever' }));
  // Rank 2 never arrives; its watcher reports it.
  setTimeout(() => reportFailure(failures, 2, 'its worker exited with code 1'), 100);
  const results = await Promise.all(waiting.map((r) => r.result));
  await Promise.all(waiting.map((r) => r.worker.terminate()));
  for (const result of results) assert.match(result.error ?? '', /parallel rank 2 failed: its worker exited with code 1/);
});
