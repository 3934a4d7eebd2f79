import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestOutput } from '../engine/outputs.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from './generation.ts';
import { shuttingDown } from './openai-errors.ts';
import { chatLogprobs } from './openai-logprobs.ts';
import { noteUsage } from './request-log.ts';
import { bodyBytes, type ServingContext } from './serving-context.ts';
import { SseWriter } from './sse.ts';
import { isVisibleDelta, streamThenEnd } from './stream-ending.ts';
import { openAiUsage, usageOf } from './usage.ts';

/** POST /v1/chat/completions: the prompt is the model's chat template over `messages`. */
export function registerChatCompletions(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/chat/completions', async (request, reply) => {
    ctx.admission.refuseWhileFull();
    const prepared = await ctx.preprocess.run('chat', bodyBytes(request.body));
    const signal = ctx.inFlight.track(reply);
    const updates = await startGeneration(ctx, [prepared.prompt], signal, 'messages');
    const response = { id: `chatcmpl-${randomUUID().replaceAll('-', '')}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: ctx.servedModelName };
    if (prepared.stream) {
      await streamChat(ctx, request, reply, updates, signal, { response, n: prepared.prompt.params.n, includeUsage: prepared.includeUsage });
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
    for await (const { deltas, final: output } of updates) {
      if (output) final = output;
      const choices = deltas.filter(isVisibleDelta).map((d) => ({
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
