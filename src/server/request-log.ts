import type { FastifyReply, FastifyRequest } from 'fastify';
import type { JsonLogger } from './json-logger.ts';
import type { Usage } from './usage.ts';

interface RequestNotes {
  usage?: Usage;
  error?: string;
  /** The status of an answer written on the socket, outside the response object. */
  socketStatus?: number;
}

const notes = new WeakMap<FastifyRequest, RequestNotes>();

/** Tokens a request used, for its log line. */
export function noteUsage(request: FastifyRequest, usage: Usage): void {
  notes.set(request, { ...notes.get(request), usage });
}

/** Why a request failed, for its log line (the client got the same message). */
export function noteError(request: FastifyRequest, message: string): void {
  notes.set(request, { ...notes.get(request), error: message });
}

/** A request answered on its socket (a refusal before its body was read), for its log line. */
export function noteSocketStatus(request: FastifyRequest, status: number): void {
  notes.set(request, { ...notes.get(request), socketStatus: status });
}

/** Polled by the playground and scrapers: logged at debug so they do not drown the requests. */
const QUIET_PATHS = new Set(['/health', '/metrics', '/v1/engine/stats', '/', '/playground/app.js', '/playground/style.css', '/favicon.ico']);

/**
 * Logs one line per request once its response is finished or its client has gone (status 499, as
 * nginx logs a client that closed the request). Listening to the raw response's `close` covers
 * streamed responses too, which leave fastify's own lifecycle.
 */
export function logWhenDone(logger: JsonLogger, request: FastifyRequest, reply: FastifyReply): void {
  const start = performance.now();
  reply.raw.once('close', () => {
    const path = request.url.split('?', 1)[0];
    const level = QUIET_PATHS.has(path) ? 'debug' : 'info';
    if (!logger.enabled(level)) return;
    const note = notes.get(request);
    logger.log(level, 'request', {
      request_id: request.id,
      method: request.method,
      path,
      status: reply.raw.writableFinished ? reply.raw.statusCode : (note?.socketStatus ?? 499),
      latency_ms: Math.round((performance.now() - start) * 100) / 100,
      ...(note?.usage ? { prompt_tokens: note.usage.promptTokens, completion_tokens: note.usage.completionTokens } : {}),
      ...(note?.error ? { error: note.error } : {}),
    });
  });
}
