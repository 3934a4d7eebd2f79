import { blockCopies, type BlockCopies, type BlockId, type BlockPool } from './block-pool.ts';
import type { HostCacheTransfers, HostPrefixCache } from './host-prefix-cache.ts';
import type { KvRetention } from '../step/kv-cache-layout.ts';
import { chainStart, hashBlock } from './prefix-hash.ts';
import type { Sequence, SequenceId } from './sequence.ts';
import type { StateCheckpoints } from './state-checkpoints.ts';
import { snapshotSlot, StateSlotPool } from './state-slots.ts';

/** A run of cached full blocks matching a sequence's first tokens, in every KV group. */
export interface ComputedBlocks {
  /**
   * Per group, the device block of each; null where only the host tier holds it (loaded into a
   * fresh device block); the null block where the group's window no longer reaches it.
   */
  blocks: (BlockId | null)[][];
  numTokens: number;
  /** Of numTokens, those in blocks some group found only in the host tier. */
  numHostTokens: number;
}

export const NO_COMPUTED_BLOCKS: ComputedBlocks = { blocks: [], numTokens: 0, numHostTokens: 0 };

export interface KvCacheManagerOptions {
  blockSize: number;
  enablePrefixCaching: boolean;
  /**
   * What each KV group's layers read of a sequence's past (`kvCacheGroups`: sliding windows,
   * StreamingLLM's sinks and window; null: everything): every group keeps a block table of its
   * own per sequence, and frees the blocks holding none of what it reads as the sequence advances.
   */
  groups: readonly (KvRetention | null)[];
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
  /**
   * Per-sequence state slots (a model with state layers: `SequenceStateSpec`), one per running
   * sequence; absent or 0: none. Such a model's history lives in no block, so it takes no swaps,
   * and prefix hits only where `stateCheckpoints` kept the state after the prefix.
   */
  stateSlots?: number;
  /** With prefix caching and state slots, the states kept at cached block boundaries (required then). */
  stateCheckpoints?: StateCheckpoints | null;
}

/** The blocks one KV group with this retention holds at once (`KvCacheManager.blocksHeldAtOnce`). */
function groupBlocksHeldAtOnce(retention: KvRetention | null, blockSize: number, numTokens: number, maxChunk: number): number {
  const all = Math.ceil(numTokens / blockSize);
  if (retention === null) return all;
  const sinkBlocks = Math.ceil(retention.sinks / blockSize);
  return Math.min(all, sinkBlocks + Math.ceil((retention.window - 1 + maxChunk) / blockSize) + 1);
}

/** `KvCacheManager.blocksHeldAtOnce` of a manager with these groups and block size. */
export function blocksHeldAtOnce(groups: readonly (KvRetention | null)[], blockSize: number, numTokens: number, maxChunk: number): number {
  return groups.reduce((sum, retention) => sum + groupBlocksHeldAtOnce(retention, blockSize, numTokens, maxChunk), 0);
}

/** The key a group's block is cached under: blocks of different groups hold different layers' K/V. */
function groupHash(group: number, hash: string): string {
  return `${group}:${hash}`;
}

/**
 * Gives each sequence the blocks its tokens need, one block table per KV group, all from one pool:
 * reuses cached full blocks of a matching prefix, shares blocks between forked sequences, and
 * copies a shared block before a sequence writes into it. Every group's table has an entry for
 * every block of the sequence's tokens; a sliding group's entries behind its window are the null
 * block. It owns `Sequence.blockTables` and `Sequence.blockHashes`; which tokens run is the
 * scheduler's business.
 */
