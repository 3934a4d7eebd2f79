import { blockCopies, type BlockCopies, type BlockId, type BlockPool } from './block-pool.ts';
import type { HostCacheTransfers, HostPrefixCache } from './host-prefix-cache.ts';
import type { KvRetention } from '../step/kv-cache-layout.ts';
import { chainStart, hashBlock } from './prefix-hash.ts';
import type { Sequence, SequenceId } from './sequence.ts';

/** A run of cached full blocks matching a sequence's first tokens. */
export interface ComputedBlocks {
  /** The device block of each; null where only the host tier holds it (loaded into a fresh device block). */
  blocks: (BlockId | null)[];
  numTokens: number;
  /** Of numTokens, those in blocks found only in the host tier. */
  numHostTokens: number;
}

export const NO_COMPUTED_BLOCKS: ComputedBlocks = { blocks: [], numTokens: 0, numHostTokens: 0 };

export interface KvCacheManagerOptions {
  blockSize: number;
  enablePrefixCaching: boolean;
  /**
   * What the layers read of a sequence's past (`kvRetention`: sliding windows, StreamingLLM's sinks
   * and window): blocks holding none of it are freed as a sequence advances; null keeps every block.
   */
  retention: KvRetention | null;
  /** A block id outside the pool that block tables hold in place of freed blocks (never read). */
  nullBlock: number;
  /** Host blocks that preempted sequences are swapped out to (`--swap-space`); null: no swapping. */
  swapPool?: BlockPool | null;
  /**
   * Computed tokens before a step's first new one whose cache entries the step may write again, so
   * their blocks are made private too (0 by default). A speculative head's entry of a position
   * depends on the token after it (EAGLE, MTP: head-proposer.ts), so it rewrites the last
   * computed token's once that token's successor is known; sequences sharing its block (a fork, a
   * prefix hit) may follow it with other tokens.
   */
  lookback?: number;
  /** The host-RAM tier of the prefix cache (`--kv-offload-gb`); null: evicted blocks are dropped. */
  hostCache?: HostPrefixCache | null;
}

/** `KvCacheManager.blocksHeldAtOnce` of a manager with this retention and block size. */
export function blocksHeldAtOnce(retention: KvRetention | null, blockSize: number, numTokens: number, maxChunk: number): number {
  const all = Math.ceil(numTokens / blockSize);
  if (retention === null) return all;
  const sinkBlocks = Math.ceil(retention.sinks / blockSize);
  return Math.min(all, sinkBlocks + Math.ceil((retention.window - 1 + maxChunk) / blockSize) + 1);
}

/**
 * Gives each sequence the blocks its tokens need: reuses cached full blocks of a matching prefix,
 * shares blocks between forked sequences, and copies a shared block before a sequence writes into
 * it. It owns `Sequence.blockTable` and `Sequence.blockHashes`; which tokens run is the
 * scheduler's business.
 */
export class KvCacheManager {
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  private readonly retention: KvRetention | null;
  private readonly nullBlock: BlockId;
  private readonly pool: BlockPool;
  /** Per sequence, how many of its leading blocks were already offered to the prefix cache. */
  private readonly numRegisteredBlocks = new Map<SequenceId, number>();
  /** Each source keeps the reference of the sequence that moved off it until the copy is taken. */
  private pendingCopies: { src: BlockId; dst: BlockId }[] = [];
  private readonly swapPool: BlockPool | null;
  private readonly lookback: number;
  /** A swapped-out sequence's table: the host block of each entry, null for the null block. */
  private readonly swappedTables = new Map<SequenceId, (BlockId | null)[]>();
  /** Swaps recorded since the last `takeSwaps`: device -> host, then host -> device. */
  private pendingSwapOuts: { src: BlockId; dst: BlockId }[] = [];
  private pendingSwapIns: { src: BlockId; dst: BlockId }[] = [];
  private readonly hostCache: HostPrefixCache | null;

