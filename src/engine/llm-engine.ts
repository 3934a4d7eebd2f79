import type { SpeculativeConfig } from '../config.ts';
import { KeelError, invalidArgument } from '../errors.ts';
import { forkStream } from '../sampling/rng.ts';
import { drawFor, drawnToken, hasPenalties, maskWords, MAX_TOP_LOGPROBS, topTokensDraw, type Draw, type DrawResults, type SampledToken } from '../sampling/draw.ts';
import { PenaltyTokens } from '../sampling/penalty-tokens.ts';
import { bannedTokenIds, intersectAllowed, requestTokenFilters } from '../sampling/request-token-filters.ts';
import { checkTokenIds } from '../sampling/validate.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { StopStringMatcher } from '../sampling/stop-strings.ts';
import type { CompiledGrammar } from '../structured/grammar-compiler.ts';
import type { TokenConstraint } from '../structured/token-constraint.ts';
import { IncrementalDetokenizer } from '../tokenizer/detokenizer.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { BeamGroup } from './beam-group.ts';
import { BeamSearch } from './beam-search.ts';
import type { KvCacheManager } from './kv-cache-manager.ts';
import type { ServedLora } from './lora-registry.ts';
import type { DrawSite, ModelRunner, StepResult } from './model-runner.ts';
import type { PositionLogprobs, RequestOutput, SpeculationStats } from './outputs.ts';
import { appendLogprobs, finishCompletion, isFinished, pendingDelta, type Completion, type Request } from './request.ts';
import { LookaheadDraws } from './lookahead-draws.ts';
import { ngramDrafts, ngramTree } from './ngram-proposer.ts';
import type { Scheduler, SchedulerOutput } from './scheduler.ts';
import { Sequence, UNPROPOSED_DRAFT } from './sequence.ts';
import { SpeculationTally } from './speculation-tally.ts';
import type { StepTimeline } from './step-timeline.ts';

/**
 * A launched step: what was scheduled, the completions each sampled row draws for (the
 * sequence's own first, then those forking from it), in the order of the row's draws, and the
 * verification of each sequence that ran drafts; all by index into `output.scheduled`.
 */
interface LaunchedStep {
  output: SchedulerOutput;
  result: StepResult;
  drawers: Map<number, Completion[]>;
  verifications: Map<number, Verification>;
}

/**
 * A sequence's drafts in a step: their draws (row r of the sequence's draws follows draft r - 1,
 * row 0 its last sampled token), and once read the accepted path: the drafts kept, in order.
 */
interface Verification {
  lookahead: LookaheadDraws;
  numDrafts: number;
  /** Positions drafted: the chain's length, or the tree's depth. */
  numPositions: number;
  accepted: number[];
}

export interface EngineParts {
  scheduler: Scheduler;
  kv: KvCacheManager;
  runner: ModelRunner;
  tokenizer: Tokenizer | null;
  vocabSize: number;
  eosTokenIds: number[];
  maxModelLen: number;
  numKvBlocks: number;
  defaultSeed: number;
  /** See EngineConfig.asyncScheduling. */
  asyncScheduling: boolean;
  /** Micro-batches in flight at once over pipeline stages (EngineConfig.pipelineMicroBatches, resolved); 1 without them. */
  microBatches: number;
  /** The prefix-cache salt of a new sequence with a prompt of this length (CausalLM.prefixCacheSalt). */
  prefixCacheSalt: (promptLength: number) => string | null;
  /** How decoding sequences propose drafts; null: they do not. Methods other than ngram draft in the runner. */
  speculative: SpeculativeConfig | null;
  /** Whether the runner holds LoRA slots, so requests may name adapters. */
  servesLora: boolean;
}

export interface NewRequest {
  id: string;
  prompt: string | null;
  promptTokenIds: number[];
  params: SamplingParams;
  /** params.structuredOutput compiled (LLM compiles it); null without one. */
  grammar: CompiledGrammar | null;
  /** The LoRA adapter it runs with; absent for the base model. */
  lora?: ServedLora;
  onUpdate: (request: Request) => void;
}

export interface EngineStats {
  numRunning: number;
  numWaiting: number;
  numKvBlocks: number;
  numFreeKvBlocks: number;
  numCachedKvBlocks: number;
  /**
   * A model whose layers keep a state per sequence (Gated DeltaNet): its sequence state slots
   * (max-num-seqs), those no sequence holds, and the prefix cache's states kept at block
   * boundaries (`numStateCheckpoints`); all 0 for other models.
   */
  numStateSlots: number;
  numFreeStateSlots: number;
  numStateCheckpoints: number;
  /** Prompt tokens served from the prefix cache (either tier) over prompt tokens admitted, since start. */
  prefixCacheHitRate: number;
  /** Prompt tokens served from the prefix cache since start: found in the device pool, and loaded from the host tier. */
  deviceCachedPromptTokensTotal: number;
  hostCachedPromptTokensTotal: number;
  /** Host blocks of the prefix cache's host tier (0 without `kvOffloadGb`), and those holding a cached block. */
  numHostCacheBlocks: number;
  numHostCachedBlocks: number;
  promptTokensTotal: number;
  generationTokensTotal: number;
  numPreemptionsTotal: number;
  /** Of the preemptions, those that swapped a sequence's K/V out to host memory. */
  numSwapsTotal: number;
  numSwapped: number;
  /** Host blocks of the swap space (0 unless preemptionMode is swap), and those free. */
  numSwapBlocks: number;
  numFreeSwapBlocks: number;
  /** Speculative decoding since start; null when the engine does not speculate. */
  speculation: SpeculationStats | null;
  /** The LoRA adapters of the running sequences and of the waiting ones, by name (routers read them: docs/server.md). */
  runningLoraAdapters: string[];
  waitingLoraAdapters: string[];
}

