import type { FastifyRequest } from 'fastify';
import { ApiError, toApiError } from './openai-errors.ts';
import { noteError } from './request-log.ts';
import type { ServingContext } from './serving-context.ts';

/**
 * The ApiError a request fails with. An internal error's details and stack go to the server's
 * log, never to the client.
 */
export function reportError(ctx: ServingContext, request: FastifyRequest, error: unknown): ApiError {
  const apiError = toApiError(error);
  if (apiError.status >= 500 && !(error instanceof ApiError)) {
    ctx.logger.log('error', 'internal error', { request_id: request.id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  }
  noteError(request, apiError.message);
  return apiError;
}
