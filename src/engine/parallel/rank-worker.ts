import { workerData, type MessagePort } from 'node:worker_threads';
import { CpuBackend } from '../../backend/cpu/cpu-backend.ts';
import { reportFailure } from '../../parallel/failure-board.ts';
import { SharedMemoryCommunicator } from '../../parallel/shared-memory-communicator.ts';
import type { FromRank, RankSettings, ToRank } from './rank-messages.ts';
import { loadRank } from './rank-runner.ts';

// One rank of a parallel run on the CPU backend (a worker thread): loads its shard of its
// pipeline stage's layers, then runs, in order, each step the engine sends, on that shard. Any
// failure is written where the other ranks look (failure-board.ts) before the thread ends, so
// none of them waits for it.

const settings = workerData.settings as RankSettings & { port: MessagePort };
const { rank, failures, port } = settings;
const post = (message: FromRank) => port.postMessage(message);

function fail(error: unknown): never {
  const message = (error as Error).message ?? String(error);
  reportFailure(failures, rank, message);
  post({ type: 'failed', message });
  process.exit(1);
}

try {
  const backend = new CpuBackend({
    tensor: new SharedMemoryCommunicator(settings.tensor, settings.tensorRank, failures),
    pipeline: new SharedMemoryCommunicator(settings.pipeline, settings.stage, failures),
  });
  const runner = loadRank(settings, backend);
  port.on('message', (message: ToRank) => {
    try {
      runner.handle(message);
    } catch (error) {
      fail(error);
    }
  });
  post({ type: 'loaded', ...runner.loaded });
} catch (error) {
  fail(error);
}