/**
 * The heart of Keel: each `step()` asks the scheduler which tokens run, has the model runner
 * compute them, samples the sequences that reached the end of their tokens, and applies stop
 * conditions. It knows nothing of HTTP, streams or event loops (see llm.ts).
 *
 * With async scheduling a step whose tokens are all sampled on the device is left running: each
 * of its sequences gets a pending token, the next `step()` schedules and launches the following
 * step (whose inputs read those tokens on the device), and only then reads them and applies stop
 * conditions. The host's work thus overlaps the GPU's; a sequence that stopped meanwhile had one
 * extra token computed, which is dropped.
 *
 * With speculative decoding a decoding sequence first proposes drafts (n-gram lookup here, or
 * the draft model in the runner once the step is scheduled); the step runs them after its last
 * token and draws a token at every position, as plain decoding would have at each; the drafts
 * up to the first that differs from its draw are accepted, then the draw after them. Such a step
 * is read at once, and its rejected drafts leave the sequence before its blocks are cached.
 *
 * With M > 1 micro-batches over pipeline stages, up to M − 1 launched steps stay unread after a
 * `step()`: each is a micro-batch of sequences the scheduler keeps busy (never scheduled again, and
 * never given a pending token) until its tokens are read, which happens once the launch of a later
 * one has received its logits (MicroBatchPipeline), or when nothing else can be scheduled. Async
 * scheduling has no separate effect then: the micro-batches in flight are the overlap.
 */
export class LLMEngine {
  private readonly requests = new Map<string, Request>();
  private readonly bySequence = new Map<Sequence, { request: Request; completion: Completion }>();
  private requestSeedCounter = 0;
  private promptTokensTotal = 0;
  private cachedPromptTokensTotal = 0;
  private hostCachedPromptTokensTotal = 0;
  private generationTokensTotal = 0;
  private numPreemptionsTotal = 0;
  private numSwapsTotal = 0;
  private readonly speculation: SpeculationTally | null;
  /** Launched steps whose tokens are still to be read, oldest first: one with async scheduling, up to M − 1 micro-batches. */
  private readonly inFlight: LaunchedStep[] = [];
  /** How many launched steps may stay unread after a `step()`. */
  private readonly maxInFlight: number;
  /** Whether the unread steps are micro-batches over pipeline stages (no pending tokens) rather than async scheduling's one step. */
  private readonly pipelined: boolean;
  /** Where each step's phases and device marks go (`recordSteps`); null, the default: nowhere, at no cost. */
  private timeline: StepTimeline | null = null;

  private readonly parts: EngineParts;

  constructor(parts: EngineParts) {
    this.parts = parts;
    this.speculation = parts.speculative ? new SpeculationTally() : null;
    this.pipelined = parts.microBatches > 1;
    this.maxInFlight = this.pipelined ? parts.microBatches - 1 : parts.asyncScheduling ? 1 : 0;
  }

  get tokenizer(): Tokenizer | null {
    return this.parts.tokenizer;
  }

  get maxModelLen(): number {
    return this.parts.maxModelLen;
  }

  addRequest(input: NewRequest): Request {
    const { id, promptTokenIds, params } = input;
    if (this.requests.has(id)) throw invalidArgument(`request id ${id} is already in use`);
    this.validatePrompt(promptTokenIds, params);
    checkTokenIds(params, this.parts.vocabSize);
    if (params.stop.length > 0 && this.parts.tokenizer === null) {
      throw invalidArgument('stop strings need a tokenizer, and this model has no tokenizer.json; use stop token ids');
    }
    if ((params.structuredOutput === null) !== (input.grammar === null)) {
      throw new Error(`request ${id}: a structured output comes with its compiled grammar, and only then`);
    }
    const seed = params.seed ?? this.parts.defaultSeed * 1_000_003 + this.requestSeedCounter++;
    const completions: Completion[] = Array.from({ length: params.n }, (_, index) => ({
      index,
      seq: null,
      rng: forkStream(seed, index),
      penaltyTokens: hasPenalties(params) ? new PenaltyTokens(promptTokenIds, params.repetitionPenalty !== 1) : null,
      detokenizer: this.parts.tokenizer
        ? new IncrementalDetokenizer(this.parts.tokenizer, promptTokenIds, { skipSpecialTokens: params.skipSpecialTokens })
        : null,
      stopMatcher: params.stop.length > 0 ? new StopStringMatcher(params.stop, params.includeStopStrInOutput) : null,
      constraint: input.grammar?.newConstraint() ?? null,
      output: {
        index,
        text: '',
        tokenIds: [],
        logprobs: params.logprobs === null ? null : [],
        finishReason: null,
        stopReason: null,
      },
      pending: null,
    }));
    const request: Request = {
      id,
      prompt: input.prompt,
      promptTokenIds,
      params,
      tokenFilters: requestTokenFilters(params, this.parts.vocabSize, this.encoder()),
      promptLogprobs: params.promptLogprobs === null ? null : new Array<PositionLogprobs | null>(promptTokenIds.length).fill(null),
      completions,
      metrics: {
        arrivalTime: Date.now(),
        firstScheduledTime: null,
        firstTokenTime: null,
        finishedTime: null,
        numCachedTokens: 0,
        numHostCachedTokens: 0,
        numPreemptions: 0,
        numSwaps: 0,
        speculation: null,
      },
      speculation: this.parts.speculative ? new SpeculationTally() : null,
      beams: null,
      onUpdate: input.onUpdate,
    };
    const lora = input.lora ?? null;
    if (lora !== null && !this.parts.servesLora) throw invalidArgument('this engine serves no LoRA adapters (start it with LoRA enabled)');
    const seq = new Sequence(id, promptTokenIds, promptTokenIds.length, cacheSalt(this.parts.prefixCacheSalt(promptTokenIds.length), lora), lora);
    seq.needsPromptLogits = params.promptLogprobs !== null;
    const search = params.useBeamSearch ? this.beamSearchFor(params) : null;
    this.parts.scheduler.add(seq);
    if (search === null) completions[0].seq = seq;
    else request.beams = new BeamGroup(search, seq);
    this.bySequence.set(seq, { request, completion: completions[0] });
    this.requests.set(id, request);
    return request;
  }

