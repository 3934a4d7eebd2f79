import { parentPort, workerData, type MessagePort, type Worker } from 'node:worker_threads';
import { reportFailure, type FailureBoard } from '../../parallel/failure-board.ts';
import { siblingModule, startTsWorker } from '../../threads/ts-worker.ts';
import type { FromSupervisor, RankSettings, ToSupervisor } from './rank-messages.ts';

// The thread that starts the rank workers and watches them. The engine's thread blocks in
// collectives while a step runs, so it cannot hear a worker exit; this thread can, and writes
// the failure where every blocked rank looks (failure-board.ts), so nobody waits for a dead rank.

const { ranks, failures } = workerData.settings as { ranks: { settings: RankSettings; port: MessagePort }[]; failures: FailureBoard };
const parent = parentPort!;
const post = (message: FromSupervisor) => parent.postMessage(message);
let closing = false;

const workers = new Map<number, Worker>();
for (const { settings, port } of ranks) {
  const worker = startTsWorker(siblingModule('rank-worker', import.meta.url), { ...settings, port }, `keel-rank-${settings.rank}`, [port]);
  const fail = (reason: string) => {
    if (closing) return;
    reportFailure(failures, settings.rank, reason);
    post({ type: 'rank-failed', rank: settings.rank, reason });
  };
  worker.on('error', (error) => fail(`its worker threw ${error.message}`));
  worker.on('exit', (code) => fail(`its worker exited with code ${code}`));
  workers.set(settings.rank, worker);
}

parent.on('message', (message: ToSupervisor) => {
  if (message.type === 'kill') {
    void workers.get(message.rank)?.terminate();
    return;
  }
  closing = true;
  void Promise.all([...workers.values()].map((w) => w.terminate())).then(() => parent.close());
});
