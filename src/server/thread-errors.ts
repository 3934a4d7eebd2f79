import { KeelError, type KeelErrorKind } from '../errors.ts';
import { ApiError } from './openai-errors.ts';

/**
 * An error as it crosses between threads. Structured cloning keeps an Error's message and stack
 * but not its class or fields, so the server's own errors travel as data and are rebuilt.
 */
export type ThreadError =
  | { kind: 'api'; status: number; message: string; type: string; param: string | null; code: string | null; headers: Record<string, string> }
  | { kind: 'keel'; keelKind: KeelErrorKind; message: string }
  | { kind: 'internal'; message: string; stack: string | null };

export function toThreadError(error: unknown): ThreadError {
  if (error instanceof ApiError) {
    return { kind: 'api', status: error.status, message: error.message, type: error.type, param: error.param, code: error.code, headers: error.headers };
  }
  if (error instanceof KeelError) return { kind: 'keel', keelKind: error.kind, message: error.message };
  if (error instanceof Error) return { kind: 'internal', message: error.message, stack: error.stack ?? null };
  return { kind: 'internal', message: String(error), stack: null };
}

/** The error a ThreadError stands for; an internal one keeps the other thread's stack for the log. */
export function fromThreadError(error: ThreadError): Error {
  switch (error.kind) {
    case 'api':
      return new ApiError(error.status, error.message, { type: error.type, param: error.param, code: error.code, headers: error.headers });
    case 'keel':
      return new KeelError(error.keelKind, error.message);
    case 'internal': {
      const rebuilt = new Error(error.message);
      if (error.stack !== null) rebuilt.stack = error.stack;
      return rebuilt;
    }
  }
}
