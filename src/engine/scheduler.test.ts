import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Scheduler, type SchedulerOutput } from './scheduler.ts';
import { Sequence } from './sequence.ts';

interface Setup {
  numBlocks: number;
  maxNumBatchedTokens: number;
  maxNumSeqs?: number;
  blockSize?: number;
  maxModelLen?: number;
  caching?: boolean;
  /** Host blocks for swapping out (none: preemption recomputes). */
  swapBlocks?: number;
}

/** A scheduler with named sequences, driven the way the engine drives it. */
class Harness {
  readonly kv: KvCacheManager;
  readonly scheduler: Scheduler;
  private readonly names = new Map<Sequence, string>();

  constructor({ numBlocks, maxNumBatchedTokens, maxNumSeqs = 8, blockSize = 2, maxModelLen, caching = false, swapBlocks = 0 }: Setup) {
    const swapPool = swapBlocks > 0 ? new BlockPool(swapBlocks, false) : null;
    this.kv = new KvCacheManager(new BlockPool(numBlocks, caching), { blockSize, enablePrefixCaching: caching, groups: [null], nullBlock: numBlocks, swapPool });
    this.scheduler = new Scheduler({ maxNumSeqs, maxNumBatchedTokens, blockSize, maxModelLen: maxModelLen ?? numBlocks * blockSize }, this.kv);
  }

  add(name: string, numPromptTokens: number, firstToken = 0): Sequence {
    const seq = new Sequence(name, Array.from({ length: numPromptTokens }, (_, i) => firstToken + i));
    this.scheduler.add(seq);
    this.names.set(seq, name);
    return seq;
  }

  fork(parent: Sequence, name: string): Sequence {
    const child = parent.fork();
    this.scheduler.addForked(parent, child);
    this.names.set(child, name);
    return child;
  }

  /**
   * One engine step: schedule, "run", then give every caught-up sequence a sampled token (or let
   * `onCaughtUp` decide). Returns the output and a summary like "A:1 B:7 | preempted C".
   */
  step(onCaughtUp: (seq: Sequence) => void = (seq) => seq.appendToken(1000 + seq.numOutputTokens)): { output: SchedulerOutput; summary: string } {
    const output = this.scheduler.schedule();
    this.scheduler.onStepComplete(output);
    for (const { seq } of output.scheduled) if (seq.status === 'running' && seq.numComputedTokens === seq.numTokens) onCaughtUp(seq);
    return { output, summary: this.summarize(output) };
  }

  summarize(output: SchedulerOutput): string {
    const scheduled = output.scheduled.map(({ seq, numNewTokens }) => `${this.names.get(seq)}:${numNewTokens}`).join(' ');
    const preempted = output.preempted.map((seq) => `${this.names.get(seq)}${seq.status === 'swapped' ? ' (swapped)' : ''}`).join(' ');
    return preempted === '' ? scheduled : `${scheduled} | preempted ${preempted}`;
  }

  assertAllFree(): void {
    assert.equal(this.scheduler.hasUnfinished(), false);
    assert.equal(this.kv.numFreeBlocks, this.kv.numBlocks);
    this.kv.checkInvariants([]);
  }
}

test('prefills are chunked to the token budget', () => {
  for (const budget of [1, 7, 64]) {
    const h = new Harness({ numBlocks: 64, maxNumBatchedTokens: budget, blockSize: 4 });
    const seq = h.add('A', 100);
    const chunks: number[] = [];
    while (seq.numOutputTokens === 0) {
      const { output } = h.step();
      assert.ok(output.numScheduledTokens <= budget);
      chunks.push(output.scheduled[0].numNewTokens);
    }
    const expected = Array.from({ length: Math.ceil(100 / budget) }, (_, i) => Math.min(budget, 100 - i * budget));
    assert.deepEqual(chunks, expected, `budget ${budget}`);
    assert.equal(h.step().summary, 'A:1');
  }
});

test('prefill chunks of several sequences share the budget first come, first served', () => {
  const h = new Harness({ numBlocks: 16, maxNumBatchedTokens: 7 });
  h.add('A', 10);
  h.add('B', 10);
  assert.equal(h.step().summary, 'A:7');
  assert.equal(h.step().summary, 'A:3 B:4');
  assert.equal(h.step().summary, 'A:1 B:6');
  assert.equal(h.step().summary, 'A:1 B:1');
});

