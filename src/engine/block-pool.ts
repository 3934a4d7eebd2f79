export type BlockId = number & { readonly __brand: 'BlockId' };

/** Whole KV blocks copied src[i] -> dst[i] in every layer (between two pools, or within one). */
export interface BlockCopies {
  src: Int32Array;
  dst: Int32Array;
}

/** The pairs of a list of copies (of blocks, or of state slots) as the typed arrays backends take. */
export function blockCopies(list: readonly { src: number; dst: number }[]): BlockCopies {
  return { src: Int32Array.from(list, ({ src }) => src), dst: Int32Array.from(list, ({ dst }) => dst) };
}

/**
 * The free blocks in eviction order, front first: blocks never handed out yet, in id order, then
 * a doubly linked list threaded through typed arrays of those freed since (O(1) append, pop and
 * removal from the middle, for a prefix-cache hit on a free block). Links are stored as id + 1 so
 * that zeroed arrays mean "none": setting up a pool costs the same for any number of blocks.
 */
class FreeBlockQueue {
  private readonly numBlocks: number;
  /** Blocks from here on have never been handed out: they sit at the front, in id order. */
  private nextFresh = 0;
  private linkedLength = 0;
  private head = 0;
  private tail = 0;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly linked: Uint8Array;

  constructor(numBlocks: number) {
    this.numBlocks = numBlocks;
    this.prev = new Int32Array(numBlocks);
    this.next = new Int32Array(numBlocks);
    this.linked = new Uint8Array(numBlocks);
  }

  get length(): number {
    return this.numBlocks - this.nextFresh + this.linkedLength;
  }

  has(id: BlockId): boolean {
    return id >= this.nextFresh || this.linked[id] === 1;
  }

  append(id: BlockId): void {
    this.prev[id] = this.tail;
    this.next[id] = 0;
    if (this.tail === 0) this.head = id + 1;
    else this.next[this.tail - 1] = id + 1;
    this.tail = id + 1;
    this.linked[id] = 1;
    this.linkedLength++;
  }

  popFront(): BlockId {
    if (this.nextFresh < this.numBlocks) return this.nextFresh++ as BlockId;
    const id = (this.head - 1) as BlockId;
    this.remove(id);
    return id;
  }

  /** Takes a freed block out of the queue (never a fresh one: only cached blocks are revived). */
  remove(id: BlockId): void {
    if (this.linked[id] !== 1) throw new Error(`free queue: block ${id} is not among the freed blocks`);
    const before = this.prev[id];
    const after = this.next[id];
    if (before === 0) this.head = after;
    else this.next[before - 1] = after;
    if (after === 0) this.tail = before;
    else this.prev[after - 1] = before;
    this.prev[id] = 0;
    this.next[id] = 0;
    this.linked[id] = 0;
    this.linkedLength--;
  }

  /** The queued blocks front to back, checking that the links agree both ways. */
  walk(): BlockId[] {
    const ids: BlockId[] = [];
    for (let id = this.nextFresh; id < this.numBlocks; id++) ids.push(id as BlockId);
    let before = 0;
    let count = 0;
    for (let link = this.head; link !== 0; link = this.next[link - 1]) {
      const id = link - 1;
      if (this.prev[id] !== before) throw new Error(`free queue: block ${id} links back to ${this.prev[id] - 1}, not ${before - 1}`);
      if (++count > this.linkedLength) throw new Error('free queue: the list is longer than its length (a cycle?)');
      ids.push(id as BlockId);
      before = link;
    }
    if (before !== this.tail) throw new Error(`free queue: walk ends at ${before - 1} but the tail is ${this.tail - 1}`);
    if (count !== this.linkedLength) throw new Error(`free queue: ${count} blocks linked but length is ${this.linkedLength}`);
    return ids;
  }
}

/**
 * The KV blocks and who references them. A block with no references sits in the free queue; with
 * caching on it keeps the hash of its content there, so a later request with the same prefix can
 * take it back until allocation evicts it (least recently freed first).
 */
export class BlockPool {
  readonly numBlocks: number;
  readonly enableCaching: boolean;
  private readonly refCounts: Int32Array;
  /** Content hash of each cached block. */
  private readonly hashes = new Map<BlockId, string>();
  private readonly freeQueue: FreeBlockQueue;
  /** Invariant: cachedBlocks.get(h) === b exactly when hashes[b] === h. */
  private readonly cachedBlocks = new Map<string, BlockId>();

