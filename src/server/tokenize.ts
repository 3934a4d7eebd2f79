import type { FastifyInstance } from 'fastify';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { encodeMessages } from './chat-messages.ts';
import { badRequest } from './openai-errors.ts';
import { DetokenizeRequest, TokenizeRequest, parseBody } from './openai-schemas.ts';
import { ensureServedModel, type ServingContext } from './serving-context.ts';

/**
 * POST /tokenize ({prompt} or {messages}) and POST /detokenize ({tokens}), as vLLM serves them:
 * the token ids the engine would see for a prompt, and the text of token ids.
 */
export function registerTokenize(app: FastifyInstance, ctx: ServingContext): void {
  const tokenizer = (): Tokenizer => {
    if (!ctx.llm.tokenizer) throw badRequest('this model has no tokenizer.json, so the server cannot tokenize text');
    return ctx.llm.tokenizer;
  };

  app.post('/tokenize', async (request) => {
    const body = parseBody(TokenizeRequest, request.body);
    ensureServedModel(ctx, body.model);
    if ((body.prompt === undefined) === (body.messages === undefined)) throw badRequest('send either prompt or messages', 'prompt');
    const tokens =
      body.prompt !== undefined
        ? tokenizer().encode(body.prompt, { addSpecialTokens: body.add_special_tokens ?? true })
        : encodeMessages(ctx.llm, body.messages ?? []);
    return { tokens, count: tokens.length, max_model_len: ctx.llm.maxModelLen };
  });

  app.post('/detokenize', async (request) => {
    const body = parseBody(DetokenizeRequest, request.body);
    ensureServedModel(ctx, body.model);
    const vocabSize = ctx.llm.modelConfig.vocabSize;
    const outside = body.tokens.findIndex((id) => id >= vocabSize);
    if (outside >= 0) throw badRequest(`tokens[${outside}] = ${body.tokens[outside]} is outside the vocabulary (0..${vocabSize - 1})`, `tokens[${outside}]`);
    return { prompt: tokenizer().decode(body.tokens, { skipSpecialTokens: false }) };
  });
}
