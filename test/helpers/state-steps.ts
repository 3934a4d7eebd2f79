import assert from 'node:assert/strict';
import type { Backend, StepInputs } from '../../src/backend/backend.ts';
import { describeBatch, type SequenceChunk } from '../../src/step/batch.ts';

// Steps for the state layers' op tests (causal conv, gated delta rule, selective scan): sequences
// in state slots of their own, blocks of 16 tokens.

/** One step: sequence s runs `lengths[s]` tokens from `starts[s]` in state slot `slots[s]`. */
export function stateStep(backend: Backend, starts: number[], lengths: number[], slots: number[]): StepInputs {
  const chunks: SequenceChunk[] = lengths.map((n, s) => ({
    tokens: new Array<number>(n).fill(3),
    startPos: starts[s],
    blockTables: [Array.from({ length: Math.ceil((starts[s] + n) / 16) }, (_, b) => s * 16 + b)],
    stateSlot: slots[s],
  }));
  return backend.beginStep(describeBatch(chunks, 16));
}

/** Every |actual − expected| within `tolerance` · max(1, |expected|). */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}
