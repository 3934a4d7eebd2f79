import type { EngineConfig } from '../../config.ts';
import type { FailureBoard } from '../../parallel/failure-board.ts';
import type { SharedMemoryGroup } from '../../parallel/shared-memory-communicator.ts';
import type { Draw } from '../../sampling/draw.ts';
import type { BatchDescription } from '../../step/batch.ts';
import type { KvCacheDtype } from '../../step/kv-cache-layout.ts';
import type { HostTransfers } from '../host-transfers.ts';

/** Where a rank sits and what it loads: what every rank's worker needs, thread or process. */
export interface RankPlace {
  config: EngineConfig;
  /** The model's files, located by the engine already. */
  modelPath: string;
  maxModelLen: number;
  /** rank = stage × tensorParallelSize + tensorRank (rank 0 is the engine's; parallel/rank-layout.ts). */
  rank: number;
  /** Its rank in its stage's tensor-parallel group. */
  tensorRank: number;
  /** Its pipeline stage: its rank in the pipeline group of its tensor rank. */
  stage: number;
}

/** A rank in a worker thread (CPU backend): its groups' shared memory and the run's failure board cross threads in workerData. */
export interface RankSettings extends RankPlace {
  tensor: SharedMemoryGroup;
  pipeline: SharedMemoryGroup;
  failures: FailureBoard;
}

/**
 * The engine's orders to every other rank, in the order the engine runs them itself: every rank
 * runs the same step on its shard of its stage (docs/parallelism.md).
 */
export type ToRank =
  /**
   * The rank's KV cache, and its host spaces of as many blocks as rank 0's (0: none): swap space
   * for preempted sequences, the prefix cache's host tier. Every id names a block on every rank.
   */
  | { type: 'create-cache'; numBlocks: number; blockSize: number; dtype: KvCacheDtype; numSwapBlocks: number; numHostCacheBlocks: number; stateSlots: number }
  /** A step's copies between device and host (every step of a run with host spaces, before its forward, if any). */
  | { type: 'transfer-blocks'; transfers: HostTransfers }
  /**
   * A step: copy-on-write block copies first, then the stage's part of the forward pass; on the
   * first stage, which embeds the next step's pending tokens, the sampling pass (each of its ranks
   * samples the logits alike, so those tokens are on every one of them).
   */
  | { type: 'step'; blockCopies: { src: Int32Array; dst: Int32Array }; stateCopies: { src: Int32Array; dst: Int32Array }; batch: BatchDescription; draws: Draw[] }
  | { type: 'copy-slots'; src: Int32Array; dst: Int32Array }
  /**
   * With micro-batches in flight: the first stage's ranks receive and sample the logits of the
   * oldest micro-batch sent on (the engine reads its tokens); the other stages have nothing to do.
   */
  | { type: 'receive-logits' };

/** What a rank reports once it has loaded its shard. */
export interface RankLoaded {
  /** How many KV blocks the rank's memory budget holds for its layers. */
  kvBlocks: number;
  /** A KV block's bytes on the rank (its shard of its stage's layers), on the device and in its host spaces. */
  kvBytesPerBlock: number;
  /** Bytes of its weights the rank keeps in host memory to stream (`cpuOffloadGb`; 0: none). */
  weightHostBytes: number;
}

export type FromRank = ({ type: 'loaded' } & RankLoaded) | { type: 'failed'; message: string };

/** A rank in a worker process (CUDA): its GPU, and the NCCL groups it joins (their unique ids made by rank 0). */
export interface ProcessRankSettings extends RankPlace {
  /** The GPU ordinal among those the process sees (CUDA_VISIBLE_DEVICES). */
  device: number;
  tensorGroup: NcclGroupId;
  pipelineGroup: NcclGroupId;
}

/** One NCCL group as a rank joins it: the group's unique id, its size, the rank's index in it. */
export interface NcclGroupId {
  id: Uint8Array;
  size: number;
  rank: number;
}

/** To a rank's worker process: its settings first, then the engine's orders. */
export type ToRankProcess = { type: 'start'; settings: ProcessRankSettings } | ToRank;

/** From the thread that watches the worker processes to the engine: a rank's message, or its death. */
export type FromProcessSupervisor = { type: 'rank'; rank: number; message: FromRank } | FromSupervisor;
/** To that thread: orders for every rank, the engine's communicators to abort when a rank dies, a kill, or the end. */
export type ToProcessSupervisor = { type: 'orders'; message: ToRank } | { type: 'watch-communicators'; addresses: bigint[] } | ToSupervisor;

/** From the thread that watches the rank workers. */
export type FromSupervisor = { type: 'rank-failed'; rank: number; reason: string };
export type ToSupervisor = { type: 'kill'; rank: number } | { type: 'close' };
