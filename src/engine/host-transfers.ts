import type { Backend, KvCache, SwapSpace } from '../backend/backend.ts';
import type { BlockCopies } from './block-pool.ts';
import type { HostCacheTransfers } from './host-prefix-cache.ts';

/**
 * One step's copies between device and host memory, as the scheduler decided them
 * (SchedulerOutput's fields of the same names): plain data, so the other ranks of a parallel run
 * receive them with the step and copy the same blocks of their own shards.
 */
export interface HostTransfers {
  swapOut: BlockCopies;
  swapIn: BlockCopies;
  hostCache: HostCacheTransfers;
}

/**
 * Queues a step's copies between device and host in every cache, each paired with its host space
 * of that kind (none where there is none), in this order: swap-outs and stores into the prefix
 * cache's host tier (both read device blocks the step may hand to others), then the order that
 * makes this step's forward wait for the previous step's swap-ins, then the host tier's loads,
 * which this step's forward reads and so waits for, then this step's swap-ins, which overlap the
 * forward (their sequences run from the next step). Every rank runs it every step, so each one's
 * forward waits for its own copies.
 */
export function queueHostTransfers(backend: Backend, swaps: readonly [KvCache, SwapSpace][], tier: readonly [KvCache, SwapSpace][], transfers: HostTransfers): void {
  const { swapOut, swapIn, hostCache } = transfers;
  if (swaps.length === 0 && swapOut.src.length + swapIn.src.length > 0) throw new Error('the scheduler swapped blocks, but there is no swap space');
  if (tier.length === 0 && hostCache.store.src.length + hostCache.load.src.length > 0) throw new Error('the scheduler copied blocks to the prefix cache\'s host tier, but there is none');
  for (const [cache, swap] of swaps) backend.swapOut(cache, swap, swapOut.src, swapOut.dst);
  for (const [cache, space] of tier) backend.swapOut(cache, space, hostCache.store.src, hostCache.store.dst);
  backend.awaitSwapIns();
  if (hostCache.load.src.length > 0) {
    for (const [cache, space] of tier) backend.swapIn(cache, space, hostCache.load.src, hostCache.load.dst);
    backend.awaitSwapIns();
  }
  for (const [cache, swap] of swaps) backend.swapIn(cache, swap, swapIn.src, swapIn.dst);
}
