/**
 * An error whose message a user can act on. The CLI prints `message` alone (no stack trace) and
 * exits non-zero; the server maps `kind` to an HTTP status.
 */
export type KeelErrorKind =
  | 'invalid_argument' // bad sampling parameters, bad CLI flags, malformed request
  | 'invalid_model' // unsupported model_type, corrupt or missing checkpoint files
  | 'context_overflow' // prompt (+ max tokens) longer than the model's context or the KV pool
  | 'not_found'
  | 'unavailable' // engine shut down, queue full
  | 'backend'; // CUDA / FFI failure

export class KeelError extends Error {
  readonly kind: KeelErrorKind;

  constructor(kind: KeelErrorKind, message: string) {
    super(message);
    this.kind = kind;
    this.name = 'KeelError';
  }
}

export function invalidArgument(message: string): KeelError {
  return new KeelError('invalid_argument', message);
}

export function invalidModel(message: string): KeelError {
  return new KeelError('invalid_model', message);
}