  constructor(pool: BlockPool, options: KvCacheManagerOptions) {
    if (options.enablePrefixCaching && !pool.enableCaching) throw new Error('prefix caching needs a block pool created with caching enabled');
    if (options.nullBlock >= 0 && options.nullBlock < pool.numBlocks) throw new Error(`the null block ${options.nullBlock} is inside the pool`);
    this.pool = pool;
    this.blockSize = options.blockSize;
    this.enablePrefixCaching = options.enablePrefixCaching;
    this.retention = options.retention;
    this.nullBlock = options.nullBlock as BlockId;
    this.swapPool = options.swapPool ?? null;
    this.lookback = options.lookback ?? 0;
    if (this.swapPool?.enableCaching) throw new Error('a swap pool holds no prefix cache');
    this.hostCache = options.hostCache ?? null;
    if (this.hostCache !== null && !options.enablePrefixCaching) throw new Error('a host tier of the prefix cache needs prefix caching');
  }

  get numBlocks(): number {
    return this.pool.numBlocks;
  }

  get numFreeBlocks(): number {
    return this.pool.numFreeBlocks;
  }

  get numCachedBlocks(): number {
    return this.pool.numCachedBlocks;
  }

  /** Host blocks of the swap space (0 without one), and those free. */
  get numSwapBlocks(): number {
    return this.swapPool?.numBlocks ?? 0;
  }

  get numFreeSwapBlocks(): number {
    return this.swapPool?.numFreeBlocks ?? 0;
  }

  /** Host blocks of the prefix cache's host tier (0 without one), and those holding a cached block. */
  get numHostCacheBlocks(): number {
    return this.hostCache?.numBlocks ?? 0;
  }

  get numHostCachedBlocks(): number {
    return this.hostCache?.numCachedBlocks ?? 0;
  }

  /**
   * The most blocks a sequence of `numTokens` tokens holds at once when steps run at most
   * `maxChunk` of its tokens: all of them, or with retention, the sinks' blocks and those covering
   * the window behind a step's first token and the step's chunk (plus one for a window that does
   * not start at a block boundary).
   */
  blocksHeldAtOnce(numTokens: number, maxChunk: number): number {
    return blocksHeldAtOnce(this.retention, this.blockSize, numTokens, maxChunk);
  }

  /**
   * The longest run of cached blocks matching the sequence's leading full blocks, each found in the
   * device pool or else in the host tier. At least one token is always left to compute, since a
   * step must run a token to produce logits.
   */
  getComputedBlocks(seq: Sequence): ComputedBlocks {
    if (!this.enablePrefixCaching) return NO_COMPUTED_BLOCKS;
    const maxBlocks = Math.floor((seq.numTokens - 1) / this.blockSize);
    const blocks: (BlockId | null)[] = [];
    for (let i = 0; i < maxBlocks; i++) {
      const hash = this.blockHash(seq, i);
      const id = this.pool.lookup(hash);
      if (id !== undefined) blocks.push(id);
      else if (this.hostCache?.has(hash)) blocks.push(null);
      else break;
    }
    const numHostBlocks = blocks.filter((id) => id === null).length;
    return { blocks, numTokens: blocks.length * this.blockSize, numHostTokens: numHostBlocks * this.blockSize };
  }

  /**
   * Makes the block table cover the next `numNewTokens` tokens after the computed ones (after
   * `computed`, the prefix hits of a sequence that holds no blocks yet; those found only in the
   * host tier get fresh device blocks, loaded from the host before the step's forward). A shared
   * block the new tokens would write into is replaced by a private copy. Blocks (and hits) that no
   * layer's window reaches any more are released first, their entries the null block. Returns
   * false, allocating nothing, when the pool cannot supply the blocks.
   */
  allocateSlots(seq: Sequence, numNewTokens: number, computed: ComputedBlocks = NO_COMPUTED_BLOCKS): boolean {
    if (computed.blocks.length > 0 && (seq.blockTable.length > 0 || seq.numComputedTokens > 0)) {
      throw new Error(`sequence ${seq.id} already holds blocks; prefix hits apply only to a fresh sequence`);
    }
    const start = seq.numComputedTokens + computed.numTokens;
    const end = start + numNewTokens;
    const numBehind = this.numBlocksBehindWindow(start);
    this.freeBehindWindow(seq, numBehind);
    const hits = computed.blocks.map((id, i) => (i >= this.numSinkBlocks && i < numBehind ? this.nullBlock : id));
    const numNewBlocks = Math.max(0, Math.ceil(end / this.blockSize) - seq.blockTable.length - hits.length);
    const rewritten = Math.max(0, start - this.lookback);
    // Of the device hits, those the step writes again and other sequences hold (this one holds
    // none yet); a block loaded from the host tier is this sequence's alone.
    const hitCopies = hits.flatMap((id, i) => (id !== null && id !== this.nullBlock && (i + 1) * this.blockSize > rewritten && this.pool.refCount(id) > 0 ? [i] : []));
    const toCopy = [...hitCopies, ...this.sharedBlocksWritten(seq, rewritten, end)];
    const held = hits.filter((id): id is BlockId => id !== null && id !== this.nullBlock);
    const toLoad = hits.flatMap((id, i) => (id === null ? [i] : []));
    const numRevived = held.filter((id) => this.pool.refCount(id) === 0).length;
    if (numNewBlocks + toCopy.length + numRevived + toLoad.length > this.pool.numFreeBlocks) return false;

    // Hits are taken before allocating, which could otherwise evict them from the free queue.
    this.pool.touch(held);
    if (toLoad.length > 0) {
      const loaded = this.hostCache!.load(toLoad.map((i) => this.blockHash(seq, i)), (count) => this.allocate(count));
      toLoad.forEach((i, k) => {
        hits[i] = loaded[k];
        // Registered at once: its content is the host block's, copied before any step reads it.
        this.pool.cacheBlock(loaded[k], this.blockHash(seq, i));
      });
    }
    if (hits.length > 0) {
      seq.blockTable = hits as BlockId[];
      this.numRegisteredBlocks.set(seq.id, hits.length);
    }
    for (const index of toCopy) {
      const [dst] = this.allocate(1);
      this.pendingCopies.push({ src: seq.blockTable[index], dst });
      seq.blockTable[index] = dst;
    }
    seq.blockTable.push(...this.allocate(numNewBlocks));
    return true;
  }

