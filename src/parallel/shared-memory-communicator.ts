import type { Communicator } from './communicator.ts';
import { throwIfFailed, type FailureBoard } from './failure-board.ts';

/**
 * The shared memory of one group of ranks running in worker threads of one process: a slot of
 * `capacity` floats per rank, a barrier, and a mailbox flag per ordered pair of ranks. Plain data,
 * so it crosses threads in workerData.
 */
export interface SharedMemoryGroup {
  readonly size: number;
  readonly capacity: number;
  readonly words: SharedArrayBuffer;
  readonly slots: SharedArrayBuffer;
}

/** Floats per rank's slot: larger transfers go through in chunks. */
export const DEFAULT_SLOT_FLOATS = 1 << 18;

const COUNT = 0;
const GENERATION = 1;
const MAILBOXES = 2;
/** Waits wake at least this often to look at the failure board. */
const WAIT_SLICE_MS = 50;

export function createSharedMemoryGroup(size: number, capacity = DEFAULT_SLOT_FLOATS): SharedMemoryGroup {
  if (!(Number.isInteger(size) && size >= 1)) throw new Error(`a group has a positive whole number of ranks (got ${size})`);
  return {
    size,
    capacity,
    words: new SharedArrayBuffer(4 * (MAILBOXES + size * size)),
    slots: new SharedArrayBuffer(4 * size * capacity),
  };
}

/**
 * The CPU backend's communicator: ranks are worker threads sharing `group`'s memory. Each
 * collective copies this rank's part into its slot, meets the others at a barrier, reads, and
 * meets them again before any slot is reused. A reduction adds the ranks' values in rank order,
 * in float64 rounded once to float32, on every rank alike: every rank gets the same bits, and they
 * differ from one device's single sum only by the order of float additions (docs/parallelism.md
 * gives the tolerance). Waits block the thread (Atomics.wait), waking to check `failures`: a rank
 * that died makes every wait throw, naming it, instead of hanging.
 */
export class SharedMemoryCommunicator implements Communicator<Float32Array> {
  readonly rank: number;
  readonly size: number;
  private readonly capacity: number;
  private readonly words: Int32Array;
  private readonly slots: Float32Array[];
  private readonly failures: FailureBoard;

  constructor(group: SharedMemoryGroup, rank: number, failures: FailureBoard) {
    if (!(Number.isInteger(rank) && rank >= 0 && rank < group.size)) throw new Error(`rank ${rank} is outside a group of ${group.size}`);
    this.rank = rank;
    this.size = group.size;
    this.capacity = group.capacity;
    this.words = new Int32Array(group.words);
    this.slots = Array.from({ length: group.size }, (_, r) => new Float32Array(group.slots, 4 * r * group.capacity, group.capacity));
    this.failures = failures;
  }

  allReduceSum(buf: Float32Array, count: number): void {
    if (this.size === 1) return;
    this.chunked(count, 1, (start, n) => {
      this.slots[this.rank].set(buf.subarray(start, start + n));
      this.barrier();
      for (let i = 0; i < n; i++) {
        let sum = 0;
        for (let r = 0; r < this.size; r++) sum += this.slots[r][i];
        buf[start + i] = sum;
      }
      this.barrier();
    });
  }

  allGather(send: Float32Array, recv: Float32Array, count: number): void {
    this.chunked(count, 1, (start, n) => {
      this.slots[this.rank].set(send.subarray(start, start + n));
      this.barrier();
      for (let r = 0; r < this.size; r++) recv.set(this.slots[r].subarray(0, n), r * count + start);
      this.barrier();
    });
  }

  allToAll(send: Float32Array, recv: Float32Array, count: number): void {
    this.chunked(count, this.size, (start, n) => {
      for (let r = 0; r < this.size; r++) this.slots[this.rank].set(send.subarray(r * count + start, r * count + start + n), r * n);
      this.barrier();
      for (let r = 0; r < this.size; r++) recv.set(this.slots[r].subarray(this.rank * n, (this.rank + 1) * n), r * count + start);
      this.barrier();
    });
  }

  broadcast(buf: Float32Array, count: number, root: number): void {
    this.checkPeer(root);
    this.chunked(count, 1, (start, n) => {
      if (this.rank === root) this.slots[root].set(buf.subarray(start, start + n));
      this.barrier();
      if (this.rank !== root) buf.set(this.slots[root].subarray(0, n), start);
      this.barrier();
    });
  }

  /** Returns once the peer has read the data (a rendezvous), so the slot is free again. */
  send(buf: Float32Array, count: number, peer: number): void {
    this.checkPeer(peer);
    const flag = MAILBOXES + this.rank * this.size + peer;
    this.chunked(count, 1, (start, n) => {
      this.slots[this.rank].set(buf.subarray(start, start + n));
      Atomics.store(this.words, flag, 1);
      Atomics.notify(this.words, flag);
      this.waitWhile(flag, 1);
    });
  }

  recv(buf: Float32Array, count: number, peer: number): void {
    this.checkPeer(peer);
    const flag = MAILBOXES + peer * this.size + this.rank;
    this.chunked(count, 1, (start, n) => {
      this.waitWhile(flag, 0);
      buf.set(this.slots[peer].subarray(0, n), start);
      Atomics.store(this.words, flag, 0);
      Atomics.notify(this.words, flag);
    });
  }

  /** A generation barrier: the last rank to arrive resets the count and moves the generation on. */
  barrier(): void {
    if (this.size === 1) return;
    const generation = Atomics.load(this.words, GENERATION);
    if (Atomics.add(this.words, COUNT, 1) === this.size - 1) {
      Atomics.store(this.words, COUNT, 0);
      Atomics.add(this.words, GENERATION, 1);
      Atomics.notify(this.words, GENERATION);
      return;
    }
    this.waitWhile(GENERATION, generation);
  }

  destroy(): void {}

  /** Blocks while words[index] holds `value`, throwing the run's failure if one is reported meanwhile. */
  private waitWhile(index: number, value: number): void {
    while (Atomics.load(this.words, index) === value) {
      throwIfFailed(this.failures);
      Atomics.wait(this.words, index, value, WAIT_SLICE_MS);
    }
  }

  /** Runs `body(start, n)` over chunks of `count` elements, `parts` of which must fit one slot together. */
  private chunked(count: number, parts: number, body: (start: number, n: number) => void): void {
    throwIfFailed(this.failures);
    const chunk = Math.floor(this.capacity / parts);
    for (let start = 0; start < count; start += chunk) body(start, Math.min(chunk, count - start));
  }

  private checkPeer(peer: number): void {
    if (!(Number.isInteger(peer) && peer >= 0 && peer < this.size)) throw new Error(`rank ${peer} is outside a group of ${this.size}`);
  }
}