  constructor(numBlocks: number, enableCaching: boolean) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new RangeError(`a block pool needs at least one block (got ${numBlocks})`);
    this.numBlocks = numBlocks;
    this.enableCaching = enableCaching;
    this.refCounts = new Int32Array(numBlocks);
    this.freeQueue = new FreeBlockQueue(numBlocks);
  }

  /** Blocks nobody references, cached ones included: all of them can be allocated. */
  get numFreeBlocks(): number {
    return this.freeQueue.length;
  }

  /** Blocks whose content is registered under a prefix hash, referenced or not. */
  get numCachedBlocks(): number {
    return this.cachedBlocks.size;
  }

  refCount(id: BlockId): number {
    return this.refCounts[id];
  }

  hashOf(id: BlockId): string | undefined {
    return this.hashes.get(id);
  }

  lookup(hash: string): BlockId | undefined {
    return this.cachedBlocks.get(hash);
  }

  /**
   * Takes `count` blocks from the front of the free queue, evicting their cached content;
   * `onEvict` hears of each cached block evicted, before it is handed out.
   */
  allocate(count: number, onEvict?: (id: BlockId, hash: string) => void): BlockId[] {
    if (count > this.freeQueue.length) {
      throw new Error(`cannot allocate ${count} KV blocks: only ${this.freeQueue.length} are free`);
    }
    const ids: BlockId[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.freeQueue.popFront();
      const hash = this.hashes.get(id);
      if (hash !== undefined) onEvict?.(id, hash);
      this.uncache(id);
      this.refCounts[id] = 1;
      ids.push(id);
    }
    return ids;
  }

  /** Adds a reference to each block (a prefix-cache hit or a fork), reviving free ones. */
  touch(ids: readonly BlockId[]): void {
    for (const id of ids) {
      if (this.refCounts[id] === 0) this.freeQueue.remove(id);
      this.refCounts[id]++;
    }
  }

  /**
   * Drops a reference to each block; blocks left unreferenced join the back of the free queue in
   * the order given, so pass a sequence's blocks tail first to have its tail evicted first.
   */
  free(ids: readonly BlockId[]): void {
    for (const id of ids) {
      if (this.refCounts[id] === 0) throw new Error(`KV block ${id} freed more often than it was referenced`);
      if (--this.refCounts[id] === 0) this.freeQueue.append(id);
    }
  }

  /**
   * Registers a full block's content hash. A block already cached keeps its entry; a hash already
   * held by another block (two sequences computed the same prefix) leaves this one uncached.
   */
  cacheBlock(id: BlockId, hash: string): void {
    if (!this.enableCaching) return;
    const current = this.hashes.get(id);
    if (current !== undefined) {
      if (current !== hash) throw new Error(`KV block ${id} is cached as ${current}, cannot re-cache it as ${hash}`);
      return;
    }
    if (this.cachedBlocks.has(hash)) return;
    this.hashes.set(id, hash);
    this.cachedBlocks.set(hash, id);
  }

  /** Throws if the free queue, the reference counts and the cache map disagree. */
  checkInvariants(): void {
    for (const id of this.freeQueue.walk()) {
      if (this.refCounts[id] !== 0) throw new Error(`block ${id} is in the free queue with ${this.refCounts[id]} references`);
    }
    for (let i = 0; i < this.numBlocks; i++) {
      const id = i as BlockId;
      if (this.refCounts[id] < 0) throw new Error(`block ${id} has a negative reference count`);
      if ((this.refCounts[id] === 0) !== this.freeQueue.has(id)) {
        throw new Error(`block ${id} has ${this.refCounts[id]} references but is ${this.freeQueue.has(id) ? '' : 'not '}in the free queue`);
      }
      const hash = this.hashes.get(id);
      if (hash !== undefined && this.cachedBlocks.get(hash) !== id) throw new Error(`block ${id} has hash ${hash} but the cache map disagrees`);
    }
    for (const [hash, id] of this.cachedBlocks) {
      if (this.hashes.get(id) !== hash) throw new Error(`cache map sends ${hash} to block ${id}, which holds ${this.hashes.get(id)}`);
    }
    if (!this.enableCaching && this.cachedBlocks.size > 0) throw new Error('a pool without caching has cached blocks');
  }

  private uncache(id: BlockId): void {
    const hash = this.hashes.get(id);
    if (hash === undefined) return;
    this.cachedBlocks.delete(hash);
    this.hashes.delete(id);
  }
}
