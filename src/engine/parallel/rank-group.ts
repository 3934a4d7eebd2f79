import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import type { CollectiveGroups } from '../../backend/backend.ts';
import type { EngineConfig } from '../../config.ts';
import { createFailureBoard, reportFailure, type FailureBoard } from '../../parallel/failure-board.ts';
import { createSharedMemoryGroup, SharedMemoryCommunicator } from '../../parallel/shared-memory-communicator.ts';
import type { Draw } from '../../sampling/draw.ts';
import type { BatchDescription } from '../../step/batch.ts';
import type { KvCacheDtype } from '../../step/kv-cache-layout.ts';
import { siblingModule, startTsWorker } from '../../threads/ts-worker.ts';
import type { FromRank, FromSupervisor, RankSettings, ToRank, ToSupervisor } from './rank-messages.ts';

/**
 * The ranks of a parallel run on the CPU backend, seen from the engine: the engine's thread is
 * rank 0 (it loads its own shard and runs every step with the others), and ranks 1..N-1 are
 * worker threads started and watched by a supervisor thread. Every rank joins its groups' shared
 * memory; the engine sends the others each step before running it itself, and the collectives
 * inside the step keep them in lockstep. A rank that fails makes every collective throw an error
 * naming it (the engine fails its requests; the server answers 503).
 */
export class RankGroup {
  /** Rank 0's groups, for its backend. */
  readonly localGroups: CollectiveGroups<Float32Array>;
  private readonly ports: MessagePort[];
  private readonly supervisor: Worker;
  private readonly loaded: Promise<void>;
  private failure: Error | null = null;

  private constructor(localGroups: CollectiveGroups<Float32Array>, ports: MessagePort[], supervisor: Worker, failures: FailureBoard) {
    this.localGroups = localGroups;
    this.ports = ports;
    this.supervisor = supervisor;
    this.loaded = new Promise<void>((resolve, reject) => {
      let pending = ports.length;
      supervisor.on('message', (message: FromSupervisor) => {
        this.failure ??= new Error(`parallel rank ${message.rank} failed: ${message.reason}`);
        reject(this.failure);
      });
      // Without its watcher no rank's death would be noticed: that fails the run as a rank's death does.
      supervisor.on('error', (error) => {
        reportFailure(failures, 1, `the thread watching the ranks failed: ${error.message}`);
        this.failure ??= error;
        reject(error);
      });
      for (const port of ports) {
        port.on('message', (message: FromRank) => {
          if (message.type === 'failed') reject(new Error(message.message));
          else if (--pending === 0) resolve();
        });
      }
    });
    // A failure after loading is seen through the failure board by whoever waits; this only keeps it from being unhandled.
    this.loaded.catch(() => undefined);
  }

  /**
   * Starts ranks 1..N-1 loading the model at `modelPath` (N = tensorParallelSize, one stage: see
   * docs/parallelism.md for pipeline parallelism).
   */
  static start(config: EngineConfig, modelPath: string, maxModelLen: number): RankGroup {
    const size = config.tensorParallelSize;
    const failures = createFailureBoard();
    const tensor = createSharedMemoryGroup(size);
    // One stage: each rank's pipeline group is itself.
    const pipeline = () => createSharedMemoryGroup(1, 1);
    const ranks = Array.from({ length: size - 1 }, (_, i) => {
      const rank = i + 1;
      const channel = new MessageChannel();
      const settings: RankSettings = { config, modelPath, maxModelLen, rank, tensorRank: rank, tensor, stage: 0, pipeline: pipeline(), failures };
      return { settings, port: channel.port2, engineSide: channel.port1 };
    });
    const supervisor = startTsWorker(
      siblingModule('rank-supervisor', import.meta.url),
      { ranks: ranks.map(({ settings, port }) => ({ settings, port })), failures },
      'keel-rank-supervisor',
      ranks.map((r) => r.port),
    );
    const localGroups = { tensor: new SharedMemoryCommunicator(tensor, 0, failures), pipeline: new SharedMemoryCommunicator(pipeline(), 0, failures) };
    return new RankGroup(localGroups, ranks.map((r) => r.engineSide), supervisor, failures);
  }

  /** Resolves once every other rank has loaded its shard; rejects with the first failure. */
  ready(): Promise<void> {
    return this.loaded;
  }

  /** Every other rank makes its KV cache, its own heads' shard, of the same blocks and dtype as rank 0's. */
  createCaches(numBlocks: number, blockSize: number, dtype: KvCacheDtype): void {
    this.send({ type: 'create-cache', numBlocks, blockSize, dtype });
  }

  /** Sends the step to the other ranks; the engine runs it on rank 0 right after. */
  step(blockCopies: { src: Int32Array; dst: Int32Array }, batch: BatchDescription, draws: Draw[]): void {
    this.send({ type: 'step', blockCopies, batch, draws });
  }

  copySlots(src: Int32Array, dst: Int32Array): void {
    this.send({ type: 'copy-slots', src, dst });
  }

  /** Ends rank `rank`'s worker as a crash would (its watcher reports it): for fault drills and tests. */
  kill(rank: number): void {
    const message: ToSupervisor = { type: 'kill', rank };
    this.supervisor.postMessage(message);
  }

  /** Ends every rank's worker. */
  async close(): Promise<void> {
    const message: ToSupervisor = { type: 'close' };
    const exited = new Promise((resolve) => this.supervisor.once('exit', resolve));
    this.supervisor.postMessage(message);
    // Closing a port closes its other end: only once the supervisor has handed them over and exited.
    await exited;
    for (const port of this.ports) port.close();
  }

  private send(message: ToRank): void {
    for (const port of this.ports) port.postMessage(message);
  }
}
