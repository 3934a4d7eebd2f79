import type { PenaltyTokens } from '../sampling/penalty-tokens.ts';
import type { Rng } from '../sampling/rng.ts';
import type { RequestTokenFilters } from '../sampling/request-token-filters.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { StopStringMatcher } from '../sampling/stop-strings.ts';
import type { TokenConstraint } from '../structured/token-constraint.ts';
import type { IncrementalDetokenizer } from '../tokenizer/detokenizer.ts';
import type { BeamGroup } from './beam-group.ts';
import type { CompletionOutput, FinishReason, PositionLogprobs, RequestMetrics, StreamDelta } from './outputs.ts';
import type { Sequence } from './sequence.ts';
import type { SpeculationTally } from './speculation-tally.ts';

/**
 * One completion of a request (index 0..n-1). Until the prompt has been prefilled all completions
 * share the first sequence; at the first sampling step the others fork from it, sharing its KV
 * blocks copy-on-write.
 */
export interface Completion {
  index: number;
  seq: Sequence | null;
  rng: Rng;
  /** The tokens its penalties touch, with their output counts; null when the request has no penalty. */
  penaltyTokens: PenaltyTokens | null;
  detokenizer: IncrementalDetokenizer | null;
  stopMatcher: StopStringMatcher | null;
  /**
   * Where its structured output's grammar stands (null: free text): it takes the completion's
   * tokens lazily, when the next draw asks for its mask, so it may lag behind the output.
   */
  constraint: TokenConstraint | null;
  output: CompletionOutput;
  /** What changed since the last streamed update. */
  pending: StreamDelta | null;
}

export interface Request {
  id: string;
  prompt: string | null;
  promptTokenIds: number[];
  params: SamplingParams;
  /** Its logit bias and allowed tokens as every one of its draws takes them. */
  tokenFilters: RequestTokenFilters;
  /** Filled as prompt positions are scored (params.promptLogprobs); index 0 stays null. */
  promptLogprobs: (PositionLogprobs | null)[] | null;
  completions: Completion[];
  /** Metrics as reported; `speculation` is filled from `speculation` below when a snapshot is taken. */
  metrics: RequestMetrics;
  /** How its drafts fared; null when the engine does not speculate. */
  speculation: SpeculationTally | null;
  /** Its running beams under beam search (params.useBeamSearch; its completions get the best at the end); null otherwise. */
  beams: BeamGroup | null;
  /** Called after every step that changed this request. */
  onUpdate: (request: Request) => void;
}

export function isFinished(request: Request): boolean {
  return request.completions.every((c) => c.output.finishReason !== null);
}

export function finishCompletion(c: Completion, reason: FinishReason, stopReason: string | number | null): void {
  c.output.finishReason = reason;
  c.output.stopReason = stopReason;
  const delta = pendingDelta(c);
  delta.finishReason = reason;
  delta.stopReason = stopReason;
}

export function pendingDelta(c: Completion): StreamDelta {
  c.pending ??= {
    index: c.index,
    text: '',
    tokenIds: [],
    logprobs: c.output.logprobs === null ? null : [],
    finishReason: null,
    stopReason: null,
  };
  return c.pending;
}

export function appendLogprobs(c: Completion, lp: PositionLogprobs): void {
  c.output.logprobs?.push(lp);
  pendingDelta(c).logprobs?.push(lp);
}
