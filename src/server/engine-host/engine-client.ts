import type { ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { MessageChannel } from 'node:worker_threads';
import type { EngineOptions } from '../../config.ts';
import type { LLM } from '../../engine/llm.ts';
import type { LoraAdapterInfo } from '../../engine/llm.ts';
import type { EngineStats } from '../../engine/llm-engine.ts';
import type { RequestOutput, StreamDelta } from '../../engine/outputs.ts';
import type { SamplingParams } from '../../sampling/sampling-params.ts';
import { ApiError } from '../openai-errors.ts';
import { fromThreadError, type ThreadError } from '../thread-errors.ts';
import { startTsProcess } from '../../threads/ts-process.ts';
import { siblingModule, startTsWorker, type MessageEndpoint } from '../../threads/ts-worker.ts';
import type { EngineInfo, FromEngine, StepTimelineRecording, ToEngine } from './engine-protocol.ts';
import { OutputBuilder } from './output-builder.ts';
import { serveEngine } from './serve-engine.ts';

/** One engine request: a prompt's token ids, its resolved sampling parameters and its LoRA adapter (null: none). */
export interface EnginePrompt {
  tokenIds: number[];
  params: SamplingParams;
  lora: string | null;
}

/** Where one engine request's updates go: its new tokens and text until its whole output, or why it failed. */
export interface PromptSink {
  deliver(deltas: StreamDelta[], final: RequestOutput | null): void;
  fail(error: Error): void;
}

/** How long `close` waits for the engine to stop before ending its thread regardless. */
const CLOSE_TIMEOUT_MS = 10_000;
/** How long a replica's process gets to exit once its channel is closed, before it is killed. */
const PROCESS_EXIT_TIMEOUT_MS = 5_000;

const ENGINE_THREAD = siblingModule('./engine-thread', import.meta.url);
const ENGINE_PROCESS = siblingModule('./engine-process', import.meta.url);

interface PromptRun {
  sink: PromptSink;
  output: OutputBuilder;
}

/** The channel to the engine, and how to end its other side. */
interface Transport {
  endpoint: MessageEndpoint<FromEngine, ToEngine>;
  /** Ends the other side (it may be stuck in a step): at once for a thread, after a grace period for a process. */
  terminate(): Promise<void>;
  /** Ends the other side as a crash would: for fault drills. */
  kill(): void;
}

/**
 * The server's handle on one engine, which runs on a thread of its own (`startThread`) or, as a
 * data-parallel replica, in a process of its own (`startProcess`): `start` and `abort` of engine
 * requests, the latest stats, and `close`. If the engine dies (an uncaught error, a crash, its
 * process killed), every request in flight fails with a 503 and `stopped` resolves with why.
 */
export class EngineClient {
  readonly info: EngineInfo;
  /** Resolves if the engine stops without being closed: the server cannot serve any more. */
  readonly stopped: Promise<Error>;
  private latestStats: EngineStats;
  private readonly transport: Transport;
  private readonly runs = new Map<number, PromptRun>();
  private nextId = 1;
  private deathError: ApiError | null = null;
  private closing: Promise<Error | null> | null = null;
  private onClosed: ((error: Error | null) => void) | null = null;
  private reportStopped: (error: Error) => void = () => undefined;
  private adapters: LoraAdapterInfo[] | null;
  /** Calls answered by the engine ('lora-done', 'step-timeline-done'), by id. */
  private readonly calls = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();

  private constructor(transport: Transport, info: EngineInfo, stats: EngineStats) {
    this.transport = transport;
    this.info = info;
    this.latestStats = stats;
    this.adapters = info.loraAdapters;
    this.stopped = new Promise((resolve) => (this.reportStopped = resolve));
    transport.endpoint.on('message', (message) => this.onMessage(message));
  }

  /** Loads the model on a new worker thread; rejects with the loading error (an unknown model...). */
  static async startThread(config: EngineOptions, entry: URL = ENGINE_THREAD): Promise<EngineClient> {
    const worker = startTsWorker(entry, config, 'keel-engine');
    const terminate = async () => void (await worker.terminate());
    const transport: Transport = { endpoint: worker, terminate, kill: () => void terminate() };
    const loaded = await loading(worker, handshake(worker), 'the engine thread', (code) => `code ${code}`);
    const client = new EngineClient(transport, loaded.info, loaded.stats);
    worker.on('error', (error) => client.die(error));
    worker.on('exit', (code) => client.die(new Error(`the engine thread exited with code ${code}`)));
    return client;
  }

  /**
   * Loads the model in a new process (`engine-process.ts`) with `env` added to its environment
   * (a data-parallel replica: CUDA_VISIBLE_DEVICES showing it its own GPUs); rejects with the
   * loading error. The process serves the same protocol over its IPC channel.
   */
  static async startProcess(config: EngineOptions, env: Record<string, string>, name: string): Promise<EngineClient> {
    const child = startTsProcess(ENGINE_PROCESS, name, env);
    const endpoint = processEndpoint(child);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const transport: Transport = {
      endpoint,
      terminate: async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        // Its engine has stopped: closing the channel ends the process (engine-process.ts).
        if (child.connected) child.disconnect();
        const timer = setTimeout(() => child.kill('SIGKILL'), PROCESS_EXIT_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      },
      kill: () => void child.kill('SIGKILL'),
    };
    const ready = handshake(endpoint);
    child.send(config);
    const describe = (code: number | null, signal: NodeJS.Signals | null) => (signal === null ? `code ${code}` : `signal ${signal}`);
    const loaded = await loading(child, ready, `the engine process ${name}`, describe);
    const client = new EngineClient(transport, loaded.info, loaded.stats);
    child.on('error', (error) => client.die(error));
    child.on('exit', (code, signal) => client.die(new Error(`the engine process ${name} exited with ${describe(code, signal)}`)));
    return client;
  }

  /**
   * Serves an engine already loaded in this thread, over the same protocol: for callers that hold
   * the LLM themselves (`keel bench serve --launch`). Its steps then share this event loop.
   */
  static async inThisThread(llm: LLM): Promise<EngineClient> {
    const { port1, port2 } = new MessageChannel();
    serveEngine(port2, llm);
    const terminate = async () => {
      port1.close();
      port2.close();
    };
    const transport: Transport = { endpoint: port1, terminate, kill: () => void terminate() };
    const { info, stats } = await handshake(port1);
    return new EngineClient(transport, info, stats);
  }

  /** The engine's stats as last reported (every few tens of milliseconds, and between steps). */
  stats(): EngineStats {
    return this.latestStats;
  }

  /** Why the engine can no longer serve, if it cannot. */
  get failure(): ApiError | null {
    return this.deathError;
  }

  /** The LoRA adapters served now; null when LoRA is not enabled. */
  get loraAdapters(): readonly LoraAdapterInfo[] | null {
    return this.adapters;
  }

  /** Serves the PEFT adapter at `path` as `name`; rejects with the engine's reason (a KeelError) if it is refused. */
  loadLoraAdapter(name: string, path: string): Promise<void> {
    return this.call((id) => ({ type: 'load-lora', id, name, path }));
  }

  /** Stops serving adapter `name`; rejects with a not_found KeelError if none is loaded. */
  unloadLoraAdapter(name: string): Promise<void> {
    return this.call((id) => ({ type: 'unload-lora', id, name }));
  }

  /**
   * Records the engine's step timeline into a file (`recording`), or stops (null) with the file
   * complete; rejects with the engine's reason (a file it cannot open, one recording already).
   */
  stepTimeline(recording: StepTimelineRecording | null): Promise<void> {
    return this.call((id) => ({ type: 'step-timeline', id, recording }));
  }

  private call(message: (id: number) => ToEngine): Promise<void> {
    if (this.deathError) return Promise.reject(this.deathError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.transport.endpoint.postMessage(message(id));
    });
  }

  /** Starts one engine request; its updates go to `sink`. Returns its id, for `abort`. */
  start(prompt: EnginePrompt, sink: PromptSink): number {
    if (this.deathError) throw this.deathError;
    const id = this.nextId++;
    const output = new OutputBuilder(String(id), prompt.tokenIds, prompt.params.n, prompt.params.logprobs !== null);
    this.runs.set(id, { sink, output });
    this.transport.endpoint.postMessage({ type: 'add', id, tokenIds: prompt.tokenIds, params: prompt.params, lora: prompt.lora });
    return id;
  }

  /** Aborts engine request `id` if it still runs; its last update then comes as usual. */
  abort(id: number): void {
    if (this.runs.has(id)) this.transport.endpoint.postMessage({ type: 'abort', id });
  }

  /** Ends the engine as a crash would (fault drills, tests): its requests fail with a 503. */
  kill(): void {
    this.transport.kill();
  }

  /**
   * Aborts what is in flight, frees the engine and ends its thread, forcibly when it has not
   * stopped within 10 s. Resolves with what went wrong on the way, if anything did.
   */
  close(): Promise<Error | null> {
    this.closing ??= this.stop();
    return this.closing;
  }

  private async stop(): Promise<Error | null> {
    let error: Error | null = null;
    if (this.deathError === null) {
      const closed = new Promise<Error | null>((resolve) => (this.onClosed = resolve));
      this.transport.endpoint.postMessage({ type: 'close' });
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<Error>((resolve) => (timer = setTimeout(() => resolve(new Error(`the engine did not stop within ${CLOSE_TIMEOUT_MS / 1000} s`)), CLOSE_TIMEOUT_MS)));
      error = await Promise.race([closed, timedOut]);
      clearTimeout(timer);
      this.deathError = new ApiError(503, 'the server is shutting down; retry against another instance', { code: 'shutting_down' });
      this.failAll(this.deathError);
    }
    await this.transport.terminate();
    return error;
  }

  private onMessage(message: FromEngine): void {
    switch (message.type) {
      case 'updates': {
        // Fresh stats first: whoever sees a request end (its client, a test waiting for the pool to
        // be free) then sees the KV blocks it held back in the pool.
        this.latestStats = message.stats;
        for (const update of message.updates) {
          const run = this.runs.get(update.id);
          if (!run) continue;
          run.output.add(update.deltas);
          if (update.finished) this.runs.delete(update.id);
          run.sink.deliver(update.deltas, update.finished ? run.output.build(update.finished) : null);
        }
        // Once the responses have written what they got (the promise jobs that run after this
        // message), and not before: the next batch then waits for the event loop's next turn.
        setImmediate(() => this.transport.endpoint.postMessage({ type: 'ack' }));
        return;
      }
      case 'failed': {
        const run = this.runs.get(message.id);
        if (!run) return;
        this.runs.delete(message.id);
        run.sink.fail(fromThreadError(message.error));
        return;
      }
      case 'stats':
        this.latestStats = message.stats;
        return;
      case 'lora-done':
        this.adapters = message.adapters;
        this.answered(message.id, message.error);
        return;
      case 'step-timeline-done':
        this.answered(message.id, message.error);
        return;
      case 'closed':
        this.onClosed?.(message.error ? fromThreadError(message.error) : null);
        return;
      case 'ready':
      case 'load-failed':
        return;
    }
  }

  private answered(id: number, error: ThreadError | null): void {
    const call = this.calls.get(id);
    this.calls.delete(id);
    if (error === null) call?.resolve();
    else call?.reject(fromThreadError(error));
  }

  /** The engine stopped without being asked to: fail everything in flight, and say so. */
  private die(cause: Error): void {
    if (this.closing !== null || this.deathError !== null) return;
    this.deathError = new ApiError(503, 'the inference engine has stopped; retry against another instance', { code: 'engine_dead' });
    this.failAll(this.deathError);
    this.reportStopped(cause);
  }

  private failAll(error: Error): void {
    for (const call of this.calls.values()) call.reject(error);
    this.calls.clear();
    const runs = [...this.runs.values()];
    this.runs.clear();
    for (const run of runs) run.sink.fail(error);
  }
}

