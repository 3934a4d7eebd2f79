import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Scheduler, type SchedulerOutput } from './scheduler.ts';
import { Sequence } from './sequence.ts';

// The scheduler with micro-batches in flight over pipeline stages (docs/parallelism.md): each
// schedule() forms one micro-batch from the sequences not in one already, a fair share of them,
// and a sequence in a micro-batch whose tokens are not read yet is neither scheduled nor preempted.

function setup(numBlocks: number, microBatches: number, maxNumBatchedTokens = 64, blockSize = 2) {
  const kv = new KvCacheManager(new BlockPool(numBlocks, false), { blockSize, enablePrefixCaching: false, groups: [null], nullBlock: numBlocks, swapPool: null });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens, blockSize, maxModelLen: numBlocks * blockSize, microBatches }, kv);
  const add = (name: string, numTokens: number) => {
    const seq = new Sequence(name, Array.from({ length: numTokens }, (_, i) => i));
    scheduler.add(seq);
    return seq;
  };
  /** schedule() and the launch's bookkeeping, as the engine does: the tokens are read later (`read`). */
  const launch = () => {
    const output = scheduler.schedule();
    scheduler.onStepComplete(output);
    return output;
  };
  /** The engine reads a micro-batch's tokens: each caught-up sequence takes one. */
  const read = (output: SchedulerOutput) => {
    scheduler.tokensRead(output);
    for (const { seq } of output.scheduled) if (seq.status === 'running' && seq.numComputedTokens === seq.numTokens) seq.appendToken(7);
  };
  const names = (output: SchedulerOutput) => output.scheduled.map(({ seq }) => seq.requestId).join(' ');
  return { kv, scheduler, add, launch, read, names };
}

test('two micro-batches split four sequences in halves, each scheduled again only once its tokens are read', () => {
  const { add, launch, read, names } = setup(32, 2);
  for (const name of ['A', 'B', 'C', 'D']) add(name, 3);
  const first = launch();
  const second = launch();
  assert.equal(names(first), 'A B');
  assert.equal(names(second), 'C D');
  assert.equal(names(launch()), '', 'every sequence is in a micro-batch in flight');
  read(first);
  const third = launch();
  assert.equal(names(third), 'A B');
  assert.deepEqual(third.scheduled.map((s) => s.numNewTokens), [1, 1]);
  read(second);
  assert.equal(names(launch()), 'C D');
});

test('fewer sequences than micro-batches: one sequence forms one micro-batch, and the next finds nothing free', () => {
  const { add, launch, read, names } = setup(32, 3);
  add('A', 3);
  const first = launch();
  assert.equal(names(first), 'A');
  assert.equal(names(launch()), '');
  read(first);
  assert.equal(names(launch()), 'A');
});

test('a sequence aborted while its micro-batch is in flight gives its blocks back at once', () => {
  const { kv, scheduler, add, launch, read, names } = setup(32, 2);
  const a = add('A', 3);
  add('B', 3);
  const first = launch();
  assert.equal(names(first), 'A');
  scheduler.finish(a);
  assert.equal(kv.numFreeBlocks, kv.numBlocks, 'its blocks are back before its micro-batch is read (B waits to be admitted)');
  // Its late tokens are read and dropped.
  read(first);
  assert.equal(names(launch()), 'B');
});

test('randomized: no sequence is scheduled or preempted while in a micro-batch in flight, and all finish with every block free', () => {
  const seed = Number(process.env.KEEL_SEED ?? 20261204);
  let state = seed;
  let preemptions = 0;
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let run = 0; run < 40; run++) {
    const microBatches = 2 + (run % 2);
    const { kv, scheduler, add, launch, read } = setup(10 + Math.floor(random() * 10), microBatches, 1 + Math.floor(random() * 12));
    const seqs = Array.from({ length: 2 + Math.floor(random() * 6) }, (_, i) => add(`S${i}`, 1 + Math.floor(random() * 6)));
    const outputs = new Map(seqs.map((seq) => [seq, 2 + Math.floor(random() * 6)]));
    const inFlight: SchedulerOutput[] = [];
    for (let steps = 0; scheduler.hasUnfinished(); steps++) {
      assert.ok(steps < 2000, `seed ${seed}, run ${run}: the sequences finish`);
      const busy = new Set(inFlight.flatMap((o) => o.scheduled.map((s) => s.seq)));
      const output = launch();
      for (const { seq } of output.scheduled) assert.ok(!busy.has(seq), `seed ${seed}, run ${run}: ${seq.requestId} scheduled while in flight`);
      for (const seq of output.preempted) assert.ok(!busy.has(seq), `seed ${seed}, run ${run}: ${seq.requestId} preempted while in flight`);
      preemptions += output.preempted.length;
      if (output.scheduled.length > 0) inFlight.push(output);
      // The engine reads the oldest micro-batch once microBatches − 1 remain, or when nothing was scheduled.
      while (inFlight.length > (output.scheduled.length > 0 ? microBatches - 1 : 0)) {
        const oldest = inFlight.shift()!;
        read(oldest);
        for (const { seq } of oldest.scheduled) if (seq.status === 'running' && seq.numOutputTokens >= outputs.get(seq)!) scheduler.finish(seq);
      }
      kv.checkInvariants(seqs.filter((seq) => seq.status !== 'finished'));
    }
    assert.equal(kv.numFreeBlocks, kv.numBlocks, `seed ${seed}, run ${run}: every block back`);
  }
  assert.ok(preemptions > 0, `seed ${seed}: the small pools preempted`);
});
