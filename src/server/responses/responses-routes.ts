import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestOutput } from '../../engine/outputs.ts';
import { abortReason, collectOutputs, startGeneration, type PromptUpdate } from '../generation.ts';
import { ApiError, shuttingDown } from '../openai-errors.ts';
import type { ChatMessageInput } from '../openai-schemas.ts';
import type { PreparedResponses } from '../preprocess/preprocess-protocol.ts';
import type { PreparedChat } from '../preprocess/preprocess-protocol.ts';
import { reportError } from '../report-error.ts';
import { noteUsage } from '../request-log.ts';
import { bodyBytes, type ServingContext } from '../serving-context.ts';
import { SseWriter } from '../sse.ts';
import { ParsedOutputStream, type ParsedDelta } from '../tool-calls/parsed-output-stream.ts';
import { usageOf } from '../usage.ts';
import { inputItemsPage, type InputItemsQuery } from './input-items.ts';
import type { StoredResponse } from './response-store.ts';
import { ResponseOutput, type OutputItem, type ResponseEvent } from './response-output.ts';
import { responsesFieldNames } from './responses-input.ts';

type ResponseObject = Record<string, unknown> & { id: string };

/**
 * The Responses API: POST /v1/responses runs a request through the chat path (template, tools,
 * tool-call parsing) and answers a response object, or streams its events; GET and DELETE
 * /v1/responses/{id} read and drop a stored one, GET /v1/responses/{id}/input_items lists its
 * input. A response continues a stored one's conversation when `previous_response_id` names it.
 */
export function registerResponses(app: FastifyInstance, ctx: ServingContext): void {
  app.post('/v1/responses', async (request, reply) => {
    ctx.admission.refuseWhileFull();
    const plan = await ctx.preprocess.run('responses', bodyBytes(request.body));
    const previous = previousResponse(ctx, plan.previousResponseId);
    const conversation = [...(previous?.conversation ?? []), ...plan.input];
    const messages: ChatMessageInput[] = plan.instructions === null ? conversation : [{ role: 'developer', content: plan.instructions }, ...conversation];
    const body = Buffer.from(JSON.stringify({ ...plan.chat, messages }));
    const prepared = await ctx.preprocess.run('chat', body, { previous: previous?.turn ?? null }).catch((error: unknown) => {
      throw inResponsesTerms(error);
    });
    const signal = ctx.inFlight.track(reply);
    // A follow-up runs where the response it continues ran: that replica's prefix cache holds its tokens.
    const { updates, replicas } = await startGeneration(ctx, [prepared.prompt], signal, 'input', previous?.replica ?? null);
    const run: ResponseRun = { ctx, plan, prepared, conversation, response: pendingResponse(ctx, plan, prepared), replica: replicas[0] };
    if (plan.stream) {
      await streamResponse(run, request, reply, updates, signal);
      return reply;
    }
    const [final] = await collectOutputs(updates);
    const reason = abortReason(signal);
    if (reason === 'client_gone') return reply.hijack();
    if (reason === 'shutdown') throw shuttingDown();
    const completion = final.outputs[0];
    const output = new ResponseOutput();
    const reader = outputReader(run);
    output.add(reader(completion.text, true));
    noteUsage(request, usageOf([final]));
    return finish(run, output, final);
  });

  app.get<{ Params: { id: string } }>('/v1/responses/:id', async (request) => storedResponse(ctx, request.params.id).response);

  app.get<{ Params: { id: string }; Querystring: InputItemsQuery }>('/v1/responses/:id/input_items', async (request) =>
    inputItemsPage(storedResponse(ctx, request.params.id).inputItems, request.query),
  );

  app.delete<{ Params: { id: string } }>('/v1/responses/:id', async (request) => {
    const { id } = request.params;
    if (!ctx.responses.delete(id)) throw notFound(id);
    return { id, object: 'response', deleted: true };
  });
}

interface ResponseRun {
  ctx: ServingContext;
  plan: PreparedResponses;
  prepared: PreparedChat;
  /** The conversation before this response's output (without instructions). */
  conversation: ChatMessageInput[];
  /** The response object while in progress. */
  response: ResponseObject;
  /** The data-parallel replica running it. */
  replica: number;
}

function notFound(id: string): ApiError {
  return new ApiError(404, `Response with id '${id}' not found (it was never stored, was deleted, or left the store: see --responses-store-size).`, { code: 'not_found' });
}

function storedResponse(ctx: ServingContext, id: string) {
  const stored = ctx.responses.get(id);
  if (!stored) throw notFound(id);
  return stored;
}

function previousResponse(ctx: ServingContext, id: string | null): StoredResponse | null {
  if (id === null) return null;
  const stored = ctx.responses.get(id);
  if (!stored) throw new ApiError(404, notFound(id).message.replace(/^Response/, 'Previous response'), { param: 'previous_response_id', code: 'previous_response_not_found' });
  return stored;
}

/** A chat-path error about a field, named as the Responses request spells it. */
function inResponsesTerms(error: unknown): unknown {
  if (!(error instanceof ApiError)) return error;
  return new ApiError(error.status, responsesFieldNames(error.message), {
    type: error.type,
    param: error.param === null ? null : responsesFieldNames(error.param),
    code: error.code,
    headers: error.headers,
  });
}

