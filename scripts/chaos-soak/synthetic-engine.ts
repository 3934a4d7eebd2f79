import type { EngineStats } from '../../src/engine/llm-engine.ts';
import type { LLM } from '../../src/engine/llm.ts';
import type { FinishReason, PositionLogprobs, RequestMetrics, StreamDelta, TokenLogprob } from '../../src/engine/outputs.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';
import type { ServedLLM } from '../../src/server/engine-host/serve-engine.ts';

/**
 * A stand-in for the engine that does no model work: it schedules requests over a KV pool of the
 * configured size as the real scheduler does in outline (first come first served, a new KV block
 * every block-size tokens, the newest request preempted when the pool runs dry, at most
 * max-num-seqs sequences running), and each step gives every running sequence one made-up token.
 * A step lasts (running sequences / tokensPerS) seconds, never less than MIN_STEP_MS, as a GPU's
 * step would: so the server gets `tokensPerS` tokens a second whenever enough sequences run, the
 * load an H200 puts on the server's event loop, on a machine without one. Completions always
 * run to max_tokens (no EOS, stop strings or grammars); logprobs are made up too.
 *
 * The loaded LLM gives the model's facts (tokenizer, context, defaults), which the server needs.
 */
export class SyntheticEngine implements ServedLLM {
  private readonly llm: LLM;
  private readonly tokensPerS: number;
  private readonly vocabulary: TokenLogprob[];
  private readonly waiting: SyntheticRequest[] = [];
  private readonly running: SyntheticRequest[] = [];
  private freeBlocks: number;
  private readonly numKvBlocks: number;
  private promptTokensTotal = 0;
  private generationTokensTotal = 0;
  private numPreemptionsTotal = 0;
  private timer: NodeJS.Timeout | null = null;
  private nextToken = 0;

  constructor(llm: LLM, tokensPerS: number) {
    if (!(tokensPerS > 0)) throw new Error(`the synthetic engine needs a positive token rate (got ${tokensPerS})`);
    const tokenizer = llm.tokenizer;
    if (tokenizer === null) throw new Error('the synthetic engine needs a model with a tokenizer');
    this.llm = llm;
    this.tokensPerS = tokensPerS;
    this.numKvBlocks = llm.stats().numKvBlocks;
    this.freeBlocks = this.numKvBlocks;
    // Tokens that read as plain words, so the text streamed looks like text.
    this.vocabulary = [];
    for (let id = 0; id < llm.modelConfig.vocabSize && this.vocabulary.length < 512; id++) {
      const token = tokenizer.decode([id], { skipSpecialTokens: false });
      if (/^ ?[A-Za-z]{2,8}$/.test(token)) this.vocabulary.push({ tokenId: id, token, logprob: -1 - (this.vocabulary.length % 7) / 2 });
    }
    if (this.vocabulary.length < 21) throw new Error('the synthetic engine found too few word tokens in the vocabulary');
  }

  get modelName(): string {
    return this.llm.modelName;
  }
  get modelPath(): string {
    return this.llm.modelPath;
  }
  get backendName(): string {
    return 'synthetic';
  }
  get maxModelLen(): number {
    return this.llm.maxModelLen;
  }
  get modelConfig(): LLM['modelConfig'] {
    return this.llm.modelConfig;
  }
  get config(): LLM['config'] {
    return this.llm.config;
  }
  get samplingDefaults(): LLM['samplingDefaults'] {
    return this.llm.samplingDefaults;
  }
  get tokenizer(): LLM['tokenizer'] {
    return this.llm.tokenizer;
  }
  /** It serves the base model only: the soak sends no adapter requests. */
  get loraAdapters(): LLM['loraAdapters'] {
    return [];
  }
  loadLoraAdapter(name: string): ReturnType<LLM['loadLoraAdapter']> {
    throw new Error(`the synthetic engine serves no LoRA adapters (asked to load ${name})`);
  }
  unloadLoraAdapter(name: string): void {
    throw new Error(`the synthetic engine serves no LoRA adapters (asked to unload ${name})`);
  }
  /** It runs no engine steps to record. */
  startStepTimeline(): void {
    throw new Error('the synthetic engine has no step timeline');
  }
  stopStepTimeline(): void {
    throw new Error('the synthetic engine has no step timeline');
  }