  /** Takes blocks from the pool; cached blocks it evicts are stored in the host tier, if any. */
  private allocate(count: number): BlockId[] {
    const hostCache = this.hostCache;
    return this.pool.allocate(count, hostCache === null ? undefined : (id, hash) => hostCache.store(id, hash));
  }

  /** Offers the sequence's newly full and fully computed blocks to the prefix cache. */
  cacheFullBlocks(seq: Sequence): void {
    if (!this.enablePrefixCaching) return;
    const numFull = Math.floor(seq.numComputedTokens / this.blockSize);
    for (let i = this.numRegisteredBlocks.get(seq.id) ?? 0; i < numFull; i++) {
      if (seq.blockTable[i] !== this.nullBlock) this.pool.cacheBlock(seq.blockTable[i], this.blockHash(seq, i));
    }
    this.numRegisteredBlocks.set(seq.id, numFull);
  }

  /** Leading blocks that hold a sink position: kept whatever the window (none without sinks). */
  private get numSinkBlocks(): number {
    return this.retention === null ? 0 : Math.ceil(this.retention.sinks / this.blockSize);
  }

  /**
   * The end of the leading blocks no layer reads again once tokens from position `start` on run:
   * those wholly older than the retention window of `start` (none without retention). Of them, the
   * sinks' blocks are kept.
   */
  private numBlocksBehindWindow(start: number): number {
    if (this.retention === null) return 0;
    return Math.floor(Math.max(0, start - this.retention.window + 1) / this.blockSize);
  }

  /**
   * Frees the sequence's blocks from the sinks' up to `numBehind`; their entries become the null
   * block. Cached content stays findable by other sequences until evicted.
   */
  private freeBehindWindow(seq: Sequence, numBehind: number): void {
    const from = this.numSinkBlocks;
    const behind = seq.blockTable.slice(from, numBehind).filter((id) => id !== this.nullBlock);
    if (behind.length === 0) return;
    // Offered to the prefix cache first: a null entry is never registered.
    this.cacheFullBlocks(seq);
    for (let i = from; i < Math.min(numBehind, seq.blockTable.length); i++) seq.blockTable[i] = this.nullBlock;
    this.pool.free(behind);
  }

  /** Frees the blocks past those the sequence's tokens fill (those of drafts it dropped). */
  freeBlocksPastEnd(seq: Sequence): void {
    const numNeeded = Math.ceil(seq.numTokens / this.blockSize);
    if (seq.blockTable.length <= numNeeded) return;
    this.pool.free(seq.blockTable.splice(numNeeded).filter((id) => id !== this.nullBlock).reverse());
  }

