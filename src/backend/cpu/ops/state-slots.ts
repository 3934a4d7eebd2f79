import type { BatchDescription } from '../../../step/batch.ts';

/**
 * A state layer's slots on the CPU (`SequenceStateSpec`: Gated DeltaNet, Mamba-2): `state` is
 * [stateSlots, convElements + recurrentElements] float32, each slot its conv state then its
 * recurrent state.
 */
export interface LayerStateSlots {
  state: Float32Array;
  convElements: number;
  recurrentElements: number;
}

/** Sequence s of the step: its tokens, its slot, and whether its chunk starts the sequence (from a zero state). */
export interface SequenceRun {
  first: number;
  end: number;
  slot: number;
  fresh: boolean;
}

export function slotStride(slots: LayerStateSlots): number {
  return slots.convElements + slots.recurrentElements;
}

/** The step's sequences with their slots, each checked to be one of the layer's. */
export function sequenceRuns(batch: BatchDescription, op: string, slots: LayerStateSlots): SequenceRun[] {
  const stateSlots = batch.stateSlots;
  if (stateSlots === null) throw new Error(`${op}: the step has no state slots (BatchDescription.stateSlots), which a state layer reads`);
  const numSlots = slots.state.length / slotStride(slots);
  return Array.from({ length: batch.numSeqs }, (_, s) => {
    const first = batch.queryStartLoc[s];
    const end = batch.queryStartLoc[s + 1];
    const slot = stateSlots[s];
    if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`${op}: sequence ${s}'s state slot ${slot} is outside [0, ${numSlots})`);
    return { first, end, slot, fresh: batch.seqLens[s] === end - first };
  });
}

/** A sequence's recurrent state in its slot (after the conv state), zeroed for a chunk that starts the sequence. */
export function recurrentState(slots: LayerStateSlots, run: SequenceRun): Float32Array {
  const stride = slotStride(slots);
  const recurrent = slots.state.subarray(run.slot * stride + slots.convElements, (run.slot + 1) * stride);
  if (run.fresh) recurrent.fill(0);
  return recurrent;
}

/** torch.nn.functional.softplus (beta 1, threshold 20). */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}
