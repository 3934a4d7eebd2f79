import { keepsSequenceState, type LayerKvSpec } from '../step/kv-cache-layout.ts';

/** What the engine's config says about state slots. */
export interface StateSlotConfig {
  maxNumSeqs: number;
  speculative: object | null;
  enablePrefixCaching: boolean;
  numStateCheckpoints: number;
}

/**
 * The state slots a cache of `layers` holds on the device, on every rank alike, in this order:
 * none without state layers, else one for each of `maxNumSeqs` sequences that may run at once;
 * with speculative decoding as many again, where each keeps its state from before a verification
 * (`snapshotSlot`); with prefix caching `numStateCheckpoints` prefix-cache checkpoints
 * (`StateCheckpoints`); then one that no sequence owns, where graph steps' padding rows keep their
 * state (as they write to the scratch block).
 */
export function stateSlotLayout(layers: readonly LayerKvSpec[], config: StateSlotConfig): { sequences: number; firstCheckpoint: number; checkpoints: number; scratch: number | null; total: number } {
  if (!keepsSequenceState(layers)) return { sequences: 0, firstCheckpoint: 0, checkpoints: 0, scratch: null, total: 0 };
  const firstCheckpoint = (config.speculative === null ? 1 : 2) * config.maxNumSeqs;
  const checkpoints = config.enablePrefixCaching ? config.numStateCheckpoints : 0;
  const scratch = firstCheckpoint + checkpoints;
  return { sequences: config.maxNumSeqs, firstCheckpoint, checkpoints, scratch, total: scratch + 1 };
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
