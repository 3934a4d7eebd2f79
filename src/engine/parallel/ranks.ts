import type { Draw } from '../../sampling/draw.ts';
import type { BatchDescription } from '../../step/batch.ts';
import type { KvCacheDtype } from '../../step/kv-cache-layout.ts';
import type { HostTransfers } from '../host-transfers.ts';
import type { RankLoading } from './rank-loading.ts';
import type { ToRank } from './rank-messages.ts';

/**
 * The other ranks of a parallel run, seen from the engine (rank 0): worker threads on the CPU
 * backend (thread-ranks.ts), worker processes on CUDA (process-ranks.ts). Both carry the same
 * orders (rank-messages.ts) to the same code (rank-runner.ts); only the transport and the
 * communicator differ.
 */
export abstract class Ranks {
  protected abstract readonly loading: RankLoading;
  private readonly failureListeners: ((error: Error) => void)[] = [];
  private failure: Error | null = null;

  /** Resolves once every other rank has loaded its shard; rejects with the first failure. */
  ready(): Promise<void> {
    return this.loading.done;
  }

  /** The fewest KV blocks the other ranks' memory holds for their layers (after `ready`): the pool's block ids must exist on every rank. */
  get kvBlocksAffordable(): number {
    return this.loading.fewestKvBlocks;
  }

  /** The most bytes a KV block takes on any other rank (after `ready`): each rank's host spaces hold their blocks in the memory given. */
  get largestKvBytesPerBlock(): number {
    return this.loading.largestKvBytesPerBlock;
  }

  /** Bytes of weights the other ranks keep in host memory to stream (`cpuOffloadGb`), all together (after `ready`). */
  get weightHostBytes(): number {
    return this.loading.weightHostBytes;
  }

  /**
   * Every other rank makes its KV cache, its own heads' shard of its stage's layers, of the same
   * blocks and dtype as rank 0's, and host spaces of the same blocks as rank 0's (0: none).
   */
  createCaches(numBlocks: number, blockSize: number, dtype: KvCacheDtype, host: { numSwapBlocks: number; numHostCacheBlocks: number }, stateSlots: number): void {
    this.order({ type: 'create-cache', numBlocks, blockSize, dtype, ...host, stateSlots });
  }

  /** Sends a step's copies between device and host to the other ranks; the engine queues them on rank 0 right after. */
  transferBlocks(transfers: HostTransfers): void {
    this.order({ type: 'transfer-blocks', transfers });
  }

  /** Sends the step to the other ranks; the engine runs it on rank 0 right after. */
  step(copies: { blockCopies: { src: Int32Array; dst: Int32Array }; stateCopies: { src: Int32Array; dst: Int32Array } }, batch: BatchDescription, draws: Draw[]): void {
    this.order({ type: 'step', ...copies, batch, draws });
  }

  copySlots(src: Int32Array, dst: Int32Array): void {
    this.order({ type: 'copy-slots', src, dst });
  }

  /** With micro-batches in flight: the first stage's ranks receive the oldest one's logits, as the engine does right after. */
  receiveLogits(): void {
    this.order({ type: 'receive-logits' });
  }

  /** Calls `listener` once a rank has failed (at once if one has): the run can never step again. */
  onFailure(listener: (error: Error) => void): void {
    if (this.failure !== null) listener(this.failure);
    else this.failureListeners.push(listener);
  }

  /** A rank failed, as its watcher reports it: loading, if under way, rejects with it, and the listeners hear the first. */
  protected rankFailed(error: Error): void {
    this.loading.failed(error);
    if (this.failure !== null) return;
    this.failure = error;
    for (const listener of this.failureListeners) listener(error);
  }

  /** Sends every other rank `message`, to be run in the order sent. */
  protected abstract order(message: ToRank): void;
  /**
   * Throws the run's failure if a rank failed: a step whose wait was cut short by a dead rank
   * (its collectives aborted) read nothing worth keeping.
   */
  abstract throwIfFailed(): void;
  /** Ends rank `rank`'s worker as a crash would (its watcher reports it): for fault drills and tests. */
  abstract kill(rank: number): void;
  /** Ends every rank's worker. */
  abstract close(): Promise<void>;
}
