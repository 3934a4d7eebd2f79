import type { FastifyInstance } from 'fastify';
import { ApiError } from './openai-errors.ts';
import type { ServingContext } from './serving-context.ts';

/** GET /v1/models and GET /v1/models/:model: the one model this server serves. */
export function registerModels(app: FastifyInstance, ctx: ServingContext): void {
  const created = Math.floor(Date.now() / 1000);
  const card = () => ({
    id: ctx.servedModelName,
    object: 'model',
    created,
    owned_by: 'keel',
    max_model_len: ctx.engine.info.maxModelLen,
  });
  app.get('/v1/models', async () => ({ object: 'list', data: [card()] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    if (request.params.model !== ctx.servedModelName) {
      throw new ApiError(404, `The model \`${request.params.model}\` does not exist.`, { param: 'model', code: 'model_not_found' });
    }
    return card();
  });
}
