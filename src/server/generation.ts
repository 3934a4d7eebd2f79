import type { StreamUpdate } from '../engine/llm.ts';
import type { RequestOutput } from '../engine/outputs.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { AbortReason } from './in-flight.ts';
import { ApiError, badRequest, toApiError } from './openai-errors.ts';
import type { ServingContext } from './serving-context.ts';

/** One engine request of an HTTP request: a chat has one, a batch of completion prompts several. */
export interface PromptRequest {
  tokenIds: number[];
  params: SamplingParams;
}

export interface PromptUpdate {
  /** Which of the HTTP request's prompts this update is for. */
  promptIndex: number;
  update: StreamUpdate;
}

/**
 * Starts one engine request per prompt and returns their updates merged into one stream. It
 * returns only once every request has produced its first update, so a request the engine rejects
 * (context overflow, token ids outside the vocabulary) still gets a plain 4xx before any streamed
 * byte; `promptParam` names the field such errors are about. Aborting `signal`, or leaving the
 * returned stream early, aborts every request and frees its KV blocks.
 */
export async function startGeneration(ctx: ServingContext, prompts: PromptRequest[], signal: AbortSignal, promptParam: string): Promise<AsyncGenerator<PromptUpdate>> {
  const waiting = ctx.llm.stats().numWaiting;
  if (ctx.maxQueuedRequests !== null && prompts.length > ctx.maxQueuedRequests) {
    throw badRequest(`a batch of ${prompts.length} prompts is more than the server queues (--max-queued-requests ${ctx.maxQueuedRequests})`, promptParam);
  }
  if (ctx.maxQueuedRequests !== null && waiting + prompts.length > ctx.maxQueuedRequests) {
    throw new ApiError(429, `the server's queue is full (${waiting} sequences waiting, --max-queued-requests ${ctx.maxQueuedRequests}); retry later`, {
      type: 'rate_limit_error',
      code: 'queue_full',
      headers: { 'retry-after': '1' },
    });
  }
  const controller = new AbortController();
  const forward = () => controller.abort(signal.reason);
  signal.addEventListener('abort', forward, { once: true });
  if (signal.aborted) forward();
  const release = () => signal.removeEventListener('abort', forward);

  const streams = prompts.map((p) => ctx.llm.stream(p.tokenIds, p.params, { signal: controller.signal }));
  const firsts = await Promise.allSettled(streams.map((s) => s.next()));
  const failure = firsts.find((r) => r.status === 'rejected');
  if (failure) {
    controller.abort();
    await Promise.all(streams.map((s) => s.return(undefined)));
    release();
    throw toApiError(failure.reason, promptParam);
  }
  const fulfilled = firsts as PromiseFulfilledResult<IteratorResult<StreamUpdate>>[];
  return merge(ctx, streams, fulfilled.map((r) => r.value), controller, release);
}

async function* merge(
  ctx: ServingContext,
  streams: AsyncGenerator<StreamUpdate>[],
  firsts: IteratorResult<StreamUpdate>[],
  controller: AbortController,
  release: () => void,
): AsyncGenerator<PromptUpdate> {
  const pending = new Map<number, Promise<{ index: number; result: IteratorResult<StreamUpdate> }>>();
  const pull = (index: number) => {
    const read = streams[index].next().then((result) => ({ index, result }));
    // A failure while the consumer is busy is raised by the next race, not as an unhandled rejection.
    read.catch(() => undefined);
    pending.set(index, read);
  };
  const finished = new Set<number>();
  const observed = (index: number, update: StreamUpdate): PromptUpdate => {
    if (update.finished && !finished.has(index)) {
      finished.add(index);
      ctx.metrics.observeFinished(update.output);
    }
    return { promptIndex: index, update };
  };
  try {
    for (const [index, first] of firsts.entries()) {
      if (first.done) continue;
      yield observed(index, first.value);
      pull(index);
    }
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      pending.delete(index);
      if (result.done) continue;
      yield observed(index, result.value);
      pull(index);
    }
  } finally {
    // Requests still running end now; each stream's pending read then settles and its generator can close.
    controller.abort();
    // Every request not yet finished now ends with an abort update: read it, so that it is counted.
    for (const index of streams.keys()) if (!finished.has(index) && !pending.has(index)) pull(index);
    for (const read of await Promise.allSettled(pending.values())) {
      if (read.status === 'fulfilled' && !read.value.result.done) observed(read.value.index, read.value.result.value);
    }
    await Promise.allSettled(streams.map((s) => s.return(undefined)));
    release();
  }
}

/** Why the generation's signal was aborted, or null if it was not. */
export function abortReason(signal: AbortSignal): AbortReason | null {
  return signal.aborted ? (signal.reason as AbortReason) : null;
}

/** Reads a generation to its end: the final output of each prompt, in prompt order. */
export async function collectOutputs(updates: AsyncGenerator<PromptUpdate>): Promise<RequestOutput[]> {
  const outputs: RequestOutput[] = [];
  for await (const { promptIndex, update } of updates) outputs[promptIndex] = update.output;
  return outputs;
}
