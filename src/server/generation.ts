import type { RequestOutput } from '../engine/outputs.ts';
import type { PromptUpdate } from './engine-host/engine-generation.ts';
import type { ReplicaGeneration } from './engine-host/engine-replicas.ts';
import type { AbortReason } from './in-flight.ts';
import { toApiError } from './openai-errors.ts';
import type { PreparedPrompt } from './preprocess/preprocess-protocol.ts';
import type { ServingContext } from './serving-context.ts';

export type { PromptUpdate } from './engine-host/engine-generation.ts';

/** A started generation: its prompts' updates merged into one stream, and the replica running each prompt. */
export interface StartedGeneration {
  updates: AsyncGenerator<PromptUpdate>;
  replicas: number[];
}

/**
 * Admits the prompts to the server's queue (a 429 if they do not fit) and starts one engine request
 * per prompt, each on the replica the router picks (`sticky`: the one that ran the response a
 * Responses API follow-up continues); returns their updates merged into one stream. It returns only once every prompt has
 * produced its first update, so a request the engine rejects (token ids outside the vocabulary...)
 * still gets a plain 4xx before any streamed byte; `promptParam` names the field such errors are
 * about. Aborting `signal`, or leaving the returned stream early, aborts every prompt and frees its
 * KV blocks.
 */
export async function startGeneration(ctx: ServingContext, prompts: PreparedPrompt[], signal: AbortSignal, promptParam: string, sticky: number | null = null): Promise<StartedGeneration> {
  const queued = ctx.admission.admit(prompts.map((p) => ({ sequences: p.params.n, tokens: p.tokenIds.length })));
  let started: ReplicaGeneration;
  try {
    started = ctx.engine.generate(prompts, { onStarted: (i) => queued.leave(i), onFinished: (output) => ctx.metrics.observeFinished(output) }, sticky);
  } catch (error) {
    prompts.forEach((_, i) => queued.leave(i));
    throw error;
  }
  const { generation, replicas } = started;
  // One listener per HTTP request, however many prompts it has.
  const abort = () => generation.abort();
  signal.addEventListener('abort', abort, { once: true });
  if (signal.aborted) abort();
  try {
    await generation.whenStarted();
  } catch (error) {
    signal.removeEventListener('abort', abort);
    throw toApiError(error, promptParam);
  }
  const updates = (async function* () {
    try {
      yield* generation;
    } finally {
      signal.removeEventListener('abort', abort);
    }
  })();
  return { updates, replicas };
}

/** Why the generation's signal was aborted, or null if it was not. */
export function abortReason(signal: AbortSignal): AbortReason | null {
  return signal.aborted ? (signal.reason as AbortReason) : null;
}

/** Reads a generation to its end: the final output of each prompt, in prompt order. */
export async function collectOutputs(updates: AsyncGenerator<PromptUpdate>): Promise<RequestOutput[]> {
  const outputs: RequestOutput[] = [];
  for await (const { promptIndex, final } of updates) if (final) outputs[promptIndex] = final;
  return outputs;
}