  /** Releases all the sequence's blocks, tail first so that its tail is evicted first. */
  free(seq: Sequence): void {
    this.pool.free(seq.blockTable.filter((id) => id !== this.nullBlock).reverse());
    seq.blockTable = [];
    this.numRegisteredBlocks.delete(seq.id);
    // A copy into a block that nobody holds any more would only race with the block's next owner.
    const orphaned = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) === 0);
    if (orphaned.length === 0) return;
    this.pendingCopies = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) > 0);
    this.pool.free(orphaned.map(({ src }) => src));
  }

  /**
   * Moves the K/V of the sequence's computed tokens to host blocks and frees its device blocks (as
   * `free` does); the copies are recorded for `takeSwaps`. Returns false, doing nothing, when the
   * swap space lacks room. A block whose copy-on-write copy is still pending is read from its source.
   */
  swapOut(seq: Sequence): boolean {
    if (this.swapPool === null) return false;
    const computed = seq.blockTable.slice(0, Math.ceil(seq.numComputedTokens / this.blockSize));
    const held = computed.filter((id) => id !== this.nullBlock);
    if (held.length > this.swapPool.numFreeBlocks) return false;
    // A swap-out is queued before the step's host-tier loads, so it would read such a block unfilled.
    if (this.hostCache !== null && held.some((id) => this.hostCache!.isLoading(id))) return false;
    const hostBlocks = this.swapPool.allocate(held.length);
    let next = 0;
    const table = computed.map((id) => {
      if (id === this.nullBlock) return null;
      const host = hostBlocks[next++];
      this.pendingSwapOuts.push({ src: this.pendingCopies.find(({ dst }) => dst === id)?.src ?? id, dst: host });
      return host;
    });
    this.free(seq);
    this.swappedTables.set(seq.id, table);
    return true;
  }

  /**
   * Device blocks for a swapped-out sequence's K/V, copied back from its host blocks (recorded for
   * `takeSwaps`), which are freed. Returns false, doing nothing, unless the pool also keeps a block
   * for the sequence's next token when that starts a new block.
   */
  swapIn(seq: Sequence): boolean {
    const table = this.swappedTables.get(seq.id);
    if (table === undefined) throw new Error(`sequence ${seq.id} is not swapped out`);
    const held = table.filter((id) => id !== null);
    const nextBlock = Math.ceil(seq.numTokens / this.blockSize) > table.length ? 1 : 0;
    if (held.length + nextBlock > this.pool.numFreeBlocks) return false;
    const deviceBlocks = this.allocate(held.length);
    let next = 0;
    seq.blockTable = table.map((host) => {
      if (host === null) return this.nullBlock;
      const device = deviceBlocks[next++];
      this.pendingSwapIns.push({ src: host, dst: device });
      return device;
    });
    // Offered to the prefix cache again under their new ids (a hash another block holds stays with it).
    this.numRegisteredBlocks.set(seq.id, 0);
    this.swappedTables.delete(seq.id);
    this.swapPool!.free(held);
    return true;
  }

  /** Frees a swapped-out sequence's host blocks (it ended while swapped out). */
  dropSwapped(seq: Sequence): void {
    const table = this.swappedTables.get(seq.id);
    if (table === undefined) throw new Error(`sequence ${seq.id} is not swapped out`);
    this.swappedTables.delete(seq.id);
    this.swapPool!.free(table.filter((id) => id !== null));
  }

  /**
   * The swaps recorded since the last call, to run in order before the step's forward: swap-outs
   * first, since a swap-in may write a device block a swap-out of the same step reads, and a block
   * freed by a swap is handed out again only after the swap is recorded.
   */
  takeSwaps(): { out: BlockCopies; in: BlockCopies } {
    const swaps = { out: blockCopies(this.pendingSwapOuts), in: blockCopies(this.pendingSwapIns) };
    this.pendingSwapOuts = [];
    this.pendingSwapIns = [];
    return swaps;
  }

  /** Gives `child` the parent's blocks (shared, copy-on-write) and block hashes. */
  fork(parent: Sequence, child: Sequence): void {
    this.pool.touch(parent.blockTable.filter((id) => id !== this.nullBlock));
    child.blockTable = [...parent.blockTable];
    child.blockHashes = [...parent.blockHashes];
    const numRegistered = this.numRegisteredBlocks.get(parent.id);
    if (numRegistered !== undefined) this.numRegisteredBlocks.set(child.id, numRegistered);
  }

  /**
   * The copies recorded since the last call. Their sources are released here: nothing allocates
   * again before the next schedule, and by then the worker has run these copies. Holding them
   * until now keeps a source from becoming another copy's destination within the same step.
   */
  takePendingCopies(): BlockCopies {
    const copies = this.pendingCopies;
    this.pendingCopies = [];
    this.pool.free(copies.map(({ src }) => src));
    return blockCopies(copies);
  }

  /**
   * The host tier's copies recorded since the last call (HostPrefixCache.takeTransfers): stores of
   * evicted blocks, then loads of host hits, to run after the step's swap-outs and before its
   * forward, which reads the loaded blocks.
   */
  takeHostCacheTransfers(): HostCacheTransfers {
    return this.hostCache?.takeTransfers() ?? { store: blockCopies([]), load: blockCopies([]) };
  }

  /**
   * Throws unless every block's reference count equals the number of `sequences` whose table holds
   * it (plus pending copies reading it), and the pool is consistent. Pass every live sequence.
   */
  checkInvariants(sequences: Iterable<Sequence>): void {
    const holders = new Int32Array(this.pool.numBlocks);
    for (const seq of sequences) {
      if (seq.status === 'swapped') {
        if (!this.swappedTables.has(seq.id) || seq.blockTable.length > 0) throw new Error(`swapped sequence ${seq.id} holds device blocks or no host blocks`);
        continue;
      }
      const held = seq.blockTable.filter((id) => id !== this.nullBlock);
      if (new Set(held).size !== held.length) throw new Error(`sequence ${seq.id} holds a block twice`);
      if (seq.blockTable.length * this.blockSize < seq.numComputedTokens) {
        throw new Error(`sequence ${seq.id} has ${seq.numComputedTokens} computed tokens but only ${seq.blockTable.length} blocks`);
      }
      if (seq.blockTable.length > Math.ceil(seq.numTokens / this.blockSize)) {
        throw new Error(`sequence ${seq.id} holds ${seq.blockTable.length} blocks, more than its ${seq.numTokens} tokens fill`);
      }
      seq.blockTable.forEach((id, i) => {
        if (id === this.nullBlock) return;
        holders[id]++;
        const hash = this.pool.hashOf(id);
        if (hash !== undefined && i < seq.blockHashes.length && hash !== seq.blockHashes[i]) {
          throw new Error(`sequence ${seq.id} block ${i} (KV block ${id}) is cached with another prefix's hash`);
        }
      });
    }
    for (const { src } of this.pendingCopies) holders[src]++;
    for (let id = 0; id < this.pool.numBlocks; id++) {
      const refs = this.pool.refCount(id as BlockId);
      if (refs !== holders[id]) throw new Error(`KV block ${id} has ${refs} references but ${holders[id]} holders`);
    }
    this.pool.checkInvariants();
    this.hostCache?.checkInvariants();
    if (this.swapPool === null) return;
    const hostHolders = new Int32Array(this.swapPool.numBlocks);
    for (const table of this.swappedTables.values()) for (const id of table) if (id !== null) hostHolders[id]++;
    for (let id = 0; id < this.swapPool.numBlocks; id++) {
      const refs = this.swapPool.refCount(id as BlockId);
      if (refs !== hostHolders[id]) throw new Error(`host block ${id} has ${refs} references but ${hostHolders[id]} swapped sequences hold it`);
    }
    this.swapPool.checkInvariants();
  }

  /** Indices of table blocks in [start, end) that other sequences also hold. */
  private sharedBlocksWritten(seq: Sequence, start: number, end: number): number[] {
    const indices: number[] = [];
    const last = Math.min(seq.blockTable.length, Math.ceil(end / this.blockSize));
    for (let i = Math.floor(start / this.blockSize); i < last; i++) {
      const id = seq.blockTable[i];
      const heldForCopies = this.pendingCopies.filter(({ src }) => src === id).length;
      if (this.pool.refCount(id) - heldForCopies > 1) indices.push(i);
    }
    return indices;
  }

  /** The prefix hash of the sequence's full block `index`, extending the chain (from its salt) as needed. */
  private blockHash(seq: Sequence, index: number): string {
    const hashes = seq.blockHashes;
    while (hashes.length <= index) {
      const start = hashes.length * this.blockSize;
      const parent = hashes.length === 0 ? chainStart(seq.cacheSalt) : hashes[hashes.length - 1];
      hashes.push(hashBlock(parent, seq.tokenIds.slice(start, start + this.blockSize)));
    }
    return hashes[index];
  }
}
