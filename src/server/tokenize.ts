import type { FastifyInstance } from 'fastify';
import { bodyBytes, type ServingContext } from './serving-context.ts';

/**
 * POST /tokenize ({prompt} or {messages}) and POST /detokenize ({tokens}), as vLLM serves them:
 * the token ids the engine would see for a prompt, and the text of token ids. Both are answered
 * by the preprocessing threads (preprocess/prepare-tokenize.ts).
 */
export function registerTokenize(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/tokenize', async (request) => ctx.preprocess.run('tokenize', bodyBytes(request.body)));
  app.post('/detokenize', async (request) => ctx.preprocess.run('detokenize', bodyBytes(request.body)));
}
