import type { FastifyRequest } from 'fastify';
import type { RequestOutput, StreamDelta } from '../engine/outputs.ts';
import { abortReason } from './generation.ts';
import { shuttingDown } from './openai-errors.ts';
import { reportError } from './report-error.ts';
import { noteUsage } from './request-log.ts';
import type { ServingContext } from './serving-context.ts';
import type { SseWriter } from './sse.ts';
import { openAiUsage, usageOf, type Usage } from './usage.ts';

/** A delta worth a chunk: it carries text, logprobs or a finish reason, and is not an abort's. */
export function isVisibleDelta(d: StreamDelta): boolean {
  return d.finishReason !== 'abort' && (d.text !== '' || d.finishReason !== null || (d.logprobs?.length ?? 0) > 0);
}

/**
 * Runs a streaming response's body, which sends the chunks and returns the final outputs, then ends
 * the stream as every endpoint does: an error event if the body failed, a notice if the server is
 * shutting down, else the usage is logged and, when asked for, sent as a last chunk.
 */
export async function streamThenEnd(
  ctx: ServingContext,
  request: FastifyRequest,
  sse: SseWriter,
  signal: AbortSignal,
  usageChunk: ((usage: ReturnType<typeof openAiUsage>) => object) | null,
  body: () => Promise<RequestOutput[]>,
): Promise<void> {
  let finals: RequestOutput[];
  try {
    finals = await body();
  } catch (error) {
    await sse.send(reportError(ctx, request, error).body());
    sse.end();
    return;
  }
  if (abortReason(signal) === 'shutdown') await sse.send(shuttingDown().body());
  else if (finals.length > 0) {
    const usage: Usage = usageOf(finals);
    noteUsage(request, usage);
    if (usageChunk) await sse.send(usageChunk(openAiUsage(usage)));
  }
  sse.end();
}
