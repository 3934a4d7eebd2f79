import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import type { ServedLora } from './lora-registry.ts';
import { Scheduler } from './scheduler.ts';
import { Sequence } from './sequence.ts';

const adapter = (id: number): ServedLora => ({ id, name: `a${id}`, adapter: {} as LoraAdapter });

test('the scheduler keeps the running sequences to maxLoras adapters, letting base and running-adapter sequences past a waiting one', () => {
  const kv = new KvCacheManager(new BlockPool(64, false), { blockSize: 4, enablePrefixCaching: false, groups: [null], nullBlock: 64 });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: 4, maxModelLen: 64, maxLoras: 2 }, kv);
  const [a, b, c] = [adapter(1), adapter(2), adapter(3)];
  const seqs = { A1: a, B: b, C: c, A2: a, base: null } as const;
  const made = Object.fromEntries(Object.entries(seqs).map(([name, lora]) => [name, new Sequence(name, [1, 2, 3], 3, null, lora)]));
  for (const seq of Object.values(made)) scheduler.add(seq);
  const first = scheduler.schedule();
  assert.deepEqual(first.scheduled.map(({ seq }) => seq.requestId), ['A1', 'B', 'A2', 'base'], 'C waits: two adapters already run');
  scheduler.onStepComplete(first);
  scheduler.finish(made.B);
  for (const { seq } of first.scheduled) if (seq.status === 'running') seq.appendToken(7);
  const second = scheduler.schedule();
  assert.deepEqual(second.scheduled.map(({ seq }) => seq.requestId).sort(), ['A1', 'A2', 'C', 'base'], 'C runs once B has finished');
});

test('a sequence swapped back in holds its adapter: a waiting sequence of another adapter waits past maxLoras', () => {
  const kv = new KvCacheManager(new BlockPool(12, false), { blockSize: 4, enablePrefixCaching: false, groups: [null], nullBlock: 12, swapPool: new BlockPool(16, false) });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 8, blockSize: 4, maxModelLen: 64, maxLoras: 1 }, kv);
  const prompt = Array.from({ length: 20 }, (_, i) => i + 1);
  const base = new Sequence('base', prompt, prompt.length);
  const swapped = new Sequence('swapped', prompt, prompt.length, null, adapter(1));
  const other = new Sequence('other', [1, 2, 3], 3, null, adapter(2));
  scheduler.add(base);
  scheduler.add(swapped);
  const step = () => {
    const output = scheduler.schedule();
    scheduler.onStepComplete(output);
    for (const { seq } of output.scheduled) if (seq.status === 'running' && seq.numComputedTokens === seq.numTokens) seq.appendToken(7);
    return output.scheduled.map(({ seq }) => seq.requestId);
  };
  for (let i = 0; i < 100 && swapped.status !== 'swapped'; i++) step();
  assert.equal(swapped.status, 'swapped', 'the pool ran out and the younger, long sequence swapped out');
  scheduler.add(other);
  scheduler.finish(base);
  assert.deepEqual(step(), [], 'the swapped sequence comes back in, to run from the next step');
  assert.equal(swapped.status, 'running');
  assert.deepEqual(step(), ['swapped'], 'the other adapter still waits: the swapped-in sequence holds the one slot');
  scheduler.finish(swapped);
  assert.deepEqual(step(), ['other']);
});
