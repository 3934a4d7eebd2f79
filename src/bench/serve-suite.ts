import { setTimeout as sleep } from 'node:timers/promises';
import { KeelError } from '../errors.ts';
import { timedCompletion, type CompletionTarget, type CompletionTiming } from './completion-client.ts';
import { poissonArrivalTimesMs } from './poisson-arrivals.ts';
import type { BenchRequest } from './random-dataset.ts';
import type { ServeResults } from './result-schema.ts';
import { serveMetrics } from './serve-metrics.ts';

export interface ServeOptions {
  requests: BenchRequest[];
  /** Requests per second of the Poisson arrivals; Infinity sends them all at once. */
  requestRate: number;
  /** Most requests in flight at once; null for no limit. */
  maxConcurrency: number | null;
  seed: number;
  /** Called as each request completes. */
  onRequestDone?(): void;
}

/** Output tokens of the warm-up request: enough to see whether tokens arrive one chunk each. */
const WARMUP_OUTPUT_TOKENS = 8;

/**
 * `keel bench serve`: one warm-up request (which also decides how tokens are timed), then every
 * request sent at its Poisson arrival time, at most `maxConcurrency` in flight. A request's clock
 * starts when it is sent, after any wait for a concurrency slot, as in vLLM.
 */
export async function runServeSuite(target: CompletionTarget, options: ServeOptions): Promise<ServeResults> {
  const tokenTiming = await warmUp(target, options.requests[0]);
  const perTokenLogprobs = tokenTiming === 'logprobs';
  const arrivals = poissonArrivalTimesMs(options.requests.length, options.requestRate, options.seed);
  const slots = new ConcurrencyLimit(options.maxConcurrency ?? Infinity);
  const start = performance.now();
  const inFlight: Promise<CompletionTiming>[] = [];
  for (const [i, request] of options.requests.entries()) {
    const wait = start + arrivals[i] - performance.now();
    if (wait > 0) await sleep(wait);
    inFlight.push(
      slots.run(async () => {
        const timing = await timedCompletion(target, request, perTokenLogprobs);
        options.onRequestDone?.();
        return timing;
      }),
    );
  }
  const timings = await Promise.all(inFlight);
  return serveMetrics(timings, (performance.now() - start) / 1000, tokenTiming);
}

/**
 * Sends the first request with a few output tokens. A server that streams token by token sends a
 * chunk per token; one without a tokenizer has no text to stream and sends its tokens in one
 * final chunk, so its requests ask for `logprobs: 0`, which gives every token its own chunk.
 */
async function warmUp(target: CompletionTarget, request: BenchRequest): Promise<ServeResults['token_timing']> {
  const outputLen = Math.min(request.outputLen, WARMUP_OUTPUT_TOKENS);
  const probe = await timedCompletion(target, { ...request, outputLen }, false);
  if (!probe.ok) throw new KeelError('unavailable', `the warm-up request failed: ${probe.error}`);
  return probe.outputTokens > 1 && probe.choiceChunks < 2 ? 'logprobs' : 'text-chunks';
}

/** Runs tasks with at most `limit` of them pending at once, in the order they were given. */
export class ConcurrencyLimit {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  private readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A finishing task hands its slot straight to the next waiter, so none can be taken in between.
    if (this.active < this.limit) this.active++;
    else await new Promise<void>((resolve) => this.queue.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}
