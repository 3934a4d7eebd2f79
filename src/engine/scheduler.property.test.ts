import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { forkStream, type Rng } from '../sampling/rng.ts';
import { BlockPool, type BlockCopies, type BlockId } from './block-pool.ts';
import { HostPrefixCache } from './host-prefix-cache.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Scheduler, type SchedulerOutput } from './scheduler.ts';
import { Sequence } from './sequence.ts';
import { StateCheckpoints } from './state-checkpoints.ts';

const NUM_SEEDS = 8;
const NUM_OPERATIONS = 500;
const MAX_LIVE_SEQUENCES = 12;
const MAX_DRAIN_STEPS = 20_000;

class Draws {
  private readonly rng: Rng;

  constructor(seed: number) {
    this.rng = forkStream(seed, 0);
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rng.nextFloat() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.rng.nextFloat() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  tokens(count: number): number[] {
    return Array.from({ length: count }, () => this.int(0, 50));
  }
}

/**
 * What a real KV cache would hold at each position: a value that depends on the token there and
 * on every token before it, as K/V do. A stale block, a wrong prefix-cache hit or a missing
 * copy-on-write shows up as a mismatch.
 */
function kvFingerprints(tokens: readonly number[], count: number): number[] {
  const out: number[] = [];
  let h = 0x811c9dc5;
  for (let i = 0; i < count; i++) {
    h = Math.imul(h ^ (tokens[i] + 1), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    out.push(h | 0);
  }
  return out;
}

interface Coverage {
  steps: number;
  preemptions: number;
  copies: number;
  cachedTokens: number;
  forks: number;
  rejected: number;
  /** Drafts run (speculative decoding), and of those, drafts rejected by the simulated verification. */
  drafts: number;
  rejectedDrafts: number;
  /** Preemptions that swapped out, and swap-ins. */
  swapOuts: number;
  swapIns: number;
  /** Blocks stored into the prefix cache's host tier, and loaded back from it. */
  hostStores: number;
  hostLoads: number;
  /** A model keeping a state per sequence: states copied into checkpoints, and restored from them for prefix hits. */
  stateCheckpoints: number;
  stateRestores: number;
}

/** What a sequence's state slot holds after its first `count` tokens ('' for none): like a Gated DeltaNet state, it depends on every one of them. */
function stateFingerprint(tokens: readonly number[], count: number): string {
  return count === 0 ? '' : `${count}:${kvFingerprints(tokens, count)[count - 1]}`;
}

const NO_COVERAGE: Coverage = { steps: 0, preemptions: 0, copies: 0, cachedTokens: 0, forks: 0, rejected: 0, drafts: 0, rejectedDrafts: 0, swapOuts: 0, swapIns: 0, hostStores: 0, hostLoads: 0, stateCheckpoints: 0, stateRestores: 0 };

/**
 * Random arrivals, steps, forks and aborts against a tiny pool, checking everything after each
 * step; `stateful`: the model keeps a state per sequence, which each step checks and advances.
 */
function runRandomSchedule(seed: number, options: { stateful: boolean } = { stateful: false }): Coverage {
  const draw = new Draws(seed);
  const blockSize = draw.int(1, 4);
  const numBlocks = draw.int(2, 16);
  const maxModelLen = draw.int(2, numBlocks * blockSize);
  const maxNumSeqs = draw.int(1, 6);
  const maxNumBatchedTokens = draw.int(1, 24);
  const caching = draw.chance(0.75);
  // A model keeping a state per sequence (Gated DeltaNet) takes no swaps, host tier nor drafts here.
  const stateful = options.stateful;
  const numSwapBlocks = !stateful && draw.chance(0.5) ? draw.int(1, 2 * numBlocks) : 0;
  const numHostCacheBlocks = !stateful && caching && draw.chance(0.5) ? draw.int(1, 3 * numBlocks) : 0;
  const numCheckpoints = stateful && caching ? draw.int(1, 4) : 0;
  const where =
    `seed ${seed} (blockSize ${blockSize}, ${numBlocks} blocks, ${numSwapBlocks} swap blocks, ${numHostCacheBlocks} host cache blocks, ` +
    `maxModelLen ${maxModelLen}, maxNumSeqs ${maxNumSeqs}, budget ${maxNumBatchedTokens}, caching ${caching}, ` +
    `${stateful ? `state slots, ${numCheckpoints} state checkpoints` : 'no state'})`;

  const swapPool = numSwapBlocks > 0 ? new BlockPool(numSwapBlocks, false) : null;
  const hostCache = numHostCacheBlocks > 0 ? new HostPrefixCache(numHostCacheBlocks) : null;
  const kv = new KvCacheManager(new BlockPool(numBlocks, caching), {
    blockSize,
    enablePrefixCaching: caching,
    groups: [null],
    nullBlock: numBlocks,
    swapPool,
    hostCache,
    stateSlots: stateful ? maxNumSeqs : 0,
    stateCheckpoints: numCheckpoints > 0 ? new StateCheckpoints(maxNumSeqs, numCheckpoints) : null,
  });
  /** Each state slot's content: the sequences' slots, then the checkpoints'. */
  const states = new Array<string>(maxNumSeqs + numCheckpoints).fill('');
  const scheduler = new Scheduler({ maxNumSeqs, maxNumBatchedTokens, blockSize, maxModelLen }, kv);
  const slots = new Int32Array(numBlocks * blockSize).fill(-1);
  const hostSlots = new Int32Array(numSwapBlocks * blockSize).fill(-1);
  const hostCacheSlots = new Int32Array(numHostCacheBlocks * blockSize).fill(-1);
  const live = new Set<Sequence>();
  /** The length at which each sequence ends, as max_tokens would end it. */
  const targetLength = new Map<Sequence, number>();
  const prefixes = [draw.tokens(maxModelLen), draw.tokens(maxModelLen), draw.tokens(maxModelLen)];
  const coverage: Coverage = { ...NO_COVERAGE };

  const slotOf = (seq: Sequence, pos: number) => seq.blockTables[0][Math.floor(pos / blockSize)] * blockSize + (pos % blockSize);
  const end = (seq: Sequence) => {
    scheduler.finish(seq);
    live.delete(seq);
  };

  function arrive(): void {
    const length = draw.int(1, maxModelLen + 1);
    const shared = draw.int(0, Math.min(length, maxModelLen));
    const prompt = [...draw.pick(prefixes).slice(0, shared), ...draw.tokens(length - shared)];
    const seq = new Sequence(`r${seed}-${coverage.steps}`, prompt);
    if (length > maxModelLen) {
      assert.throws(() => scheduler.add(seq), (e: unknown) => e instanceof KeelError && e.kind === 'context_overflow', where);
      coverage.rejected++;
      return;
    }
    scheduler.add(seq);
    live.add(seq);
    targetLength.set(seq, draw.int(length + 1, Math.max(length + 1, maxModelLen)));
  }

  /**
   * Speculative decoding's part before a step: some decoding sequences get drafts, no more than
   * their length allows (a step gives one token more than its drafts).
   */
  function propose(): void {
    if (stateful) return;
    for (const seq of live) {
      const decoding = seq.status === 'running' && seq.numTokens - seq.numComputedTokens === 1;
      const room = targetLength.get(seq)! - seq.numTokens - 1;
      if (decoding && room > 0 && draw.chance(0.5)) seq.appendDraftTokens(draw.tokens(draw.int(1, Math.min(room, 5))));
    }
  }

  /** The engine's verification once a step ran: each sequence keeps a random prefix of its drafts. */
  function verify(output: SchedulerOutput): void {
    for (const { seq } of output.scheduled) {
      if (seq.status !== 'running' || seq.numDraftTokens === 0) continue;
      const accepted = draw.int(0, seq.numDraftTokens);
      coverage.drafts += seq.numDraftTokens;
      coverage.rejectedDrafts += seq.numDraftTokens - accepted;
      seq.dropDraftTokens(accepted);
    }
  }

  /** The engine's part after a step: sample for caught-up sequences (after their accepted drafts), fork some, stop some. */
  function sample(seq: Sequence, allowFork: boolean): void {
    while (seq.numDraftTokens > 0) seq.appendToken(seq.draftTokenId(0));
    if (allowFork && live.size < MAX_LIVE_SEQUENCES && draw.chance(0.15)) {
      const child = seq.fork();
      scheduler.addForked(seq, child);
      live.add(child);
      targetLength.set(child, targetLength.get(seq)!);
      coverage.forks++;
      sample(child, false);
    }
    seq.appendToken(draw.int(0, 50));
    if (seq.numTokens >= targetLength.get(seq)! || draw.chance(0.05)) end(seq);
  }

  function checkOutput(output: SchedulerOutput): void {
    const total = output.scheduled.reduce((n, { numNewTokens }) => n + numNewTokens, 0);
    assert.equal(output.numScheduledTokens, total, where);
    assert.ok(total <= maxNumBatchedTokens, `${where}: ${total} tokens over the budget`);
    assert.ok(output.scheduled.length <= maxNumSeqs, `${where}: too many sequences`);
    assert.equal(new Set(output.scheduled.map(({ seq }) => seq)).size, output.scheduled.length, `${where}: a sequence scheduled twice`);
    for (const { seq, numNewTokens } of output.scheduled) {
      assert.equal(seq.status, 'running', where);
      assert.ok(numNewTokens >= 1 && seq.numComputedTokens + numNewTokens <= seq.numTokens, `${where}: bad token count`);
      assert.ok(seq.blockTables[0].length * blockSize >= seq.numComputedTokens + numNewTokens, `${where}: block table too short`);
    }
    for (const seq of output.preempted) {
      assert.ok(seq.status === 'waiting' || (seq.status === 'swapped' && numSwapBlocks > 0), `${where}: a preempted sequence is ${seq.status}`);
      assert.equal(seq.numBlocks, 0, where);
      if (seq.status === 'swapped') assert.ok(seq.numComputedTokens > maxNumBatchedTokens, `${where}: a context recomputed in one step was swapped`);
      assert.ok(!output.scheduled.some((entry) => entry.seq === seq), `${where}: a preempted sequence is scheduled`);
    }
    const { src, dst } = output.blockCopies;
    const dsts = new Set(dst);
    assert.equal(dsts.size, dst.length, `${where}: two copies into one block`);
    assert.ok(!src.some((id) => dsts.has(id)), `${where}: a block is both a copy source and destination`);
    const stateDsts = new Set(output.stateCopies.dst);
    assert.equal(stateDsts.size, output.stateCopies.dst.length, `${where}: two copies into one state slot`);
    assert.ok(!output.stateCopies.src.some((slot) => stateDsts.has(slot)), `${where}: a state slot is both a copy source and destination`);
  }

  /**
   * The worker: swaps out, host-tier stores and loads, swaps in (block by block, in order, as the
   * transfer stream runs them), copies (all read before any write, as one kernel would), then the
   * forward's writes.
   */
  function execute(output: SchedulerOutput): void {
    const move = (from: Int32Array, to: Int32Array, pairs: BlockCopies) =>
      pairs.src.forEach((block, i) => to.set(from.slice(block * blockSize, (block + 1) * blockSize), pairs.dst[i] * blockSize));
    move(slots, hostSlots, output.swapOut);
    move(slots, hostCacheSlots, output.hostCache.store);
    move(hostCacheSlots, slots, output.hostCache.load);
    move(hostSlots, slots, output.swapIn);
    const { src, dst } = output.blockCopies;
    const rows = Array.from(src, (id) => slots.slice(id * blockSize, (id + 1) * blockSize));
    rows.forEach((row, i) => slots.set(row, dst[i] * blockSize));
    const copied = Array.from(output.stateCopies.src, (slot) => states[slot]);
    copied.forEach((state, i) => (states[output.stateCopies.dst[i]] = state));

    const holders = new Map<BlockId, number>();
    for (const seq of live) for (const id of seq.blockTables.flat()) holders.set(id, (holders.get(id) ?? 0) + 1);
    for (const { seq, numNewTokens } of output.scheduled) {
      const end = seq.numComputedTokens + numNewTokens;
      const expected = kvFingerprints(seq.tokenIds, end);
      for (let pos = 0; pos < seq.numComputedTokens; pos++) {
        assert.equal(slots[slotOf(seq, pos)], expected[pos], `${where}: sequence ${seq.id} reads wrong K/V at position ${pos}`);
      }
      for (let pos = seq.numComputedTokens; pos < end; pos++) {
        const block = seq.blockTables[0][Math.floor(pos / blockSize)];
        assert.equal(holders.get(block), 1, `${where}: sequence ${seq.id} writes into shared block ${block}`);
        slots[slotOf(seq, pos)] = expected[pos];
      }
      if (!stateful) continue;
      // A chunk at position 0 starts from zeros; any other continues the state of the tokens before it.
      if (seq.numComputedTokens > 0) assert.equal(states[seq.stateSlot], stateFingerprint(seq.tokenIds, seq.numComputedTokens), `${where}: sequence ${seq.id} reads a wrong state`);
      states[seq.stateSlot] = stateFingerprint(seq.tokenIds, end);
    }
  }

  function step(allowForks: boolean): void {
    propose();
    const output = scheduler.schedule();
    // Drafts are proposed for one step.
    for (const seq of live) if (!output.scheduled.some((entry) => entry.seq === seq)) seq.dropDraftTokens(0);
    coverage.steps++;
    coverage.preemptions += output.preempted.length;
    coverage.copies += output.blockCopies.src.length;
    coverage.swapOuts += output.preempted.filter((seq) => seq.status === 'swapped').length;
    coverage.swapIns += output.swapIn.src.length;
    coverage.hostStores += output.hostCache.store.src.length;
    coverage.hostLoads += output.hostCache.load.src.length;
    for (const [i, slot] of output.stateCopies.src.entries()) {
      if (slot >= maxNumSeqs) coverage.stateRestores++;
      else if (output.stateCopies.dst[i] >= maxNumSeqs) coverage.stateCheckpoints++;
    }
    for (const { numCachedTokens } of output.scheduled) coverage.cachedTokens += numCachedTokens ?? 0;
    checkOutput(output);
    execute(output);
    // An abort that lands while the forward runs.
    if (live.size > 0 && draw.chance(0.05)) end(draw.pick([...live]));
    verify(output);
    scheduler.onStepComplete(output);
    for (const { seq } of output.scheduled) {
      if (seq.status === 'running' && seq.numComputedTokens === seq.numTokens) sample(seq, allowForks);
    }
    for (const seq of live) if (seq.status === 'waiting') assert.equal(seq.numBlocks, 0, where);
    kv.checkInvariants(live);
  }

  for (let op = 0; op < NUM_OPERATIONS; op++) {
    const r = draw.int(0, 99);
    if (r < 25 && live.size < MAX_LIVE_SEQUENCES) arrive();
    else if (r < 30 && live.size > 0) end(draw.pick([...live]));
    else step(true);
  }
  for (let drained = 0; scheduler.hasUnfinished(); drained++) {
    assert.ok(drained < MAX_DRAIN_STEPS, `${where}: no progress after ${MAX_DRAIN_STEPS} steps`);
    step(false);
  }
  assert.equal(live.size, 0, where);
  assert.equal(kv.numFreeBlocks, numBlocks, `${where}: blocks leaked`);
  assert.equal(kv.numFreeSwapBlocks, numSwapBlocks, `${where}: host blocks leaked`);
  assert.equal(kv.numFreeStateSlots, kv.numStateSlots, `${where}: state slots leaked`);
  kv.checkInvariants([]);
  return coverage;
}

test('random schedules, with drafts accepted and rejected and sequences swapped out and in, keep the KV cache consistent and finish everything', () => {
  const fromEnv = process.env.KEEL_TEST_SEED;
  const base = fromEnv === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(fromEnv);
  console.log(`scheduler property test: seeds ${base}..${base + NUM_SEEDS - 1} (replay with KEEL_TEST_SEED=${base})`);
  const total: Coverage = { ...NO_COVERAGE };
  for (let i = 0; i < NUM_SEEDS; i++) {
    const coverage = runRandomSchedule(base + i);
    for (const key of Object.keys(total) as (keyof Coverage)[]) total[key] += coverage[key];
  }
  console.log(`scheduler property test: ${JSON.stringify(total)}`);
  assert.ok(total.steps > NUM_SEEDS, 'the runs took steps');
  assert.ok(total.rejectedDrafts > 0 && total.rejectedDrafts < total.drafts, 'drafts were both accepted and rejected');
});

test('random schedules swap sequences out and back in with their K/V intact', () => {
  const fromEnv = process.env.KEEL_TEST_SEED;
  const base = fromEnv === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(fromEnv);
  console.log(`scheduler swap test: seeds from ${base} (replay with KEEL_TEST_SEED=${base})`);
  let swapIns = 0;
  for (let seed = base; seed < base + 200 && swapIns < 20; seed++) swapIns += runRandomSchedule(seed).swapIns;
  assert.ok(swapIns >= 20, `random schedules swapped only ${swapIns} blocks back in`);
});

test('random schedules store evicted blocks in the host tier and load them back with their K/V intact', () => {
  const fromEnv = process.env.KEEL_TEST_SEED;
  const base = fromEnv === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(fromEnv);
  console.log(`scheduler host-tier test: seeds from ${base} (replay with KEEL_TEST_SEED=${base})`);
  let hostLoads = 0;
  for (let seed = base; seed < base + 200 && hostLoads < 20; seed++) hostLoads += runRandomSchedule(seed).hostLoads;
  assert.ok(hostLoads >= 20, `random schedules loaded only ${hostLoads} blocks from the host tier`);
});

test('random schedules of a model keeping a state per sequence keep states at block boundaries and restore exactly the state after a prefix hit', () => {
  const fromEnv = process.env.KEEL_TEST_SEED;
  const base = fromEnv === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(fromEnv);
  console.log(`scheduler state-checkpoint test: seeds from ${base} (replay with KEEL_TEST_SEED=${base})`);
  let restores = 0;
  for (let seed = base; seed < base + 200 && restores < 20; seed++) restores += runRandomSchedule(seed, { stateful: true }).stateRestores;
  assert.ok(restores >= 20, `random schedules restored only ${restores} states from checkpoints`);
});
