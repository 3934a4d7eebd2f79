import type { Worker } from 'node:worker_threads';
import { ncclUniqueId } from '../../backend/cuda/nccl.ts';
import type { EngineConfig } from '../../config.ts';
import { createFailureBoard, reportFailure, throwIfFailed, type FailureBoard } from '../../parallel/failure-board.ts';
import { placeOf, worldSize } from '../../parallel/rank-layout.ts';
import { siblingModule, startTsWorker } from '../../threads/ts-worker.ts';
import { RankLoading } from './rank-loading.ts';
import type { FromProcessSupervisor, NcclGroupId, ProcessRankSettings, ToProcessSupervisor, ToRank } from './rank-messages.ts';
import { Ranks } from './ranks.ts';

/**
 * The ranks of a parallel run on CUDA, seen from the engine: the engine's process is rank 0 on
 * GPU 0, and ranks 1..N-1 are worker processes, rank r on GPU r (of those CUDA_VISIBLE_DEVICES
 * shows), started by a thread of the engine that carries the engine's orders to them over IPC and
 * watches them (process-supervisor.ts). Rank 0 makes every group's NCCL unique id and hands each
 * rank its groups'. A rank that dies fails the run loudly: its failure is recorded, the engine's
 * communicators are aborted so that no wait hangs, the other workers are ended, and the engine's
 * requests fail with an error naming the rank (the server answers 503).
 */
export class ProcessRanks extends Ranks {
  /** Rank 0's groups, for its backend (CudaBackend's `parallel`). */
  readonly localGroups: { tensor: NcclGroupId; pipeline: NcclGroupId; failures: FailureBoard };
  private readonly supervisor: Worker;
  protected readonly loading: RankLoading;

  private constructor(localGroups: ProcessRanks['localGroups'], supervisor: Worker, ranks: number) {
    super();
    this.localGroups = localGroups;
    this.supervisor = supervisor;
    const loading = (this.loading = new RankLoading(ranks));
    supervisor.on('message', (message: FromProcessSupervisor) => {
      if (message.type === 'rank') loading.heard(message.message);
      else this.rankFailed(new Error(`parallel rank ${message.rank} failed: ${message.reason}`));
    });
    // Without its watcher no rank's death would be noticed: that fails the run as a rank's death does.
    supervisor.on('error', (error) => {
      reportFailure(localGroups.failures, 1, `the thread watching the worker processes failed: ${error.message}`);
      this.rankFailed(error);
    });
  }

  /**
   * Starts ranks 1..N-1 (N = tensorParallelSize × pipelineParallelSize, placed as rank-layout.ts
   * says) loading the model at `modelPath`, each joining its NCCL groups; the engine's backend joins
   * rank 0's (`localGroups`), which blocks until every rank has.
   */
  static start(config: EngineConfig, modelPath: string, maxModelLen: number): ProcessRanks {
    const layout = { tensor: config.tensorParallelSize, pipeline: config.pipelineParallelSize };
    const failures = createFailureBoard();
    const tensorIds = Array.from({ length: layout.pipeline }, () => ncclUniqueId());
    const pipelineIds = Array.from({ length: layout.tensor }, () => ncclUniqueId());
    const groupsOf = (rank: number) => {
      const { stage, tensorRank } = placeOf(layout, rank);
      return {
        tensor: { id: tensorIds[stage], size: layout.tensor, rank: tensorRank },
        pipeline: { id: pipelineIds[tensorRank], size: layout.pipeline, rank: stage },
      };
    };
    const ranks = Array.from({ length: worldSize(layout) - 1 }, (_, i): ProcessRankSettings => {
      const rank = i + 1;
      const { tensor, pipeline } = groupsOf(rank);
      return { config, modelPath, maxModelLen, rank, ...placeOf(layout, rank), device: rank, tensorGroup: tensor, pipelineGroup: pipeline };
    });
    const supervisor = startTsWorker(siblingModule('process-supervisor', import.meta.url), { ranks, failures }, 'keel-rank-processes');
    return new ProcessRanks({ ...groupsOf(0), failures }, supervisor, ranks.length);
  }

  /** The engine's communicators (CudaBackend.communicatorAddresses), aborted when a rank dies. */
  watchCommunicators(addresses: bigint[]): void {
    this.send({ type: 'watch-communicators', addresses });
  }

  throwIfFailed(): void {
    throwIfFailed(this.localGroups.failures);
  }

  kill(rank: number): void {
    this.send({ type: 'kill', rank });
  }

  async close(): Promise<void> {
    const exited = new Promise((resolve) => this.supervisor.once('exit', resolve));
    this.send({ type: 'close' });
    await exited;
  }

  /** Orders go through the watching thread, whose event loop is free while the engine's thread waits on its GPU. */
  protected order(message: ToRank): void {
    this.throwIfFailed();
    this.send({ type: 'orders', message });
  }

  private send(message: ToProcessSupervisor): void {
    this.supervisor.postMessage(message);
  }
}
