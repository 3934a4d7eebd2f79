import type { Admission } from './admission.ts';
import type { EngineReplicas } from './engine-host/engine-replicas.ts';
import type { InFlightRequests } from './in-flight.ts';
import type { JsonLogger } from './json-logger.ts';
import type { ServerMetrics } from './metrics.ts';
import type { PreprocessPool } from './preprocess/preprocess-pool.ts';
import type { ResponseStore } from './responses/response-store.ts';
import type { TokenRate } from './token-rate.ts';
import type { ToolCallFormat } from './tool-calls/output-parse.ts';

/** What every route handler needs: the engine, the threads that read bodies, and the server's own state. */
export interface ServingContext {
  engine: EngineReplicas;
  preprocess: PreprocessPool;
  admission: Admission;
  servedModelName: string;
  metrics: ServerMetrics;
  inFlight: InFlightRequests;
  logger: JsonLogger;
  generationRate: TokenRate;
  /** How models' tool calls (and harmony's channels) are read; null when the model's format is unknown. */
  toolCallFormat: ToolCallFormat | null;
  /** Streams send usage whether or not the client asked (--enable-force-include-usage). */
  forceIncludeUsage: boolean;
  /** Responses kept for GET /v1/responses/{id} and previous_response_id. */
  responses: ResponseStore;
}

/** A request's body as the bytes that arrived (none for an empty body), for the preprocessing threads. */
export function bodyBytes(body: unknown): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.alloc(0);
}
