/** A token's log-probability; the engine adds the token's text. */
export interface TokenIdLogprob {
  tokenId: number;
  logprob: number;
}

/** The sampled (or prompt) token's logprob and the most likely alternatives, most likely first. */
export interface TokenLogprobs {
  sampled: TokenIdLogprob;
  top: TokenIdLogprob[];
}

/** log(sum(exp(logits))) over the non-NaN logits, shifted by the max so no exp overflows. */
export function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (max === -Infinity) return -Infinity;
  let total = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity) total += Math.exp(logits[i] - max);
  return max + Math.log(total);
}

/**
 * Ids of the `count` largest logits (NaN never among them), largest first, lower id first among
 * equals. One pass with a small sorted buffer: count is at most 20, and most logits fail the
 * first comparison.
 */
export function topTokenIds(logits: Float32Array, count: number): number[] {
  const ids: number[] = [];
  if (count <= 0) return ids;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i];
    if (Number.isNaN(value)) continue;
    if (ids.length === count) {
      if (!(value > logits[ids[count - 1]])) continue;
      ids.pop();
    }
    let at = ids.length;
    while (at > 0 && value > logits[ids[at - 1]]) at--;
    ids.splice(at, 0, i);
  }
  return ids;
}
