import { extname } from 'node:path';
import type { EngineOptions } from '../../config.ts';
import type { LoraAdapterInfo } from '../../engine/llm.ts';
import type { EngineStats } from '../../engine/llm-engine.ts';
import { resolveEngineConfig } from '../../engine/load-engine.ts';
import { KeelError } from '../../errors.ts';
import type { ApiError } from '../openai-errors.ts';
import { combinedStats } from './combined-stats.ts';
import { EngineClient, type EnginePrompt } from './engine-client.ts';
import { EngineGeneration, type GenerationHooks } from './engine-generation.ts';
import type { EngineInfo, StepTimelineRecording } from './engine-protocol.ts';
import { replicaDevices } from './replica-devices.ts';
import { Replica, type ReplicaEvent } from './replica.ts';
import { ReplicaRouter, type RouteReason } from './replica-router.ts';

/** One replica as /metrics and /v1/engine/stats show it. */
export interface ReplicaState {
  alive: boolean;
  /** Down, with a restart waiting or loading. */
  restarting: boolean;
  /** Restarts that brought it back since start. */
  restarts: number;
  /** Its stats, totals carried over from its engines before a restart. */
  stats: EngineStats;
  /** Sequences routed to it that have not finished. */
  outstanding: number;
  /** Engine requests routed to it since start, by why it was chosen. */
  routed: Record<RouteReason, number>;
}

/** A generation started on the replicas, with the replica running each of its prompts. */
export interface ReplicaGeneration {
  generation: EngineGeneration;
  replicas: number[];
}

/**
 * The engines the server serves from: one, or with `dataParallelSize` N, N replicas of the whole
 * model behind the one endpoint (docs/parallelism.md), each a process of its own (on CUDA, on its
 * own GPUs). A router (replica-router.ts) picks the replica of each prompt by prefix affinity and
 * load. A replica that dies fails its own requests with a 503 and takes no more; the others keep
 * serving while it is started again (`maxReplicaRestarts`, replica.ts), and it takes requests again
 * once it has loaded. The server fails (`failure`) while no replica serves, and stops (`stopped`)
 * once none is left and none will restart.
 */
export class EngineReplicas {
  /** Replica 0's: every replica loads the same model with the same settings. */
  readonly info: EngineInfo;
  /** Resolves if every replica stops for good without being closed: the server cannot serve any more. */
  readonly stopped: Promise<Error>;
  private readonly replicas: readonly Replica[];
  private readonly router: ReplicaRouter;
  private readonly outstanding: number[];
  private readonly routed: Record<RouteReason, number>[];
  private readonly listeners: ((replica: number, event: ReplicaEvent) => void)[] = [];
  /** Adapters loaded through the API since start, by name: a restarted replica loads them before it serves. */
  private readonly addedAdapters = new Map<string, string>();
  /** The step timeline's file while one is recording (startStepTimeline): a restarted replica records into its own again. */
  private timelineFile: string | null = null;

  /**
   * `clients[r]` serves replica r; `restart(r)`, when given, starts replica r's engine again
   * after its process died, up to `maxRestarts` times in a row.
   */
  constructor(clients: readonly EngineClient[], restart: { start: (replica: number) => Promise<EngineClient>; maxRestarts: number } | null = null) {
    if (clients.length === 0) throw new RangeError('EngineReplicas needs at least one engine');
    this.info = clients[0].info;
    this.replicas = clients.map((client, r) => {
      const ready = (engine: EngineClient) => this.readyRestarted(r, engine);
      const restartOf = restart && { start: () => restart.start(r), ready, maxRestarts: restart.maxRestarts };
      return new Replica(client, restartOf, (event) => this.replicaEvent(r, event));
    });
    this.router = new ReplicaRouter(clients.length, this.info.blockSize, this.info.maxNumSeqs);
    this.outstanding = clients.map(() => 0);
    this.routed = clients.map(() => ({ sticky: 0, prefix: 0, load: 0 }));
    this.stopped = Promise.all(this.replicas.map((r) => r.stopped)).then((causes) => causes[causes.length - 1]);
  }