  /** Ends a request in any state and returns its KV blocks to the pool at once. */
  abort(id: string): boolean {
    const request = this.requests.get(id);
    if (!request) return false;
    for (const seq of request.beams?.seqs ?? []) this.releaseSequence(seq);
    for (const c of request.completions) {
      if (c.seq) this.releaseSequence(c.seq);
      if (c.output.finishReason === null) finishCompletion(c, 'abort', null);
    }
    this.finishRequest(request);
    return true;
  }

  /** Whether a request is unfinished, or a launched step is still to be read (its requests may have ended meanwhile). */
  hasUnfinished(): boolean {
    return this.requests.size > 0 || this.inFlight.length > 0;
  }

  stats(): EngineStats {
    const counts = this.parts.scheduler.counts();
    const loras = this.parts.scheduler.loraAdapters();
    return {
      numRunning: counts.running,
      numWaiting: counts.waiting,
      numKvBlocks: this.parts.numKvBlocks,
      numFreeKvBlocks: this.parts.kv.numFreeBlocks,
      numCachedKvBlocks: this.parts.kv.numCachedBlocks,
      numStateSlots: this.parts.kv.numStateSlots,
      numFreeStateSlots: this.parts.kv.numFreeStateSlots,
      numStateCheckpoints: this.parts.kv.numStateCheckpoints,
      prefixCacheHitRate: this.promptTokensTotal === 0 ? 0 : this.cachedPromptTokensTotal / this.promptTokensTotal,
      deviceCachedPromptTokensTotal: this.cachedPromptTokensTotal - this.hostCachedPromptTokensTotal,
      hostCachedPromptTokensTotal: this.hostCachedPromptTokensTotal,
      numHostCacheBlocks: this.parts.kv.numHostCacheBlocks,
      numHostCachedBlocks: this.parts.kv.numHostCachedBlocks,
      promptTokensTotal: this.promptTokensTotal,
      generationTokensTotal: this.generationTokensTotal,
      numPreemptionsTotal: this.numPreemptionsTotal,
      numSwapsTotal: this.numSwapsTotal,
      numSwapped: counts.swapped,
      numSwapBlocks: this.parts.kv.numSwapBlocks,
      numFreeSwapBlocks: this.parts.kv.numFreeSwapBlocks,
      speculation: this.speculation?.summary() ?? null,
      runningLoraAdapters: loras.running,
      waitingLoraAdapters: loras.waiting,
    };
  }

  /**
   * Throws unless the KV cache is consistent with the live sequences (KvCacheManager.checkInvariants)
   * and no sequence keeps drafts between steps: for tests that drive the engine step by step.
   */
  checkInvariants(): void {
    const live = [...this.bySequence.keys()].filter((seq) => seq.status !== 'finished');
    const drafting = live.find((seq) => seq.numDraftTokens > 0);
    if (drafting) throw new Error(`sequence ${drafting.id} kept ${drafting.numDraftTokens} drafts past its step`);
    this.parts.kv.checkInvariants(live);
  }

  /**
   * Records every step from the next one into `timeline` (null: stops recording). Micro-batches
   * over pipeline stages are not timed: their forwards span several steps and devices.
   */
  recordSteps(timeline: StepTimeline | null): void {
    if (timeline !== null && this.pipelined) throw invalidArgument('the step timeline does not time micro-batches over pipeline stages (--pipeline-micro-batches)');
    this.timeline = timeline;
  }

  /** Runs one scheduling step. Returns false when there was nothing to run. */
  step(): boolean {
    const timeline = this.timeline;
    if (timeline === null) return this.runStep(null);
    timeline.beginStep();
    const ran = this.runStep(timeline);
    timeline.endStep();
    return ran;
  }

