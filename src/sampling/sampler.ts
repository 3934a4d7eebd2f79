import { KeelError } from '../errors.ts';
import {
  applyMinP,
  applyPresenceFrequencyPenalties,
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  countTokens,
  logitsToWeights,
  maskTokens,
  maxLogit,
} from './logits-processors.ts';
import { tokenLogprobs, type TokenLogprobs } from './logprobs.ts';
import type { Rng } from './rng.ts';
import type { SamplingParams } from './sampling-params.ts';

/** Temperatures below this sample greedily, as in vLLM: dividing by them only overflows. */
export const GREEDY_TEMPERATURE = 1e-5;

/** What the sampler needs to know about one sequence. */
export interface SequenceSamplingState {
  params: SamplingParams;
  /** The sequence's own generator: its tokens do not depend on the rest of the batch. */
  rng: Rng;
  promptTokenIds: ArrayLike<number>;
  outputTokenIds: ArrayLike<number>;
  /** Output token counts, if the caller keeps them; otherwise counted from outputTokenIds. */
  outputCounts?: ReadonlyMap<number, number>;
  /** The model's end-of-sequence ids: masked, with the stop token ids, until minTokens outputs. */
  eosTokenIds: readonly number[];
}

export interface SampledToken {
  tokenId: number;
  /** Present when params.logprobs is not null. */
  logprobs?: TokenLogprobs;
}

/**
 * Picks the next token from one row of logits ([vocabSize] float32, modified in place), in vLLM's
 * order: min-tokens mask, repetition penalty, presence/frequency penalties; then greedy argmax
 * (temperature 0) or temperature, min-p, top-k, top-p and an inverse-CDF draw from the sequence's
 * generator. Logprobs describe the raw model row, before any of that.
 */
export function sampleToken(logits: Float32Array, state: SequenceSamplingState): SampledToken {
  const { params } = state;
  const topLogprobs = params.logprobs;
  const rawLogits = topLogprobs === null ? null : logits.slice();

  if (state.outputTokenIds.length < params.minTokens) {
    maskTokens(logits, params.stopTokenIds);
    if (!params.ignoreEos) maskTokens(logits, state.eosTokenIds);
  }
  applyRepetitionPenalty(logits, params.repetitionPenalty, state.promptTokenIds, state.outputTokenIds);
  if (params.presencePenalty !== 0 || params.frequencyPenalty !== 0) {
    const counts = state.outputCounts ?? countTokens(state.outputTokenIds);
    applyPresenceFrequencyPenalties(logits, params.presencePenalty, params.frequencyPenalty, counts);
  }
  if (!(maxLogit(logits) > -Infinity)) {
    throw noSampleableToken();
  }

  const tokenId = params.temperature < GREEDY_TEMPERATURE ? argmax(logits) : sampleRandom(logits, params, state.rng);
  if (rawLogits === null || topLogprobs === null) return { tokenId };
  return { tokenId, logprobs: tokenLogprobs(rawLogits, tokenId, topLogprobs) };
}

/**
 * How the backend samples this sequence's next token on the device, or null when the host must:
 * the device does greedy and plain temperature sampling (Gumbel-max, its seed drawn from the
 * sequence's own stream), with no alternatives' logprobs (the sampled token's, `logprobs: 0`, it
 * computes), penalties, top-k/top-p/min-p or EOS masking left by minTokens. A row forking into n > 1 completions needs its logits for independent draws, unless
 * greedy. The logits of a device-sampled row never leave the device.
 */
export function deviceSamplingFor(params: SamplingParams, numOutputTokens: number, forking: boolean, rng: Rng): { temperature: number; seed: number } | null {
  const plain =
    (params.logprobs === null || params.logprobs === 0) &&
    params.repetitionPenalty === 1 &&
    params.presencePenalty === 0 &&
    params.frequencyPenalty === 0 &&
    numOutputTokens >= params.minTokens;
  if (!plain) return null;
  if (params.temperature < GREEDY_TEMPERATURE) return { temperature: 0, seed: 0 };
  if (forking || params.topK > 0 || params.topP < 1 || params.minP > 0) return null;
  return { temperature: params.temperature, seed: rng.nextUint32() };
}

/**
 * The token the backend sampled for a row (-1: no logit was finite), with its logprob when the
 * request asked for logprobs (the device computes the sampled token's only: `logprobs: 0`).
 */
export function deviceSample(tokenId: number, logprob: number, params: SamplingParams): SampledToken {
  if (tokenId < 0) throw noSampleableToken();
  if (params.logprobs === null) return { tokenId };
  return { tokenId, logprobs: { sampled: { tokenId, logprob }, top: [] } };
}

function noSampleableToken(): KeelError {
  return new KeelError('backend', 'no token can be sampled: every logit is NaN or -Infinity after masking');
}

/** Index of the largest logit; the lowest index wins ties, so greedy decoding is deterministic. */
function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bestValue) {
      best = i;
      bestValue = logits[i];
    }
  }
  return best;
}

function sampleRandom(logits: Float32Array, params: SamplingParams, rng: Rng): number {
  applyTemperature(logits, params.temperature);
  applyMinP(logits, params.minP);
  applyTopK(logits, params.topK);
  const total = logitsToWeights(logits);
  // From here on the row holds probability weights, not logits.
  return inverseCdf(logits, applyTopP(logits, total, params.topP), rng.nextFloat());
}

/** The token where the cumulative weight first exceeds u * total, u in [0, 1); weight-0 tokens never win. */
function inverseCdf(weights: Float32Array, total: number, u: number): number {
  const target = u * total;
  let cumulative = 0;
  let lastLikely = -1;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] === 0) continue;
    cumulative += weights[i];
    lastLikely = i;
    if (cumulative > target) return i;
  }
  // u * total can round up to total itself when u is within 2^-53 of 1.
  return lastLikely;
}