  /**
   * Loads `options.dataParallelSize` engines (default 1): one on a thread of this process
   * (`engineEntry`, a stand-in engine thread for tests and the chaos soak, applies to it), or
   * several, each in a process of its own; on CUDA each process sees only its replica's
   * tensorParallelSize × pipelineParallelSize GPUs. Rejects with the first loading error, the
   * replicas already loaded closed.
   */
  static async start(options: EngineOptions, engineEntry?: URL): Promise<EngineReplicas> {
    const config = resolveEngineConfig(options);
    if (config.dataParallelSize === 1) return new EngineReplicas([await EngineClient.startThread(options, engineEntry)]);
    if (engineEntry !== undefined) throw new KeelError('invalid_argument', 'a stand-in engine thread serves one replica: give dataParallelSize 1 with it');
    const environments = await replicaEnvironments(config.backend, config.dataParallelSize, config.tensorParallelSize * config.pipelineParallelSize);
    const start = (r: number) => EngineClient.startProcess({ ...options, dataParallelSize: 1 }, environments[r], `keel-replica-${r}`);
    const settled = await Promise.allSettled(environments.map((_, r) => start(r)));
    const clients = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(clients.map((c) => c.close()));
      throw failed.reason;
    }
    return new EngineReplicas(clients, { start, maxRestarts: config.maxReplicaRestarts });
  }

  get size(): number {
    return this.replicas.length;
  }

  /** Why nothing can be served now (every replica down, restarting or not, or closed), if so. */
  get failure(): ApiError | null {
    return this.replicas.every((r) => r.failure !== null) ? this.replicas[this.replicas.length - 1].failure : null;
  }

  /** Which replicas are down (a dead one's requests failed with a 503), restarting or not. */
  get deadReplicas(): number[] {
    return this.replicas.flatMap((replica, r) => (replica.failure === null ? [] : [r]));
  }

  /** Of the dead replicas, those being started again. */
  get restartingReplicas(): number[] {
    return this.replicas.flatMap((replica, r) => (replica.restartPending ? [r] : []));
  }

  /** Calls `listener` with what happens to each replica: its death (its requests have failed with a 503), its restarts. */
  onReplicaEvent(listener: (replica: number, event: ReplicaEvent) => void): void {
    this.listeners.push(listener);
  }

  /** Every replica's stats as one engine's (combined-stats.ts). */
  stats(): EngineStats {
    return combinedStats(this.replicaStates());
  }

  replicaStates(): ReplicaState[] {
    return this.replicas.map((replica, r) => ({
      alive: replica.failure === null,
      restarting: replica.restartPending,
      restarts: replica.restarts,
      stats: replica.stats(),
      outstanding: this.outstanding[r],
      routed: { ...this.routed[r] },
    }));
  }

  /** The LoRA adapters served now (the same on every replica); null when LoRA is not enabled. */
  get loraAdapters(): readonly LoraAdapterInfo[] | null {
    return (this.replicas.find((r) => r.failure === null) ?? this.replicas[0]).client.loraAdapters;
  }

  /**
   * Serves the adapter on every live replica, so that any of them can run its requests; if one
   * refuses it, it is unloaded from those that took it and the refusal is thrown.
   */
  async loadLoraAdapter(name: string, path: string): Promise<void> {
    const live = this.live();
    const results = await Promise.allSettled(live.map((c) => c.loadLoraAdapter(name, path)));
    const refused = results.find((r) => r.status === 'rejected');
    if (refused === undefined) {
      this.addedAdapters.set(name, path);
      return;
    }
    await Promise.allSettled(live.filter((_, i) => results[i].status === 'fulfilled').map((c) => c.unloadLoraAdapter(name)));
    throw refused.reason;
  }

  /** Stops serving the adapter on every live replica; the first refusal (none loaded) is thrown. */
  async unloadLoraAdapter(name: string): Promise<void> {
    const refused = (await Promise.allSettled(this.live().map((c) => c.unloadLoraAdapter(name)))).find((r) => r.status === 'rejected');
    this.addedAdapters.delete(name);
    if (refused !== undefined) throw refused.reason;
  }

  /**
   * Starts one engine request per prompt, each on the replica the router picks (`sticky`: the
   * replica that ran the response a Responses API follow-up continues); see EngineGeneration.
   * Throws a 503 when no replica is alive.
   */
  generate(prompts: EnginePrompt[], hooks: GenerationHooks = {}, sticky: number | null = null): ReplicaGeneration {
    const failure = this.failure;
    if (failure) throw failure;
    const replicas = prompts.map((prompt) => {
      const loads = this.replicas.map((replica, r) => ({ alive: replica.failure === null, outstanding: this.outstanding[r], kvUsage: kvUsage(replica.client.stats()) }));
      const { replica, reason } = this.router.route(prompt, loads, sticky);
      this.routed[replica][reason]++;
      this.outstanding[replica] += prompt.params.n;
      return replica;
    });
    const ids: number[] = [];
    // Each prompt's engine as it was started: a restart's new engine never knew the old one's ids.
    const clients = replicas.map((r) => this.replicas[r].client);
    const generation = new EngineGeneration(prompts.length, (indices) => {
      for (const i of indices) clients[i].abort(ids[i]);
    }, hooks);
    prompts.forEach((prompt, i) => {
      const replica = replicas[i];
      let settled = false;
      const settle = () => {
        if (!settled) this.outstanding[replica] -= prompt.params.n;
        settled = true;
      };
      ids[i] = clients[i].start(prompt, {
        deliver: (deltas, final) => {
          if (final) settle();
          generation.deliver(i, deltas, final);
        },
        fail: (error) => {
          settle();
          generation.fail(i, error);
        },
      });
    });
    return { generation, replicas };
  }

  /**
   * Records every replica's engine steps (`keel serve --step-timeline`, docs/benchmarks.md "Step
   * timeline") into `file`, created afresh or appended to (`append`), one JSON line per step,
   * until `stopStepTimeline` or close, which write out every step recorded. With several replicas
   * each has a file of its own (stepTimelinePath) and its lines carry its index (`replica`).
   * Rejects with the first engine's refusal, the others stopped.
   */
  async startStepTimeline(file: string, append = false): Promise<void> {
    if (this.timelineFile !== null) throw new KeelError('invalid_argument', 'a step timeline is recording already');
    const live = this.replicas.flatMap((replica, r) => (replica.failure === null ? [r] : []));
    const results = await Promise.allSettled(live.map((r) => this.replicas[r].client.stepTimeline(this.recording(file, r, append))));
    const refused = results.find((result) => result.status === 'rejected');
    if (refused !== undefined) {
      await Promise.allSettled(live.filter((_, i) => results[i].status === 'fulfilled').map((r) => this.replicas[r].client.stepTimeline(null)));
      throw refused.reason;
    }
    this.timelineFile = file;
  }

  /** Ends the step timeline on every live replica, each file complete; resolves with the first refusal, if any. */
  async stopStepTimeline(): Promise<void> {
    if (this.timelineFile === null) throw new KeelError('invalid_argument', 'no step timeline is recording');
    this.timelineFile = null;
    const refused = (await Promise.allSettled(this.live().map((c) => c.stepTimeline(null)))).find((r) => r.status === 'rejected');
    if (refused !== undefined) throw refused.reason;
  }

  /** Ends replica r as a crash would (fault drills, tests); it restarts as after any death. */
  kill(replica: number): void {
    this.replicas[replica].kill();
  }

  /** Closes every replica (Replica.close), restarts under way included; resolves with the first thing that went wrong, if any. */
  async close(): Promise<Error | null> {
    const errors = await Promise.all(this.replicas.map((r) => r.close()));
    return errors.find((e) => e !== null) ?? null;
  }

  private live(): EngineClient[] {
    return this.replicas.filter((r) => r.failure === null).map((r) => r.client);
  }

  /**
   * A restarted engine serves the adapters loaded through the API since start too (its settings
   * load the others), and records the step timeline after its predecessor's lines, if one is.
   */
  private async readyRestarted(replica: number, engine: EngineClient): Promise<void> {
    for (const [name, path] of this.addedAdapters) await engine.loadLoraAdapter(name, path);
    if (this.timelineFile !== null) await engine.stepTimeline(this.recording(this.timelineFile, replica, true));
  }

  private recording(file: string, replica: number, append: boolean): StepTimelineRecording {
    const several = this.replicas.length > 1;
    return { path: several ? stepTimelinePath(file, replica) : file, fields: several ? { replica } : {}, append };
  }

  private replicaEvent(replica: number, event: ReplicaEvent): void {
    // A restarted replica's prefix cache is empty: the blocks the router remembers there are gone.
    if (event.kind === 'restarted') this.router.forget(replica);
    for (const listener of this.listeners) listener(replica, event);
  }
}

