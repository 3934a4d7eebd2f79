import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { Linear } from '../layers/linear.ts';
import type { ServedLora } from './lora-registry.ts';
import { LoraSlots } from './lora-slots.ts';

/** A linear that records which adapter each slot was given. */
class RecordingLinear extends Linear {
  readonly given: [number, string][] = [];

  override setLoraSlot(_b: unknown, slot: number, adapter: LoraAdapter): void {
    this.given.push([slot, adapter.path]);
  }
}

const served = (id: number): ServedLora => ({ id, name: `a${id}`, adapter: { path: `p${id}`, rank: 1, scale: 1, modules: new Map() } });

test('adapters keep their slot while they run; a new one takes a free slot, else the least recently used one not in the step', () => {
  const linear = new RecordingLinear({ parts: [{ name: 'x.weight', rows: 8 }], inFeatures: 8, bias: false, shard: 'column' });
  const slots = new LoraSlots(new CpuBackend(), [linear], 2);
  const [a, b, c] = [served(1), served(2), served(3)];
  assert.deepEqual(slots.assign([a, a]), new Map([[1, 0]]));
  assert.deepEqual(slots.assign([b]), new Map([[2, 1]]));
  assert.deepEqual(slots.assign([a, b]), new Map([[1, 0], [2, 1]]), 'both stay where they are');
  assert.deepEqual(slots.assign([b]), new Map([[2, 1]]));
  assert.deepEqual(slots.assign([c, b]), new Map([[3, 0], [2, 1]]), 'c evicts a, the least recently used');
  assert.deepEqual(linear.given, [[0, 'p1'], [1, 'p2'], [0, 'p3']], 'only missing adapters were uploaded');
  assert.throws(() => slots.assign([a, b, c]), /3 LoRA adapters exceeds the 2 slots/);
});
