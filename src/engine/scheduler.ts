import { KeelError } from '../errors.ts';
import type { BlockCopies } from './block-pool.ts';
import type { HostCacheTransfers } from './host-prefix-cache.ts';
import { NO_COMPUTED_BLOCKS, type KvCacheManager } from './kv-cache-manager.ts';
import type { Sequence } from './sequence.ts';

export interface SchedulerConfig {
  /** Most sequences in one step. */
  maxNumSeqs: number;
  /** Token budget of one step: decodes plus prefill chunks. */
  maxNumBatchedTokens: number;
  /** Tokens per KV block; must match the KV-cache manager's. */
  blockSize: number;
  /** Longest sequence (prompt + output). */
  maxModelLen: number;
  /** Most distinct LoRA adapters among the running sequences (the device's adapter slots); absent without LoRA. */
  maxLoras?: number;
  /**
   * Micro-batches in flight at once over pipeline stages (absent: 1). With more than one, a
   * scheduled sequence is busy until the engine has read its micro-batch's tokens
   * (`tokensRead`), and each step takes its fair share of the live sequences from the free ones.
   */
  microBatches?: number;
}

export interface ScheduledSequence {
  seq: Sequence;
  /** Tokens run this step: seq.tokenIds[numComputedTokens .. numComputedTokens + numNewTokens). */
  numNewTokens: number;
  /** Set when the sequence was admitted this step: prompt tokens served from the prefix cache. */
  numCachedTokens?: number;
  /** Of numCachedTokens, those loaded from the prefix cache's host tier. */
  numHostCachedTokens?: number;
}

/** One step's decision: plain data for the model runner. */
export interface SchedulerOutput {
  /** Decodes first, then prefill chunks. */
  scheduled: ScheduledSequence[];
  /** Preempted this step: sent back to waiting to be recomputed, or swapped out (status `swapped`). */
  preempted: Sequence[];
  /** Run before the forward: copy-on-write of blocks shared with a forked sibling. */
  blockCopies: BlockCopies;
  /** Run before the forward: a forked sequence's state slot filled from its parent's (state layers). */
  stateCopies: BlockCopies;
  /**
   * Run first, in this order: device blocks -> host blocks of the sequences swapped out this step,
   * then host -> device blocks of those swapped in, which run from the next step on.
   */
  swapOut: BlockCopies;
  swapIn: BlockCopies;
  /**
   * Run after the swap-outs, before the forward: device blocks evicted from the prefix cache ->
   * its host tier, then host-tier hits -> the device blocks this step's sequences read them from.
   */
  hostCache: HostCacheTransfers;
  numScheduledTokens: number;
}

interface StepPlan {
  scheduled: ScheduledSequence[];
  preempted: Sequence[];
  budget: number;
  /** Most sequences this step: maxNumSeqs, or a micro-batch's share. */
  maxSeqs: number;
}

/**
 * Continuous batching with chunked prefill. Each step spends a token budget on decodes, then on
 * chunks of unfinished prefills, then on swapping sequences back in, then on admitting waiting
 * sequences first-come first-served. When the KV pool runs out, the youngest running sequence is
 * preempted: its blocks are freed and it waits at the front of the queue to be recomputed, or,
 * with a swap space and a context longer than one step's token budget (its recompute would take
 * more than one step's prefill), its K/V are swapped out to host memory and back in once the pool
 * has room. A sequence swapped in runs from the next step, so the copies overlap this step.
 *
 * Each step: `schedule()`, run the model, `onStepComplete(output)`, then the engine appends a
 * sampled token to every sequence it caught up (numComputedTokens === numTokens) or finishes it.
 * A decoding sequence may carry drafts (speculative decoding): it runs its last sampled token and
 * its drafts as one chunk, and drafts that do not fit the budget or the pool are dropped first.
 *
 * With micro-batches in flight over pipeline stages (docs/parallelism.md), each `schedule()` forms
 * one micro-batch from the sequences not in one already (a sequence's next step needs the token
 * its micro-batch samples), at most ⌈live sequences / micro-batches⌉ of them so that the
 * micro-batches in flight share the sequences evenly; a busy sequence is never preempted, since its
 * micro-batch still writes its blocks.
 */