  private runStep(timeline: StepTimeline | null): boolean {
    this.proposeDrafts();
    const output = this.parts.scheduler.schedule();
    timeline?.scheduled(output);
    this.dropUnscheduledDrafts(output);
    this.parts.runner.transferBlocks(output);
    for (const seq of output.preempted) {
      const swapped = seq.status === 'swapped';
      const owner = this.bySequence.get(seq);
      if (owner) {
        owner.request.metrics.numPreemptions++;
        if (swapped) owner.request.metrics.numSwaps++;
      }
      this.numPreemptionsTotal++;
      if (swapped) this.numSwapsTotal++;
    }
    if (output.scheduled.length === 0) {
      const oldest = this.inFlight.shift();
      if (oldest !== undefined) {
        timeline?.enter('output');
        this.finishStep(oldest);
        return true;
      }
      this.failUnschedulable();
      return false;
    }
    const now = Date.now();
    for (const { seq, numCachedTokens = 0, numHostCachedTokens = 0 } of output.scheduled) {
      const owner = this.bySequence.get(seq);
      if (owner && owner.request.metrics.firstScheduledTime === null) {
        owner.request.metrics.firstScheduledTime = now;
        owner.request.metrics.numCachedTokens = numCachedTokens;
        owner.request.metrics.numHostCachedTokens = numHostCachedTokens;
        this.promptTokensTotal += owner.request.promptTokenIds.length;
        this.cachedPromptTokensTotal += numCachedTokens;
        this.hostCachedPromptTokensTotal += numHostCachedTokens;
      }
    }
    const launched = this.launch(output, timeline);
    // Earlier steps' tokens are read while this one runs: async scheduling's previous step, or the
    // micro-batch whose logits this launch received. A step that verifies drafts is read at once,
    // so every step before it is read first, each right after its logits arrive (a backend keeps
    // only its latest sampling passes readable: CUDA's two).
    const keep = launched.verifications.size > 0 ? 0 : Math.max(0, this.maxInFlight - 1);
    while (this.inFlight.length > keep) this.finishStep(this.inFlight.shift()!);
    this.verifyDrafts(launched);
    timeline?.enter('schedule');
    this.parts.scheduler.onStepComplete(output);
    timeline?.enter('output');
    if (this.maxInFlight > 0 && this.canLeaveRunning(launched)) this.leaveRunning(launched);
    else {
      while (this.inFlight.length > 0) this.finishStep(this.inFlight.shift()!);
      this.finishStep(launched);
    }
    return true;
  }

  /**
   * Gives every decoding sequence its drafts for this step when speculation is on: n-gram
   * lookups, or places the draft model fills once the step is scheduled. None while a step is in
   * flight (its sequences' last tokens are not known yet, and the draft model's passes would
   * displace the draws the next step reads them from), and none past what the request may still
   * generate: a step gives at most one token more than its drafts.
   */
  private proposeDrafts(): void {
    const spec = this.parts.speculative;
    // Sequences in micro-batches in flight have no token to compute, and are passed by below.
    if (spec === null || (!this.pipelined && this.inFlight.length > 0) || !this.speculates()) return;
    for (const [seq, { request }] of this.bySequence) {
      if (seq.status !== 'running' || seq.numTokens - seq.numComputedTokens !== 1 || seq.numDraftTokens > 0 || request.beams !== null) continue;
      // A prompt chunked up to its last token would verify before its completions fork, which
      // draws for the sequence's own completion alone.
      if (request.completions.some((c) => c.seq === null)) continue;
      const maxDrafts = Math.min(
        spec.numSpeculativeTokens,
        request.params.maxTokens - seq.numOutputTokens - 1,
        this.parts.maxModelLen - seq.numTokens - 1,
      );
      if (maxDrafts < 1) continue;
      if (spec.method === 'ngram' && spec.ngramBranches > 1) {
        // A tree's drafts take cache slots past its depth: as many as fit before maxModelLen.
        const maxNodes = Math.min(maxDrafts * spec.ngramBranches, this.parts.maxModelLen - seq.numTokens - 1);
        const tree = ngramTree(seq.tokenIds, spec.ngramMin, spec.ngramMax, maxDrafts, spec.ngramBranches, maxNodes);
        if (tree.tokens.length > 0) seq.appendDraftTokens(tree.tokens, tree.parents);
        continue;
      }
      if (spec.method === 'medusa' || spec.method === 'eagle' || spec.method === 'eagle3' || spec.method === 'mtp') {
        // The heads fill their tree (or chain) once the step is scheduled; its nodes take cache slots past its depth.
        const size = Math.min(this.parts.runner.draftTreeSize(seq, maxDrafts), this.parts.maxModelLen - seq.numTokens - 1);
        if (size > 0) seq.appendDraftTokens(new Array<number>(size).fill(UNPROPOSED_DRAFT));
        continue;
      }
      const drafts = spec.method === 'ngram' ? ngramDrafts(seq.tokenIds, spec.ngramMin, spec.ngramMax, maxDrafts) : new Array<number>(maxDrafts).fill(UNPROPOSED_DRAFT);
      if (drafts.length > 0) seq.appendDraftTokens(drafts);
    }
  }

  /** Whether this step's decoding sequences propose drafts: speculation is on and the batch is small enough. */
  private speculates(): boolean {
    const spec = this.parts.speculative;
    return spec !== null && (spec.disableByBatchSize === null || this.parts.scheduler.counts().running < spec.disableByBatchSize);
  }

  /** Drafts are proposed for one step: those of sequences it did not schedule are dropped. */
  private dropUnscheduledDrafts(output: SchedulerOutput): void {
    if (this.parts.speculative === null) return;
    const scheduled = new Set(output.scheduled.map(({ seq }) => seq));
    for (const seq of this.bySequence.keys()) if (seq.numDraftTokens > 0 && !scheduled.has(seq)) seq.dropDraftTokens(0);
  }

