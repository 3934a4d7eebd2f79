import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { readJsonBody } from './json-body.ts';
import { ApiError, badRequest, toApiError } from './openai-errors.ts';
import { parseBody } from './openai-schemas.ts';
import { bodyBytes, type ServingContext } from './serving-context.ts';

const LoadLoraRequest = z.strictObject({ lora_name: z.string(), lora_path: z.string() });
const UnloadLoraRequest = z.strictObject({ lora_name: z.string(), lora_int_id: z.number().int().optional() });

/**
 * GET /v1/models and GET /v1/models/:model: the base model and the LoRA adapters served (each
 * with the base as its parent, as vLLM lists them). POST /v1/load_lora_adapter and
 * /v1/unload_lora_adapter add and remove adapters while serving (vLLM's names and bodies).
 */
export function registerModels(app: FastifyInstance, ctx: ServingContext): void {
  const created = Math.floor(Date.now() / 1000);
  const maxModelLen = ctx.engine.info.maxModelLen;
  const cards = () => [
    { id: ctx.servedModelName, object: 'model', created, owned_by: 'keel', root: ctx.engine.info.modelPath, parent: null, max_model_len: maxModelLen },
    ...(ctx.engine.loraAdapters ?? []).map((a) => ({ id: a.name, object: 'model', created, owned_by: 'keel', root: a.path, parent: ctx.servedModelName, max_model_len: maxModelLen })),
  ];
  app.get('/v1/models', async () => ({ object: 'list', data: cards() }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    const card = cards().find((c) => c.id === request.params.model);
    if (card === undefined) throw new ApiError(404, `The model \`${request.params.model}\` does not exist.`, { param: 'model', code: 'model_not_found' });
    return card;
  });

  app.post('/v1/load_lora_adapter', async (request, reply) => {
    const body = parseBody(LoadLoraRequest, readJsonBody(bodyBytes(request.body)));
    requireLora(ctx);
    if (body.lora_name === ctx.servedModelName) throw badRequest(`${body.lora_name} is the base model's name`, 'lora_name');
    await ctx.engine.loadLoraAdapter(body.lora_name, body.lora_path).catch((error: unknown) => {
      throw toApiError(error, 'lora_path');
    });
    ctx.logger.log('info', 'LoRA adapter loaded', { name: body.lora_name, path: body.lora_path });
    return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
  });

  app.post('/v1/unload_lora_adapter', async (request, reply) => {
    const body = parseBody(UnloadLoraRequest, readJsonBody(bodyBytes(request.body)));
    requireLora(ctx);
    await ctx.engine.unloadLoraAdapter(body.lora_name).catch((error: unknown) => {
      throw toApiError(error, 'lora_name');
    });
    ctx.logger.log('info', 'LoRA adapter unloaded', { name: body.lora_name });
    return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${body.lora_name}' removed successfully.`);
  });
}

function requireLora(ctx: ServingContext): void {
  if (ctx.engine.loraAdapters === null) throw badRequest('LoRA is not enabled on this server: start it with --enable-lora or --lora-modules');
}
