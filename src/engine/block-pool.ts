export type BlockId = number & { readonly __brand: 'BlockId' };

const NONE = -1;

/**
 * The free blocks in eviction order, front first, as a doubly linked list threaded through typed
 * arrays: O(1) append, pop and removal from the middle (a prefix-cache hit on a free block).
 */
class FreeBlockQueue {
  length = 0;
  private head = NONE;
  private tail = NONE;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly queued: Uint8Array;

  constructor(numBlocks: number) {
    this.prev = new Int32Array(numBlocks).fill(NONE);
    this.next = new Int32Array(numBlocks).fill(NONE);
    this.queued = new Uint8Array(numBlocks);
    for (let id = 0; id < numBlocks; id++) this.append(id as BlockId);
  }

  has(id: BlockId): boolean {
    return this.queued[id] === 1;
  }

  append(id: BlockId): void {
    this.prev[id] = this.tail;
    this.next[id] = NONE;
    if (this.tail === NONE) this.head = id;
    else this.next[this.tail] = id;
    this.tail = id;
    this.queued[id] = 1;
    this.length++;
  }

  popFront(): BlockId {
    const id = this.head as BlockId;
    this.remove(id);
    return id;
  }

  remove(id: BlockId): void {
    const before = this.prev[id];
    const after = this.next[id];
    if (before === NONE) this.head = after;
    else this.next[before] = after;
    if (after === NONE) this.tail = before;
    else this.prev[after] = before;
    this.prev[id] = NONE;
    this.next[id] = NONE;
    this.queued[id] = 0;
    this.length--;
  }

  /** The queued blocks front to back, checking that the links agree both ways. */
  walk(): BlockId[] {
    const ids: BlockId[] = [];
    let before = NONE;
    for (let id = this.head; id !== NONE; id = this.next[id]) {
      if (this.prev[id] !== before) throw new Error(`free queue: block ${id} links back to ${this.prev[id]}, not ${before}`);
      if (ids.length > this.length) throw new Error('free queue: the list is longer than its length (a cycle?)');
      ids.push(id as BlockId);
      before = id;
    }
    if (before !== this.tail) throw new Error(`free queue: walk ends at ${before} but the tail is ${this.tail}`);
    if (ids.length !== this.length) throw new Error(`free queue: ${ids.length} blocks linked but length is ${this.length}`);
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
  private readonly hashes: (string | undefined)[];
  private readonly freeQueue: FreeBlockQueue;
  /** Invariant: cachedBlocks.get(h) === b exactly when hashes[b] === h. */
  private readonly cachedBlocks = new Map<string, BlockId>();

  constructor(numBlocks: number, enableCaching: boolean) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new RangeError(`a block pool needs at least one block (got ${numBlocks})`);
    this.numBlocks = numBlocks;
    this.enableCaching = enableCaching;
    this.refCounts = new Int32Array(numBlocks);
    this.hashes = new Array<string | undefined>(numBlocks).fill(undefined);
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
    return this.hashes[id];
  }

  lookup(hash: string): BlockId | undefined {
    return this.cachedBlocks.get(hash);
  }

  /** Takes `count` blocks from the front of the free queue, evicting their cached content. */
  allocate(count: number): BlockId[] {
    if (count > this.freeQueue.length) {
      throw new Error(`cannot allocate ${count} KV blocks: only ${this.freeQueue.length} are free`);
    }
    const ids: BlockId[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.freeQueue.popFront();
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
    const current = this.hashes[id];
    if (current !== undefined) {
      if (current !== hash) throw new Error(`KV block ${id} is cached as ${current}, cannot re-cache it as ${hash}`);
      return;
    }
    if (this.cachedBlocks.has(hash)) return;
    this.hashes[id] = hash;
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
      const hash = this.hashes[id];
      if (hash !== undefined && this.cachedBlocks.get(hash) !== id) throw new Error(`block ${id} has hash ${hash} but the cache map disagrees`);
    }
    for (const [hash, id] of this.cachedBlocks) {
      if (this.hashes[id] !== hash) throw new Error(`cache map sends ${hash} to block ${id}, which holds ${this.hashes[id]}`);
    }
    if (!this.enableCaching && this.cachedBlocks.size > 0) throw new Error('a pool without caching has cached blocks');
  }

  private uncache(id: BlockId): void {
    const hash = this.hashes[id];
    if (hash === undefined) return;
    this.cachedBlocks.delete(hash);
    this.hashes[id] = undefined;
  }
}
