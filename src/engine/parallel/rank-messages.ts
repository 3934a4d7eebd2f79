import type { EngineConfig } from '../../config.ts';
import type { FailureBoard } from '../../parallel/failure-board.ts';
import type { SharedMemoryGroup } from '../../parallel/shared-memory-communicator.ts';
import type { Draw } from '../../sampling/draw.ts';
import type { BatchDescription } from '../../step/batch.ts';
import type { KvCacheDtype } from '../../step/kv-cache-layout.ts';

/** What a rank's worker needs to load its shard and join its groups (it crosses threads in workerData). */
export interface RankSettings {
  config: EngineConfig;
  /** The model's files, located by the engine already. */
  modelPath: string;
  maxModelLen: number;
  rank: number;
  /** Its rank in its tensor-parallel group, and that group's shared memory. */
  tensorRank: number;
  tensor: SharedMemoryGroup;
  /** Its stage, and the shared memory of its pipeline group (one rank per stage). */
  stage: number;
  pipeline: SharedMemoryGroup;
  failures: FailureBoard;
}

/**
 * The engine's orders to every other rank, in the order the engine runs them itself: every rank
 * runs the same step on its shard (docs/parallelism.md).
 */
export type ToRank =
  | { type: 'create-cache'; numBlocks: number; blockSize: number; dtype: KvCacheDtype }
  /** A step: copy-on-write block copies first, then the forward pass, then the sampling pass (each rank samples the gathered logits alike, so the next step's pending tokens are on every rank). */
  | { type: 'step'; blockCopies: { src: Int32Array; dst: Int32Array }; batch: BatchDescription; draws: Draw[] }
  | { type: 'copy-slots'; src: Int32Array; dst: Int32Array };

export type FromRank = { type: 'loaded' } | { type: 'failed'; message: string };

/** From the thread that watches the rank workers. */
export type FromSupervisor = { type: 'rank-failed'; rank: number; reason: string };
export type ToSupervisor = { type: 'kill'; rank: number } | { type: 'close' };