test('decodes are scheduled before the prefill chunks of older sequences', () => {
  // P is preempted by the tiny pool and A forks C while P waits, so once P is readmitted it is
  // older than C but still prefilling.
  const h = new Harness({ numBlocks: 7, maxNumBatchedTokens: 3 });
  const a = h.add('A', 2);
  const p = h.add('P', 10);
  const summaries = [h.step().summary, h.step().summary, h.step().summary, h.step().summary];
  assert.deepEqual(summaries, ['A:2 P:1', 'A:1 P:2', 'A:1 P:2', 'A:1 P:2']);
  let c: Sequence | undefined;
  const forkA = (seq: Sequence) => {
    c = h.fork(seq, 'C');
    c.appendToken(7);
    seq.appendToken(1);
  };
  assert.equal(h.step(forkA).summary, 'A:1 | preempted P');
  assert.equal(h.step().summary, 'A:1 C:1 P:1');
  assert.ok(p.arrivalOrder < c!.arrivalOrder);
  // Oldest first would have given P two tokens and left C out.
  assert.equal(h.step().summary, 'A:1 C:1 P:1');
  // P needs a block: C, the youngest, is preempted although already scheduled, and its token
  // goes back to the budget.
  const { output, summary } = h.step();
  assert.equal(summary, 'A:1 P:2 | preempted C');
  assert.equal(output.numScheduledTokens, 3);
  assert.equal(c!.status, 'waiting');
  assert.equal(c!.numBlocks, 0);
  h.kv.checkInvariants([a, p]);
});

test('schedules at most maxNumSeqs sequences per step', () => {
  const h = new Harness({ numBlocks: 32, maxNumBatchedTokens: 64, maxNumSeqs: 2 });
  const seqs = ['A', 'B', 'C', 'D'].map((name) => h.add(name, 3));
  assert.equal(h.step().summary, 'A:3 B:3');
  assert.equal(h.step().summary, 'A:1 B:1');
  assert.deepEqual(h.scheduler.counts(), { running: 2, waiting: 2, swapped: 0 });
  h.scheduler.finish(seqs[0]);
  assert.equal(h.step().summary, 'B:1 C:3');
});

test('preempts the youngest running sequence when the pool runs out, and it completes later', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16, caching: true });
  const a = h.add('A', 4);
  const b = h.add('B', 4, 100);
  assert.equal(h.step().summary, 'A:4 B:4');
  const bTokens = [...b.tokenIds];

  const { output, summary } = h.step();
  assert.equal(summary, 'A:1 | preempted B');
  assert.deepEqual(output.preempted, [b]);
  assert.equal(b.status, 'waiting');
  assert.equal(b.numComputedTokens, 0);
  assert.equal(b.numPreemptions, 1);
  assert.equal(b.numBlocks, 0);
  assert.deepEqual(b.tokenIds, bTokens);
  assert.deepEqual(h.scheduler.counts(), { running: 1, waiting: 1, swapped: 0 });

  // B needs 3 blocks for its 5 tokens; A holds 3 of the 4 until it finishes.
  assert.equal(h.step().summary, 'A:1');
  h.scheduler.finish(a);
  const resumed = h.step();
  assert.equal(resumed.output.scheduled[0].seq, b);
  assert.equal(resumed.output.scheduled[0].numCachedTokens! + resumed.output.scheduled[0].numNewTokens, 5);
  assert.equal(b.numCachedTokens, 0, 'prefix hits are reported for the first admission only');
  assert.equal(h.step().summary, 'B:1');
  assert.deepEqual(b.tokenIds.slice(0, 5), bTokens);
  assert.equal(b.numOutputTokens, 3);
  h.scheduler.finish(b);
  h.assertAllFree();
});

test('a sequence that is itself the youngest preempts itself and the others go on', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16 });
  const a = h.add('A', 3);
  const b = h.add('B', 4);
  assert.equal(h.step().summary, 'A:3 B:4');
  // A's next token fits in its last block; B's needs a fifth block.
  assert.equal(h.step().summary, 'A:1 | preempted B');
  assert.equal(b.status, 'waiting');
  assert.equal(a.numComputedTokens, 4);
  h.kv.checkInvariants([a]);
});

test('a waiting sequence that cannot get its blocks holds back those behind it', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16 });
  h.add('A', 4);
  h.add('B', 6);
  h.add('C', 1);
  assert.equal(h.step().summary, 'A:4');
  assert.deepEqual(h.scheduler.counts(), { running: 1, waiting: 2, swapped: 0 });
});

test('reports prefix-cache hits of newly admitted sequences', () => {
  const h = new Harness({ numBlocks: 16, maxNumBatchedTokens: 64, blockSize: 4, caching: true });
  const a = h.add('A', 10);
  h.step();
  h.scheduler.finish(a);
  const b = h.add('B', 12);
  const { output, summary } = h.step();
  assert.equal(summary, 'B:4');
  assert.equal(output.scheduled[0].numCachedTokens, 8);
  assert.equal(b.numCachedTokens, 8);
  assert.equal(b.numComputedTokens, 12);
});