/** The parent's end of a child process's IPC channel, as a MessageEndpoint. */
function processEndpoint(child: ChildProcess): MessageEndpoint<FromEngine, ToEngine> {
  return {
    // Once the process is gone nothing can reach it; its exit fails what was in flight.
    postMessage: (message) => void (child.connected && child.send(message)),
    on: (event, listener) => child.on(event, listener as (message: unknown) => void),
    off: (event, listener) => child.off(event, listener as (message: unknown) => void),
  };
}

/** Waits for a loading engine's handshake, or for its thread or process to fail or exit first. */
function loading<T>(
  owner: EventEmitter,
  ready: Promise<T>,
  what: string,
  describeExit: (code: number, signal: NodeJS.Signals | null) => string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const failed = (error: Error) => reject(error);
    const exited = (code: number, signal: NodeJS.Signals | null = null) => reject(new Error(`${what} exited with ${describeExit(code, signal)} while loading`));
    owner.once('error', failed);
    owner.once('exit', exited);
    ready.then(resolve, reject).finally(() => {
      owner.off('error', failed);
      owner.off('exit', exited);
    });
  });
}

/** Waits for the engine's 'ready' and first stats, or for why it could not load. */
function handshake(endpoint: MessageEndpoint<FromEngine, ToEngine>): Promise<{ info: EngineInfo; stats: EngineStats }> {
  return new Promise((resolve, reject) => {
    let info: EngineInfo | null = null;
    const listener = (message: FromEngine) => {
      if (message.type === 'ready') info = message.info;
      else if (message.type === 'stats' && info !== null) {
        endpoint.off('message', listener);
        resolve({ info, stats: message.stats });
      } else if (message.type === 'load-failed') {
        endpoint.off('message', listener);
        reject(fromThreadError(message.error));
      }
    };
    endpoint.on('message', listener);
  });
}
