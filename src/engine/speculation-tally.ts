import type { SpeculationStats } from './outputs.ts';

/** How drafts fared, summed over verifications: a request's, or the engine's since it started. */
export class SpeculationTally {
  private numSteps = 0;
  private readonly draftedByPosition: number[] = [];
  private readonly acceptedByPosition: number[] = [];

  /** One sequence's verification: `numAccepted` of its `numDrafts` drafts (a prefix of them) were accepted. */
  record(numDrafts: number, numAccepted: number): void {
    if (!(numAccepted >= 0 && numAccepted <= numDrafts)) throw new RangeError(`${numAccepted} of ${numDrafts} drafts accepted`);
    this.numSteps++;
    for (let i = 0; i < numDrafts; i++) {
      this.draftedByPosition[i] = (this.draftedByPosition[i] ?? 0) + 1;
      if (i < numAccepted) this.acceptedByPosition[i] = (this.acceptedByPosition[i] ?? 0) + 1;
    }
  }

  summary(): SpeculationStats {
    const drafted = this.draftedByPosition;
    const accepted = drafted.map((_, i) => this.acceptedByPosition[i] ?? 0);
    const numDraftTokens = drafted.reduce((a, b) => a + b, 0);
    const numAcceptedTokens = accepted.reduce((a, b) => a + b, 0);
    return {
      numSteps: this.numSteps,
      numDraftTokens,
      numAcceptedTokens,
      acceptanceRate: numDraftTokens === 0 ? null : numAcceptedTokens / numDraftTokens,
      meanAcceptedLength: this.numSteps === 0 ? null : 1 + numAcceptedTokens / this.numSteps,
      draftTokensByPosition: [...drafted],
      acceptedTokensByPosition: accepted,
      acceptanceRateByPosition: drafted.map((n, i) => accepted[i] / n),
    };
  }
}
