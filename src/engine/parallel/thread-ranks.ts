import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import type { CollectiveGroups } from '../../backend/backend.ts';
import type { EngineConfig } from '../../config.ts';
import { createFailureBoard, reportFailure, throwIfFailed, type FailureBoard } from '../../parallel/failure-board.ts';
import { placeOf, worldSize } from '../../parallel/rank-layout.ts';
import { createSharedMemoryGroup, SharedMemoryCommunicator } from '../../parallel/shared-memory-communicator.ts';
import { siblingModule, startTsWorker } from '../../threads/ts-worker.ts';
import type { FromRank, FromSupervisor, RankSettings, ToRank, ToSupervisor } from './rank-messages.ts';
import { RankLoading } from './rank-loading.ts';
import { Ranks } from './ranks.ts';

/**
 * The ranks of a parallel run on the CPU backend, seen from the engine: the engine's thread is
 * rank 0 (it loads its own shard and runs every step with the others), and ranks 1..N-1 are
 * worker threads started and watched by a supervisor thread. Every rank joins its groups' shared
 * memory; the engine sends the others each step before running it itself, and the collectives
 * inside the step keep them in lockstep. A rank that fails makes every collective throw an error
 * naming it (the engine fails its requests; the server answers 503).
 */
export class ThreadRanks extends Ranks {
  /** Rank 0's groups, for its backend. */
  readonly localGroups: CollectiveGroups<Float32Array>;
  private readonly ports: MessagePort[];
  private readonly supervisor: Worker;
  protected readonly loading: RankLoading;
  private readonly failures: FailureBoard;

  private constructor(localGroups: CollectiveGroups<Float32Array>, ports: MessagePort[], supervisor: Worker, failures: FailureBoard) {
    super();
    this.localGroups = localGroups;
    this.ports = ports;
    this.supervisor = supervisor;
    this.failures = failures;
    const loading = (this.loading = new RankLoading(ports.length));
    supervisor.on('message', (message: FromSupervisor) => this.rankFailed(new Error(`parallel rank ${message.rank} failed: ${message.reason}`)));
    // Without its watcher no rank's death would be noticed: that fails the run as a rank's death does.
    supervisor.on('error', (error) => {
      reportFailure(failures, 1, `the thread watching the ranks failed: ${error.message}`);
      this.rankFailed(error);
    });
    for (const port of ports) port.on('message', (message: FromRank) => loading.heard(message));
  }

  /**
   * Starts ranks 1..N-1 loading the model at `modelPath` (N = tensorParallelSize ×
   * pipelineParallelSize, placed as rank-layout.ts says).
   */
  static start(config: EngineConfig, modelPath: string, maxModelLen: number): ThreadRanks {
    const layout = { tensor: config.tensorParallelSize, pipeline: config.pipelineParallelSize };
    const failures = createFailureBoard();
    // A group of one never touches its memory: it gets a slot of one float.
    const group = (size: number) => (size === 1 ? createSharedMemoryGroup(1, 1) : createSharedMemoryGroup(size));
    const tensorGroups = Array.from({ length: layout.pipeline }, () => group(layout.tensor));
    const pipelineGroups = Array.from({ length: layout.tensor }, () => group(layout.pipeline));
    const ranks = Array.from({ length: worldSize(layout) - 1 }, (_, i) => {
      const rank = i + 1;
      const { stage, tensorRank } = placeOf(layout, rank);
      const channel = new MessageChannel();
      const settings: RankSettings = { config, modelPath, maxModelLen, rank, tensorRank, tensor: tensorGroups[stage], stage, pipeline: pipelineGroups[tensorRank], failures };
      return { settings, port: channel.port2, engineSide: channel.port1 };
    });
    const supervisor = startTsWorker(
      siblingModule('rank-supervisor', import.meta.url),
      { ranks: ranks.map(({ settings, port }) => ({ settings, port })), failures },
      'keel-rank-supervisor',
      ranks.map((r) => r.port),
    );
    const localGroups = { tensor: new SharedMemoryCommunicator(tensorGroups[0], 0, failures), pipeline: new SharedMemoryCommunicator(pipelineGroups[0], 0, failures) };
    return new ThreadRanks(localGroups, ranks.map((r) => r.engineSide), supervisor, failures);
  }

  throwIfFailed(): void {
    throwIfFailed(this.failures);
  }

  kill(rank: number): void {
    const message: ToSupervisor = { type: 'kill', rank };
    this.supervisor.postMessage(message);
  }

  async close(): Promise<void> {
    const message: ToSupervisor = { type: 'close' };
    const exited = new Promise((resolve) => this.supervisor.once('exit', resolve));
    this.supervisor.postMessage(message);
    // Closing a port closes its other end: only once the supervisor has handed them over and exited.
    await exited;
    for (const port of this.ports) port.close();
  }

  protected order(message: ToRank): void {
    for (const port of this.ports) port.postMessage(message);
  }
}
