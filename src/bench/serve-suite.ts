import { setTimeout as sleep } from 'node:timers/promises';
import { KeelError } from '../errors.ts';
import { timedCompletion, type CompletionTarget, type CompletionTiming } from './completion-client.ts';
import { poissonArrivalTimesMs } from './poisson-arrivals.ts';
import type { BenchRequest } from './random-dataset.ts';
import type { MultiTurnResults, ServeResults } from './result-schema.ts';
import { serveMetrics } from './serve-metrics.ts';
import { serverMetricsOverRun, type ServerCounters } from './server-counters.ts';
import { flatSummary, summarize } from './statistics.ts';

export interface ServeOptions {
  requests: BenchRequest[];
  /** Requests per second of the Poisson arrivals; Infinity sends them all at once. */
  requestRate: number;
  /** Most requests in flight at once; null for no limit. */
  maxConcurrency: number | null;
  seed: number;
  /** The server's counters (scrapeServerCounters), read after the warm-up and after the run; null when it has none. */
  serverCounters: () => Promise<ServerCounters | null>;
  /** Called as each request completes. */
  onRequestDone?(): void;
}

/** Output tokens of the warm-up request: enough to see whether tokens arrive one chunk each. */
const WARMUP_OUTPUT_TOKENS = 8;

/**
 * `keel bench serve`: one warm-up request (which also decides how tokens are timed), then every
 * request sent at its Poisson arrival time, at most `maxConcurrency` in flight. A request's clock
 * starts when it is sent, after any wait for a concurrency slot, as in vLLM. The server's own
 * figures over the run (prefix cache, preemptions, speculation) are its counters' differences.
 */
export async function runServeSuite(target: CompletionTarget, options: ServeOptions): Promise<ServeResults> {
  const tokenTiming = await warmUp(target, options.requests[0]);
  const perTokenLogprobs = tokenTiming === 'logprobs';
  const before = await options.serverCounters();
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
  const durationS = (performance.now() - start) / 1000;
  return { ...serveMetrics(timings, durationS, tokenTiming), server_metrics: serverMetricsOverRun(before, await options.serverCounters()) };
}

export interface MultiTurnOptions {
  /** Each conversation's turns, sent one after another: turn k once turn k - 1 completed. */
  conversations: BenchRequest[][];
  /** Conversations started per second (Poisson); Infinity starts them all at once. */
  requestRate: number;
  /** Most requests in flight at once; null for no limit. */
  maxConcurrency: number | null;
  seed: number;
  serverCounters: () => Promise<ServerCounters | null>;
  onRequestDone?(): void;
}

/**
 * A multi-turn chat workload: one warm-up request, then conversations started at their Poisson
 * arrival times, each sending its turns in order (a turn is sent when the previous one has
 * completed), at most `maxConcurrency` requests in flight. Reports the serve figures over every
 * request, TTFT of first turns and of later turns apart (the later ones re-send a history the
 * server may have cached), and the server's figures over the run (its prefix-cache hit rates by
 * tier are this workload's point).
 */
export async function runMultiTurnSuite(target: CompletionTarget, options: MultiTurnOptions): Promise<ServeResults> {
  const first = options.conversations[0]?.[0];
  if (first === undefined) throw new KeelError('invalid_argument', 'a multi-turn run needs at least one conversation with a turn');
  const tokenTiming = await warmUp(target, first);
  const perTokenLogprobs = tokenTiming === 'logprobs';
  const before = await options.serverCounters();
  const arrivals = poissonArrivalTimesMs(options.conversations.length, options.requestRate, options.seed);
  const slots = new ConcurrencyLimit(options.maxConcurrency ?? Infinity);
  const start = performance.now();
  const byTurn: CompletionTiming[][] = options.conversations[0].map(() => []);
  const conversations = options.conversations.map(async (turns, c) => {
    const wait = start + arrivals[c] - performance.now();
    if (wait > 0) await sleep(wait);
    for (const [turn, request] of turns.entries()) {
      const timing = await slots.run(() => timedCompletion(target, request, perTokenLogprobs));
      options.onRequestDone?.();
      (byTurn[turn] ??= []).push(timing);
      // A failed turn ends its conversation: the next would re-send a history the server never saw.
      if (!timing.ok) return;
    }
  });
  await Promise.all(conversations);
  const durationS = (performance.now() - start) / 1000;
  const after = await options.serverCounters();
  const ttfts = (timings: CompletionTiming[]) => timings.flatMap((t) => (t.ok && t.ttftMs !== null ? [t.ttftMs] : []));
  const multiTurn: MultiTurnResults = {
    num_conversations: options.conversations.length,
    num_turns: byTurn.length,
    ...flatSummary('first_turn_ttft_ms', summarize(ttfts(byTurn[0]))),
    ...flatSummary('later_turns_ttft_ms', summarize(byTurn.slice(1).flatMap(ttfts))),
    mean_ttft_ms_by_turn: byTurn.map((timings) => summarize(ttfts(timings))?.mean ?? null),
  };
  return { ...serveMetrics(byTurn.flat(), durationS, tokenTiming), server_metrics: serverMetricsOverRun(before, after), multi_turn: multiTurn };
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
