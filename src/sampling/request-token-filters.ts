import { maskWords, type LogitBias } from './draw.ts';
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
}

/** The filters of `params` over logits of `vocabSize` columns (token ids checked already: checkTokenIds). */
export function requestTokenFilters(params: SamplingParams, vocabSize: number): RequestTokenFilters {
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
  return { logitBias, allowedTokens };
}

/**
 * The tokens both a grammar's mask (`grammarMask`, filled for this draw and changed in place) and
 * the request's allowed tokens (null: every token) allow.
 */
export function intersectAllowed(grammarMask: Int32Array, allowedTokens: Int32Array | null): Int32Array {
  if (allowedTokens !== null) for (let w = 0; w < grammarMask.length; w++) grammarMask[w] &= allowedTokens[w];
  return grammarMask;
}
