import type { EngineOptions } from '../../config.ts';
import type { LoraAdapterInfo } from '../../engine/llm.ts';
import type { EngineStats } from '../../engine/llm-engine.ts';
import { resolveEngineConfig } from '../../engine/load-engine.ts';
import { KeelError } from '../../errors.ts';
import type { ApiError } from '../openai-errors.ts';
import { combinedStats } from './combined-stats.ts';
import { EngineClient, type EnginePrompt } from './engine-client.ts';
import { EngineGeneration, type GenerationHooks } from './engine-generation.ts';
import type { EngineInfo } from './engine-protocol.ts';
import { replicaDevices } from './replica-devices.ts';
import { ReplicaRouter, type RouteReason } from './replica-router.ts';

/** One replica as /metrics and /v1/engine/stats show it. */
export interface ReplicaState {
  alive: boolean;
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
 * serving, and the server fails (`failure`, `stopped`) only when none is left.
 */
export class EngineReplicas {
  /** Replica 0's: every replica loads the same model with the same settings. */
  readonly info: EngineInfo;
  /** Resolves if every replica stops without being closed: the server cannot serve any more. */
  readonly stopped: Promise<Error>;
  private readonly clients: readonly EngineClient[];
  private readonly router: ReplicaRouter;
  private readonly outstanding: number[];
  private readonly routed: Record<RouteReason, number>[];

  constructor(clients: readonly EngineClient[]) {
    if (clients.length === 0) throw new RangeError('EngineReplicas needs at least one engine');
    this.clients = clients;
    this.info = clients[0].info;
    this.router = new ReplicaRouter(clients.length, this.info.blockSize, this.info.maxNumSeqs);
    this.outstanding = clients.map(() => 0);
    this.routed = clients.map(() => ({ sticky: 0, prefix: 0, load: 0 }));
    this.stopped = Promise.all(clients.map((c) => c.stopped)).then((causes) => causes[causes.length - 1]);
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
    const settled = await Promise.allSettled(environments.map((env, r) => EngineClient.startProcess({ ...options, dataParallelSize: 1 }, env, `keel-replica-${r}`)));
    const clients = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(clients.map((c) => c.close()));
      throw failed.reason;
    }
    return new EngineReplicas(clients);
  }

  get size(): number {
    return this.clients.length;
  }

  /** Why nothing can be served any more (every replica failed or is closed), if so. */
  get failure(): ApiError | null {
    return this.clients.every((c) => c.failure !== null) ? this.clients[this.clients.length - 1].failure : null;
  }

  /** Which replicas have died (a dead one's requests failed with a 503). */
  get deadReplicas(): number[] {
    return this.clients.flatMap((c, r) => (c.failure === null ? [] : [r]));
  }

  /** Calls `listener` when replica r stops without being closed (its requests have failed with a 503). */
  onReplicaStopped(listener: (replica: number, cause: Error) => void): void {
    this.clients.forEach((c, r) => void c.stopped.then((cause) => listener(r, cause)));
  }

  /** Every replica's stats as one engine's (combined-stats.ts). */
  stats(): EngineStats {
    return combinedStats(this.replicaStates());
  }

  replicaStates(): ReplicaState[] {
    return this.clients.map((c, r) => ({ alive: c.failure === null, stats: c.stats(), outstanding: this.outstanding[r], routed: { ...this.routed[r] } }));
  }

  /** The LoRA adapters served now (the same on every replica); null when LoRA is not enabled. */
  get loraAdapters(): readonly LoraAdapterInfo[] | null {
    return (this.clients.find((c) => c.failure === null) ?? this.clients[0]).loraAdapters;
  }

  /**
   * Serves the adapter on every live replica, so that any of them can run its requests; if one
   * refuses it, it is unloaded from those that took it and the refusal is thrown.
   */
  async loadLoraAdapter(name: string, path: string): Promise<void> {
    const live = this.live();
    const results = await Promise.allSettled(live.map((c) => c.loadLoraAdapter(name, path)));
    const refused = results.find((r) => r.status === 'rejected');
    if (refused === undefined) return;
    await Promise.allSettled(live.filter((_, i) => results[i].status === 'fulfilled').map((c) => c.unloadLoraAdapter(name)));
    throw refused.reason;
  }

  /** Stops serving the adapter on every live replica; the first refusal (none loaded) is thrown. */
  async unloadLoraAdapter(name: string): Promise<void> {
    const refused = (await Promise.allSettled(this.live().map((c) => c.unloadLoraAdapter(name)))).find((r) => r.status === 'rejected');
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
      const loads = this.clients.map((c, r) => ({ alive: c.failure === null, outstanding: this.outstanding[r], kvUsage: kvUsage(c.stats()) }));
      const { replica, reason } = this.router.route(prompt, loads, sticky);
      this.routed[replica][reason]++;
      this.outstanding[replica] += prompt.params.n;
      return replica;
    });
    const ids: number[] = [];
    const generation = new EngineGeneration(prompts.length, (indices) => {
      for (const i of indices) this.clients[replicas[i]].abort(ids[i]);
    }, hooks);
    prompts.forEach((prompt, i) => {
      const replica = replicas[i];
      let settled = false;
      const settle = () => {
        if (!settled) this.outstanding[replica] -= prompt.params.n;
        settled = true;
      };
      ids[i] = this.clients[replica].start(prompt, {
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

  /** Ends replica r as a crash would (fault drills, tests). */
  kill(replica: number): void {
    this.clients[replica].kill();
  }

  /** Closes every replica (EngineClient.close); resolves with the first thing that went wrong, if any. */
  async close(): Promise<Error | null> {
    const errors = await Promise.all(this.clients.map((c) => c.close()));
    return errors.find((e) => e !== null) ?? null;
  }

  private live(): EngineClient[] {
    return this.clients.filter((c) => c.failure === null);
  }
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
