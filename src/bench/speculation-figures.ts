import type { SpeculationStats } from '../engine/outputs.ts';
import type { SpeculationFigures } from './result-schema.ts';

/** The running totals of speculative decoding that its figures are computed from: the engine's stats, or a server's /metrics counters. */
export type SpeculationTotals = Pick<SpeculationStats, 'numSteps' | 'numDraftTokens' | 'numAcceptedTokens' | 'draftTokensByPosition' | 'acceptedTokensByPosition'>;

/**
 * Speculative decoding's figures between two readings of its totals (before and after the
 * measured runs); null when the engine does not speculate.
 */
export function speculationFigures(before: SpeculationTotals | null, after: SpeculationTotals | null): SpeculationFigures | null {
  if (before === null || after === null) return null;
  const drafted = after.draftTokensByPosition.map((n, i) => n - (before.draftTokensByPosition[i] ?? 0));
  const accepted = after.acceptedTokensByPosition.map((n, i) => n - (before.acceptedTokensByPosition[i] ?? 0));
  const steps = after.numSteps - before.numSteps;
  const draftTokens = after.numDraftTokens - before.numDraftTokens;
  const acceptedTokens = after.numAcceptedTokens - before.numAcceptedTokens;
  return {
    drafts: steps,
    draft_tokens: draftTokens,
    accepted_tokens: acceptedTokens,
    acceptance_rate: draftTokens === 0 ? null : acceptedTokens / draftTokens,
    mean_accepted_length: steps === 0 ? null : 1 + acceptedTokens / steps,
    acceptance_rate_by_position: drafted.flatMap((n, i) => (n === 0 ? [] : [accepted[i] / n])),
  };
}
