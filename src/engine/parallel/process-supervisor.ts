import type { ChildProcess } from 'node:child_process';
import { parentPort, workerData } from 'node:worker_threads';
import { abortNcclCommunicator } from '../../backend/cuda/nccl.ts';
import { reportFailure, type FailureBoard } from '../../parallel/failure-board.ts';
import { startTsProcess } from '../../threads/ts-process.ts';
import { siblingModule } from '../../threads/ts-worker.ts';
import type { FromProcessSupervisor, FromRank, ProcessRankSettings, ToProcessSupervisor, ToRankProcess } from './rank-messages.ts';

// The thread that starts the worker processes of a CUDA run and carries the engine's orders to
// them. The engine's thread blocks on the GPU stream while a step runs, so it can neither write
// to a pipe nor hear a process exit; this thread can. When a worker dies it records the failure
// (failure-board.ts), aborts the engine's NCCL communicators so that its wait ends
// (ncclCommAbort), and ends the other workers, whose collectives would wait for the dead one
// forever: the run is over, and the engine says so (docs/parallelism.md).

const { ranks, failures } = workerData.settings as { ranks: ProcessRankSettings[]; failures: FailureBoard };
const parent = parentPort!;
const post = (message: FromProcessSupervisor) => parent.postMessage(message);
/** Closing, or a rank failed: the workers' exits are expected from then on. */
let ended = false;
let engineCommunicators: bigint[] = [];

const workers = new Map<number, ChildProcess>();
for (const settings of ranks) {
  const worker = startTsProcess(siblingModule('rank-process', import.meta.url), `keel-rank-${settings.rank}`);
  const fail = (reason: string) => {
    if (ended) return;
    ended = true;
    reportFailure(failures, settings.rank, reason);
    for (const address of engineCommunicators) abortNcclCommunicator(address);
    for (const other of workers.values()) other.kill('SIGKILL');
    post({ type: 'rank-failed', rank: settings.rank, reason });
  };
  worker.on('message', (message: FromRank) => post({ type: 'rank', rank: settings.rank, message }));
  worker.on('error', (error) => fail(`its worker process failed: ${error.message}`));
  worker.on('exit', (code, signal) => fail(`its worker process exited with ${signal ?? `code ${code}`}`));
  const start: ToRankProcess = { type: 'start', settings };
  worker.send(start);
  workers.set(settings.rank, worker);
}

parent.on('message', (message: ToProcessSupervisor) => {
  if (message.type === 'orders') {
    for (const worker of workers.values()) worker.send(message.message);
  } else if (message.type === 'watch-communicators') {
    engineCommunicators = message.addresses;
  } else if (message.type === 'kill') {
    workers.get(message.rank)?.kill('SIGKILL');
  } else {
    ended = true;
    const exits = [...workers.values()].map((w) => new Promise((resolve) => (w.exitCode !== null || w.signalCode !== null ? resolve(null) : w.once('exit', resolve))));
    for (const worker of workers.values()) worker.kill('SIGTERM');
    void Promise.all(exits).then(() => parent.close());
  }
});
