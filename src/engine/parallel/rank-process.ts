import { CudaBackend } from '../../backend/cuda/cuda-backend.ts';
import type { FromRank, ToRankProcess } from './rank-messages.ts';
import { loadRank, type RankRunner } from './rank-runner.ts';

// One rank of a parallel run on CUDA (a worker process, one per GPU): given its settings, it
// joins its NCCL groups on its GPU, loads its shard of its stage's layers, then runs each order
// the engine sends over IPC, in order. A failure is reported and ends the process; the thread
// that watches the workers then aborts the engine's communicators and ends the other workers.

const post = (message: FromRank) => process.send!(message);
let runner: RankRunner | null = null;

function fail(error: unknown): never {
  post({ type: 'failed', message: (error as Error).message ?? String(error) });
  process.exit(1);
}

process.on('message', (message: ToRankProcess) => {
  try {
    if (message.type === 'start') {
      const { settings } = message;
      const backend = new CudaBackend({ device: settings.device, parallel: { tensor: settings.tensorGroup, pipeline: settings.pipelineGroup } });
      runner = loadRank(settings, backend);
      post({ type: 'loaded', ...runner.loaded });
    } else if (runner === null) {
      throw new Error(`a worker process was sent ${message.type} before its settings`);
    } else {
      runner.handle(message);
    }
  } catch (error) {
    fail(error);
  }
});
// The engine's process went away: nobody will send another step.
process.on('disconnect', () => process.exit(0));
