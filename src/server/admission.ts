import { ApiError } from './openai-errors.ts';

/** What a prompt adds to the queue: its sequences (n) and its prompt tokens (prefilled once, however large n). */
export interface QueueCost {
  sequences: number;
  tokens: number;
}

/**
 * The server's queue: the sequences and prompt tokens admitted to the engine that it has not
 * started yet (a prompt leaves the queue with its first token). A request is admitted only if it
 * fits beside what already waits, else it is a 429; one that could never fit was refused as a
 * 413 while it was read (preprocess/request-limits.ts).
 */
export class Admission {
  private readonly maxSequences: number | null;
  private readonly maxTokens: number | null;
  private queuedSequences = 0;
  private queuedTokens = 0;

  constructor(limits: { maxQueuedSequences: number | null; maxQueuedTokens: number | null }) {
    this.maxSequences = limits.maxQueuedSequences;
    this.maxTokens = limits.maxQueuedTokens;
  }

  get sequences(): number {
    return this.queuedSequences;
  }

  get tokens(): number {
    return this.queuedTokens;
  }

  /** Refuses at once while the queue is already full, before a request's body is even read. */
  refuseWhileFull(): void {
    if (this.maxSequences !== null && this.queuedSequences >= this.maxSequences) {
      throw queueFull(`${this.queuedSequences} sequences wait, as many as --max-queued-sequences ${this.maxSequences} allows`);
    }
    if (this.maxTokens !== null && this.queuedTokens >= this.maxTokens) {
      throw queueFull(`${this.queuedTokens} prompt tokens wait, as many as --max-queued-tokens ${this.maxTokens} allows`);
    }
  }

  /** Admits the prompts, or throws a 429; `leave(i)` when prompt i starts or ends (more calls are ignored). */
  admit(costs: QueueCost[]): { leave(promptIndex: number): void } {
    const total = costs.reduce((sum, c) => ({ sequences: sum.sequences + c.sequences, tokens: sum.tokens + c.tokens }), { sequences: 0, tokens: 0 });
    this.check(total);
    this.queuedSequences += total.sequences;
    this.queuedTokens += total.tokens;
    const waiting = new Set(costs.keys());
    return {
      leave: (promptIndex) => {
        if (!waiting.delete(promptIndex)) return;
        this.queuedSequences -= costs[promptIndex].sequences;
        this.queuedTokens -= costs[promptIndex].tokens;
      },
    };
  }

  private check(cost: QueueCost): void {
    if (this.maxSequences !== null && this.queuedSequences + cost.sequences > this.maxSequences) {
      throw queueFull(`${this.queuedSequences} sequences wait and this request adds ${cost.sequences}, over --max-queued-sequences ${this.maxSequences}`);
    }
    if (this.maxTokens !== null && this.queuedTokens + cost.tokens > this.maxTokens) {
      throw queueFull(`${this.queuedTokens} prompt tokens wait and this request adds ${cost.tokens}, over --max-queued-tokens ${this.maxTokens}`);
    }
  }
}

function queueFull(detail: string): ApiError {
  return new ApiError(429, `the server's queue is full (${detail}); retry later`, { type: 'rate_limit_error', code: 'queue_full', headers: { 'retry-after': '1' } });
}
