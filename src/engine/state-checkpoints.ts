/** One kept state: its device slot, when it was last used, and what the copies not yet run do with it. */
interface Checkpoint {
  slot: number;
  lastUse: number;
  /** Its slot's fill (a copy from the sequence's slot) is recorded but not yet taken: unreadable. */
  filling: boolean;
  /** A pending copy reads it (a prefix hit restoring it): its slot must not be refilled before then. */
  read: boolean;
}

/**
 * The prefix cache's states of a model whose layers keep a state per sequence (Gated DeltaNet):
 * a bounded set of device state slots, each holding the state a sequence had right after one full
 * block, keyed by that block's prefix hash (the chain hash: equal keys mean equal prefixes, so
 * equal states). A cached block run is a hit for such a model only up to its last block with a
 * checkpoint. Least recently used first out; a sequence's earlier checkpoints past its prompt are
 * demoted to go first (`demote`). A checkpoint whose fill or read is still pending is neither
 * readable (filling) nor evictable until the step's copies are taken (`settle`), so no copy list
 * ever writes a slot it also reads.
 */
export class StateCheckpoints {
  readonly numSlots: number;
  private readonly free: number[];
  private readonly byHash = new Map<string, Checkpoint>();
  private clock = 0;

  /** `numSlots` device state slots from `firstSlot` on. */
  constructor(firstSlot: number, numSlots: number) {
    if (!(Number.isInteger(numSlots) && numSlots > 0)) throw new RangeError(`state checkpoints need at least one slot (got ${numSlots})`);
    this.numSlots = numSlots;
    this.free = Array.from({ length: numSlots }, (_, i) => firstSlot + numSlots - 1 - i);
  }

  /** Checkpoints held (filled or filling). */
  get size(): number {
    return this.byHash.size;
  }

  /** The slot of the readable checkpoint after the block of prefix hash `hash`, if any. */
  lookup(hash: string): number | undefined {
    const checkpoint = this.byHash.get(hash);
    return checkpoint === undefined || checkpoint.filling ? undefined : checkpoint.slot;
  }

  /** Whether a checkpoint (readable or filling) is kept for `hash`. */
  has(hash: string): boolean {
    return this.byHash.has(hash);
  }

  /** Marks the checkpoint of `hash` used now and read by a pending copy; returns its slot. */
  read(hash: string): number {
    const checkpoint = this.byHash.get(hash);
    if (checkpoint === undefined || checkpoint.filling) throw new Error(`no readable state checkpoint for block ${hash}`);
    checkpoint.read = true;
    checkpoint.lastUse = ++this.clock;
    return checkpoint.slot;
  }

  /**
   * A slot for a new checkpoint of `hash`, to be filled by a pending copy: a free one, else the
   * least recently used evictable checkpoint's; null when every slot is pending.
   */
  add(hash: string): number | null {
    if (this.byHash.has(hash)) throw new Error(`block ${hash} already has a state checkpoint`);
    let slot = this.free.pop();
    if (slot === undefined) {
      let victim: [string, Checkpoint] | undefined;
      for (const entry of this.byHash) {
        const c = entry[1];
        if (!c.filling && !c.read && (victim === undefined || c.lastUse < victim[1].lastUse)) victim = entry;
      }
      if (victim === undefined) return null;
      this.byHash.delete(victim[0]);
      slot = victim[1].slot;
    }
    this.byHash.set(hash, { slot, lastUse: ++this.clock, filling: true, read: false });
    return slot;
  }

  /** Puts the checkpoint of `hash` (if still kept) first in line for eviction. */
  demote(hash: string): void {
    const checkpoint = this.byHash.get(hash);
    if (checkpoint !== undefined) checkpoint.lastUse = -1;
  }

  /** The step's copies were taken: every fill has run before any later read, and reads are done. */
  settle(): void {
    for (const checkpoint of this.byHash.values()) {
      checkpoint.filling = false;
      checkpoint.read = false;
    }
  }

  /** Throws unless every slot is either free or held by exactly one checkpoint. */
  checkInvariants(): void {
    const held = [...this.byHash.values()].map((c) => c.slot);
    const all = [...held, ...this.free];
    if (all.length !== this.numSlots || new Set(all).size !== this.numSlots) {
      throw new Error(`state checkpoints: ${held.length} held and ${this.free.length} free slots do not make the ${this.numSlots} slots once each`);
    }
  }
}