  private launch(output: SchedulerOutput, timeline: StepTimeline | null): LaunchedStep {
    // Asked by the runner once per row that samples this step, and only then: a random draw
    // consumes the completion's random stream, which must not depend on how a prompt was chunked.
    const drawers = new Map<number, Completion[]>();
    const verifications = new Map<number, Verification>();
    const verification = (s: number): Verification => {
      let v = verifications.get(s);
      if (v === undefined) {
        const seq = output.scheduled[s].seq;
        const { request, completion } = this.bySequence.get(seq)!;
        // A speculative step follows a step that was read: the constraint catches up with known tokens alone.
        const constraint = this.constraintAt(completion, -1);
        const start = {
          params: request.params,
          tokenFilters: request.tokenFilters,
          outputTokenIds: completion.output.tokenIds,
          rng: completion.rng,
          penaltyTokens: completion.penaltyTokens,
          eosTokenIds: this.parts.eosTokenIds,
          constraint,
          vocabSize: this.parts.vocabSize,
        };
        verifications.set(s, (v = { lookahead: new LookaheadDraws(start, seq), numDrafts: seq.numDraftTokens, numPositions: 0, accepted: [] }));
      }
      return v;
    };
    const result = this.parts.runner.execute(output, {
      drawsFor: (s, site) => {
        const seq = output.scheduled[s].seq;
        const owner = this.bySequence.get(seq);
        if (owner === undefined) return [];
        const { request, completion } = owner;
        if (request.beams !== null) {
          drawers.set(s, []);
          return [topTokensDraw(site.row, request.beams.search.candidatesPerBeam)];
        }
        if (seq.numDraftTokens > 0) {
          // A sequence with drafts has forked already (at its first token): it draws for itself alone.
          drawers.set(s, [completion]);
          const { lookahead, numDrafts } = verification(s);
          return Array.from({ length: numDrafts + 1 }, (_, r) => lookahead.draw(r - 1, site.row + r));
        }
        // Past its first token every completion has its own sequence: only the first step forks.
        const completions = request.completions.length === 1 ? [completion] : [completion, ...request.completions.filter((c) => c.seq === null)];
        drawers.set(s, completions);
        return completions.map((c) => this.drawFor(request, c, seq, site));
      },
      draftDraw: (s, index, row, historyRow) => verification(s).lookahead.draw(index - 1, row, historyRow),
      draftDrawReadsDrafts: (s) => verification(s).lookahead.readsPathOnHost,
      verificationReadsDrafts: (s) => this.bySequence.has(output.scheduled[s].seq) && verification(s).lookahead.verificationReadsPath,
      promptTopLogprobs: (s) => this.bySequence.get(output.scheduled[s].seq)?.request.params.promptLogprobs ?? 0,
    }, timeline);
    return { output, result, drawers, verifications };
  }

  /**
   * Reads a step that ran drafts (at once: the scheduler must not count or cache rejected ones)
   * and keeps each sequence's accepted path: from its last sampled token, the child whose token
   * the draw after it drew, as long as there is one (a chain's drafts up to the first its draws
   * disagree with). The other drafts leave the sequence; a tree's accepted drafts have their K/V
   * moved into place.
   */
  private verifyDrafts({ output, result, verifications }: LaunchedStep): void {
    if (verifications.size === 0) return;
    const { tokenIds } = this.read(result);
    result.samplingRows.forEach((s, row) => {
      const verification = verifications.get(s);
      if (verification === undefined) return;
      const seq = output.scheduled[s].seq;
      const first = result.firstDraw[row];
      const synthetic = this.parts.speculative?.syntheticAcceptedDrafts ?? null;
      const path: number[] = [];
      for (let node = -1; synthetic === null || path.length < synthetic; ) {
        const drawn = tokenIds[first + node + 1];
        let child = node + 1;
        while (child < verification.numDrafts && !(seq.draftParent(child) === node && (synthetic !== null || seq.draftTokenId(child) === drawn))) child++;
        if (child === verification.numDrafts) break;
        path.push((node = child));
      }
      verification.accepted = path;
      verification.numPositions = draftDepth(seq);
      // A state saw every draft: unless all were kept, it goes back to before the step (Sequence.rewindsState).
      if (seq.stateSlot >= 0 && path.length < verification.numDrafts) seq.rewindsState = true;
      this.parts.runner.keepDraftPath(seq, path);
      seq.keepDraftPath(path);
    });
  }

  private drawFor(request: Request, c: Completion, seq: Sequence, site: DrawSite): Draw {
    const constraint = this.constraintAt(c, site.pendingDraw);
    const filters = request.tokenFilters;
    let allowedTokens = filters.allowedTokens;
    if (constraint !== null) {
      const grammarMask = new Int32Array(maskWords(this.parts.vocabSize));
      constraint.fillAllowed(grammarMask);
      allowedTokens = intersectAllowed(grammarMask, filters.allowedTokens);
    }
    // Spelled out rather than spread from `site`: a spread object is slower to build and to read, once per row per step.
    return drawFor(request.params, {
      row: site.row,
      pendingDraw: site.pendingDraw,
      draftHistory: null,
      rng: c.rng,
      penaltyTokens: c.penaltyTokens,
      // The sequence's count includes a token still pending on the device; the completion's does not yet.
      numOutputTokens: seq.numOutputTokens,
      eosTokenIds: this.parts.eosTokenIds,
      allowedTokens,
      logitBias: filters.logitBias,
      bannedTokenIds: bannedTokenIds(filters, () => this.outputWithPending(c, site.pendingDraw)),
    });
  }

  /** A completion's output tokens: those the host knows, then the one pending in draw `pendingDraw` of the step in flight (-1: none). */
  private outputWithPending(c: Completion, pendingDraw: number): number[] {
    const pending = pendingDraw >= 0 ? this.pendingToken(pendingDraw) : -1;
    return pending >= 0 ? [...c.output.tokenIds, pending] : c.output.tokenIds;
  }

