/**
 * Prompt-lookup drafts: the tokens that followed the latest earlier occurrence of the sequence's
 * last n tokens, trying n from `ngramMax` down to `ngramMin` (the longest suffix seen before
 * wins), at most `maxDrafts` of them; none when no suffix occurred before. As in an LZ77 copy, the
 * continuation may run on into the drafts themselves, so a repeating pattern is continued for all
 * `maxDrafts` tokens.
 */
export function ngramDrafts(tokens: readonly number[], ngramMin: number, ngramMax: number, maxDrafts: number): number[] {
  const length = tokens.length;
  for (let n = Math.min(ngramMax, length - 1); n >= ngramMin; n--) {
    const start = latestEarlierOccurrence(tokens, n);
    if (start < 0) continue;
    const drafts: number[] = [];
    for (let i = 0; i < maxDrafts; i++) {
      const at = start + n + i;
      drafts.push(at < length ? tokens[at] : drafts[at - length]);
    }
    return drafts;
  }
  return [];
}

/** Where the latest occurrence of the last n tokens starts among those followed by a token, or -1. */
function latestEarlierOccurrence(tokens: readonly number[], n: number): number {
  const suffix = tokens.length - n;
  for (let start = suffix - 1; start >= 0; start--) {
    let i = 0;
    while (i < n && tokens[start + i] === tokens[suffix + i]) i++;
    if (i === n) return start;
  }
  return -1;
}
