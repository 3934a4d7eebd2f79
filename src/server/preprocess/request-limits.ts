import { ApiError } from '../openai-errors.ts';

/**
 * What one request may ask of the server: each limit is a `keel serve` flag. A request over one of
 * them could never be served whatever the load, so it is refused (413) before the work it would
 * cost; the queue limits also bound, with the requests already waiting, what is admitted (429).
 */
export interface RequestLimits {
  /** Largest `n` (completions per prompt). */
  maxN: number;
  /** Most prompts in one /v1/completions batch. */
  maxPromptsPerRequest: number;
  /** Largest prompt in UTF-8 bytes, checked before tokenizing: a completions prompt, or a chat's messages together. */
  maxPromptBytes: number;
  /** Most sequences (prompts × n) waiting for the engine; null = no limit. */
  maxQueuedSequences: number | null;
  /** Most prompt tokens waiting for the engine; null = no limit. */
  maxQueuedTokens: number | null;
}

function tooLarge(message: string, param: string): ApiError {
  return new ApiError(413, message, { param, code: 'request_too_large' });
}

export function checkN(n: number, limits: RequestLimits): void {
  if (n > limits.maxN) throw tooLarge(`n is ${n}, more than this server allows (--max-n ${limits.maxN})`, 'n');
}

export function checkPromptCount(count: number, limits: RequestLimits): void {
  if (count > limits.maxPromptsPerRequest) {
    throw tooLarge(`the batch has ${count} prompts, more than this server takes in one request (--max-prompts-per-request ${limits.maxPromptsPerRequest})`, 'prompt');
  }
}

/** Every prompt becomes n sequences: more than the queue holds could never be admitted. */
export function checkSequences(numPrompts: number, n: number, limits: RequestLimits): void {
  const sequences = numPrompts * n;
  if (limits.maxQueuedSequences !== null && sequences > limits.maxQueuedSequences) {
    throw tooLarge(`this request asks for ${sequences} sequences (${numPrompts} prompt${numPrompts === 1 ? '' : 's'} × n ${n}), more than the server queues (--max-queued-sequences ${limits.maxQueuedSequences})`, 'n');
  }
}

export function checkPromptBytes(bytes: number, limits: RequestLimits, param: string): void {
  if (bytes > limits.maxPromptBytes) {
    throw tooLarge(`${param} is ${bytes} bytes of UTF-8, more than this server tokenizes (--max-prompt-bytes ${limits.maxPromptBytes})`, param);
  }
}

export function checkPromptTokens(tokens: number, limits: RequestLimits, param: string): void {
  if (limits.maxQueuedTokens !== null && tokens > limits.maxQueuedTokens) {
    throw tooLarge(`the prompts have ${tokens} tokens, more than the server queues (--max-queued-tokens ${limits.maxQueuedTokens})`, param);
  }
}