  /**
   * The token of draw `pendingDraw` of the step still in flight under async scheduling, read as
   * soon as that step's sampling is done (while this step's forward runs); -1 when nothing could be
   * drawn, which fails its request once that step is read.
   */
  private pendingToken(pendingDraw: number): number {
    const previous = this.inFlight[this.inFlight.length - 1];
    if (this.pipelined || previous === undefined) throw new Error(`a pending token in draw ${pendingDraw} with no step of async scheduling in flight`);
    return this.read(previous.result).tokenIds[pendingDraw];
  }

  /** Tokenizes text as bad words are (without special tokens); null without a tokenizer. */
  private encoder(): ((text: string) => number[]) | null {
    const tokenizer = this.parts.tokenizer;
    return tokenizer === null ? null : (text) => tokenizer.encode(text, { addSpecialTokens: false });
  }

  /**
   * A completion's constraint caught up with its tokens: those the host knows, then the one
   * pending in draw `pendingDraw` of the step still in flight (-1: none), read as soon as that
   * step's sampling is done, while this step's forward runs. Null for free text.
   */
  private constraintAt(c: Completion, pendingDraw: number): TokenConstraint | null {
    const constraint = c.constraint;
    if (constraint === null) return null;
    const known = c.output.tokenIds;
    for (let i = constraint.numTokens; i < known.length; i++) constraint.accept(known[i]);
    if (pendingDraw >= 0 && constraint.numTokens === known.length) {
      const pending = this.pendingToken(pendingDraw);
      if (pending >= 0) constraint.accept(pending);
    }
    return constraint;
  }

  /** A step's draws, waiting for the device if they are not read yet: a phase of its own on the timeline. */
  private read(result: StepResult): DrawResults {
    const timeline = this.timeline;
    if (timeline === null) return result.read();
    const left = timeline.enter('wait');
    const results = result.read();
    timeline.enter(left);
    return results;
  }

  /**
   * Whether the step's tokens can wait for the next step: no row forks or reaches its length
   * limit (a known last token is read at once, so that no sequence is scheduled past its end).
   */
  private canLeaveRunning({ output, result, verifications }: LaunchedStep): boolean {
    // A verified step was read already and its accepted drafts wait in their sequences.
    if (verifications.size > 0) return false;
    // A micro-batch's sequences are not scheduled again before it is read, forks and ends included.
    if (this.pipelined) return true;
    // The next step's drafts are proposed from tokens the host knows.
    if (this.speculates()) return false;
    return result.samplingRows.every((s) => {
      const seq = output.scheduled[s].seq;
      const owner = this.bySequence.get(seq);
      if (owner === undefined || seq.status === 'finished') return true;
      const { request, completion } = owner;
      // Beams fork or drop at every step, as do completions yet to fork.
      if (request.beams !== null || request.completions.some((c) => c.seq === null)) return false;
      return completion.output.tokenIds.length + 1 < request.params.maxTokens && seq.numTokens + 1 < this.parts.maxModelLen;
    });
  }

  private leaveRunning(step: LaunchedStep): void {
    for (const s of this.pipelined ? [] : step.result.samplingRows) {
      const seq = step.output.scheduled[s].seq;
      if (seq.status !== 'finished' && this.bySequence.has(seq)) seq.appendPendingToken();
    }
    this.inFlight.push(step);
  }

  /** Reads a step's tokens (waiting for the device) and applies stop conditions. */
  private finishStep({ output, result, drawers, verifications }: LaunchedStep): void {
    const results = this.read(result);
    this.timeline?.enter('schedule');
    this.parts.scheduler.tokensRead(output);
    this.timeline?.enter('output');
    const touched = new Set<Request>();
    for (const { s, position, draw } of result.promptScores) {
      const request = this.bySequence.get(output.scheduled[s].seq)?.request;
      // A prompt recomputed after preemption scores its positions again: the first scores stand.
      if (request?.promptLogprobs && request.promptLogprobs[position + 1] === null) {
        const scored = drawnToken(results, draw, { ...request.params, logprobs: request.params.promptLogprobs });
        request.promptLogprobs[position + 1] = this.describeLogprobs(scored.logprobs!);
      }
    }
    const searching = new Set<Request>();
    result.samplingRows.forEach((s, row) => {
      const seq = output.scheduled[s].seq;
      const owner = this.bySequence.get(seq);
      const completions = drawers.get(s);
      // Ended (stopped or aborted) while the step ran: its token is dropped.
      if (!owner || seq.status === 'finished' || completions === undefined) return;
      if (owner.request.beams !== null) {
        owner.request.beams.offer(seq, results, result.firstDraw[row]);
        searching.add(owner.request);
        return;
      }
      const verification = verifications.get(s);
      if (verification === undefined) this.acceptDraws(owner.request, completions, seq, results, result.firstDraw[row]);
      else this.acceptVerified(owner.request, owner.completion, seq, results, result.firstDraw[row], verification);
      touched.add(owner.request);
    });
    for (const request of searching) {
      this.advanceBeams(request);
      // Beams are not streamed: a search reports once, when it ends.
      if (isFinished(request)) touched.add(request);
    }
    for (const request of touched) {
      if (isFinished(request)) this.finishRequest(request);
      else this.emit(request);
    }
  }

  /**
   * The search for a request with useBeamSearch: its width, and every candidate a step needs
   * fits in one draw's top tokens.
   */
  private beamSearchFor(params: SamplingParams): BeamSearch {
    const stopTokenIds = [...new Set([...(params.ignoreEos ? [] : this.parts.eosTokenIds), ...params.stopTokenIds])];
    const search = new BeamSearch({
      width: params.beamWidth ?? params.n,
      lengthPenalty: params.lengthPenalty,
      earlyStopping: params.earlyStopping,
      maxNewTokens: params.maxTokens,
      stopTokenIds,
    });
    if (search.candidatesPerBeam > MAX_TOP_LOGPROBS) {
      throw invalidArgument(
        `beamWidth ${params.beamWidth ?? params.n} needs the best ${search.candidatesPerBeam} tokens of each beam (width × max(2, 1 + ${stopTokenIds.length} stop tokens)); at most ${MAX_TOP_LOGPROBS} are drawn`,
      );
    }
    return search;
  }