export class Scheduler {
  /** Oldest first. */
  private readonly running: Sequence[] = [];
  /** Admission order; preempted sequences re-enter at the front. */
  private readonly waiting: Sequence[] = [];
  /** Swapped out to host memory, oldest first; they come back before any waiting sequence is admitted. */
  private readonly swapped: Sequence[] = [];
  /** Swapped in by the last step: running from this one, when their blocks have arrived. */
  private arriving: Sequence[] = [];
  /** Scheduled in a micro-batch whose tokens the engine has not read yet (only with several micro-batches). */
  private readonly busy = new Set<Sequence>();

  private readonly config: SchedulerConfig;
  private readonly kv: KvCacheManager;

  constructor(config: SchedulerConfig, kv: KvCacheManager) {
    if (config.blockSize !== kv.blockSize) {
      throw new Error(`scheduler block size ${config.blockSize} differs from the KV-cache manager's ${kv.blockSize}`);
    }
    this.config = config;
    this.kv = kv;
  }

  /** Sequences swapped in but not yet running count as running: they hold their blocks. */
  counts(): { running: number; waiting: number; swapped: number } {
    return { running: this.running.length + this.arriving.length, waiting: this.waiting.length, swapped: this.swapped.length };
  }

  /** The LoRA adapters (by name, each once) of the running sequences, and of the waiting ones. */
  loraAdapters(): { running: string[]; waiting: string[] } {
    const names = (seqs: Sequence[]) => [...new Set(seqs.flatMap((seq) => (seq.lora === null ? [] : [seq.lora.name])))];
    return { running: names([...this.running, ...this.arriving]), waiting: names(this.waiting) };
  }

  hasUnfinished(): boolean {
    const { running, waiting, swapped } = this.counts();
    return running + waiting + swapped > 0;
  }

  /** Queues a new sequence; rejects a prompt that could never be scheduled. */
  add(seq: Sequence): void {
    if (seq.status !== 'waiting' || seq.numBlocks > 0 || this.waiting.includes(seq)) {
      throw new Error(`sequence ${seq.id} was already added`);
    }
    if (seq.numTokens === 0) throw new KeelError('invalid_argument', `request ${seq.requestId} has an empty prompt`);
    if (seq.numTokens > this.config.maxModelLen) {
      throw new KeelError(
        'context_overflow',
        `request ${seq.requestId}: the prompt has ${seq.numTokens} tokens, more than maxModelLen (${this.config.maxModelLen})`,
      );
    }
    const { blockSize } = this.config;
    const numBlocks = this.kv.blocksHeldAtOnce(seq.numTokens, this.config.maxNumBatchedTokens);
    if (numBlocks > this.kv.numBlocks) {
      throw new KeelError(
        'context_overflow',
        `request ${seq.requestId}: the prompt has ${seq.numTokens} tokens and needs ${numBlocks} KV blocks of ${blockSize}, ` +
          `but the KV cache has only ${this.kv.numBlocks} blocks (${this.kv.numBlocks * blockSize} tokens)`,
      );
    }
    this.waiting.push(seq);
  }

  /**
   * Adds `child`, forked from the running `parent` (Sequence.fork): it shares the parent's blocks
   * (KvCacheManager.fork) and runs as the youngest sequence; or, where layers keep a state and no
   * slot is free for its copy, it waits first in line to recompute its tokens.
   */
  addForked(parent: Sequence, child: Sequence): void {
    if (child.status !== 'waiting' || this.running.includes(child) || this.waiting.includes(child)) throw new Error(`sequence ${child.id} was already added`);
    if (this.kv.fork(parent, child)) {
      child.status = 'running';
      this.insertRunning(child);
    } else {
      child.numComputedTokens = 0;
      this.waiting.unshift(child);
    }
  }

