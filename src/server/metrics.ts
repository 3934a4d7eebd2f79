import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from '../engine/llm-engine.ts';
import type { RequestOutput, SpeculationStats } from '../engine/outputs.ts';
import { kvUsage } from './engine-host/engine-replicas.ts';
import { registerReplicaMetrics, registerRouterProtocolMetrics, type MeteredEngine } from './router-metrics.ts';

const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5];
const E2E_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240];

/** Defines a metric read from the engine's stats at scrape time. */
type MetricDefiner = (name: string, help: string, read: (s: EngineStats) => number) => unknown;

/**
 * The server's Prometheus metrics, in a registry of its own (several servers may share a
 * process). Engine state is read at scrape time; latencies are observed as requests finish.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly finished: Counter<'finished_reason'>;

  constructor(modelName: string, engine: MeteredEngine) {
    const stats = () => engine.stats();
    const registers = [this.registry];
    this.registry.setDefaultLabels({ model_name: modelName });
    const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(stats()));
        },
      });
    gauge('keel_num_requests_running', 'Sequences in the running batch.', (s) => s.numRunning);
    gauge('keel_num_requests_waiting', 'Sequences waiting to be scheduled (new or preempted).', (s) => s.numWaiting);
    gauge('keel_kv_cache_usage_ratio', 'Fraction of KV-cache blocks in use (0..1).', kvUsage);
    gauge('keel_kv_cache_total_blocks', 'KV-cache blocks in the pool.', (s) => s.numKvBlocks);
    gauge('keel_kv_cache_free_blocks', 'KV-cache blocks free to allocate (cached ones included).', (s) => s.numFreeKvBlocks);
    gauge('keel_kv_cache_cached_blocks', 'KV-cache blocks registered in the prefix cache.', (s) => s.numCachedKvBlocks);
    gauge('keel_prefix_cache_hit_ratio', 'Prompt tokens served from the prefix cache (either tier) over prompt tokens admitted, since start.', (s) => s.prefixCacheHitRate);
    gauge('keel_host_kv_cache_total_blocks', 'Host blocks of the prefix cache\'s host tier (--kv-offload-gb).', (s) => s.numHostCacheBlocks);
    gauge('keel_host_kv_cache_cached_blocks', 'Host-tier blocks holding a block evicted from the device prefix cache.', (s) => s.numHostCachedBlocks);
    gauge('keel_state_checkpoints', 'States kept at cached block boundaries for prefix hits of a hybrid (linear-attention) model (--num-state-checkpoints).', (s) => s.numStateCheckpoints);
    this.registerPrefixCacheTiers(stats);

    // The engine keeps running totals; each scrape advances the counters by what was added since.
    const counter = (name: string, help: string, read: (s: EngineStats) => number) => {
      let seen = 0;
      return new Counter({
        name,
        help,
        registers,
        collect() {
          const total = read(stats());
          this.inc(total - seen);
          seen = total;
        },
      });
    };
    counter('keel_prompt_tokens_total', 'Prompt tokens admitted.', (s) => s.promptTokensTotal);
    counter('keel_generation_tokens_total', 'Tokens generated.', (s) => s.generationTokensTotal);
    counter('keel_num_preemptions_total', 'Sequences preempted (and later recomputed or swapped back in) for lack of KV blocks.', (s) => s.numPreemptionsTotal);
    counter('keel_num_swaps_total', 'Preemptions that swapped a sequence\'s KV blocks out to host memory.', (s) => s.numSwapsTotal);
    gauge('keel_num_requests_swapped', 'Sequences swapped out to host memory now.', (s) => s.numSwapped);
    gauge('keel_swap_space_used_blocks', 'Host swap-space blocks holding swapped-out KV.', (s) => s.numSwapBlocks - s.numFreeSwapBlocks);
    if (stats().speculation !== null) this.registerSpeculation(stats, gauge, counter);
    registerReplicaMetrics(this.registry, () => engine.replicaStates());
    registerRouterProtocolMetrics(this.registry, engine);

    this.ttft = new Histogram({ name: 'keel_time_to_first_token_seconds', help: 'Arrival to first generated token.', buckets: TTFT_BUCKETS, registers });
    this.tpot = new Histogram({ name: 'keel_time_per_output_token_seconds', help: 'Mean time per output token after the first, per request.', buckets: TPOT_BUCKETS, registers });
    this.e2e = new Histogram({ name: 'keel_e2e_request_latency_seconds', help: 'Arrival to last token.', buckets: E2E_BUCKETS, registers });
    this.finished = new Counter({ name: 'keel_request_success_total', help: 'Engine requests finished, by finish reason of their first completion.', labelNames: ['finished_reason'], registers });
  }

  /**
   * Prefix-cache hits by tier (`device`: found in the device pool; `host`: loaded from the host
   * tier): prompt tokens served, as a counter, and over prompt tokens admitted, as a gauge.
   */
  private registerPrefixCacheTiers(stats: () => EngineStats): void {
    const registers = [this.registry];
    const tiers = { device: (s: EngineStats) => s.deviceCachedPromptTokensTotal, host: (s: EngineStats) => s.hostCachedPromptTokensTotal };
    const seen = { device: 0, host: 0 };
    new Counter({
      name: 'keel_prefix_cache_hit_tokens_total',
      help: 'Prompt tokens served from the prefix cache, by the tier they were found in.',
      labelNames: ['tier'],
      registers,
      collect() {
        const s = stats();
        for (const [tier, read] of Object.entries(tiers) as [keyof typeof tiers, (s: EngineStats) => number][]) {
          this.inc({ tier }, read(s) - seen[tier]);
          seen[tier] = read(s);
        }
      },
    });
    new Gauge({
      name: 'keel_prefix_cache_hit_ratio_by_tier',
      help: 'Prompt tokens served from one tier of the prefix cache over prompt tokens admitted, since start.',
      labelNames: ['tier'],
      registers,
      collect() {
        const s = stats();
        for (const [tier, read] of Object.entries(tiers)) this.set({ tier }, s.promptTokensTotal === 0 ? 0 : read(s) / s.promptTokensTotal);
      },
    });
  }

  /**
   * Speculative decoding's figures since start, as vLLM names them (spec_decode_*): totals as
   * counters, the acceptance rate, mean accepted length and per-position acceptance as gauges.
   */
  private registerSpeculation(stats: () => EngineStats, gauge: MetricDefiner, counter: MetricDefiner): void {
    const registers = [this.registry];
    const spec = (s: EngineStats) => s.speculation!;
    counter('keel_spec_decode_num_drafts_total', 'Verifications: sequence steps that ran drafts after their last token.', (s) => spec(s).numSteps);
    counter('keel_spec_decode_num_draft_tokens_total', 'Draft tokens verified.', (s) => spec(s).numDraftTokens);
    counter('keel_spec_decode_num_accepted_tokens_total', 'Draft tokens accepted.', (s) => spec(s).numAcceptedTokens);
    gauge('keel_spec_decode_acceptance_ratio', 'Accepted over verified draft tokens, since start (0 before any).', (s) => spec(s).acceptanceRate ?? 0);
    gauge('keel_spec_decode_mean_accepted_length', 'Tokens a verification gives on average (accepted drafts and the token after them), since start (0 before any).', (s) => spec(s).meanAcceptedLength ?? 0);
    const positionCounter = (name: string, help: string, read: (s: SpeculationStats) => number[]) => {
      const seen: number[] = [];
      new Counter({
        name,
        help,
        labelNames: ['position'],
        registers,
        collect() {
          read(spec(stats())).forEach((total, i) => {
            this.inc({ position: String(i) }, total - (seen[i] ?? 0));
            seen[i] = total;
          });
        },
      });
    };
    positionCounter('keel_spec_decode_num_draft_tokens_per_pos_total', 'Verifications with a draft at this position (0: first): the draft tokens verified there.', (s) => s.draftTokensByPosition);
    positionCounter('keel_spec_decode_num_accepted_tokens_per_pos_total', 'Draft tokens accepted, by position among the drafts (0: first).', (s) => s.acceptedTokensByPosition);
    new Gauge({
      name: 'keel_spec_decode_acceptance_ratio_per_pos',
      help: 'Of the verifications with a draft at this position, the fraction that accepted it, since start.',
      labelNames: ['position'],
      registers,
      collect() {
        spec(stats()).acceptanceRateByPosition.forEach((rate, i) => this.set({ position: String(i) }, rate));
      },
    });
  }

  /** Records a finished engine request (one prompt, all its completions). */
  observeFinished(output: RequestOutput): void {
    const reason = output.outputs[0]?.finishReason ?? 'abort';
    this.finished.inc({ finished_reason: reason });
    const { arrivalTime, firstTokenTime, finishedTime } = output.metrics;
    if (reason === 'abort' || firstTokenTime === null || finishedTime === null) return;
    this.ttft.observe((firstTokenTime - arrivalTime) / 1000);
    this.e2e.observe((finishedTime - arrivalTime) / 1000);
    // Completions decode side by side, so the longest one paces the request.
    const longest = Math.max(...output.outputs.map((c) => c.tokenIds.length));
    if (longest > 1) this.tpot.observe((finishedTime - firstTokenTime) / 1000 / (longest - 1));
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
