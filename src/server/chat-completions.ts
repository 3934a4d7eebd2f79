import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestOutput } from '../engine/outputs.ts';
import { encodeMessages } from './chat-messages.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from './generation.ts';
import { badRequest, shuttingDown } from './openai-errors.ts';
import { chatLogprobs } from './openai-logprobs.ts';
import { commonSamplingFields, maxTokensField, resolveRequestParams } from './openai-sampling.ts';
import { ChatCompletionRequest, parseBody } from './openai-schemas.ts';
import { noteUsage } from './request-log.ts';
import { ensureServedModel, type ServingContext } from './serving-context.ts';
import { SseWriter } from './sse.ts';
import { isVisibleDelta, streamThenEnd } from './stream-ending.ts';
import { openAiUsage, usageOf } from './usage.ts';

/** POST /v1/chat/completions: the prompt is the model's chat template over `messages`. */
export function registerChatCompletions(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/chat/completions', async (request, reply) => {
    const body = parseBody(ChatCompletionRequest, request.body);
    ensureServedModel(ctx, body.model);
    const tokenIds = encodeMessages(ctx.llm, body.messages);
    if (body.top_logprobs !== null && body.top_logprobs !== undefined && body.logprobs !== true) {
      throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
    }
    const maxTokensName = body.max_completion_tokens !== null && body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
    const params = resolveRequestParams(
      [
        ...commonSamplingFields(body),
        maxTokensField(maxTokensName, body.max_completion_tokens ?? body.max_tokens, tokenIds.length, ctx.llm.maxModelLen, 'messages'),
        { name: 'top_logprobs', field: 'logprobs', value: body.logprobs === true ? (body.top_logprobs ?? 0) : null },
      ],
      ctx.llm.samplingDefaults,
    );
    const signal = ctx.inFlight.track(reply);
    const updates = await startGeneration(ctx, [{ tokenIds, params }], signal, 'messages');
    const response = { id: `chatcmpl-${randomUUID().replaceAll('-', '')}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: ctx.servedModelName };
    if (body.stream) {
      await streamChat(ctx, request, reply, updates, signal, { response, n: params.n, includeUsage: body.stream_options?.include_usage === true });
      return reply;
    }
    const [final] = await collectOutputs(updates);
    const reason = abortReason(signal);
    if (reason === 'client_gone') return reply.hijack();
    if (reason === 'shutdown') throw shuttingDown();
    const usage = usageOf([final]);
    noteUsage(request, usage);
    return {
      ...response,
      choices: final.outputs.map((c) => ({
        index: c.index,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null,
        finish_reason: c.finishReason,
      })),
      usage: openAiUsage(usage),
    };
  });
}

interface ChatStream {
  response: { id: string; object: string; created: number; model: string };
  n: number;
  includeUsage: boolean;
}

async function streamChat(
  ctx: ServingContext,
  request: FastifyRequest,
  reply: FastifyReply,
  updates: AsyncGenerator<PromptUpdate>,
  signal: AbortSignal,
  stream: ChatStream,
): Promise<void> {
  const sse = new SseWriter(reply);
  const chunk = (choices: object[], usage: object | null = null) => ({
    ...stream.response,
    object: 'chat.completion.chunk',
    choices,
    ...(stream.includeUsage ? { usage } : {}),
  });
  const usageChunk = stream.includeUsage ? (usage: object) => chunk([], usage) : null;
  await streamThenEnd(ctx, request, sse, signal, usageChunk, async () => {
    let final: RequestOutput | null = null;
    for (let index = 0; index < stream.n; index++) {
      await sse.send(chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
    }
    for await (const { update } of updates) {
      final = update.output;
      const choices = update.deltas.filter(isVisibleDelta).map((d) => ({
        index: d.index,
        delta: d.text !== '' ? { content: d.text } : {},
        logprobs: d.logprobs ? chatLogprobs(d.logprobs) : null,
        finish_reason: d.finishReason,
      }));
      if (choices.length > 0) await sse.send(chunk(choices));
      if (sse.closed) break;
    }
    return final ? [final] : [];
  });
}
