import type { RequestOutput, StreamDelta } from '../../engine/outputs.ts';

/** An update of one prompt of a generation. */
export interface PromptUpdate {
  /** Which of the generation's prompts it is for. */
  promptIndex: number;
  /** What each completion gained since the prompt's previous update. */
  deltas: StreamDelta[];
  /** The prompt's whole output, on its last update (finished or aborted); null before. */
  final: RequestOutput | null;
}

export interface GenerationHooks {
  /** A prompt left the engine's queue: its first update came, or it ended without one. Once per prompt. */
  onStarted?(promptIndex: number): void;
  /** A prompt's last update came (finished, or aborted): whether or not anyone still reads the updates. */
  onFinished?(output: RequestOutput): void;
}

/**
 * The engine requests of one HTTP request (a chat has one prompt, a completions batch several):
 * their updates merged into one stream, in the order they come. Leaving the iteration early, or
 * `abort()`, aborts every prompt still running. The first failure of any prompt aborts the others
 * and is thrown by the iteration and by `whenStarted`.
 */
export class EngineGeneration implements AsyncIterable<PromptUpdate> {
  private readonly queue: PromptUpdate[] = [];
  private wake: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly running: Set<number>;
  private readonly unstarted: Set<number>;
  private readonly startWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  private readonly abortPrompts: (promptIndices: number[]) => void;
  private readonly hooks: GenerationHooks;

  constructor(numPrompts: number, abortPrompts: (promptIndices: number[]) => void, hooks: GenerationHooks) {
    this.running = new Set(Array.from({ length: numPrompts }, (_, i) => i));
    this.unstarted = new Set(this.running);
    this.abortPrompts = abortPrompts;
    this.hooks = hooks;
  }

  /** Resolves once every prompt has had its first update (so the engine took them all). */
  whenStarted(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.unstarted.size === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.startWaiters.push({ resolve, reject }));
  }

  abort(): void {
    if (this.running.size > 0) this.abortPrompts([...this.running]);
  }

  /** From the engine client: an update of one prompt. */
  deliver(promptIndex: number, deltas: StreamDelta[], final: RequestOutput | null): void {
    if (!this.running.has(promptIndex)) return;
    this.markStarted(promptIndex);
    if (final) {
      this.running.delete(promptIndex);
      this.hooks.onFinished?.(final);
    }
    this.queue.push({ promptIndex, deltas, final });
    this.wake?.();
  }

  /** From the engine client: a prompt failed (the engine rejected it, a step failed, or the engine stopped). */
  fail(promptIndex: number, error: Error): void {
    if (!this.running.has(promptIndex)) return;
    this.running.delete(promptIndex);
    const first = this.failure === null;
    this.failure ??= error;
    this.markStarted(promptIndex);
    if (!first) return;
    this.abort();
    for (const waiter of this.startWaiters.splice(0)) waiter.reject(error);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<PromptUpdate> {
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        const update = this.queue.shift();
        if (update) {
          yield update;
          continue;
        }
        if (this.running.size === 0) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
      }
    } finally {
      this.abort();
    }
  }

  private markStarted(promptIndex: number): void {
    if (!this.unstarted.delete(promptIndex)) return;
    this.hooks.onStarted?.(promptIndex);
    if (this.unstarted.size === 0 && !this.failure) for (const waiter of this.startWaiters.splice(0)) waiter.resolve();
  }
}