/** Replica r's step timeline file of several: `.replicaR` before FILE's extension (steps.jsonl: steps.replica0.jsonl). */
export function stepTimelinePath(file: string, replica: number): string {
  const extension = extname(file);
  return `${file.slice(0, file.length - extension.length)}.replica${replica}${extension}`;
}

/** KV blocks in use over the pool (0 for an empty pool: a dead replica's). */
export function kvUsage(stats: EngineStats): number {
  return stats.numKvBlocks === 0 ? 0 : (stats.numKvBlocks - stats.numFreeKvBlocks) / stats.numKvBlocks;
}

/**
 * What each replica's process adds to its environment: on CUDA, CUDA_VISIBLE_DEVICES naming its
 * GPUs; on the CPU backend nothing (`auto` without a usable GPU runs there, as one engine would).
 */
async function replicaEnvironments(backend: EngineOptions['backend'], replicas: number, perReplica: number): Promise<Record<string, string>[]> {
  const onCpu = () => Array.from({ length: replicas }, () => ({}));
  if (backend === 'cpu') return onCpu();
  const availability = (await import('../../backend/cuda/availability.ts')).cudaAvailability();
  if (!availability.ok) {
    if (backend === 'cuda') throw new KeelError('backend', `the CUDA backend is unavailable: ${availability.reason}`);
    return onCpu();
  }
  return replicaDevices(process.env.CUDA_VISIBLE_DEVICES, availability.deviceCount, replicas, perReplica).map((devices) => ({ CUDA_VISIBLE_DEVICES: devices }));
}