  stats(): EngineStats {
    const sequences = (list: SyntheticRequest[]) => list.reduce((sum, r) => sum + r.completions.filter((c) => c.finishReason === null).length, 0);
    return {
      numRunning: sequences(this.running),
      numWaiting: sequences(this.waiting),
      numKvBlocks: this.numKvBlocks,
      numFreeKvBlocks: this.freeBlocks,
      numCachedKvBlocks: 0,
      numStateSlots: 0,
      numFreeStateSlots: 0,
      numStateCheckpoints: 0,
      prefixCacheHitRate: 0,
      // No prefix cache: nothing is cached on either tier.
      deviceCachedPromptTokensTotal: 0,
      hostCachedPromptTokensTotal: 0,
      numHostCacheBlocks: 0,
      numHostCachedBlocks: 0,
      promptTokensTotal: this.promptTokensTotal,
      generationTokensTotal: this.generationTokensTotal,
      numPreemptionsTotal: this.numPreemptionsTotal,
      // It preempts by recompute only: no swap space.
      numSwapsTotal: 0,
      numSwapped: 0,
      numSwapBlocks: 0,
      numFreeSwapBlocks: 0,
      speculation: null,
      runningLoraAdapters: [],
      waitingLoraAdapters: [],
    };
  }

  async *stream(tokenIds: number[], params: SamplingParams, options: { signal: AbortSignal }): AsyncGenerator<{ deltas: StreamDelta[]; finished: boolean; output: { metrics: RequestMetrics } }> {
    const request = new SyntheticRequest(tokenIds.length, params);
    this.waiting.push(request);
    const abort = () => this.abort(request);
    options.signal.addEventListener('abort', abort, { once: true });
    if (options.signal.aborted) abort();
    this.schedule();
    try {
      for (;;) {
        const update = request.updates.shift();
        if (update === undefined) {
          await new Promise<void>((resolve) => (request.wake = resolve));
          continue;
        }
        yield { deltas: update.deltas, finished: update.finished, output: { metrics: request.metrics } };
        if (update.finished) return;
      }
    } finally {
      options.signal.removeEventListener('abort', abort);
      this.abort(request);
    }
  }

  /** Stops stepping (what is left is the caller's to abort). */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private abort(request: SyntheticRequest): void {
    if (request.finished) return;
    for (const list of [this.waiting, this.running]) {
      const at = list.indexOf(request);
      if (at >= 0) list.splice(at, 1);
    }
    this.freeBlocks += request.blocks;
    request.blocks = 0;
    request.finish('abort');
  }

  private schedule(): void {
    if (this.timer === null && (this.waiting.length > 0 || this.running.length > 0)) this.timer = setTimeout(() => this.step(), 0);
  }

  private step(): void {
    const started = performance.now();
    this.timer = null;
    this.admit();
    let tokens = 0;
    for (const request of [...this.running]) {
      if (!this.running.includes(request)) continue;
      const needed = request.blocksFor(this.llm.config.blockSize, 1) - request.blocks;
      if (needed > this.freeBlocks && !this.preemptFor(request, needed)) continue;
      this.freeBlocks -= needed;
      request.blocks += needed;
      tokens += request.advance(() => this.token(request.params.logprobs));
      if (request.finished) {
        this.running.splice(this.running.indexOf(request), 1);
        this.freeBlocks += request.blocks;
        request.blocks = 0;
      }
    }
    this.generationTokensTotal += tokens;
    if (this.waiting.length === 0 && this.running.length === 0) return;
    const stepMs = Math.max(MIN_STEP_MS, (tokens / this.tokensPerS) * 1000);
    this.timer = setTimeout(() => this.step(), Math.max(0, started + stepMs - performance.now()));
  }

  /** Moves waiting requests to the running batch while their prompts' blocks and max-num-seqs allow. */
  private admit(): void {
    const blockSize = this.llm.config.blockSize;
    let sequences = this.running.reduce((sum, r) => sum + r.params.n, 0);
    while (this.waiting.length > 0) {
      const next = this.waiting[0];
      const blocks = next.blocksFor(blockSize, 0);
      if (blocks > this.freeBlocks || sequences + next.params.n > this.llm.config.maxNumSeqs) return;
      this.waiting.shift();
      this.freeBlocks -= blocks;
      next.blocks = blocks;
      sequences += next.params.n;
      if (next.metrics.firstScheduledTime === null) {
        next.metrics.firstScheduledTime = Date.now();
        this.promptTokensTotal += next.promptLength;
      }
      this.running.push(next);
    }
  }