function pendingResponse(ctx: ServingContext, plan: PreparedResponses, prepared: PreparedChat): ResponseObject {
  const { params } = prepared.prompt;
  return {
    id: `resp_${randomUUID().replaceAll('-', '')}`,
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    status: 'in_progress',
    error: null,
    incomplete_details: null,
    model: prepared.prompt.lora ?? ctx.servedModelName,
    output: [],
    previous_response_id: plan.previousResponseId,
    store: plan.store,
    max_output_tokens: (plan.chat.max_completion_tokens as number | null | undefined) ?? null,
    temperature: params.temperature,
    top_p: params.topP,
    usage: null,
    ...plan.echo,
  };
}

/** Reads a completion's text (a piece of it while streaming; `last` at its end) as parsed deltas. */
function outputReader(run: ResponseRun): (text: string, last: boolean) => ParsedDelta {
  const format = run.ctx.toolCallFormat;
  const reading = run.prepared.reading;
  if (reading === null || format === null) return (text) => ({ content: text, reasoning: '', toolCalls: [] });
  const stream = new ParsedOutputStream(format, reading.calls);
  return (text, last) => {
    const delta = stream.push(text);
    if (!last) return delta;
    const rest = stream.finish();
    return { content: delta.content + rest.content, reasoning: delta.reasoning + rest.reasoning, toolCalls: [...delta.toolCalls, ...rest.toolCalls] };
  };
}

/** The finished response: its output, status and usage; stored unless the request said `store: false`. */
function finish(run: ResponseRun, output: ResponseOutput, final: RequestOutput): ResponseObject {
  const completion = final.outputs[0];
  const status = completion.finishReason === 'length' ? 'incomplete' : 'completed';
  output.finish(status);
  const outputTokens = completion.tokenIds.length;
  const response: ResponseObject = {
    ...run.response,
    status,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    output: output.items,
    usage: {
      input_tokens: final.promptTokenIds.length,
      input_tokens_details: { cached_tokens: final.metrics.numCachedTokens },
      output_tokens: outputTokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: final.promptTokenIds.length + outputTokens,
    },
  };
  if (run.plan.store) {
    const promptText = run.prepared.promptText;
    if (promptText === undefined) throw new Error('a Responses prompt is prepared as a turn (ChatContinuation), with its text');
    const turn = { promptText, promptIds: run.prepared.prompt.tokenIds, outputIds: completion.tokenIds };
    run.ctx.responses.put({ response, conversation: [...run.conversation, assistantMessage(output.items)], inputItems: run.plan.inputItems, turn, replica: run.replica });
  }
  return response;
}

/** The response's output as the assistant message a follow-up's chat template reads. */
function assistantMessage(items: OutputItem[]): ChatMessageInput {
  const text = items.flatMap((item) => (item.type === 'message' ? item.content.map((part) => part.text) : [])).join('');
  const calls = items.flatMap((item) => (item.type === 'function_call' ? [{ id: item.call_id, type: 'function' as const, function: { name: item.name, arguments: item.arguments } }] : []));
  return { role: 'assistant', content: calls.length > 0 && text === '' ? null : text, ...(calls.length > 0 ? { tool_calls: calls } : {}) };
}

/**
 * The streamed response: response.created and response.in_progress, the output items' events as
 * the model writes them, then response.completed (or response.incomplete when max_output_tokens
 * cut it), with the whole response. A failure is an `error` event. No `[DONE]` follows, as on OpenAI.
 */
async function streamResponse(run: ResponseRun, request: FastifyRequest, reply: FastifyReply, updates: AsyncGenerator<PromptUpdate>, signal: AbortSignal): Promise<void> {
  const sse = new SseWriter(reply);
  let sequence = 0;
  const pending: ResponseEvent[] = [];
  const flush = async () => {
    for (const event of pending.splice(0)) await sse.send({ ...event, sequence_number: sequence++ }, event.type);
  };
  const output = new ResponseOutput((event) => pending.push(event));
  const read = outputReader(run);
  try {
    pending.push({ type: 'response.created', response: run.response }, { type: 'response.in_progress', response: run.response });
    await flush();
    let final: RequestOutput | null = null;
    for await (const { deltas, final: done } of updates) {
      if (done) final = done;
      for (const d of deltas) if (d.finishReason !== 'abort') output.add(read(d.text, d.finishReason !== null));
      await flush();
      if (sse.closed) break;
    }
    if (abortReason(signal) === 'shutdown') await sse.send(errorEvent(shuttingDown(), sequence++), 'error');
    else if (final !== null && abortReason(signal) === null) {
      const response = finish(run, output, final);
      await flush();
      noteUsage(request, usageOf([final]));
      const type = response.status === 'completed' ? 'response.completed' : 'response.incomplete';
      await sse.send({ type, response, sequence_number: sequence++ }, type);
    }
  } catch (error) {
    await sse.send(errorEvent(reportError(run.ctx, request, error), sequence++), 'error');
  }
  sse.end(false);
}

function errorEvent(error: ApiError, sequence: number): object {
  return { type: 'error', code: error.code, message: error.message, param: error.param, sequence_number: sequence };
}