export class KvCacheManager {
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  private readonly groups: readonly (KvRetention | null)[];
  private readonly nullBlock: BlockId;
  private readonly pool: BlockPool;
  /** Per sequence, how many of its leading blocks were already offered to the prefix cache (in every group). */
  private readonly numRegisteredBlocks = new Map<SequenceId, number>();
  /** Each source keeps the reference of the sequence that moved off it until the copy is taken. */
  private pendingCopies: { src: BlockId; dst: BlockId }[] = [];
  private readonly swapPool: BlockPool | null;
  private readonly lookback: number;
  /** A swapped-out sequence's tables: per group, the host block of each entry, null for the null block. */
  private readonly swappedTables = new Map<SequenceId, (BlockId | null)[][]>();
  /** Swaps recorded since the last `takeSwaps`: device -> host, then host -> device. */
  private pendingSwapOuts: { src: BlockId; dst: BlockId }[] = [];
  private pendingSwapIns: { src: BlockId; dst: BlockId }[] = [];
  private readonly hostCache: HostPrefixCache | null;
  private readonly stateSlots: StateSlotPool | null;
  /** Forks' children's slots to fill from their parents' before the next forward. */
  private pendingStateCopies: { src: number; dst: number }[] = [];
  /** Released slots that a pending state copy still reads: free again once the copies are taken. */
  private releasedCopySources: number[] = [];
  private readonly checkpoints: StateCheckpoints | null;
  /** Per sequence, the prefix hash of its latest checkpoint past its prompt (demoted when it takes the next). */
  private readonly latestDecodeCheckpoint = new Map<SequenceId, string>();

  constructor(pool: BlockPool, options: KvCacheManagerOptions) {
    if (options.enablePrefixCaching && !pool.enableCaching) throw new Error('prefix caching needs a block pool created with caching enabled');
    if (options.nullBlock >= 0 && options.nullBlock < pool.numBlocks) throw new Error(`the null block ${options.nullBlock} is inside the pool`);
    if (options.groups.length === 0) throw new Error('a KV cache needs at least one KV group');
    this.pool = pool;
    this.blockSize = options.blockSize;
    this.enablePrefixCaching = options.enablePrefixCaching;
    this.groups = options.groups;
    this.nullBlock = options.nullBlock as BlockId;
    this.swapPool = options.swapPool ?? null;
    this.lookback = options.lookback ?? 0;
    if (this.swapPool?.enableCaching) throw new Error('a swap pool holds no prefix cache');
    this.hostCache = options.hostCache ?? null;
    if (this.hostCache !== null && !options.enablePrefixCaching) throw new Error('a host tier of the prefix cache needs prefix caching');
    this.stateSlots = (options.stateSlots ?? 0) > 0 ? new StateSlotPool(options.stateSlots!) : null;
    this.checkpoints = options.stateCheckpoints ?? null;
    if (this.stateSlots !== null && (this.swapPool !== null || this.hostCache !== null)) {
      throw new Error('per-sequence state slots rule out swapping and the host tier of the prefix cache: the state of a prefix lives in no block');
    }
    if (this.stateSlots !== null && options.enablePrefixCaching && this.checkpoints === null) {
      throw new Error('prefix caching with per-sequence state slots needs state checkpoints: the state of a prefix lives in no block');
    }
    if (this.checkpoints !== null && (this.stateSlots === null || !options.enablePrefixCaching)) throw new Error('state checkpoints serve prefix caching of a model with state slots');
  }

  /**
   * Keeps the sequence's state as it is before this step's forward, in its snapshot slot: a
   * verification pass runs the drafts through the state, and `rewindState` brings it back.
   */
  snapshotState(seq: Sequence): void {
    if (seq.stateSlot < 0) throw new Error(`sequence ${seq.id} holds no state slot to snapshot`);
    this.pendingStateCopies.push({ src: seq.stateSlot, dst: snapshotSlot(seq.stateSlot, this.stateSlots!.numSlots) });
  }

  /** Puts the sequence's snapshot (`snapshotState`) back in its slot before the next forward. */
  rewindState(seq: Sequence): void {
    if (seq.stateSlot < 0) throw new Error(`sequence ${seq.id} holds no state slot to rewind`);
    this.pendingStateCopies.push({ src: snapshotSlot(seq.stateSlot, this.stateSlots!.numSlots), dst: seq.stateSlot });
  }

