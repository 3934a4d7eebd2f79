import { keepsSequenceState, type LayerKvSpec } from '../step/kv-cache-layout.ts';

/**
 * The state slots a cache of `layers` holds on the device, on every rank alike: none without
 * state layers, else one for each of `maxNumSeqs` sequences that may run at once, with speculative
 * decoding as many again, where each keeps its state from before a verification
 * (`snapshotSlot`), and one past them that no sequence owns, where graph steps' padding rows keep
 * their state (as they write to the scratch block).
 */
export function stateSlotsOnDevice(layers: readonly LayerKvSpec[], config: { maxNumSeqs: number; speculative: object | null }): number {
  return keepsSequenceState(layers) ? (config.speculative === null ? 1 : 2) * config.maxNumSeqs + 1 : 0;
}

/** Where slot `slot`'s state is kept across a verification: the slot as many places on as there are sequence slots. */
export function snapshotSlot(slot: number, numSlots: number): number {
  return numSlots + slot;
}

/**
 * The per-sequence state slots of a model whose layers keep a fixed state per sequence (Gated
 * DeltaNet: `SequenceStateSpec`): `numSlots` of them (max-num-seqs), one per running sequence, from
 * its first step until it finishes or is preempted. Free slots are handed out lowest first.
 */
export class StateSlotPool {
  readonly numSlots: number;
  private readonly free: number[];

  constructor(numSlots: number) {
    this.numSlots = numSlots;
    this.free = Array.from({ length: numSlots }, (_, i) => numSlots - 1 - i);
  }

  get numFree(): number {
    return this.free.length;
  }

  /** A free slot, or null when every slot is held. */
  take(): number | null {
    return this.free.pop() ?? null;
  }

  release(slot: number): void {
    if (!(Number.isInteger(slot) && slot >= 0 && slot < this.numSlots) || this.free.includes(slot)) throw new Error(`state slot ${slot} is not held`);
    this.free.push(slot);
  }
}
