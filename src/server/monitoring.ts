import type { FastifyInstance } from 'fastify';
import type { ServingContext } from './serving-context.ts';

/** GET /health, GET /metrics (Prometheus) and GET /v1/engine/stats (JSON, for the playground). */
export function registerMonitoring(app: FastifyInstance, ctx: ServingContext): void {
  // A dead engine is a 503, so that a load balancer stops sending here and a supervisor restarts the server.
  app.get('/health', async () => {
    if (ctx.engine.failure) throw ctx.engine.failure;
    return { status: 'ok' };
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
        usage: (s.numKvBlocks - s.numFreeKvBlocks) / s.numKvBlocks,
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
