import type { EngineConfig } from '../../config.ts';
import type { FailureBoard } from '../../parallel/failure-board.ts';
import type { SharedMemoryGroup } from '../../parallel/shared-memory-communicator.ts';
import type { Draw } from '../../sampling/draw.ts';
import type { BatchDescription } from '../../step/batch.ts';

/** What a rank's worker needs to load its shard and join its groups (it crosses threads in workerData). */
export interface RankSettings {
  config: EngineConfig;
  /** The model's files, located by the engine already. */
  modelPath: string;
  maxModelLen: number;
  /** rank = stage × tensorParallelSize + tensorRank (rank 0 is the engine's thread). */
  rank: number;
  /** Its rank in its stage's tensor-parallel group, and that group's shared memory. */
  tensorRank: number;
  tensor: SharedMemoryGroup;
  /** Its pipeline stage, and the shared memory of its pipeline group (its tensor rank in every stage). */
  stage: number;
  pipeline: SharedMemoryGroup;
  failures: FailureBoard;
}

/**
 * The engine's orders to every other rank, in the order the engine runs them itself: every rank
 * runs the same step on its shard of its stage (docs/parallelism.md).
 */
export type ToRank =
  | { type: 'create-cache'; numBlocks: number; blockSize: number }
  /**
   * A step: copy-on-write block copies first, then the stage's part of the forward pass; on the
   * first stage, which embeds the next step's pending tokens, the sampling pass (each of its ranks
   * samples the logits alike, so those tokens are on every one of them).
   */
  | { type: 'step'; blockCopies: { src: Int32Array; dst: Int32Array }; batch: BatchDescription; draws: Draw[] }
  | { type: 'copy-slots'; src: Int32Array; dst: Int32Array };

/** `kvBlocks`: how many KV blocks the rank's memory budget holds for its layers, once they are loaded. */
export type FromRank = { type: 'loaded'; kvBlocks: number } | { type: 'failed'; message: string };

/** From the thread that watches the rank workers. */
export type FromSupervisor = { type: 'rank-failed'; rank: number; reason: string };
export type ToSupervisor = { type: 'kill'; rank: number } | { type: 'close' };