test('finishing works in every state and returns the blocks at once', () => {
  const h = new Harness({ numBlocks: 6, maxNumBatchedTokens: 4 });
  const waiting = h.add('W', 3);
  h.scheduler.finish(waiting);
  assert.equal(waiting.status, 'finished');
  assert.equal(h.scheduler.hasUnfinished(), false);

  const prefilling = h.add('P', 6);
  const decoding = h.add('D', 2);
  assert.equal(h.step().summary, 'P:4');
  assert.equal(h.step().summary, 'P:2 D:2');
  h.scheduler.finish(prefilling);
  assert.equal(h.kv.numFreeBlocks, 5);
  h.kv.checkInvariants([decoding]);

  // Finished while its step runs: the step's completion skips it.
  const output = h.scheduler.schedule();
  assert.equal(output.scheduled[0].seq, decoding);
  h.scheduler.finish(decoding);
  h.scheduler.onStepComplete(output);
  assert.equal(decoding.numComputedTokens, 2);
  h.assertAllFree();

  h.scheduler.finish(decoding);
  assert.equal(decoding.status, 'finished');
  h.assertAllFree();
});

test('finishing a preempted sequence removes it from the waiting queue', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16 });
  const a = h.add('A', 4);
  const b = h.add('B', 4);
  h.step();
  assert.equal(h.step().summary, 'A:1 | preempted B');
  h.scheduler.finish(b);
  assert.deepEqual(h.scheduler.counts(), { running: 1, waiting: 0, swapped: 0 });
  h.scheduler.finish(a);
  h.assertAllFree();
});

test('rejects prompts that can never be scheduled', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16, maxModelLen: 6 });
  assert.throws(
    () => h.add('long', 7),
    (e: unknown) => e instanceof KeelError && e.kind === 'context_overflow' && /7 tokens, more than maxModelLen \(6\)/.test(e.message),
  );
  const small = new Harness({ numBlocks: 2, maxNumBatchedTokens: 16, maxModelLen: 100 });
  assert.throws(
    () => small.add('big', 5),
    (e: unknown) => e instanceof KeelError && e.kind === 'context_overflow' && /needs 3 KV blocks of 2, but the KV cache has only 2 blocks \(4 tokens\)/.test(e.message),
  );
  assert.throws(() => h.add('empty', 0), (e: unknown) => e instanceof KeelError && e.kind === 'invalid_argument');
  assert.equal(h.scheduler.hasUnfinished(), false);
});

test('a forked sequence is added once', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16 });
  const a = h.add('A', 3);
  h.step((seq) => {
    const child = seq.fork();
    h.scheduler.addForked(seq, child);
    assert.throws(() => h.scheduler.addForked(seq, child), /already added/);
  });
  assert.equal(a.numComputedTokens, 3);
});

test('a running sequence left without a new token is an engine bug, reported loudly', () => {
  const h = new Harness({ numBlocks: 4, maxNumBatchedTokens: 16 });
  h.add('A', 3);
  h.step(() => {});
  assert.throws(() => h.scheduler.schedule(), /no token to compute/);
});

test('with a swap space, a preempted context longer than the step budget is swapped out, back in when there is room, and runs from the step after', () => {
  const h = new Harness({ numBlocks: 7, maxNumBatchedTokens: 4, blockSize: 2, swapBlocks: 8 });
  const a = h.add('A', 4);
  const b = h.add('B', 7);
  const c = h.add('C', 2);
  const log: string[] = [];
  for (let i = 0; i < 10; i++) {
    const { output, summary } = h.step();
    log.push(`${summary}${output.swapOut.src.length > 0 ? ` | ${output.swapOut.src.length} blocks out` : ''}${output.swapIn.src.length > 0 ? ` | ${output.swapIn.src.length} blocks in` : ''}`);
    h.kv.checkInvariants([a, b, c].filter((seq) => seq.status !== 'finished'));
    if (a.numOutputTokens >= 6 && a.status === 'running') h.scheduler.finish(a);
  }
  assert.deepEqual(log, [
    'A:4',
    'A:1 B:3',
    'A:1 B:3',
    // B has 6 tokens computed, more than the 4-token budget recomputes in one step: its 3 blocks go to host memory.
    'A:1 | preempted B (swapped) | 3 blocks out',
    'A:1',
    'A:1',
    // A ended: B comes back before C is admitted, and decodes from the next step on, its K/V intact.
    'C:2 | 3 blocks in',
    'B:1 C:1',
    'B:1 C:1',
    // C's 3 computed tokens re-prefill within one step: recomputed.
    'B:1 | preempted C',
  ]);
  assert.equal(b.numSwaps, 1);
  assert.equal(c.numSwaps, 0);
  assert.equal(h.kv.numFreeSwapBlocks, 8);
});