  /** Per-sequence state slots (0 for a model without state layers), and those not held by a sequence. */
  get numStateSlots(): number {
    return this.stateSlots?.numSlots ?? 0;
  }

  /** Those a pending copy still reads count as free: no sequence holds them. */
  get numFreeStateSlots(): number {
    return (this.stateSlots?.numFree ?? 0) + this.releasedCopySources.length;
  }

  /** Whether states are kept at block boundaries (`checkpointState`): prefill chunks should end there. */
  get keepsStateCheckpoints(): boolean {
    return this.checkpoints !== null;
  }

  /** States kept at cached block boundaries (0 without state checkpoints). */
  get numStateCheckpoints(): number {
    return this.checkpoints?.size ?? 0;
  }

  get numGroups(): number {
    return this.groups.length;
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
   * `maxChunk` of its tokens, summed over the groups: all of them for a full-attention group; for a
   * group with retention, the sinks' blocks and those covering the window behind a step's first
   * token and the step's chunk (plus one for a window that does not start at a block boundary).
   */
  blocksHeldAtOnce(numTokens: number, maxChunk: number): number {
    return blocksHeldAtOnce(this.groups, this.blockSize, numTokens, maxChunk);
  }

  /**
   * The longest run of the sequence's leading full blocks whose every group has what it reads
   * cached, each block found in the device pool or else in the host tier: a full-attention group
   * needs all of the run's blocks, a sliding group only its sinks' and those its window reaches
   * from the first token computed after the run. With state layers, the run also ends at a block
   * after which a state checkpoint is kept (`checkpointState`). At least one token is always left
   * to compute, since a step must run a token to produce logits.
   */
  getComputedBlocks(seq: Sequence): ComputedBlocks {
    if (!this.enablePrefixCaching) return NO_COMPUTED_BLOCKS;
    const maxBlocks = Math.floor((seq.numTokens - 1) / this.blockSize);
    // found[g][i]: group g's block i, null on the host only, undefined if not cached; looked up lazily.
    const found = this.groups.map(() => new Map<number, BlockId | null | undefined>());
    const lookup = (g: number, i: number): BlockId | null | undefined => {
      if (!found[g].has(i)) {
        const key = groupHash(g, this.blockHash(seq, i));
        const id = this.pool.lookup(key);
        found[g].set(i, id !== undefined ? id : this.hostCache?.has(key) ? null : undefined);
      }
      return found[g].get(i);
    };
    const needed = (g: number, numHit: number, i: number) => i < this.numSinkBlocks(g) || i >= this.numBlocksBehindWindow(g, numHit * this.blockSize);
    const covers = (g: number, numHit: number) => {
      for (let i = 0; i < numHit; i++) if (needed(g, numHit, i) && lookup(g, i) === undefined) return false;
      return true;
    };
    const checkpoints = this.checkpoints;
    const hasState = (numHit: number) => checkpoints === null || checkpoints.lookup(this.blockHash(seq, numHit - 1)) !== undefined;
    // A run that suits every group: shortened until no group lacks a block it reads (a shorter run
    // may need older blocks of a sliding group, so each group is asked again until all agree) and
    // the state after it is kept.
    let numHit = maxBlocks;
    for (let settled = false; !settled; ) {
      settled = true;
      for (let g = 0; g < this.groups.length; g++) {
        while (numHit > 0 && !covers(g, numHit)) {
          numHit--;
          settled = false;
        }
      }
      while (numHit > 0 && !hasState(numHit)) {
        numHit--;
        settled = false;
      }
    }
    let numHostBlocks = 0;
    const blocks = this.groups.map((_, g) => Array.from({ length: numHit }, (_, i) => (needed(g, numHit, i) ? lookup(g, i)! : this.nullBlock)));
    for (let i = 0; i < numHit; i++) if (blocks.some((table) => table[i] === null)) numHostBlocks++;
    return { blocks, numTokens: numHit * this.blockSize, numHostTokens: numHostBlocks * this.blockSize };
  }

  /**
   * Makes every group's block table cover the next `numNewTokens` tokens after the computed ones
   * (after `computed`, the prefix hits of a sequence that holds no blocks yet; those found only in
   * the host tier get fresh device blocks, loaded from the host before the step's forward). A
   * shared block the new tokens would write into is replaced by a private copy. Blocks (and hits)
   * that a group's window no longer reaches are released first, their entries the null block.
   * Returns false, allocating nothing, when the pool cannot supply the blocks of every group.
   */
  allocateSlots(seq: Sequence, numNewTokens: number, computed: ComputedBlocks = NO_COMPUTED_BLOCKS): boolean {
    if (computed.blocks.length > 0 && (seq.numBlocks > 0 || seq.numComputedTokens > 0)) {
      throw new Error(`sequence ${seq.id} already holds blocks; prefix hits apply only to a fresh sequence`);
    }
    if (seq.blockTables.length === 0) seq.blockTables = this.groups.map(() => []);
    const start = seq.numComputedTokens + computed.numTokens;
    const end = start + numNewTokens;
    const rewritten = Math.max(0, start - this.lookback);
    for (let g = 0; g < this.groups.length; g++) this.freeBehindWindow(seq, g, this.numBlocksBehindWindow(g, start));
    // Most decode steps: no hits, and the new tokens land in blocks the sequence holds alone. The
    // plans below would find nothing to do, at the cost of a dozen arrays per sequence per step.
    if (computed.numTokens === 0 && computed.blocks.length === 0 && seq.blockTables.every((table) => this.writesOwnBlocks(table, rewritten, end))) return this.holdStateSlot(seq);
    const plans = this.groups.map((_, g) => {
      const numBehind = this.numBlocksBehindWindow(g, start);
      const hits = (computed.blocks[g] ?? []).map((id, i) => (i >= this.numSinkBlocks(g) && i < numBehind ? this.nullBlock : id));
      const table = seq.blockTables[g];
      const numNewBlocks = Math.max(0, Math.ceil(end / this.blockSize) - table.length - hits.length);
      // Of the device hits, those the step writes again and other sequences hold (this one holds
      // none yet); a block loaded from the host tier is this sequence's alone.
      const hitCopies = hits.flatMap((id, i) => (id !== null && id !== this.nullBlock && (i + 1) * this.blockSize > rewritten && this.pool.refCount(id) > 0 ? [i] : []));
      const toCopy = [...hitCopies, ...this.sharedBlocksWritten(table, rewritten, end)];
      const held = hits.filter((id): id is BlockId => id !== null && id !== this.nullBlock);
      const toLoad = hits.flatMap((id, i) => (id === null ? [i] : []));
      return { hits, numNewBlocks, toCopy, held, toLoad };
    });
    const numRevived = plans.reduce((n, p) => n + p.held.filter((id) => this.pool.refCount(id) === 0).length, 0);
    const numNeeded = plans.reduce((n, p) => n + p.numNewBlocks + p.toCopy.length + p.toLoad.length, numRevived);
    if (numNeeded > this.pool.numFreeBlocks) return false;
    if (!this.holdStateSlot(seq)) return false;

    // Every group's hits are taken before allocating, which could otherwise evict them from the free queue.
    for (const { held } of plans) this.pool.touch(held);
    plans.forEach(({ hits, numNewBlocks, toCopy, toLoad }, g) => {
      if (toLoad.length > 0) {
        const keys = toLoad.map((i) => groupHash(g, this.blockHash(seq, i)));
        const loaded = this.hostCache!.load(keys, (count) => this.allocate(count));
        toLoad.forEach((i, k) => {
          hits[i] = loaded[k];
          // Registered at once: its content is the host block's, copied before any step reads it.
          this.pool.cacheBlock(loaded[k], keys[k]);
        });
      }
      if (hits.length > 0) seq.blockTables[g] = hits as BlockId[];
      const table = seq.blockTables[g];
      for (const index of toCopy) {
        const [dst] = this.allocate(1);
        this.pendingCopies.push({ src: table[index], dst });
        table[index] = dst;
      }
      table.push(...this.allocate(numNewBlocks));
    });
    if (computed.numTokens > 0) this.numRegisteredBlocks.set(seq.id, computed.numTokens / this.blockSize);
    // The state after the hit's last block, copied into the sequence's slot before its first step.
    if (computed.numTokens > 0 && this.checkpoints !== null) {
      this.pendingStateCopies.push({ src: this.checkpoints.read(this.blockHash(seq, computed.numTokens / this.blockSize - 1)), dst: seq.stateSlot });
    }
    return true;
  }

  /**
   * After a step that advanced the sequence to a block boundary (its chunk ended there: a decode
   * that filled a block, or a prefill chunk the scheduler ended there), keeps its state in a state
   * checkpoint under that block's prefix hash, copied before the next forward: a later prefix hit
   * up to that block restores it. Nothing when a checkpoint of that prefix is already kept, or
   * every checkpoint slot is pending (no checkpoint: a later request recomputes). A sequence's
   * checkpoints past its prompt roll: each new one puts the one before it first in line for
   * eviction, so a long generation keeps its latest state (what a conversation's next turn hits)
   * without crowding out other prefixes' states.
   */
  checkpointState(seq: Sequence): void {
    if (this.checkpoints === null || seq.stateSlot < 0) return;
    const numTokens = seq.numComputedTokens;
    if (numTokens === 0 || numTokens % this.blockSize !== 0) return;
    const hash = this.blockHash(seq, numTokens / this.blockSize - 1);
    if (this.checkpoints.has(hash)) return;
    const pastPrompt = numTokens > seq.numPromptTokens;
    const previous = pastPrompt ? this.latestDecodeCheckpoint.get(seq.id) : undefined;
    // Demoted first, so that the new one may take its slot.
    if (previous !== undefined) this.checkpoints.demote(previous);
    const slot = this.checkpoints.add(hash);
    if (slot === null) return;
    this.pendingStateCopies.push({ src: seq.stateSlot, dst: slot });
    if (pastPrompt) this.latestDecodeCheckpoint.set(seq.id, hash);
  }

  /** Gives the sequence a state slot if the model keeps states and it holds none; false when every slot is held. */
  private holdStateSlot(seq: Sequence): boolean {
    if (this.stateSlots === null || seq.stateSlot >= 0) return true;
    const slot = this.stateSlots.take();
    if (slot === null) return false;
    seq.stateSlot = slot;
    return true;
  }

  /** A slot a pending state copy reads is released after the copy; a copy into a released slot is dropped. */
  private releaseStateSlot(slot: number): void {
    this.pendingStateCopies = this.pendingStateCopies.filter(({ dst }) => dst !== slot);
    if (this.pendingStateCopies.some(({ src }) => src === slot)) this.releasedCopySources.push(slot);
    else this.stateSlots!.release(slot);
  }

  /** Takes blocks from the pool; cached blocks it evicts are stored in the host tier, if any. */
  private allocate(count: number): BlockId[] {
    const hostCache = this.hostCache;
    return this.pool.allocate(count, hostCache === null ? undefined : (id, hash) => hostCache.store(id, hash));
  }

  /** Offers the sequence's newly full and fully computed blocks, in every group, to the prefix cache. */
  cacheFullBlocks(seq: Sequence): void {
    if (!this.enablePrefixCaching) return;
    const numFull = Math.floor(seq.numComputedTokens / this.blockSize);
    const registered = this.numRegisteredBlocks.get(seq.id);
    // Most steps fill no block: nothing to offer.
    if (registered === numFull) return;
    for (let i = registered ?? 0; i < numFull; i++) {
      seq.blockTables.forEach((table, g) => {
        if (table[i] !== this.nullBlock) this.pool.cacheBlock(table[i], groupHash(g, this.blockHash(seq, i)));
      });
    }
    this.numRegisteredBlocks.set(seq.id, numFull);
  }

  /** Leading blocks that hold a sink position of group `g`: kept whatever the window (none without sinks). */
  private numSinkBlocks(g: number): number {
    const retention = this.groups[g];
    return retention === null ? 0 : Math.ceil(retention.sinks / this.blockSize);
  }

  /**
   * The end of the leading blocks group `g` never reads again once tokens from position `start` on
   * run: those wholly older than its retention window of `start` (none for a full-attention
   * group). Of them, the sinks' blocks are kept.
   */
  private numBlocksBehindWindow(g: number, start: number): number {
    const retention = this.groups[g];
    if (retention === null) return 0;
    return Math.floor(Math.max(0, start - retention.window + 1) / this.blockSize);
  }

  /**
   * Frees group `g`'s blocks of the sequence from the sinks' up to `numBehind`; their entries
   * become the null block. Cached content stays findable by other sequences until evicted.
   */
  private freeBehindWindow(seq: Sequence, g: number, numBehind: number): void {
    const table = seq.blockTables[g];
    const from = this.numSinkBlocks(g);
    // Always so for a full-attention group, and for a windowed one until its window fills.
    if (numBehind <= from) return;
    const behind = table.slice(from, numBehind).filter((id) => id !== this.nullBlock);
    if (behind.length === 0) return;
    // Offered to the prefix cache first: a null entry is never registered.
    this.cacheFullBlocks(seq);
    for (let i = from; i < Math.min(numBehind, table.length); i++) table[i] = this.nullBlock;
    this.pool.free(behind);
  }

  /** Frees the blocks past those the sequence's tokens fill (those of drafts it dropped), in every group. */
  freeBlocksPastEnd(seq: Sequence): void {
    const numNeeded = Math.ceil(seq.numTokens / this.blockSize);
    for (const table of seq.blockTables) {
      if (table.length > numNeeded) this.pool.free(table.splice(numNeeded).filter((id) => id !== this.nullBlock).reverse());
    }
  }

  /**
   * Releases all the sequence's blocks, tail first (each position's blocks of every group) so that
   * its tail is evicted first.
   */
  free(seq: Sequence): void {
    this.pool.free(this.heldTailFirst(seq.blockTables));
    seq.blockTables = [];
    if (seq.stateSlot >= 0) this.releaseStateSlot(seq.stateSlot);
    seq.stateSlot = -1;
    this.numRegisteredBlocks.delete(seq.id);
    this.latestDecodeCheckpoint.delete(seq.id);
    // A copy into a block that nobody holds any more would only race with the block's next owner.
    const orphaned = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) === 0);
    if (orphaned.length === 0) return;
    this.pendingCopies = this.pendingCopies.filter(({ dst }) => this.pool.refCount(dst) > 0);
    this.pool.free(orphaned.map(({ src }) => src));
  }

  /** The tables' blocks other than the null block, last position first. */
  private heldTailFirst(tables: readonly BlockId[][]): BlockId[] {
    const ids: BlockId[] = [];
    const length = Math.max(0, ...tables.map((table) => table.length));
    for (let i = length - 1; i >= 0; i--) {
      for (const table of tables) if (i < table.length && table[i] !== this.nullBlock) ids.push(table[i]);
    }
    return ids;
  }

  /**
   * Moves the K/V of the sequence's computed tokens, in every group, to host blocks and frees its
   * device blocks (as `free` does); the copies are recorded for `takeSwaps`. Returns false, doing
   * nothing, when the swap space lacks room. A block whose copy-on-write copy is still pending is
   * read from its source.
   */
  swapOut(seq: Sequence): boolean {
    if (this.swapPool === null) return false;
    const numComputedBlocks = Math.ceil(seq.numComputedTokens / this.blockSize);
    const computed = seq.blockTables.map((table) => table.slice(0, numComputedBlocks));
    const held = computed.flat().filter((id) => id !== this.nullBlock);
    if (held.length > this.swapPool.numFreeBlocks) return false;
    // A swap-out is queued before the step's host-tier loads, so it would read such a block unfilled.
    if (this.hostCache !== null && held.some((id) => this.hostCache!.isLoading(id))) return false;
    const hostBlocks = this.swapPool.allocate(held.length);
    let next = 0;
    const tables = computed.map((table) =>
      table.map((id) => {
        if (id === this.nullBlock) return null;
        const host = hostBlocks[next++];
        this.pendingSwapOuts.push({ src: this.pendingCopies.find(({ dst }) => dst === id)?.src ?? id, dst: host });
        return host;
      }),
    );
    this.free(seq);
    this.swappedTables.set(seq.id, tables);
    return true;
  }

  /**
   * Device blocks for a swapped-out sequence's K/V, copied back from its host blocks (recorded for
   * `takeSwaps`), which are freed. Returns false, doing nothing, unless the pool also keeps a block
   * in every group for the sequence's next token when that starts a new block.
   */
  swapIn(seq: Sequence): boolean {
    const tables = this.swappedTables.get(seq.id);
    if (tables === undefined) throw new Error(`sequence ${seq.id} is not swapped out`);
    const held = tables.flat().filter((id) => id !== null);
    const nextBlocks = Math.ceil(seq.numTokens / this.blockSize) > (tables[0]?.length ?? 0) ? tables.length : 0;
    if (held.length + nextBlocks > this.pool.numFreeBlocks) return false;
    const deviceBlocks = this.allocate(held.length);
    let next = 0;
    seq.blockTables = tables.map((table) =>
      table.map((host) => {
        if (host === null) return this.nullBlock;
        const device = deviceBlocks[next++];
        this.pendingSwapIns.push({ src: host, dst: device });
        return device;
      }),
    );
    // Offered to the prefix cache again under their new ids (a hash another block holds stays with it).
    this.numRegisteredBlocks.set(seq.id, 0);
    this.swappedTables.delete(seq.id);
    this.swapPool!.free(held);
    return true;
  }

  /** Frees a swapped-out sequence's host blocks (it ended while swapped out). */
  dropSwapped(seq: Sequence): void {
    const tables = this.swappedTables.get(seq.id);
    if (tables === undefined) throw new Error(`sequence ${seq.id} is not swapped out`);
    this.swappedTables.delete(seq.id);
    this.swapPool!.free(tables.flat().filter((id) => id !== null));
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

  /**
   * Gives `child` the parent's blocks of every group (shared, copy-on-write) and block hashes and,
   * where layers keep a state, a slot of its own that the parent's state is copied into before
   * the next forward (`takeStateCopies`). Returns false, giving nothing, when every state slot is
   * held: the child then recomputes its tokens, as a preempted sequence does.
   */
  fork(parent: Sequence, child: Sequence): boolean {
    if (this.stateSlots !== null) {
      if (parent.stateSlot < 0) throw new Error(`sequence ${parent.id} cannot fork: it holds no state slot`);
      const slot = this.stateSlots.take();
      if (slot === null) return false;
      child.stateSlot = slot;
      this.pendingStateCopies.push({ src: parent.stateSlot, dst: slot });
    }
    this.pool.touch(parent.blockTables.flat().filter((id) => id !== this.nullBlock));
    child.blockTables = parent.blockTables.map((table) => [...table]);
    child.blockHashes = [...parent.blockHashes];
    const numRegistered = this.numRegisteredBlocks.get(parent.id);
    if (numRegistered !== undefined) this.numRegisteredBlocks.set(child.id, numRegistered);
    return true;
  }

  /**
   * The state copies recorded since the last call (forks' children from their parents, snapshots
   * and rewinds around verifications, state checkpoints filled and restored). As with block
   * copies, a source slot released meanwhile is handed out again only now, so that no sequence
   * writes it before the copy has read it; likewise a checkpoint becomes readable, and evictable,
   * only now (`StateCheckpoints.settle`), so no list of copies both writes and reads a slot.
   */
  takeStateCopies(): BlockCopies {
    const copies = this.pendingStateCopies;
    this.pendingStateCopies = [];
    for (const slot of this.releasedCopySources) this.stateSlots!.release(slot);
    this.releasedCopySources = [];
    this.checkpoints?.settle();
    return blockCopies(copies);
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
   * Throws unless every block's reference count equals the number of `sequences` whose tables hold
   * it (plus pending copies reading it), every group's table of a sequence has one entry a block
   * of its tokens, and the pool is consistent. Pass every live sequence.
   */
  checkInvariants(sequences: Iterable<Sequence>): void {
    const holders = new Int32Array(this.pool.numBlocks);
    for (const seq of sequences) {
      if (seq.status === 'swapped') {
        if (!this.swappedTables.has(seq.id) || seq.numBlocks > 0) throw new Error(`swapped sequence ${seq.id} holds device blocks or no host blocks`);
        continue;
      }
      if (seq.blockTables.length > 0 && seq.blockTables.length !== this.groups.length) {
        throw new Error(`sequence ${seq.id} has ${seq.blockTables.length} block tables for ${this.groups.length} KV groups`);
      }
      const held = seq.blockTables.flat().filter((id) => id !== this.nullBlock);
      if (new Set(held).size !== held.length) throw new Error(`sequence ${seq.id} holds a block twice`);
      if (seq.numBlocks * this.blockSize < seq.numComputedTokens) {
        throw new Error(`sequence ${seq.id} has ${seq.numComputedTokens} computed tokens but only ${seq.numBlocks} blocks`);
      }
      if (seq.numBlocks > Math.ceil(seq.numTokens / this.blockSize)) {
        throw new Error(`sequence ${seq.id} holds ${seq.numBlocks} blocks, more than its ${seq.numTokens} tokens fill`);
      }
      seq.blockTables.forEach((table, g) => {
        if (table.length !== seq.numBlocks) throw new Error(`sequence ${seq.id}: group ${g}'s table has ${table.length} entries, group 0's ${seq.numBlocks}`);
        table.forEach((id, i) => {
          if (id === this.nullBlock) return;
          holders[id]++;
          const hash = this.pool.hashOf(id);
          if (hash !== undefined && i < seq.blockHashes.length && hash !== groupHash(g, seq.blockHashes[i])) {
            throw new Error(`sequence ${seq.id} group ${g} block ${i} (KV block ${id}) is cached with another prefix's or group's hash`);
          }
        });
      });
    }
    for (const { src } of this.pendingCopies) holders[src]++;
    for (let id = 0; id < this.pool.numBlocks; id++) {
      const refs = this.pool.refCount(id as BlockId);
      if (refs !== holders[id]) throw new Error(`KV block ${id} has ${refs} references but ${holders[id]} holders`);
    }
    this.pool.checkInvariants();
    this.hostCache?.checkInvariants();
    this.checkpoints?.checkInvariants();
    if (this.swapPool === null) return;
    const hostHolders = new Int32Array(this.swapPool.numBlocks);
    for (const tables of this.swappedTables.values()) for (const id of tables.flat()) if (id !== null) hostHolders[id]++;
    for (let id = 0; id < this.swapPool.numBlocks; id++) {
      const refs = this.swapPool.refCount(id as BlockId);
      if (refs !== hostHolders[id]) throw new Error(`host block ${id} has ${refs} references but ${hostHolders[id]} swapped sequences hold it`);
    }
    this.swapPool.checkInvariants();
  }

  /** Whether the table's blocks already cover [start, end), none of them held by another sequence. */
  private writesOwnBlocks(table: readonly BlockId[], start: number, end: number): boolean {
    return table.length * this.blockSize >= end && this.sharedBlocksWritten(table, start, end).length === 0;
  }

  /** Indices of the table's blocks in [start, end) that other sequences also hold. */
  private sharedBlocksWritten(table: readonly BlockId[], start: number, end: number): number[] {
    const indices: number[] = [];
    const last = Math.min(table.length, Math.ceil(end / this.blockSize));
    for (let i = Math.floor(start / this.blockSize); i < last; i++) {
      const id = table[i];
      if (id === this.nullBlock) continue;
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
