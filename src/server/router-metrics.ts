import { Counter, Gauge, type Registry } from 'prom-client';
import type { EngineStats } from '../engine/llm-engine.ts';
import { kvUsage, type ReplicaState } from './engine-host/engine-replicas.ts';
import type { EngineInfo } from './engine-host/engine-protocol.ts';
import type { RouteReason } from './engine-host/replica-router.ts';

/** What the metrics read of the engines (EngineReplicas), at scrape time. */
export interface MeteredEngine {
  readonly info: Pick<EngineInfo, 'blockSize' | 'maxLoras'>;
  /** null when LoRA is not enabled. */
  readonly loraAdapters: readonly unknown[] | null;
  /** Every replica's stats as one engine's. */
  stats(): EngineStats;
  replicaStates(): readonly ReplicaState[];
}

/**
 * What routers in front of the server read (docs/server.md): the model server protocol of
 * Kubernetes' Gateway API Inference Extension, whose endpoint picker scrapes vLLM's metric names
 * (queue length, running requests, KV-cache utilization, cache geometry, LoRA adapters). The
 * picker routes to a pod and reads one series of each name, so these describe the whole server,
 * every replica together; the replicas' own figures are keel_replica_* (registerReplicaMetrics).
 */
export function registerRouterProtocolMetrics(registry: Registry, engine: MeteredEngine): void {
  const registers = [registry];
  const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(engine.stats()));
      },
    });
  gauge('vllm:num_requests_waiting', 'Sequences waiting to be scheduled, every replica together (the picker\'s queue length).', (s) => s.numWaiting);
  gauge('vllm:num_requests_running', 'Sequences in the running batches, every replica together.', (s) => s.numRunning);
  gauge('vllm:kv_cache_usage_perc', 'Fraction of KV-cache blocks in use over every live replica\'s pool (0..1, as vLLM reports it).', kvUsage);
  // Endpoint pickers up to v1.2 of the Gateway API Inference Extension read vLLM's former name.
  gauge('vllm:gpu_cache_usage_perc', 'The same as vllm:kv_cache_usage_perc, under the name endpoint pickers before v1.3 read.', kvUsage);
  new Gauge({
    name: 'vllm:cache_config_info',
    help: 'The KV cache\'s geometry in its labels (tokens per block, blocks over every live replica); the value is 1.',
    labelNames: ['block_size', 'num_gpu_blocks'],
    registers,
    collect() {
      this.reset();
      this.set({ block_size: String(engine.info.blockSize), num_gpu_blocks: String(engine.stats().numKvBlocks) }, 1);
    },
  });
  if (engine.loraAdapters !== null) registerLoraInfo(registers, engine);
}

/**
 * vllm:lora_requests_info: one series whose labels list the adapters of running and of waiting
 * requests and the adapters a step can hold, valued at the time (Unix seconds) those labels last
 * changed; the picker reads the newest series. Present only when LoRA is enabled.
 */
function registerLoraInfo(registers: Registry[], engine: MeteredEngine): void {
  let last = { labels: '', since: 0 };
  new Gauge({
    name: 'vllm:lora_requests_info',
    help: 'LoRA adapters of the running and the waiting requests, and the most a step holds (max_lora), in its labels; the value is when they last changed (Unix seconds).',
    labelNames: ['running_lora_adapters', 'waiting_lora_adapters', 'max_lora'],
    registers,
    collect() {
      const s = engine.stats();
      const labels = { running_lora_adapters: [...s.runningLoraAdapters].sort().join(','), waiting_lora_adapters: [...s.waitingLoraAdapters].sort().join(','), max_lora: String(engine.info.maxLoras) };
      const key = JSON.stringify(labels);
      if (key !== last.labels) last = { labels: key, since: Date.now() / 1000 };
      this.reset();
      this.set(labels, last.since);
    },
  });
}

/** Each data-parallel replica's own figures, labelled `replica` (one series, replica 0, without data parallelism). */
export function registerReplicaMetrics(registry: Registry, replicas: () => readonly ReplicaState[]): void {
  const registers = [registry];
  const labelNames = ['replica'] as const;
  const gauge = (name: string, help: string, read: (r: ReplicaState) => number) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers,
      collect() {
        replicas().forEach((r, i) => this.set({ replica: String(i) }, read(r)));
      },
    });
  gauge('keel_replica_up', '1 while the replica serves, 0 while it is down (its requests failed with a 503; the others serve on), restarting or not.', (r) => (r.alive ? 1 : 0));
  gauge('keel_replica_num_requests_running', 'Sequences in the replica\'s running batch.', (r) => (r.alive ? r.stats.numRunning : 0));
  gauge('keel_replica_num_requests_waiting', 'Sequences waiting in the replica\'s scheduler.', (r) => (r.alive ? r.stats.numWaiting : 0));
  gauge('keel_replica_kv_cache_usage_ratio', 'Fraction of the replica\'s KV-cache blocks in use (0..1).', (r) => (r.alive ? kvUsage(r.stats) : 0));
  gauge('keel_replica_outstanding_sequences', 'Sequences the router sent the replica that have not finished (its measure of load).', (r) => r.outstanding);
  const counter = (name: string, help: string, read: (s: EngineStats) => number) => {
    const seen: number[] = [];
    return new Counter({
      name,
      help,
      labelNames,
      registers,
      collect() {
        replicas().forEach((r, i) => {
          this.inc({ replica: String(i) }, read(r.stats) - (seen[i] ?? 0));
          seen[i] = read(r.stats);
        });
      },
    });
  };
  const restarts: number[] = [];
  new Counter({
    name: 'keel_replica_restarts_total',
    help: 'Times the replica was started again after its process died and served again (--max-replica-restarts).',
    labelNames,
    registers,
    collect() {
      replicas().forEach((r, i) => {
        this.inc({ replica: String(i) }, r.restarts - (restarts[i] ?? 0));
        restarts[i] = r.restarts;
      });
    },
  });
  counter('keel_replica_prompt_tokens_total', 'Prompt tokens the replica admitted.', (s) => s.promptTokensTotal);
  counter('keel_replica_prefix_cache_hit_tokens_total', 'Prompt tokens the replica served from its prefix cache (either tier).', (s) => s.deviceCachedPromptTokensTotal + s.hostCachedPromptTokensTotal);
  counter('keel_replica_generation_tokens_total', 'Tokens the replica generated.', (s) => s.generationTokensTotal);
  const seen = new Map<string, number>();
  new Counter({
    name: 'keel_replica_routed_requests_total',
    help: 'Engine requests the router sent the replica, by why: sticky (a Responses API follow-up, to the replica of the response it continues), prefix (the replica holding its leading blocks), load (the least pressed).',
    labelNames: ['replica', 'reason'],
    registers,
    collect() {
      replicas().forEach((r, i) => {
        for (const [reason, total] of Object.entries(r.routed) as [RouteReason, number][]) {
          const key = `${i}/${reason}`;
          this.inc({ replica: String(i), reason }, total - (seen.get(key) ?? 0));
          seen.set(key, total);
        }
      });
    },
  });
}
