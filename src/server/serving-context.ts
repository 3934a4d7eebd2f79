import type { LLM } from '../engine/llm.ts';
import type { InFlightRequests } from './in-flight.ts';
import type { JsonLogger } from './json-logger.ts';
import type { ServerMetrics } from './metrics.ts';
import { ApiError } from './openai-errors.ts';
import type { TokenRate } from './token-rate.ts';

/** What every route handler needs: the engine and the server's own state. */
export interface ServingContext {
  llm: LLM;
  servedModelName: string;
  /** New generation requests are refused (429) while this many sequences already wait; null = no limit. */
  maxQueuedRequests: number | null;
  metrics: ServerMetrics;
  inFlight: InFlightRequests;
  logger: JsonLogger;
  generationRate: TokenRate;
}

/** A request may name the model (OpenAI clients always do); naming another one is a 404, as OpenAI answers. */
export function ensureServedModel(ctx: ServingContext, model: string | null | undefined): void {
  if (model === null || model === undefined || model === ctx.servedModelName) return;
  throw new ApiError(404, `The model \`${model}\` does not exist. This server serves \`${ctx.servedModelName}\`.`, { param: 'model', code: 'model_not_found' });
}
