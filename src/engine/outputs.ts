/** What the engine reports per request: the library API, the CLI and the server all read this. */

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenLogprob {
  tokenId: number;
  token: string;
  logprob: number;
}

/** The sampled token's logprob and the top alternatives (sorted, most likely first). */
export interface PositionLogprobs {
  sampled: TokenLogprob;
  top: TokenLogprob[];
}

export interface CompletionOutput {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs: PositionLogprobs[] | null;
  finishReason: FinishReason | null;
  /** The stop string or stop token id that ended the completion, if any. */
  stopReason: string | number | null;
}

export interface RequestMetrics {
  arrivalTime: number;
  firstScheduledTime: number | null;
  firstTokenTime: number | null;
  finishedTime: number | null;
  /** Prompt tokens served from the prefix cache. */
  numCachedTokens: number;
  /** Of those, the tokens loaded from the prefix cache's host tier (`kvOffloadGb`). */
  numHostCachedTokens: number;
  /** Times this request was preempted for lack of KV blocks (any of its completions). */
  numPreemptions: number;
  /**
   * Of those preemptions, the ones that swapped its K/V out to host memory and back; the others
   * recomputed it (preemptionMode, docs/long-context.md says which is chosen when).
   */
  numSwaps: number;
  /** How its drafts fared (all completions together); null when the engine does not speculate. */
  speculation: SpeculationStats | null;
}

/** Speculative decoding's figures: a request's (RequestMetrics) or the engine's since start (EngineStats). */
export interface SpeculationStats {
  /** Verifications: a sequence's step that ran drafts after its last sampled token. */
  numSteps: number;
  numDraftTokens: number;
  numAcceptedTokens: number;
  /** Accepted drafts over drafts; null before the first. */
  acceptanceRate: number | null;
  /** Tokens a verification gives on average: its accepted drafts and the token drawn after them; null before the first. */
  meanAcceptedLength: number | null;
  /** [i]: verifications that had a draft i (0-based), and those that accepted it. */
  draftTokensByPosition: number[];
  acceptedTokensByPosition: number[];
  /** [i]: the fraction of draft i's verifications that accepted it. */
  acceptanceRateByPosition: number[];
}

export interface RequestOutput {
  requestId: string;
  prompt: string | null;
  promptTokenIds: number[];
  /**
   * With promptLogprobs: each prompt token's logprob given the tokens before it and the top
   * alternatives there; null for the first token, which has no context.
   */
  promptLogprobs: (PositionLogprobs | null)[] | null;
  outputs: CompletionOutput[];
  finished: boolean;
  metrics: RequestMetrics;
}

/**
 * One streamed update for a request: new tokens and text since the last update, per completion
 * index. `output` is the cumulative state.
 */
export interface StreamDelta {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs: PositionLogprobs[] | null;
  finishReason: FinishReason | null;
  stopReason: string | number | null;
}
