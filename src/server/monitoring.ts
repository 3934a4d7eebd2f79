import type { FastifyInstance } from 'fastify';
import { kvUsage } from './engine-host/engine-replicas.ts';
import type { ServingContext } from './serving-context.ts';

/** GET /health, GET /metrics (Prometheus) and GET /v1/engine/stats (JSON, for the playground). */
export function registerMonitoring(app: FastifyInstance, ctx: ServingContext): void {
  // A dead engine is a 503, so that a load balancer stops sending here and a supervisor restarts
  // the server. With data parallelism that is while no replica serves: while some do, the server
  // is `degraded` (200), naming the dead ones and those of them being restarted, which
  // keel_replica_up shows too (docs/parallelism.md).
  app.get('/health', async () => {
    if (ctx.engine.failure) throw ctx.engine.failure;
    const dead = ctx.engine.deadReplicas;
    return dead.length === 0 ? { status: 'ok' } : { status: 'degraded', dead_replicas: dead, restarting_replicas: ctx.engine.restartingReplicas };
  });

  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await ctx.metrics.render();
    return reply.type(contentType).send(body);
  });

  app.get('/v1/engine/stats', async () => {
    const s = ctx.engine.stats();
    return {
      model: ctx.servedModelName,
      running: s.numRunning,
      waiting: s.numWaiting,
      in_flight_requests: ctx.inFlight.size,
      kv_cache: {
        block_size: ctx.engine.info.blockSize,
        total_blocks: s.numKvBlocks,
        used_blocks: s.numKvBlocks - s.numFreeKvBlocks,
        free_blocks: s.numFreeKvBlocks,
        cached_blocks: s.numCachedKvBlocks,
        usage: kvUsage(s),
      },
      prefix_cache_hit_rate: s.prefixCacheHitRate,
      prefix_cache_hit_tokens: { device: s.deviceCachedPromptTokensTotal, host: s.hostCachedPromptTokensTotal },
      host_kv_cache: { total_blocks: s.numHostCacheBlocks, cached_blocks: s.numHostCachedBlocks },
      prompt_tokens_total: s.promptTokensTotal,
      generation_tokens_total: s.generationTokensTotal,
      preemptions_total: s.numPreemptionsTotal,
      swaps_total: s.numSwapsTotal,
      swapped: s.numSwapped,
      swap_space: { total_blocks: s.numSwapBlocks, free_blocks: s.numFreeSwapBlocks },
      generation_tokens_per_second: ctx.generationRate.perSecond(),
      replicas: ctx.engine.replicaStates().map((r, i) => ({
        replica: i,
        alive: r.alive,
        restarting: r.restarting,
        restarts: r.restarts,
        running: r.alive ? r.stats.numRunning : 0,
        waiting: r.alive ? r.stats.numWaiting : 0,
        outstanding_sequences: r.outstanding,
        kv_cache_usage: r.alive ? kvUsage(r.stats) : 0,
        prompt_tokens_total: r.stats.promptTokensTotal,
        prefix_cache_hit_tokens: r.stats.deviceCachedPromptTokensTotal + r.stats.hostCachedPromptTokensTotal,
        routed: r.routed,
      })),
      speculative_decoding: s.speculation && {
        drafts: s.speculation.numSteps,
        draft_tokens: s.speculation.numDraftTokens,
        accepted_tokens: s.speculation.numAcceptedTokens,
        acceptance_rate: s.speculation.acceptanceRate,
        mean_accepted_length: s.speculation.meanAcceptedLength,
        acceptance_rate_by_position: s.speculation.acceptanceRateByPosition,
      },
    };
  });
}