  /**
   * Once every running beam has its candidates, takes a search step: each next beam continues its
   * parent's sequence, the first in place and the others as forks sharing its blocks
   * copy-on-write; parents no next beam continues are dropped with their blocks. When the search
   * ends, the completions get the best beams.
   */
  private advanceBeams(request: Request): void {
    const group = request.beams!;
    if (!group.ready()) return;
    const { next, done } = group.search.step(group.takeCandidates());
    request.metrics.firstTokenTime ??= Date.now();
    const continued = new Set<Sequence>();
    // Forks first: a fork copies its parent's tokens, before the parent takes its own next one.
    const beams = next.map(({ parent, tokenId }) => {
      const parentSeq = group.seqs[parent];
      if (!continued.has(parentSeq)) {
        continued.add(parentSeq);
        return { seq: parentSeq, tokenId };
      }
      const child = parentSeq.fork();
      this.parts.scheduler.addForked(parentSeq, child);
      this.bySequence.set(child, { request, completion: request.completions[0] });
      return { seq: child, tokenId };
    });
    for (const { seq, tokenId } of beams) {
      seq.appendToken(tokenId);
      seq.parked = false;
    }
    for (const seq of group.seqs) if (!continued.has(seq)) this.dropBeam(seq);
    group.seqs = beams.map(({ seq }) => seq);
    if (!done) return;
    for (const seq of group.seqs) this.dropBeam(seq);
    group.seqs = [];
    const best = group.search.best(request.params.n);
    for (const c of request.completions) {
      const beam = best[c.index];
      for (const tokenId of beam.tokenIds) {
        c.output.tokenIds.push(tokenId);
        pendingDelta(c).tokenIds.push(tokenId);
      }
      this.generationTokensTotal += beam.tokenIds.length;
      // As for sampled completions, the stop token is not in the text.
      const shown = beam.finishReason === 'stop' ? beam.tokenIds.slice(0, -1) : beam.tokenIds;
      for (const tokenId of shown) this.appendText(c, c.detokenizer?.push(tokenId) ?? '');
      this.appendText(c, c.detokenizer?.flush() ?? '');
      const last = beam.tokenIds[beam.tokenIds.length - 1];
      const stopReason = beam.finishReason === 'stop' && !this.parts.eosTokenIds.includes(last) ? last : null;
      finishCompletion(c, beam.finishReason, stopReason);
    }
  }

  private dropBeam(seq: Sequence): void {
    this.releaseSequence(seq);
    this.bySequence.delete(seq);
  }

  /**
   * Gives each completion its draw: completions[0] owns `seq`; the others (the first sample of
   * n > 1) fork from it now, before it takes its own token, sharing its KV blocks.
   */
  private acceptDraws(request: Request, completions: Completion[], seq: Sequence, results: DrawResults, first: number): void {
    // A loop, not slice(1).forEach: this runs for every sampled row of every step, mostly with no sibling.
    for (let k = 1; k < completions.length; k++) {
      const c = completions[k];
      const child = seq.fork();
      this.parts.scheduler.addForked(seq, child);
      c.seq = child;
      this.bySequence.set(child, { request, completion: c });
      this.acceptToken(request, c, child, drawnToken(results, first + k, request.params));
    }
    this.acceptToken(request, completions[0], seq, drawnToken(results, first, request.params));
  }

  /**
   * Gives a completion what its verification kept: the accepted drafts, then the token drawn after
   * them; its random stream continues after their draws.
   */
  private acceptVerified(request: Request, c: Completion, seq: Sequence, results: DrawResults, first: number, verification: Verification): void {
    const { numPositions, accepted, lookahead } = verification;
    // The kept drafts, read before the tokens below consume them. They equal the draws that kept
    // them, except under a synthetic acceptance, which keeps drafts whatever was drawn.
    const kept = accepted.map((_, k) => seq.draftTokenId(k));
    // The draws that gave the tokens: after the last sampled token, then after each accepted draft.
    [-1, ...accepted].forEach((after, k) => {
      const sample = drawnToken(results, first + after + 1, request.params);
      this.acceptToken(request, c, seq, k < kept.length ? { ...sample, tokenId: kept[k] } : sample);
    });
    c.rng = lookahead.rngAfter(accepted.length + 1);
    this.speculation?.record(numPositions, accepted.length);
    request.speculation?.record(numPositions, accepted.length);
  }

  private acceptToken(request: Request, c: Completion, seq: Sequence, sample: SampledToken): void {
    if (c.output.finishReason !== null) return;
    const params = request.params;
    const tokenId = sample.tokenId;
    seq.appendToken(tokenId);
    c.output.tokenIds.push(tokenId);
    c.penaltyTokens?.add(tokenId);
    this.generationTokensTotal++;
    request.metrics.firstTokenTime ??= Date.now();
    const delta = pendingDelta(c);
    delta.tokenIds.push(tokenId);
    if (sample.logprobs) appendLogprobs(c, this.describeLogprobs(sample.logprobs));

    const numOutput = c.output.tokenIds.length;
    const mayStop = numOutput > params.minTokens;
    // A completion ended by a token (EOS or a stop id) does not show that token in its text.
    if (mayStop && !params.ignoreEos && this.parts.eosTokenIds.includes(tokenId)) {
      return this.endCompletion(c, 'stop', null);
    }
    if (mayStop && params.stopTokenIds.includes(tokenId)) return this.endCompletion(c, 'stop', tokenId);
    if (this.emitText(c, c.detokenizer?.push(tokenId) ?? '')) return;
    // Drafts accepted after this token are not counted yet.
    if (numOutput >= params.maxTokens || seq.numTokens - seq.numDraftTokens >= this.parts.maxModelLen) this.endCompletion(c, 'length', null);
  }

