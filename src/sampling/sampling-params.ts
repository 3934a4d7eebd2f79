import type { StructuredOutput } from './structured-output.ts';

/**
 * Per-request sampling parameters, with the semantics of vLLM / the OpenAI API. Defaults live in
 * `DEFAULT_SAMPLING_PARAMS`; `resolveSamplingParams` (validate.ts) merges and validates user input.
 */
export interface SamplingParams {
  /** Number of completions for the prompt; they share the prompt's KV blocks (copy-on-write). */
  n: number;
  /** 0 means greedy. */
  temperature: number;
  topP: number;
  /** 0 or -1 disables. */
  topK: number;
  minP: number;
  /** > 1 discourages tokens already in prompt or output (multiplicative, as in HF/vLLM). */
  repetitionPenalty: number;
  /** Subtracted once from the logit of every token already generated. */
  presencePenalty: number;
  /** Subtracted per occurrence from the logit of every token already generated. */
  frequencyPenalty: number;
  /**
   * Added to the logits of these token ids before the penalties (OpenAI's logit_bias), each bias in
   * [-100, 100]: -100 all but bans a token, 100 all but forces it. Null: none. The logprobs
   * returned stay raw, unbiased.
   */
  logitBias: Readonly<Record<number, number>> | null;
  /** The only token ids that can be drawn (vLLM's allowed_token_ids; with a structuredOutput, those both allow); null: every token. */
  allowedTokenIds: number[] | null;
  /** Words never generated (vLLM's bad_words): their token sequences, as the tokenizer spells them, are cut before their last token (bad-words.ts). */
  badWords: string[];
  /** Per-request seed: the same seed gives the same tokens whatever else is in the batch. */
  seed: number | null;
  stop: string[];
  stopTokenIds: number[];
  /** Keep the matched stop string at the end of the text. */
  includeStopStrInOutput: boolean;
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  /** Number of top alternatives whose logprobs are returned per generated token; null = none. */
  logprobs: number | null;
  /** Number of top alternatives per prompt token; null = none. Not supported yet: the engine rejects any other value. */
  promptLogprobs: number | null;
  skipSpecialTokens: boolean;
  /** What the output must match (a JSON schema, a regex, a choice, a grammar); null = free text. */
  structuredOutput: StructuredOutput | null;
  /**
   * Beam search (docs/long-context.md) instead of sampling: the n best of `beamWidth` beams
   * ranked by raw log-probability, as transformers' num_beams without sampling. Temperature,
   * top-p/k, min-p, penalties and seed do not apply.
   */
  useBeamSearch: boolean;
  /** Beams kept running; null: n. Only with useBeamSearch. */
  beamWidth: number | null;
  /** A finished beam scores sum(logprobs) / generatedLength ** lengthPenalty (transformers' length_penalty). */
  lengthPenalty: number;
  /** transformers' early_stopping: true, false (a heuristic) or `never` (the canonical search). */
  earlyStopping: boolean | 'never';
}

export const DEFAULT_SAMPLING_PARAMS: SamplingParams = {
  n: 1,
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logitBias: null,
  allowedTokenIds: null,
  badWords: [],
  seed: null,
  stop: [],
  stopTokenIds: [],
  includeStopStrInOutput: false,
  maxTokens: 16,
  minTokens: 0,
  ignoreEos: false,
  logprobs: null,
  promptLogprobs: null,
  skipSpecialTokens: true,
  structuredOutput: null,
  useBeamSearch: false,
  beamWidth: null,
  lengthPenalty: 1,
  earlyStopping: false,
};
