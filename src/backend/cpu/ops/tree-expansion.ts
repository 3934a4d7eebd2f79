/** A drafted node: its token (the target's id), its parent (-1: the last sampled token) and its path's log-probability under the head. */
export interface DraftNode {
  token: number;
  parent: number;
  logprob: number;
}

/** A candidate child: a token and its log-probability under the head, given its parent. */
export interface Candidate {
  token: number;
  logprob: number;
}

/**
 * One depth of EAGLE-2's dynamic tree: the children of the frontier (`frontier[i]`'s candidates
 * are `candidates[i]`, most likely first, the lower id among equals; -1: the root, path
 * log-probability 0), each with its path log-probability, its parent's plus its own, added in
 * float32; and the `keep` best of them, most likely first. Ties go to the earlier frontier node,
 * then to the better-ranked candidate. The ranking is defined to the bit (float32 sums, a total
 * order) so that any twin of it (a device kernel) keeps exactly the nodes the host keeps.
 */
export function expandDepth(nodes: readonly DraftNode[], frontier: readonly number[], candidates: readonly (readonly Candidate[])[], keep: number): DraftNode[] {
  if (candidates.length !== frontier.length) throw new Error(`${frontier.length} frontier nodes, but candidates for ${candidates.length}`);
  const children = frontier.flatMap((parent, i) => {
    const base = parent < 0 ? 0 : nodes[parent].logprob;
    return candidates[i].map((c) => ({ token: c.token, parent, logprob: Math.fround(base + c.logprob) }));
  });
  // A stable sort: equal path log-probabilities keep the order above (frontier node, then rank).
  return children.sort((x, y) => y.logprob - x.logprob).slice(0, keep);
}
