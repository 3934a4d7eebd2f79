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

/** A draft tree: each draft's parent draft (-1: the sequence's last sampled token), parents listed first. */
export interface DraftTree {
  tokens: number[];
  parents: number[];
}

/**
 * Prompt-lookup drafts as a tree: the continuations (each as ngramDrafts makes them, at most
 * `maxDepth` tokens) of up to `maxBranches` earlier occurrences of the sequence's last n tokens,
 * the latest occurrences of the longest n first, merged where they agree, at most `maxNodes`
 * drafts in all. One branch is ngramDrafts' chain.
 */
export function ngramTree(tokens: readonly number[], ngramMin: number, ngramMax: number, maxDepth: number, maxBranches: number, maxNodes: number): DraftTree {
  const tree: DraftTree = { tokens: [], parents: [] };
  const length = tokens.length;
  let branches = 0;
  for (let n = Math.min(ngramMax, length - 1); n >= ngramMin && branches < maxBranches; n--) {
    const suffix = length - n;
    for (let start = suffix - 1; start >= 0 && branches < maxBranches; start--) {
      let i = 0;
      while (i < n && tokens[start + i] === tokens[suffix + i]) i++;
      if (i < n) continue;
      const continuation: number[] = [];
      for (let d = 0; d < maxDepth; d++) {
        const at = start + n + d;
        continuation.push(at < length ? tokens[at] : continuation[at - length]);
      }
      if (insertPath(tree, continuation, maxNodes)) branches++;
    }
  }
  return tree;
}

/** Adds a path to the tree, sharing its longest prefix already there; whether it added a draft. */
function insertPath(tree: DraftTree, path: readonly number[], maxNodes: number): boolean {
  let parent = -1;
  let added = false;
  for (const token of path) {
    let node = tree.tokens.findIndex((t, i) => t === token && tree.parents[i] === parent);
    if (node < 0) {
      if (tree.tokens.length >= maxNodes) break;
      node = tree.tokens.push(token) - 1;
      tree.parents.push(parent);
      added = true;
    }
    parent = node;
  }
  return added;
}
