import { invalidArgument } from '../errors.ts';
import type { LLM } from '../engine/llm.ts';

export interface PerplexityOptions {
  /** Tokens each window holds (the context a scored token can see at most). */
  contextLength: number;
  /**
   * Tokens a window moves on by. A token is scored in the first window that reaches it, unless it
   * is that window's first token (which has no context): with stride < contextLength every token
   * but the very first is scored.
   */
  stride: number;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  meanNll: number;
  numScoredTokens: number;
  numWindows: number;
}

/**
 * Perplexity of `tokens` under the model by sliding windows, as transformers' perplexity guide
 * computes it: windows of `contextLength` tokens start every `stride` tokens; each scores only the
 * tokens past the end of the window before it, every one with as much context as its window
 * gives. The windows run as one batch of prompts whose logprobs the engine scores.
 */
export async function perplexity(llm: LLM, tokens: readonly number[], options: PerplexityOptions): Promise<PerplexityResult> {
  const { contextLength, stride } = options;
  if (!(Number.isInteger(contextLength) && contextLength >= 2)) throw invalidArgument(`the context length must be an integer of at least 2 (got ${contextLength})`);
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= contextLength)) {
    throw invalidArgument(`the stride must be an integer in [1, context length ${contextLength}] (got ${stride})`);
  }
  if (tokens.length < 2) throw invalidArgument(`perplexity needs at least 2 tokens (got ${tokens.length})`);
  const windows: { begin: number; firstScored: number }[] = [];
  let previousEnd = 0;
  for (let begin = 0; previousEnd < tokens.length; begin += stride) {
    const end = Math.min(begin + contextLength, tokens.length);
    windows.push({ begin, firstScored: Math.max(1, previousEnd - begin) });
    previousEnd = end;
  }
  const prompts = windows.map(({ begin }) => tokens.slice(begin, Math.min(begin + contextLength, tokens.length)));
  const outputs = await llm.generate(prompts, { temperature: 0, maxTokens: 1, ignoreEos: true, promptLogprobs: 0 });
  let nll = 0;
  let scored = 0;
  outputs.forEach((output, w) => {
    const logprobs = output.promptLogprobs!;
    for (let i = windows[w].firstScored; i < logprobs.length; i++) {
      nll -= logprobs[i]!.sampled.logprob;
      scored++;
    }
  });
  return { perplexity: Math.exp(nll / scored), meanNll: nll / scored, numScoredTokens: scored, numWindows: windows.length };
}