  /**
   * Ends a sequence in any state (stopped, hit its length, or aborted) and returns its blocks to
   * the pool at once. Ending a finished sequence does nothing.
   */
  finish(seq: Sequence): void {
    if (seq.status === 'finished') return;
    const queue = [this.running, this.arriving, this.waiting, this.swapped].find((q) => q.includes(seq));
    if (queue === undefined) throw new Error(`sequence ${seq.id} is not known to this scheduler`);
    queue.splice(queue.indexOf(seq), 1);
    // An aborted sequence's micro-batch runs on: its writes land in blocks no later micro-batch reads before writing.
    this.busy.delete(seq);
    if (seq.status === 'swapped') this.kv.dropSwapped(seq);
    else this.kv.free(seq);
    seq.status = 'finished';
  }

  schedule(): SchedulerOutput {
    for (const seq of this.arriving) this.insertRunning(seq);
    this.arriving = [];
    const plan: StepPlan = { scheduled: [], preempted: [], budget: this.config.maxNumBatchedTokens, maxSeqs: this.maxSeqsThisStep() };
    // A sequence with drafts decodes too: its last sampled token and the drafts after it run as one chunk.
    const isDecoding = (seq: Sequence) => seq.numTokens - seq.numDraftTokens - seq.numComputedTokens === 1;
    const decoding = this.running.filter(isDecoding);
    const prefilling = this.running.filter((seq) => !isDecoding(seq));
    for (const seq of [...decoding, ...prefilling]) {
      if (!this.hasRoom(plan)) break;
      // Preempted earlier in this step to make room for an older sequence, or in a micro-batch in flight.
      if (seq.status !== 'running' || this.busy.has(seq)) continue;
      if (seq.parked && seq.numComputedTokens === seq.numTokens) continue;
      // A verification chunk must reach the sequence's end, so drafts beyond the budget are dropped.
      if (seq.numDraftTokens > 0) seq.dropDraftTokens(Math.min(seq.numDraftTokens, plan.budget - 1));
      const numNewTokens = this.allocateOrPreempt(seq, this.chunkLength(seq, seq.numComputedTokens, plan.budget), plan);
      if (numNewTokens > 0) {
        // Drafts run through a sequence's state (Gated DeltaNet): keep it as it is before them.
        if (seq.numDraftTokens > 0 && seq.stateSlot >= 0) this.kv.snapshotState(seq);
        plan.scheduled.push({ seq, numNewTokens });
        plan.budget -= numNewTokens;
      }
    }
    // Admitting while preempting would only trade one recompute (or swap) for another.
    if (plan.preempted.length === 0) this.admit(plan);
    // Parked beams wait for sibling beams that may need their blocks: when nothing else runs, they
    // give them up, youngest first, to be recomputed (their candidates are kept).
    // Sequences in micro-batches in flight give their blocks back soon enough.
    const blocked = () =>
      plan.scheduled.length === 0 && this.arriving.length === 0 && this.busy.size === 0 && (this.swapped.length > 0 || this.waiting.some((seq) => !seq.parked));
    for (let parked = this.youngestParked(); parked !== undefined && blocked(); parked = this.youngestParked()) {
      this.preempt(parked, plan);
      this.admit(plan);
    }
    if ((this.config.microBatches ?? 1) > 1) for (const { seq } of plan.scheduled) this.busy.add(seq);
    const swaps = this.kv.takeSwaps();
    return {
      scheduled: plan.scheduled,
      preempted: plan.preempted,
      blockCopies: this.kv.takePendingCopies(),
      stateCopies: this.kv.takeStateCopies(),
      swapOut: swaps.out,
      swapIn: swaps.in,
      hostCache: this.kv.takeHostCacheTransfers(),
      numScheduledTokens: this.config.maxNumBatchedTokens - plan.budget,
    };
  }

  /**
   * Advances the scheduled sequences past the tokens the step computed and caches full blocks.
   * Drafts that the step's verification rejected have already left their sequences (the engine
   * drops them first, so that no block holding one is ever cached): their K/V lie past the
   * sequence's end and do not count, and the blocks that held only them are freed.
   */
  onStepComplete(output: SchedulerOutput): void {
    for (const { seq, numNewTokens } of output.scheduled) {
      // Finished (aborted) while the step ran: its blocks are already back in the pool.
      if (seq.status !== 'running') continue;
      if (seq.rewindsState) {
        seq.rewindsState = false;
        this.kv.rewindState(seq);
      } else {
        seq.numComputedTokens = Math.min(seq.numComputedTokens + numNewTokens, seq.numTokens);
        this.kv.checkpointState(seq);
      }
      this.kv.cacheFullBlocks(seq);
      this.kv.freeBlocksPastEnd(seq);
    }
  }