  /** Ends a completion, first releasing text still held back by the detokenizer or stop matcher. */
  private endCompletion(c: Completion, reason: 'stop' | 'length', stopReason: string | number | null): void {
    if (this.emitText(c, c.detokenizer?.flush() ?? '')) return;
    this.appendText(c, c.stopMatcher?.flush() ?? '');
    this.finishSequence(c, reason, stopReason);
  }

  /** Appends new text through the stop-string matcher; returns true if a stop string ended the completion. */
  private emitText(c: Completion, text: string): boolean {
    if (!c.stopMatcher) {
      this.appendText(c, text);
      return false;
    }
    const matched = c.stopMatcher.push(text);
    this.appendText(c, matched.emit);
    if (matched.stopped) this.finishSequence(c, 'stop', matched.matched);
    return matched.stopped;
  }

  private appendText(c: Completion, text: string): void {
    if (text.length === 0) return;
    c.output.text += text;
    pendingDelta(c).text += text;
  }

  private finishSequence(c: Completion, reason: 'stop' | 'length', stopReason: string | number | null): void {
    finishCompletion(c, reason, stopReason);
    if (c.seq) this.releaseSequence(c.seq);
  }

  private releaseSequence(seq: Sequence): void {
    this.parts.scheduler.finish(seq);
  }

  private describeLogprobs(raw: { sampled: { tokenId: number; logprob: number }; top: { tokenId: number; logprob: number }[] }): PositionLogprobs {
    const named = (t: { tokenId: number; logprob: number }) => ({
      tokenId: t.tokenId,
      token: this.parts.tokenizer?.decode([t.tokenId], { skipSpecialTokens: false }) ?? '',
      logprob: t.logprob,
    });
    return { sampled: named(raw.sampled), top: raw.top.map(named) };
  }

  private finishRequest(request: Request): void {
    request.metrics.finishedTime = Date.now();
    for (const seq of request.beams?.seqs ?? []) this.bySequence.delete(seq);
    for (const c of request.completions) {
      if (c.seq) this.bySequence.delete(c.seq);
      c.constraint?.dispose();
    }
    this.requests.delete(request.id);
    this.emit(request);
  }

  private emit(request: Request): void {
    request.onUpdate(request);
    for (const c of request.completions) c.pending = null;
  }

  /**
   * With nothing running, a waiting request that still cannot be scheduled would wait forever:
   * fail it with a clear error instead of spinning.
   */
  private failUnschedulable(): void {
    const counts = this.parts.scheduler.counts();
    if (counts.running > 0 || counts.waiting === 0) return;
    throw new KeelError('unavailable', 'the scheduler could not place any waiting request although nothing is running');
  }

  private validatePrompt(promptTokenIds: number[], params: SamplingParams): void {
    if (promptTokenIds.length === 0) throw invalidArgument('the prompt is empty');
    for (const id of promptTokenIds) {
      if (!Number.isInteger(id) || id < 0 || id >= this.parts.vocabSize) {
        throw invalidArgument(`prompt token id ${id} is outside the vocabulary (0..${this.parts.vocabSize - 1})`);
      }
    }
    const maxLen = this.parts.maxModelLen;
    if (promptTokenIds.length + params.maxTokens > maxLen) {
      throw new KeelError(
        'context_overflow',
        `this model's maximum context length is ${maxLen} tokens, but ${promptTokenIds.length + params.maxTokens} were requested ` +
          `(${promptTokenIds.length} in the prompt, ${params.maxTokens} for the completion)`,
      );
    }
  }
}

/**
 * A sequence's prefix-cache salt: the model's, and its adapter's id, since the same tokens give
 * other keys and values under another adapter (or none). A name loaded again is a new id.
 */
function cacheSalt(modelSalt: string | null, lora: ServedLora | null): string | null {
  if (lora === null) return modelSalt;
  return modelSalt === null ? `lora:${lora.id}` : `${modelSalt}|lora:${lora.id}`;
}

/** How many tokens deep a sequence's drafts reach: a chain's length, a tree's deepest path. */
function draftDepth(seq: Sequence): number {
  const depths: number[] = [];
  for (let i = 0; i < seq.numDraftTokens; i++) depths.push(1 + (seq.draftParent(i) < 0 ? 0 : depths[seq.draftParent(i)]));
  return Math.max(0, ...depths);
}

export function snapshot(request: Request, finished: boolean): RequestOutput {
  return {
    requestId: request.id,
    prompt: request.prompt,
    promptTokenIds: request.promptTokenIds,
    promptLogprobs: request.promptLogprobs && [...request.promptLogprobs],
    outputs: request.completions.map((c) => ({ ...c.output, tokenIds: [...c.output.tokenIds], logprobs: c.output.logprobs ? [...c.output.logprobs] : null })),
    finished,
    metrics: { ...request.metrics, speculation: request.speculation?.summary() ?? null },
  };
}
