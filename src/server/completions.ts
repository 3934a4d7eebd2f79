import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { LLM } from '../engine/llm.ts';
import type { RequestOutput } from '../engine/outputs.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from './generation.ts';
import { badRequest, shuttingDown, toApiError } from './openai-errors.ts';
import { completionLogprobs } from './openai-logprobs.ts';
import { commonSamplingFields, maxTokensField, resolveRequestParams } from './openai-sampling.ts';
import { CompletionRequest, parseBody, type CompletionPrompt } from './openai-schemas.ts';
import { noteUsage } from './request-log.ts';
import { ensureServedModel, type ServingContext } from './serving-context.ts';
import { SseWriter } from './sse.ts';
import { isVisibleDelta, streamThenEnd } from './stream-ending.ts';
import { openAiUsage, usageOf } from './usage.ts';

/** A prompt of the batch: its token ids, and its text for `echo`. */
interface CompletionInput {
  tokenIds: number[];
  text: string;
  params: SamplingParams;
}

/**
 * POST /v1/completions: one engine request per prompt of the batch; choice `i * n + k` is the
 * k-th completion of prompt i, as OpenAI numbers them.
 */
export function registerCompletions(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/completions', async (request, reply) => {
    const body = parseBody(CompletionRequest, request.body);
    ensureServedModel(ctx, body.model);
    if (body.echo && body.logprobs !== null && body.logprobs !== undefined) {
      throw badRequest('echo with logprobs needs the prompt tokens\' logprobs, which Keel does not compute', 'echo');
    }
    if (body.best_of !== null && body.best_of !== undefined && body.best_of !== (body.n ?? 1)) {
      throw badRequest('best_of other than n is not supported', 'best_of');
    }
    const inputs = promptTokenIds(ctx.llm, body.prompt).map(({ tokenIds, text }): CompletionInput => {
      const params = resolveRequestParams(
        [
          ...commonSamplingFields(body),
          maxTokensField('max_tokens', body.max_tokens, tokenIds.length, ctx.llm.maxModelLen, 'prompt'),
          { name: 'logprobs', field: 'logprobs', value: body.logprobs },
        ],
        ctx.llm.samplingDefaults,
      );
      return { tokenIds, params, text: body.echo ? (text ?? decodePrompt(ctx.llm, tokenIds, params)) : '' };
    });
    if (ctx.llm.tokenizer === null && inputs[0].params.stop.length > 0) {
      throw badRequest('stop strings need the model\'s tokenizer, and this model has none: use stop_token_ids', 'stop');
    }
    const signal = ctx.inFlight.track(reply);
    const updates = await startGeneration(ctx, inputs, signal, 'prompt');
    const response = { id: `cmpl-${randomUUID().replaceAll('-', '')}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: ctx.servedModelName };
    const n = inputs[0].params.n;
    if (body.stream) {
      await streamCompletions(ctx, request, reply, updates, signal, { response, n, inputs, includeUsage: body.stream_options?.include_usage === true });
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
          text: inputs[p].text + c.text,
          logprobs: c.logprobs ? completionLogprobs(c.logprobs, inputs[p].text.length).logprobs : null,
          finish_reason: c.finishReason,
        })),
      ),
      usage: openAiUsage(usage),
    };
  });
}

/** Token ids of each prompt of the batch, with the text of those given as text. */
function promptTokenIds(llm: LLM, prompt: CompletionPrompt): { tokenIds: number[]; text: string | null }[] {
  const encode = (text: string) => {
    try {
      return { tokenIds: llm.encode(text), text };
    } catch (error) {
      throw toApiError(error, 'prompt');
    }
  };
  if (typeof prompt === 'string') return [encode(prompt)];
  if (prompt.every((p) => typeof p === 'string')) return prompt.map(encode);
  if (prompt.every((p) => typeof p === 'number')) return [{ tokenIds: prompt, text: null }];
  return (prompt as number[][]).map((tokenIds) => ({ tokenIds, text: null }));
}

function decodePrompt(llm: LLM, tokenIds: number[], params: SamplingParams): string {
  if (!llm.tokenizer) throw badRequest('echo of a token-id prompt needs the model\'s tokenizer, and this model has none', 'echo');
  return llm.tokenizer.decode(tokenIds, { skipSpecialTokens: params.skipSpecialTokens });
}

interface CompletionStream {
  response: { id: string; object: string; created: number; model: string };
  n: number;
  inputs: CompletionInput[];
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
    for (const [p, input] of stream.inputs.entries()) {
      for (let k = 0; k < stream.n; k++) offsets.set(p * stream.n + k, input.text.length);
      if (input.text === '') continue;
      await sse.send(chunk(Array.from({ length: stream.n }, (_, k) => ({ index: p * stream.n + k, text: input.text, logprobs: null, finish_reason: null }))));
    }
    for await (const { promptIndex, update } of updates) {
      finals[promptIndex] = update.output;
      const choices = update.deltas
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