  /** The engine has read the tokens of `output`'s micro-batch: its sequences may be scheduled again. */
  tokensRead(output: SchedulerOutput): void {
    for (const { seq } of output.scheduled) this.busy.delete(seq);
  }

  /**
   * maxNumSeqs, or with several micro-batches in flight ⌈live / micro-batches⌉ of the live
   * sequences (running, or waiting to be admitted): the first steps would otherwise admit every
   * waiting sequence into one micro-batch and leave the others nothing to run.
   */
  private maxSeqsThisStep(): number {
    const microBatches = this.config.microBatches ?? 1;
    if (microBatches === 1) return this.config.maxNumSeqs;
    const live = this.running.length + this.waiting.filter((seq) => !seq.parked).length;
    return Math.min(this.config.maxNumSeqs, Math.max(1, Math.ceil(live / microBatches)));
  }

  /**
   * How many of the sequence's tokens from `start` on its next step runs: as many as the budget
   * allows, but where the KV-cache manager keeps states at block boundaries (`keepsStateCheckpoints`),
   * a prefill chunk ends at the last block boundary it passes, and the last one at the last
   * boundary before the sequence's last token, so that a state is kept there for prefix hits (a
   * hit always leaves the last token to compute: the same prompt again hits that boundary); the
   * rest runs in the next step. Decodes and verifications (drafts) run whole.
   */
  private chunkLength(seq: Sequence, start: number, budget: number): number {
    const length = Math.min(seq.numTokens - start, budget);
    if (!this.kv.keepsStateCheckpoints || seq.numDraftTokens > 0) return length;
    const { blockSize } = this.config;
    const boundary = Math.floor(Math.min(start + length, seq.numTokens - 1) / blockSize) * blockSize;
    return boundary > start ? boundary - start : length;
  }

  private hasRoom(plan: StepPlan): boolean {
    return plan.budget > 0 && plan.scheduled.length < plan.maxSeqs;
  }

  /**
   * Allocates slots for the sequence's next `numNewTokens` tokens, giving up its drafts and then
   * preempting the youngest running sequences until they fit. Returns how many tokens it runs: 0
   * when it was preempted itself.
   */
  private allocateOrPreempt(seq: Sequence, numNewTokens: number, plan: StepPlan): number {
    if (numNewTokens < 1) {
      throw new Error(`running sequence ${seq.id} has no token to compute: append the sampled token or finish it`);
    }
    while (!this.kv.allocateSlots(seq, numNewTokens)) {
      if (seq.numDraftTokens > 0) {
        numNewTokens -= seq.numDraftTokens;
        seq.dropDraftTokens(0);
      } else if (this.preemptYoungest(plan) === seq) return 0;
    }
    return numNewTokens;
  }

  /** Preempts the youngest running sequence not in a micro-batch in flight (the one asking for room is not). */
  private preemptYoungest(plan: StepPlan): Sequence {
    const seq = [...this.running].reverse().find((s) => !this.busy.has(s))!;
    this.preempt(seq, plan);
    return seq;
  }

  /** A running beam parked with all its tokens computed, the youngest. */
  private youngestParked(): Sequence | undefined {
    return [...this.running].reverse().find((seq) => seq.parked && seq.numComputedTokens === seq.numTokens && !this.busy.has(seq));
  }

