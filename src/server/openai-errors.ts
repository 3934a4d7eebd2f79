import { KeelError, type KeelErrorKind } from '../errors.ts';

/** The error body every endpoint answers with, as the OpenAI API spells it. */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/**
 * An error the server answers with: an HTTP status and OpenAI's error object. Everything thrown
 * while serving a request becomes one of these (`toApiError`), so no stack trace reaches a client.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: { type?: string; param?: string | null; code?: string | null; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = options.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  body(): OpenAiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, { param, code });
}

export function shuttingDown(): ApiError {
  return new ApiError(503, 'the server is shutting down; retry against another instance', { code: 'shutting_down', headers: { connection: 'close' } });
}

const KIND_STATUS: Record<KeelErrorKind, { status: number; code: string | null }> = {
  invalid_argument: { status: 400, code: null },
  context_overflow: { status: 400, code: 'context_length_exceeded' },
  not_found: { status: 404, code: 'not_found' },
  unavailable: { status: 503, code: 'unavailable' },
  invalid_model: { status: 500, code: null },
  backend: { status: 500, code: null },
};

const INTERNAL_MESSAGE = 'the server had an error while processing your request';

/**
 * The ApiError a thrown value answers with. KeelErrors map by kind; the framework's own client
 * errors (body too large, bad content) keep their status and message; anything else is an internal
 * error whose details stay in the server's log. `param` names the request field a KeelError is
 * about, when the caller knows it.
 */
export function toApiError(error: unknown, param: string | null = null): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof KeelError) {
    const { status, code } = KIND_STATUS[error.kind];
    return new ApiError(status, status >= 500 ? INTERNAL_MESSAGE : error.message, { param: status === 400 ? param : null, code });
  }
  const status = frameworkStatus(error);
  if (status === 413) return new ApiError(413, 'the request body is larger than the server accepts (see --max-body-bytes)', { code: 'request_too_large' });
  if (status !== null) return new ApiError(status, (error as Error).message);
  return new ApiError(500, INTERNAL_MESSAGE);
}

/** A client error status carried by an error from fastify or Node's HTTP layer. */
function frameworkStatus(error: unknown): number | null {
  if (typeof error !== 'object' || error === null) return null;
  const status = (error as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : null;
}
