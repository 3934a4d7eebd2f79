/**
 * How close a top-k choice came to going another way: the gap between the k-th value kept and the
 * best value left out, over the largest magnitude among the candidates, so 0.004 means a change of
 * 0.4 % of the candidates' scale swaps them. Infinity when nothing finite is left out (every
 * candidate kept) or every candidate is 0. Non-finite values (masked candidates) are not candidates.
 */
export function selectionMargin(values: ArrayLike<number>, k: number): number {
  const finite = Array.from(values).filter(Number.isFinite).sort((a, b) => b - a);
  if (k <= 0 || k >= finite.length) return Infinity;
  const scale = Math.max(Math.abs(finite[0]), Math.abs(finite[finite.length - 1]));
  return scale === 0 ? Infinity : (finite[k - 1] - finite[k]) / scale;
}

/**
 * Where the CPU backend reports each token's closest discrete choice (CpuBackend.selectionMargins):
 * `op` names the choice (MoE expert routing, the lightning indexer's positions), `token` the step's
 * token row, `margin` its selectionMargin. A backend rounding otherwise (bf16) may choose the other
 * way where the margin is small, and its outputs then part from the CPU's by more than rounding.
 */
export type SelectionMarginSink = (op: 'expert routing' | 'index selection', token: number, margin: number) => void;
