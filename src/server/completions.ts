import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestOutput } from '../engine/outputs.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from './generation.ts';
import { shuttingDown } from './openai-errors.ts';
import { completionLogprobs } from './openai-logprobs.ts';
import type { PreparedCompletion } from './preprocess/preprocess-protocol.ts';
import { noteUsage } from './request-log.ts';
import { bodyBytes, type ServingContext } from './serving-context.ts';
import { SseWriter } from './sse.ts';
import { isVisibleDelta, streamThenEnd } from './stream-ending.ts';
import { openAiUsage, usageOf } from './usage.ts';

/**
 * POST /v1/completions: one engine request per prompt of the batch; choice `i * n + k` is the
 * k-th completion of prompt i, as OpenAI numbers them.
 */
export function registerCompletions(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/completions', async (request, reply) => {
    ctx.admission.refuseWhileFull();
    const prepared = await ctx.preprocess.run('completion', bodyBytes(request.body));
    const signal = ctx.inFlight.track(reply);
    const { updates } = await startGeneration(ctx, prepared.prompts, signal, 'prompt');
    const response = { id: `cmpl-${randomUUID().replaceAll('-', '')}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: prepared.prompts[0].lora ?? ctx.servedModelName };
    const { n, prompts } = prepared;
    if (prepared.stream) {
      await streamCompletions(ctx, request, reply, updates, signal, { response, n, prompts, includeUsage: prepared.includeUsage || ctx.forceIncludeUsage });
      return reply;
    }
    const outputs = await collectOutputs(updates);
    const reason = abortReason(signal);
    if (reason === 'client_gone') return reply.hijack();
    if (reason === 'shutdown') throw shuttingDown();
    const usage = usageOf(outputs);
    noteUsage(request, usage);
    return {
      ...response,
      choices: outputs.flatMap((output, p) =>
        output.outputs.map((c) => ({
          index: p * n + c.index,
          text: prompts[p].echoText + c.text,
          logprobs: c.logprobs ? completionLogprobs(c.logprobs, prompts[p].echoText.length).logprobs : null,
          finish_reason: c.finishReason,
        })),
      ),
      usage: openAiUsage(usage),
    };
  });
}

interface CompletionStream {
  response: { id: string; object: string; created: number; model: string };
  n: number;
  prompts: PreparedCompletion['prompts'];
  includeUsage: boolean;
}

async function streamCompletions(
  ctx: ServingContext,
  request: FastifyRequest,
  reply: FastifyReply,
  updates: AsyncGenerator<PromptUpdate>,
  signal: AbortSignal,
  stream: CompletionStream,
): Promise<void> {
  const sse = new SseWriter(reply);
  const chunk = (choices: object[], usage: object | null = null) => ({ ...stream.response, choices, ...(stream.includeUsage ? { usage } : {}) });
  const usageChunk = stream.includeUsage ? (usage: object) => chunk([], usage) : null;
  await streamThenEnd(ctx, request, sse, signal, usageChunk, async () => {
    const finals: RequestOutput[] = [];
    // Where the next token of each choice starts in its text, for logprobs' text_offset.
    const offsets = new Map<number, number>();
    for (const [p, prompt] of stream.prompts.entries()) {
      for (let k = 0; k < stream.n; k++) offsets.set(p * stream.n + k, prompt.echoText.length);
      if (prompt.echoText === '') continue;
      await sse.send(chunk(Array.from({ length: stream.n }, (_, k) => ({ index: p * stream.n + k, text: prompt.echoText, logprobs: null, finish_reason: null }))));
    }
    for await (const { promptIndex, deltas, final } of updates) {
      if (final) finals[promptIndex] = final;
      const choices = deltas
        .filter(isVisibleDelta)
        .map((d) => {
          const index = promptIndex * stream.n + d.index;
          let logprobs = null;
          if (d.logprobs) {
            const formatted = completionLogprobs(d.logprobs, offsets.get(index) ?? 0);
            offsets.set(index, formatted.endOffset);
            logprobs = formatted.logprobs;
          }
          return { index, text: d.text, logprobs, finish_reason: d.finishReason };
        });
      if (choices.length > 0) await sse.send(chunk(choices));
      if (sse.closed) break;
    }
    return finals;
  });
}
