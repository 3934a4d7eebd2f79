import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CompletionOutput, RequestOutput } from '../engine/outputs.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from './generation.ts';
import { shuttingDown } from './openai-errors.ts';
import { chatLogprobs } from './openai-logprobs.ts';
import { noteUsage } from './request-log.ts';
import { bodyBytes, type ServingContext } from './serving-context.ts';
import { SseWriter } from './sse.ts';
import { streamThenEnd } from './stream-ending.ts';
import type { ToolCallFormat } from './tool-calls/output-parse.ts';
import { ParsedOutputStream, type CallFilter, type ParsedDelta, type ParsedMessage } from './tool-calls/parsed-output-stream.ts';
import { openAiUsage, usageOf } from './usage.ts';

/** POST /v1/chat/completions: the prompt is the model's chat template over `messages` (and `tools`). */
export function registerChatCompletions(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/chat/completions', async (request, reply) => {
    ctx.admission.refuseWhileFull();
    const prepared = await ctx.preprocess.run('chat', bodyBytes(request.body));
    const signal = ctx.inFlight.track(reply);
    const { updates } = await startGeneration(ctx, [prepared.prompt], signal, 'messages');
    const response = { id: `chatcmpl-${randomUUID().replaceAll('-', '')}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: prepared.prompt.lora ?? ctx.servedModelName };
    const reader = prepared.reading !== null && ctx.toolCallFormat !== null ? { format: ctx.toolCallFormat, calls: prepared.reading.calls } : null;
    if (prepared.stream) {
      await streamChat(ctx, request, reply, updates, signal, { response, n: prepared.prompt.params.n, includeUsage: prepared.includeUsage || ctx.forceIncludeUsage, reader });
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
      choices: final.outputs.map((c) => {
        const read = reader === null ? null : ParsedOutputStream.read(reader.format, reader.calls, c.text);
        return {
          index: c.index,
          message: { role: 'assistant', content: read === null ? c.text : read.content, refusal: null, ...readFields(read) },
          logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null,
          finish_reason: finishReason(c.finishReason, read !== null && read.toolCalls.length > 0),
        };
      }),
      usage: openAiUsage(usage),
    };
  });
}

/** How completions' outputs are read: the format and the calls answered; null when they are plain content. */
type OutputReader = { format: ToolCallFormat; calls: CallFilter | null } | null;

/** The message fields beyond content: harmony's reasoning (as vLLM names it) and the tool calls. */
function readFields(read: ParsedMessage | null): object {
  if (read === null) return {};
  return { ...(read.reasoning !== null ? { reasoning_content: read.reasoning } : {}), ...(read.toolCalls.length > 0 ? { tool_calls: read.toolCalls } : {}) };
}

/** A completion that stopped after making calls finished to call them, as OpenAI reports it. */
function finishReason(reason: CompletionOutput['finishReason'], madeCalls: boolean): string | null {
  return reason === 'stop' && madeCalls ? 'tool_calls' : reason;
}

interface ChatStream {
  response: { id: string; object: string; created: number; model: string };
  n: number;
  includeUsage: boolean;
  reader: OutputReader;
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
  const { reader } = stream;
  const readers = Array.from({ length: stream.n }, () => (reader === null ? null : new ParsedOutputStream(reader.format, reader.calls)));
  await streamThenEnd(ctx, request, sse, signal, usageChunk, async () => {
    let final: RequestOutput | null = null;
    for (let index = 0; index < stream.n; index++) {
      await sse.send(chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
    }
    for await (const { deltas, final: output } of updates) {
      if (output) final = output;
      const choices = deltas.flatMap((d) => {
        if (d.finishReason === 'abort') return [];
        const parsed = readers[d.index];
        let delta: object;
        let madeCalls = false;
        if (parsed === null) delta = d.text !== '' ? { content: d.text } : {};
        else {
          delta = deltaFields(mergeDeltas(parsed.push(d.text), d.finishReason !== null ? parsed.finish() : null));
          madeCalls = parsed.madeCalls;
        }
        const logprobs = d.logprobs ? chatLogprobs(d.logprobs) : null;
        if (Object.keys(delta).length === 0 && d.finishReason === null && (logprobs?.content.length ?? 0) === 0) return [];
        return [{ index: d.index, delta, logprobs, finish_reason: finishReason(d.finishReason, madeCalls) }];
      });
      if (choices.length > 0) await sse.send(chunk(choices));
      if (sse.closed) break;
    }
    return final ? [final] : [];
  });
}

function mergeDeltas(a: ParsedDelta, b: ParsedDelta | null): ParsedDelta {
  if (b === null) return a;
  return { content: a.content + b.content, reasoning: a.reasoning + b.reasoning, toolCalls: [...a.toolCalls, ...b.toolCalls] };
}

function deltaFields(read: ParsedDelta): object {
  return {
    ...(read.content !== '' ? { content: read.content } : {}),
    ...(read.reasoning !== '' ? { reasoning_content: read.reasoning } : {}),
    ...(read.toolCalls.length > 0 ? { tool_calls: read.toolCalls } : {}),
  };
}
