import { BlockPool, blockCopies, type BlockCopies, type BlockId } from './block-pool.ts';

/** The copies a step's prefix-cache tiering asks for, run before its forward in this order. */
export interface HostCacheTransfers {
  /** Device blocks evicted from the device prefix cache -> host blocks that keep their content. */
  store: BlockCopies;
  /** Host blocks -> fresh device blocks, for prefix hits found only on the host. */
  load: BlockCopies;
}

/**
 * The host-RAM tier of the prefix cache (`--kv-offload-gb`): full blocks evicted from the device
 * pool are copied here, keyed by the same prefix hash, instead of being dropped, and a later
 * prefix hit on one is copied back into a fresh device block instead of being recomputed.
 *
 * Its blocks are a `BlockPool` of their own: a cached host block is free (evictable, least
 * recently stored or used first); a host block being read by a load this step is referenced, so
 * no store of the same step can evict and overwrite it before the copy is queued.
 */
export class HostPrefixCache {
  private readonly pool: BlockPool;
  private stores: { src: BlockId; dst: BlockId }[] = [];
  private loads: { src: BlockId; dst: BlockId }[] = [];
  /** Device blocks a load of this step writes: not readable by a swap-out queued before it. */
  private readonly loading = new Set<BlockId>();

  constructor(numBlocks: number) {
    this.pool = new BlockPool(numBlocks, true);
  }

  get numBlocks(): number {
    return this.pool.numBlocks;
  }

  /** Host blocks holding a cached block's content. */
  get numCachedBlocks(): number {
    return this.pool.numCachedBlocks;
  }

  has(hash: string): boolean {
    return this.pool.lookup(hash) !== undefined;
  }

  /**
   * Keeps the content of `device`, cached under `hash` and being evicted, in a host block: the
   * least recently used host block is evicted for it. A hash already held is only marked used.
   * When every host block is being loaded from this step, the content is dropped.
   */
  store(device: BlockId, hash: string): void {
    const held = this.pool.lookup(hash);
    if (held !== undefined) {
      this.markUsed(held);
      return;
    }
    if (this.pool.numFreeBlocks === 0) return;
    const [host] = this.pool.allocate(1);
    this.pool.cacheBlock(host, hash);
    this.pool.free([host]);
    this.stores.push({ src: device, dst: host });
  }

  /**
   * Loads the host blocks cached under `hashes` into device blocks from `allocate` (which may
   * evict device blocks and store them here: the host blocks are held first, so that no such
   * store evicts one of them), returning the device blocks. The host blocks keep their content,
   * and are marked used: the device copies may be evicted again.
   */
  load(hashes: readonly string[], allocate: (count: number) => BlockId[]): BlockId[] {
    const hosts = hashes.map((hash) => {
      const host = this.pool.lookup(hash);
      if (host === undefined) throw new Error(`host prefix cache: no block is cached as ${hash}`);
      return host;
    });
    this.pool.touch(hosts);
    const devices = allocate(hosts.length);
    hosts.forEach((src, i) => {
      this.loads.push({ src, dst: devices[i] });
      this.loading.add(devices[i]);
    });
    return devices;
  }

  /** Whether a load recorded since the last `takeTransfers` writes this device block. */
  isLoading(device: BlockId): boolean {
    return this.loading.has(device);
  }

  /**
   * The copies recorded since the last call, stores first: a device block evicted and handed to a
   * load in the same step is read before it is written. The loads' host blocks are released here:
   * once queued, the copies run before any later store can overwrite them.
   */
  takeTransfers(): HostCacheTransfers {
    const transfers = { store: blockCopies(this.stores), load: blockCopies(this.loads) };
    this.pool.free(this.loads.map(({ src }) => src));
    this.stores = [];
    this.loads = [];
    this.loading.clear();
    return transfers;
  }

  /** Throws unless exactly the host blocks read by this step's loads are referenced, once per load. */
  checkInvariants(): void {
    const readers = new Int32Array(this.pool.numBlocks);
    for (const { src } of this.loads) readers[src]++;
    for (let id = 0; id < this.pool.numBlocks; id++) {
      const refs = this.pool.refCount(id as BlockId);
      if (refs !== readers[id]) throw new Error(`host prefix-cache block ${id} has ${refs} references but ${readers[id]} loads read it`);
    }
    this.pool.checkInvariants();
  }

  /** Moves a free host block to the back of the eviction order; a referenced one goes there when released. */
  private markUsed(host: BlockId): void {
    if (this.pool.refCount(host) > 0) return;
    this.pool.touch([host]);
    this.pool.free([host]);
  }
}
