import { randomUUID } from 'node:crypto';
import type { EngineConfig, EngineOptions } from '../config.ts';
import { invalidArgument } from '../errors.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import type { ModelConfig } from '../models/model-config.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { GrammarCompiler, type CompiledGrammar } from '../structured/grammar-compiler.ts';
import { resolveSamplingParams } from '../sampling/validate.ts';
import type { ChatMessage, Tokenizer } from '../tokenizer/tokenizer.ts';
import { loadEngine, type LoadedEngine } from './load-engine.ts';
import type { Ranks } from './parallel/ranks.ts';
import { snapshot, type EngineStats, type LLMEngine } from './llm-engine.ts';
import type { RequestOutput, StreamDelta } from './outputs.ts';
import type { LoraRegistry, ServedLora } from './lora-registry.ts';
import type { Request } from './request.ts';
import { StepTimeline, type StepRecord } from './step-timeline.ts';

/** A prompt is text (tokenized with the model's tokenizer) or token ids. */
export type Prompt = string | number[];

export interface StreamUpdate {
  requestId: string;
  /** What each completion gained since the previous update. */
  deltas: StreamDelta[];
  /** The cumulative state of the request. */
  output: RequestOutput;
  finished: boolean;
}

/** Compiled structured outputs kept (grammar-compiler.ts), least recently used dropped first. */
const GRAMMAR_CACHE_SIZE = 64;

export interface RequestOptions {
  requestId?: string;
  /** Aborting the signal aborts the request and frees its KV blocks at once. */
  signal?: AbortSignal;
  /** The name of a loaded LoRA adapter to run with (docs/lora.md); absent for the base model. */
  lora?: string;
}

/** A LoRA adapter being served: its name and the directory it was read from. */
export interface LoraAdapterInfo {
  name: string;
  path: string;
  rank: number;
}

/**
 * Keel's library API: load a model, then `generate` a batch or `stream` one request. Every request
 * added before the engine's next step joins the same batch (continuous batching); the engine runs
 * on the event loop, yielding between steps so that new requests and aborts are taken at once.
 */
export class LLM {
  private running = false;
  private fatal: Error | null = null;
  private readonly failers = new Map<string, (error: Error) => void>();
  /** Started by the first request with a structured output. */
  private grammars: Promise<GrammarCompiler> | null = null;
  /** The step timeline recording (startStepTimeline), or null. */
  private timeline: StepTimeline | null = null;

  private readonly loaded: LoadedEngine;

  private constructor(loaded: LoadedEngine) {
    this.loaded = loaded;
  }

  static async load(options: EngineOptions = {}): Promise<LLM> {
    return new LLM(await loadEngine(options));
  }

  get config(): EngineConfig {
    return this.loaded.config;
  }

  /** The other ranks of a parallel run (docs/parallelism.md), or null on one device: for fault drills (`kill`). */
  get parallelRanks(): Ranks | null {
    return this.loaded.ranks;
  }
  /** Where the model's files were read from: its directory (the Hugging Face cache's snapshot for a repo id) or GGUF file. */
  get modelPath(): string {
    return this.loaded.modelPath;
  }
  /** The repo id as given, or the model directory's name. */
  get modelName(): string {
    return this.loaded.modelName;
  }
  get modelConfig(): ModelConfig {
    return this.loaded.modelConfig;
  }
  /** The model's layers, for cost models (benchmarks). */
  get model(): CausalLM {
    return this.loaded.model;
  }
  get tokenizer(): Tokenizer | null {
    return this.loaded.tokenizer;
  }
  /**
   * The decoder layers whose weights stream from host memory (`cpuOffloadGb`) and their bytes
   * there, rank 0's in a parallel run (the other ranks' bytes, all together, beside them); null: none.
   */
  get weightOffload(): { layers: number[]; hostBytes: number; otherRanksHostBytes: number } | null {
    const offload = this.loaded.offload;
    return offload && { layers: offload.layers, hostBytes: offload.stream.hostBytes, otherRanksHostBytes: this.loaded.ranks?.weightHostBytes ?? 0 };
  }
  get backendName(): string {
    return this.loaded.backend.name;
  }
  get maxModelLen(): number {
    return this.engine.maxModelLen;
  }
  /** Sampling defaults from the model's generation_config.json. */
  get samplingDefaults(): Partial<SamplingParams> {
    return this.loaded.samplingDefaults;
  }
  private get engine(): LLMEngine {
    return this.loaded.engine;
  }

  stats(): EngineStats {
    return this.engine.stats();
  }

  /** Token ids of a prompt as the engine will see them. */
  encode(prompt: Prompt): number[] {
    if (typeof prompt !== 'string') return prompt;
    return this.requireTokenizer().encode(prompt, { addSpecialTokens: true });
  }