  /**
   * Frees a running sequence's blocks: swaps its K/V out when that is the cheaper way back
   * (`swapsOut`), else queues it first, to be recomputed.
   */
  private preempt(seq: Sequence, plan: StepPlan): void {
    this.running.splice(this.running.indexOf(seq), 1);
    // Drafts are not computed tokens: neither swapped nor recomputed.
    seq.dropDraftTokens(0);
    if (this.swapsOut(seq) && this.kv.swapOut(seq)) {
      seq.status = 'swapped';
      seq.numSwaps++;
      let index = this.swapped.length;
      while (index > 0 && this.swapped[index - 1].arrivalOrder > seq.arrivalOrder) index--;
      this.swapped.splice(index, 0, seq);
    } else {
      this.kv.free(seq);
      seq.status = 'waiting';
      seq.numComputedTokens = 0;
      this.waiting.unshift(seq);
    }
    seq.numPreemptions++;
    plan.preempted.push(seq);
    const index = plan.scheduled.findIndex((entry) => entry.seq === seq);
    if (index >= 0) {
      plan.budget += plan.scheduled[index].numNewTokens;
      plan.scheduled.splice(index, 1);
    }
  }

  /** Swapped sequences come back first; waiting ones are admitted once none is left. */
  private admit(plan: StepPlan): void {
    this.swapIn();
    if (this.swapped.length === 0) this.admitWaiting(plan);
  }

  /**
   * Whether a preempted sequence is swapped out rather than recomputed: with a swap space, when
   * recomputing its context would take more than one step's token budget. A shorter context
   * re-prefills as one chunk beside the step's decodes, which costs about one step (decode steps
   * are bound by reading the weights, not by their token count), and holds no host memory.
   */
  private swapsOut(seq: Sequence): boolean {
    // A parked beam may fork at its request's next beam step, which needs its blocks on the device.
    return this.kv.numSwapBlocks > 0 && seq.numComputedTokens > this.config.maxNumBatchedTokens && !seq.parked;
  }

  /** Swaps sequences back in, oldest first, while the pool has room; they run from the next step. */
  private swapIn(): void {
    while (this.swapped.length > 0 && this.kv.swapIn(this.swapped[0])) {
      const seq = this.swapped.shift()!;
      seq.status = 'running';
      this.arriving.push(seq);
    }
  }

  /**
   * First come, first served: a sequence that cannot get its blocks holds back those behind it.
   * A parked beam is passed by: it has its candidates, and runs again only once its beam step
   * gives it a token. A sequence whose LoRA adapter would make the running sequences use more
   * adapters than there are slots waits, and those behind it with an adapter already running (or
   * none) go first.
   */
  private admitWaiting(plan: StepPlan): void {
    // A full batch with no one waiting, most decode steps: the adapters below cost a pass over the running.
    if (this.waiting.length === 0 || !this.hasRoom(plan)) return;
    const admitted = new Set<Sequence>();
    // Sequences swapped in this step run from the next one: their adapters hold slots too.
    const adapters = new Set([...this.running, ...this.arriving].flatMap((seq) => (seq.lora === null ? [] : [seq.lora.id])));
    for (const seq of this.waiting) {
      if (!this.hasRoom(plan)) break;
      if (seq.parked) continue;
      const { maxLoras } = this.config;
      if (seq.lora !== null && !adapters.has(seq.lora.id) && maxLoras !== undefined && adapters.size >= maxLoras) continue;
      const computed = seq.needsPromptLogits ? NO_COMPUTED_BLOCKS : this.kv.getComputedBlocks(seq);
      const numNewTokens = this.chunkLength(seq, computed.numTokens, plan.budget);
      if (!this.kv.allocateSlots(seq, numNewTokens, computed)) break;
      seq.numComputedTokens = computed.numTokens;
      if (seq.numPreemptions === 0) seq.numCachedTokens = computed.numTokens;
      seq.status = 'running';
      this.insertRunning(seq);
      plan.scheduled.push({ seq, numNewTokens, numCachedTokens: computed.numTokens, numHostCachedTokens: computed.numHostTokens });
      plan.budget -= numNewTokens;
      admitted.add(seq);
      if (seq.lora !== null) adapters.add(seq.lora.id);
    }
    if (admitted.size > 0) this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((seq) => !admitted.has(seq)));
  }

  private insertRunning(seq: Sequence): void {
    let index = this.running.length;
    while (index > 0 && this.running[index - 1].arrivalOrder > seq.arrivalOrder) index--;
    this.running.splice(index, 0, seq);
  }
}
