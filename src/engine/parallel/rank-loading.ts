import type { FromRank } from './rank-messages.ts';

/**
 * The other ranks loading their shards, as the engine follows it: `done` resolves once each has
 * said it loaded and rejects with the first failure (later ones are seen through the run's
 * failure board by whoever waits).
 */
export class RankLoading {
  readonly done: Promise<void>;
  /** The fewest KV blocks any rank's memory holds for its layers; known once `done` resolves. */
  fewestKvBlocks = Infinity;
  /** The most bytes a KV block takes on any rank (its shard of its stage's layers); known once `done` resolves. */
  largestKvBytesPerBlock = 0;
  /** The weights the ranks keep in host memory to stream, in bytes, all together; known once `done` resolves. */
  weightHostBytes = 0;
  private pending: number;
  private settle!: { resolve: () => void; reject: (error: Error) => void };

  constructor(ranks: number) {
    this.pending = ranks;
    this.done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    // Failures after loading are not this promise's to report; this only keeps them from being unhandled.
    this.done.catch(() => undefined);
  }

  /** A rank's message about its loading. */
  heard(message: FromRank): void {
    if (message.type === 'failed') {
      this.failed(new Error(message.message));
      return;
    }
    this.fewestKvBlocks = Math.min(this.fewestKvBlocks, message.kvBlocks);
    this.largestKvBytesPerBlock = Math.max(this.largestKvBytesPerBlock, message.kvBytesPerBlock);
    this.weightHostBytes += message.weightHostBytes;
    if (--this.pending === 0) this.settle.resolve();
  }

  failed(error: Error): void {
    this.settle.reject(error);
  }
}
