import { BadWords } from './bad-words.ts';
import { maskWords, type LogitBias } from './draw.ts';
import { invalidArgument } from '../errors.ts';
import type { SamplingParams } from './sampling-params.ts';

/**
 * A request's own say over its tokens, in the form its draws hand the backend: built once when
 * the request arrives, shared by every draw (plain, draft and verification draws alike).
 */
export interface RequestTokenFilters {
  /** params.logitBias as Draw.logitBias; null: none. */
  logitBias: LogitBias | null;
  /** params.allowedTokenIds as a bitmask over the vocabulary (Draw.allowedTokens); null: every token. */
  allowedTokens: Int32Array | null;
  /** params.badWords tokenized; null: none. */
  badWords: BadWords | null;
}

/**
 * The filters of `params` over logits of `vocabSize` columns (token ids checked already:
 * checkTokenIds); `encode` tokenizes the bad words (a tokenizer's, without special tokens), null
 * for a model without a tokenizer.
 */
export function requestTokenFilters(params: SamplingParams, vocabSize: number, encode: ((text: string) => number[]) | null): RequestTokenFilters {
  let logitBias: LogitBias | null = null;
  if (params.logitBias !== null && Object.keys(params.logitBias).length > 0) {
    const entries = Object.entries(params.logitBias);
    logitBias = { tokenIds: Int32Array.from(entries, ([id]) => Number(id)), biases: Float32Array.from(entries, ([, bias]) => bias) };
  }
  let allowedTokens: Int32Array | null = null;
  if (params.allowedTokenIds !== null) {
    allowedTokens = new Int32Array(maskWords(vocabSize));
    for (const id of params.allowedTokenIds) allowedTokens[id >>> 5] |= 1 << (id & 31);
  }
  let badWords: BadWords | null = null;
  if (params.badWords.length > 0) {
    if (encode === null) throw invalidArgument('badWords need a tokenizer, and this model has no tokenizer.json');
    badWords = BadWords.tokenize(params.badWords, encode);
  }
  return { logitBias, allowedTokens, badWords };
}

/** The tokens the request's bad words ban at a draw after `output` (its output tokens so far, drafts on the path included). */
export function bannedTokenIds(filters: RequestTokenFilters, output: () => readonly number[]): readonly number[] {
  const badWords = filters.badWords;
  if (badWords === null) return NO_TOKENS;
  return badWords.bannedAfter(badWords.readsOutput ? output() : NO_TOKENS);
}

const NO_TOKENS: readonly number[] = [];

/**
 * The tokens both a grammar's mask (`grammarMask`, filled for this draw and changed in place) and
 * the request's allowed tokens (null: every token) allow.
 */
export function intersectAllowed(grammarMask: Int32Array, allowedTokens: Int32Array | null): Int32Array {
  if (allowedTokens !== null) for (let w = 0; w < grammarMask.length; w++) grammarMask[w] &= allowedTokens[w];
  return grammarMask;
}
