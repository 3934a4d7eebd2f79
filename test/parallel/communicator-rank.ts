// One rank of shared-memory-communicator.test.ts: runs every collective over values that depend
// on its rank and posts what it received.
import { parentPort, workerData } from 'node:worker_threads';
import { SharedMemoryCommunicator, type SharedMemoryGroup } from '../../src/parallel/shared-memory-communicator.ts';
import type { FailureBoard } from '../../src/parallel/failure-board.ts';

const { group, rank, failures, count, action } = workerData.settings as { group: SharedMemoryGroup; rank: number; failures: FailureBoard; count: number; action: 'collectives' | 'wait-forever' };
const comm = new SharedMemoryCommunicator(group, rank, failures);
const values = (seed: number, n: number) => Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 1000 + i)));
try {
  if (action === 'wait-forever') {
    comm.barrier();
    throw new Error('the barrier returned with a rank missing');
  }
  const sum = values(rank, count);
  comm.allReduceSum(sum, count);
  const gathered = new Float32Array(comm.size * count);
  comm.allGather(values(rank, count), gathered, count);
  const toAll = new Float32Array(comm.size * count);
  comm.allToAll(values(rank, comm.size * count), toAll, count);
  const broadcast = rank === 1 ? values(77, count) : new Float32Array(count);
  comm.broadcast(broadcast, count, 1);
  // A ring of point-to-point transfers: even ranks send first, so nobody waits on a receiver that is sending.
  const next = (rank + 1) % comm.size;
  const previous = (rank + comm.size - 1) % comm.size;
  const received = new Float32Array(count);
  if (rank % 2 === 0) {
    comm.send(values(rank + 100, count), count, next);
    comm.recv(received, count, previous);
  } else {
    comm.recv(received, count, previous);
    comm.send(values(rank + 100, count), count, next);
  }
  comm.barrier();
  parentPort!.postMessage({ sum, gathered, toAll, broadcast, received });
} catch (error) {
  parentPort!.postMessage({ error: (error as Error).message });
}