  /** Preempts the newest running requests other than `request` until it has `needed` blocks; false if it cannot. */
  private preemptFor(request: SyntheticRequest, needed: number): boolean {
    while (needed > this.freeBlocks) {
      const victim = this.running.at(-1);
      if (victim === undefined || victim === request) return false;
      this.running.pop();
      this.freeBlocks += victim.blocks;
      victim.blocks = 0;
      victim.metrics.numPreemptions++;
      this.numPreemptionsTotal++;
      this.waiting.unshift(victim);
    }
    return true;
  }

  private token(logprobs: number | null): { sampled: TokenLogprob; logprobs: PositionLogprobs | null } {
    const sampled = this.vocabulary[this.nextToken++ % this.vocabulary.length];
    if (logprobs === null) return { sampled, logprobs: null };
    const top = Array.from({ length: logprobs }, (_, k) => this.vocabulary[(this.nextToken + k) % this.vocabulary.length]);
    return { sampled, logprobs: { sampled, top: [sampled, ...top.slice(1)].slice(0, logprobs) } };
  }
}

/** A GPU step of a small model takes about a millisecond, however few sequences it runs. */
const MIN_STEP_MS = 1;

class SyntheticRequest {
  readonly promptLength: number;
  readonly params: SamplingParams;
  readonly completions: { generated: number; finishReason: FinishReason | null }[];
  readonly metrics: RequestMetrics = { arrivalTime: Date.now(), firstScheduledTime: null, firstTokenTime: null, finishedTime: null, numCachedTokens: 0, numHostCachedTokens: 0, numPreemptions: 0, numSwaps: 0, speculation: null };
  /** Updates not yet read: the deltas of one step each, the last one finished. */
  readonly updates: { deltas: StreamDelta[]; finished: boolean }[] = [];
  wake: (() => void) | null = null;
  blocks = 0;

  constructor(promptLength: number, params: SamplingParams) {
    this.promptLength = promptLength;
    this.params = params;
    this.completions = Array.from({ length: params.n }, () => ({ generated: 0, finishReason: null }));
  }

  get finished(): boolean {
    return this.completions.every((c) => c.finishReason !== null);
  }

  /** The blocks its sequences hold with `extra` more tokens each (the prompt's blocks counted once per sequence). */
  blocksFor(blockSize: number, extra: number): number {
    return this.completions.reduce((sum, c) => sum + (c.finishReason === null ? Math.ceil((this.promptLength + c.generated + extra) / blockSize) : 0), 0);
  }

  /** One token for every unfinished completion; returns how many. */
  advance(draw: () => { sampled: TokenLogprob; logprobs: PositionLogprobs | null }): number {
    const deltas: StreamDelta[] = [];
    for (const [index, c] of this.completions.entries()) {
      if (c.finishReason !== null) continue;
      const { sampled, logprobs } = draw();
      c.generated++;
      if (c.generated >= this.params.maxTokens) c.finishReason = 'length';
      deltas.push({ index, text: sampled.token, tokenIds: [sampled.tokenId], logprobs: logprobs === null ? null : [logprobs], finishReason: c.finishReason, stopReason: null });
    }
    this.metrics.firstTokenTime ??= Date.now();
    if (this.finished) this.metrics.finishedTime = Date.now();
    this.push(deltas);
    return deltas.length;
  }

  finish(reason: FinishReason): void {
    const deltas: StreamDelta[] = [];
    for (const [index, c] of this.completions.entries()) {
      if (c.finishReason !== null) continue;
      c.finishReason = reason;
      deltas.push({ index, text: '', tokenIds: [], logprobs: this.params.logprobs === null ? null : [], finishReason: reason, stopReason: null });
    }
    this.metrics.finishedTime = Date.now();
    this.push(deltas);
  }

  private push(deltas: StreamDelta[]): void {
    this.updates.push({ deltas, finished: this.finished });
    this.wake?.();
    this.wake = null;
  }
}
