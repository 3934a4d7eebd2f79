import type { FastifyInstance } from 'fastify';
import type { ServingContext } from './serving-context.ts';

/**
 * POST /start_profile and /stop_profile (vLLM's names), served only when the server records a
 * step timeline (`--step-timeline FILE`), as vLLM serves them only with its profiler configured:
 * stop ends the recording, every step written out (the file can be read whole then); start begins
 * another, appended to the same file(s), its steps numbered from 0 again. Answered with an empty 200.
 */
export function registerStepTimelineRoutes(app: FastifyInstance, ctx: ServingContext, file: string): void {
  app.post('/start_profile', async (_request, reply) => {
    await ctx.engine.startStepTimeline(file, true);
    ctx.logger.log('info', 'step timeline started', { file });
    return reply.code(200).send();
  });
  app.post('/stop_profile', async (_request, reply) => {
    await ctx.engine.stopStepTimeline();
    ctx.logger.log('info', 'step timeline stopped', { file });
    return reply.code(200).send();
  });
}