  /** Renders messages with the model's chat template and tokenizes the result. */
  encodeChat(messages: ChatMessage[]): number[] {
    const tokenizer = this.requireTokenizer();
    return tokenizer.encode(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
  }

  /**
   * Generates completions for all prompts as one batch; results come back in prompt order. With
   * `lora`, every prompt runs with that adapter (batches mixing adapters come from concurrent calls).
   */
  async generate(prompts: Prompt | Prompt[], params: Partial<SamplingParams> = {}, options: { lora?: string } = {}): Promise<RequestOutput[]> {
    if (Array.isArray(prompts) && prompts.length === 0) return [];
    const list = Array.isArray(prompts) && typeof prompts[0] !== 'number' ? (prompts as Prompt[]) : [prompts as Prompt];
    const resolved = this.resolveParams(params);
    const lora = this.servedLora(options.lora);
    const encoded = list.map((p) => this.encode(p));
    const grammar = await this.compileGrammar(resolved);
    const results: Promise<RequestOutput>[] = [];
    const added: string[] = [];
    try {
      list.forEach((prompt, i) => {
        const requestId = randomUUID();
        results.push(
          new Promise<RequestOutput>((resolve, reject) => {
            this.failers.set(requestId, reject);
            this.engine.addRequest({
              id: requestId,
              prompt: typeof prompt === 'string' ? prompt : null,
              promptTokenIds: encoded[i],
              params: resolved,
              grammar,
              lora,
              onUpdate: (request) => {
                if (this.isDone(request)) {
                  this.failers.delete(request.id);
                  resolve(snapshot(request, true));
                }
              },
            });
          }),
        );
        added.push(requestId);
      });
    } catch (error) {
      for (const id of added) this.engine.abort(id);
      for (const id of added) this.failers.delete(id);
      results.forEach((r) => r.catch(() => undefined));
      throw error;
    }
    this.pump();
    return Promise.all(results);
  }

  /**
   * Beam search over each prompt (as vLLM's LLM.beam_search): every one of `beamWidth` beams,
   * best first, as transformers' generate(num_beams=beamWidth, do_sample=False) returns them
   * (lengthPenalty and earlyStopping as it defines them). The same as `generate` with
   * useBeamSearch and n = beamWidth.
   */
  beamSearch(
    prompts: Prompt | Prompt[],
    params: { beamWidth: number } & Partial<Pick<SamplingParams, 'maxTokens' | 'lengthPenalty' | 'earlyStopping' | 'ignoreEos' | 'stopTokenIds' | 'skipSpecialTokens'>>,
  ): Promise<RequestOutput[]> {
    return this.generate(prompts, { ...params, useBeamSearch: true, n: params.beamWidth });
  }

  /** Streams one request's updates; breaking out of the loop or aborting the signal aborts it. */
  async *stream(prompt: Prompt, params: Partial<SamplingParams> = {}, options: RequestOptions = {}): AsyncGenerator<StreamUpdate> {
    const requestId = options.requestId ?? randomUUID();
    const resolved = this.resolveParams(params);
    const lora = this.servedLora(options.lora);
    const promptTokenIds = this.encode(prompt);
    const grammar = await this.compileGrammar(resolved);
    const queue: StreamUpdate[] = [];
    let wake: (() => void) | null = null;
    let failure: Error | null = null;
    let done = false;
    this.failers.set(requestId, (error) => {
      failure = error;
      wake?.();
    });
    try {
      this.engine.addRequest({
        id: requestId,
        prompt: typeof prompt === 'string' ? prompt : null,
        promptTokenIds,
        params: resolved,
        grammar,
        lora,
        onUpdate: (request) => {
          const finished = this.isDone(request);
          const deltas = request.completions.flatMap((c) => (c.pending ? [c.pending] : []));
          queue.push({ requestId, deltas, output: snapshot(request, finished), finished });
          wake?.();
        },
      });
    } catch (error) {
      this.failers.delete(requestId);
      throw error;
    }
    const onAbort = () => this.abort(requestId);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) this.abort(requestId);
    this.pump();
    try {
      while (!done) {
        if (queue.length === 0 && failure === null) await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
        if (failure) throw failure;
        const update = queue.shift();
        if (!update) continue;
        done = update.finished;
        yield update;
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      this.failers.delete(requestId);
      if (!done) this.abort(requestId);
    }
  }

  /**
   * Serves the PEFT LoRA adapter in directory `path` as `name` (requests then name it as their
   * model). Refused when LoRA is not enabled, the name is taken, or the adapter does not fit the
   * model (rank over maxLoraRank, a module Keel does not adapt, shapes that differ).
   */
  loadLoraAdapter(name: string, path: string): LoraAdapterInfo {
    return describeLora(this.requireLoras().load(name, path));
  }

  /** Stops serving adapter `name` (a not_found error if none is loaded): requests running with it finish with it. */
  unloadLoraAdapter(name: string): void {
    this.requireLoras().unload(name);
  }

  /** The adapters being served (none when LoRA is not enabled). */
  get loraAdapters(): LoraAdapterInfo[] {
    return this.loaded.loras?.list().map(describeLora) ?? [];
  }

  /**
   * Records every engine step from now on into a step timeline (docs/benchmarks.md, "Step
   * timeline") until `stopStepTimeline`: its composition, host phases and device times. Each
   * step's record goes to `onStep` a couple of steps after it ran, once its device times can be
   * read without waiting for the device.
   */
  startStepTimeline(onStep: (record: StepRecord) => void): void {
    if (this.timeline !== null) throw new Error('a step timeline is recording already');
    const timeline = new StepTimeline(this.loaded.backend, onStep);
    this.engine.recordSteps(timeline);
    this.timeline = timeline;
  }

  /** Ends the step timeline, handing on the steps it still held (waiting for the device if they are still running). */
  stopStepTimeline(): void {
    const timeline = this.timeline;
    if (timeline === null) throw new Error('no step timeline is recording');
    this.engine.recordSteps(null);
    this.timeline = null;
    timeline.finish();
  }

  /** Aborts a request in any state; its KV blocks return to the pool at once. */
  abort(requestId: string): boolean {
    return this.engine.abort(requestId);
  }

  /** Aborts everything and releases the backend's memory. */
  async close(): Promise<void> {
    this.fatal = new Error('the engine was closed');
    for (const id of [...this.failers.keys()]) this.engine.abort(id);
    while (this.running) await new Promise((resolve) => setImmediate(resolve));
    this.loaded.backend.dispose();
    await this.loaded.ranks?.close();
  }

  private requireLoras(): LoraRegistry {
    if (this.loaded.loras === null) throw invalidArgument('LoRA is not enabled: start the engine with enableLora or loraModules (--enable-lora, --lora-modules)');
    return this.loaded.loras;
  }

  /** The adapter a request names, undefined for the base model; an unknown name is a not_found error. */
  private servedLora(name: string | undefined): ServedLora | undefined {
    return name === undefined ? undefined : this.requireLoras().get(name);
  }

  private isDone(request: Request): boolean {
    return request.completions.every((c) => c.output.finishReason !== null);
  }

  private resolveParams(params: Partial<SamplingParams>): SamplingParams {
    if (this.fatal) throw this.fatal;
    return resolveSamplingParams(params, this.loaded.samplingDefaults);
  }

  /**
   * The request's structured output compiled against the model's vocabulary (cached per distinct
   * one); null without one. A bad schema, regex or grammar is an invalid-argument error naming
   * what is wrong, before the request is queued.
   */
  private async compileGrammar(params: SamplingParams): Promise<CompiledGrammar | null> {
    if (params.structuredOutput === null) return null;
    const tokenizer = this.loaded.tokenizer;
    if (tokenizer === null) throw invalidArgument('structured output needs the model\'s tokenizer (tokenizer.json), and this model has none');
    this.grammars ??= GrammarCompiler.create({
      vocabulary: tokenizer.grammarVocabulary(),
      vocabSize: this.loaded.modelConfig.vocabSize,
      stopTokenIds: this.loaded.eosTokenIds,
      cacheSize: GRAMMAR_CACHE_SIZE,
    }).catch((error: unknown) => {
      this.grammars = null;
      throw error;
    });
    return (await this.grammars).compile(params.structuredOutput);
  }

  private requireTokenizer(): Tokenizer {
    if (!this.loaded.tokenizer) throw invalidArgument('this model has no tokenizer.json: give the prompt as token ids');
    return this.loaded.tokenizer;
  }

  /** Drives engine steps until no request is left, yielding to the event loop between steps. */
  private pump(): void {
    if (this.running) return;
    this.running = true;
    const loop = () => {
      try {
        if (this.engine.hasUnfinished()) {
          this.engine.step();
          setImmediate(loop);
          return;
        }
      } catch (error) {
        this.failAll(error as Error);
      }
      this.running = false;
    };
    setImmediate(loop);
  }

  /**
   * A step failed: every request in flight fails with that error, then is aborted (failing first:
   * the abort's final update would otherwise resolve it as an aborted request).
   */
  private failAll(error: Error): void {
    const failing = [...this.failers];
    this.failers.clear();
    for (const [id, fail] of failing) {
      fail(error);
      this.engine.abort(id);
    }
  }
}

function describeLora(served: ServedLora): LoraAdapterInfo {
  return { name: served.name, path: served.adapter.path, rank: served.adapter.rank };
}
