import type { BlockId, BlockPool } from './block-pool.ts';
import { hashBlock } from './prefix-hash.ts';
import type { Sequence, SequenceId } from './sequence.ts';

/** A run of cached full blocks matching a sequence's first tokens. */
export interface ComputedBlocks {
  blocks: BlockId[];
  numTokens: number;
}

/** Whole KV blocks the worker copies src[i] -> dst[i] in every layer before the step's forward. */
export interface BlockCopies {
  src: Int32Array;
  dst: Int32Array;
}

const NO_COMPUTED_BLOCKS: ComputedBlocks = { blocks: [], numTokens: 0 };

/**
 * Gives each sequence the blocks its tokens need: reuses cached full blocks of a matching prefix,
 * shares blocks between forked sequences, and copies a shared block before a sequence writes into
 * it. It owns `Sequence.blockTable` and `Sequence.blockHashes`; which tokens run is the
 * scheduler's business.
 */
export class KvCacheManager {
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  private readonly pool: BlockPool;
  /** Per sequence, how many of its leading blocks were already offered to the prefix cache. */
  private readonly numRegisteredBlocks = new Map<SequenceId, number>();
  /** Each source keeps the reference of the sequence that moved off it until the copy is taken. */
  private pendingCopies: { src: BlockId; dst: BlockId }[] = [];

  constructor(pool: BlockPool, blockSize: number, enablePrefixCaching: boolean) {
    if (enablePrefixCaching && !pool.enableCaching) throw new Error('prefix caching needs a block pool created with caching enabled');
    this.pool = pool;
    this.blockSize = blockSize;
    this.enablePrefixCaching = enablePrefixCaching;
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

  /**
   * The longest run of cached blocks matching the sequence's leading full blocks. At least one
   * token is always left to compute, since a step must run a token to produce logits.
   */
  getComputedBlocks(seq: Sequence): ComputedBlocks {
    if (!this.enablePrefixCaching) return NO_COMPUTED_BLOCKS;
    const maxBlocks = Math.floor((seq.numTokens - 1) / this.blockSize);
    const blocks: BlockId[] = [];
    for (let i = 0; i < maxBlocks; i++) {
      const id = this.pool.lookup(this.blockHash(seq, i));
      if (id === undefined) break;
      blocks.push(id);
    }
    return { blocks, numTokens: blocks.length * this.blockSize };
  }

  /**
   * Makes the block table cover the next `numNewTokens` tokens after the computed ones (after
   * `computed`, the prefix hits of a sequence that holds no blocks yet). A shared block the new
   * tokens would write into is replaced by a private copy. Returns false, changing nothing, when
   * the pool cannot supply the blocks.
   */
  allocateSlots(seq: Sequence, numNewTokens: number, computed: ComputedBlocks = NO_COMPUTED_BLOCKS): boolean {
    if (computed.blocks.length > 0 && (seq.blockTable.length > 0 || seq.numComputedTokens > 0)) {
      throw new Error(`sequence ${seq.id} already holds blocks; prefix hits apply only to a fresh sequence`);
    }
    const start = seq.numComputedTokens + computed.numTokens;
    const end = start + numNewTokens;
    const numNewBlocks = Math.max(0, Math.ceil(end / this.blockSize) - seq.blockTable.length - computed.blocks.length);
    const toCopy = this.sharedBlocksWritten(seq, start, end);
    const numRevived = computed.blocks.filter((id) => this.pool.refCount(id) === 0).length;
    if (numNewBlocks + toCopy.length + numRevived > this.pool.numFreeBlocks) return false;

    // Hits are taken before allocating, which could otherwise evict them from the free queue.
    this.pool.touch(computed.blocks);
    if (computed.blocks.length > 0) {
      seq.blockTable = [...computed.blocks];
      this.numRegisteredBlocks.set(seq.id, computed.blocks.length);
    }
    for (const index of toCopy) {
      const [dst] = this.pool.allocate(1);
      this.pendingCopies.push({ src: seq.blockTable[index], dst });
      seq.blockTable[index] = dst;
    }
    seq.blockTable.push(...this.pool.allocate(numNewBlocks));
    return true;
  }

  /** Offers the sequence's newly full and fully computed blocks to the prefix cache. */
  cacheFullBlocks(seq: Sequence): void {
    if (!this.enablePrefixCaching) return;
    const numFull = Math.floor(seq.numComputedTokens / this.blockSize);
    for (let i = this.numRegisteredBlocks.get(seq.id) ?? 0; i < numFull; i++) {
      this.pool.cacheBlock(seq.blockTable[i], this.blockHash(seq, i));
    }
    this.numRegisteredBlocks.set(seq.id, numFull);
  }

  /** Releases all the sequence's blocks, tail first so that its tail is evicted first. */
  free(seq: Sequence): void {
    this.pool.free([...seq.blockTable].reverse());
    seq.blockTable = [];
    this.numRegisteredBlocks.delete(seq.id);
    // A copy into a block that nobody holds any more would only race with the block's next owner.
    const orphaned = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) === 0);
    if (orphaned.length === 0) return;
    this.pendingCopies = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) > 0);
    this.pool.free(orphaned.map(({ src }) => src));
  }

  /** Gives `child` the parent's blocks (shared, copy-on-write) and block hashes. */
  fork(parent: Sequence, child: Sequence): void {
    this.pool.touch(parent.blockTable);
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
    return { src: Int32Array.from(copies, ({ src }) => src), dst: Int32Array.from(copies, ({ dst }) => dst) };
  }

  /**
   * Throws unless every block's reference count equals the number of `sequences` whose table holds
   * it (plus pending copies reading it), and the pool is consistent. Pass every live sequence.
   */
  checkInvariants(sequences: Iterable<Sequence>): void {
    const holders = new Int32Array(this.pool.numBlocks);
    for (const seq of sequences) {
      if (new Set(seq.blockTable).size !== seq.blockTable.length) throw new Error(`sequence ${seq.id} holds a block twice`);
      if (seq.blockTable.length * this.blockSize < seq.numComputedTokens) {
        throw new Error(`sequence ${seq.id} has ${seq.numComputedTokens} computed tokens but only ${seq.blockTable.length} blocks`);
      }
      seq.blockTable.forEach((id, i) => {
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

  /** The prefix hash of the sequence's full block `index`, extending the chain as needed. */
  private blockHash(seq: Sequence, index: number): string {
    const hashes = seq.blockHashes;
    while (hashes.length <= index) {
      const start = hashes.length * this.blockSize;
      hashes.push(hashBlock(hashes.length === 0 ? null : hashes[hashes.length - 1], seq.tokenIds.slice(start, start + this.blockSize)));
    }
    return hashes[index];
  }
}
