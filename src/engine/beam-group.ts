import type { DrawResults } from '../sampling/draw.ts';
import type { BeamSearch, Candidate } from './beam-search.ts';
import type { Sequence } from './sequence.ts';

/**
 * A beam-search request's running beams as sequences, aligned with the search's running beams,
 * and the candidates each has drawn for its current length. Beams advance together: one that has
 * its candidates parks until every other has too (preemption and the step's limits may run them
 * in different steps); then the engine takes a search step, forking and dropping sequences.
 */
export class BeamGroup {
  readonly search: BeamSearch;
  seqs: Sequence[];
  private readonly candidates = new Map<Sequence, { length: number; list: Candidate[] }>();

  constructor(search: BeamSearch, first: Sequence) {
    this.search = search;
    this.seqs = [first];
  }

  /** Keeps a beam's candidates, read from draw `draw` of a sampling pass, and parks it. */
  offer(seq: Sequence, results: DrawResults, draw: number): void {
    const list: Candidate[] = [];
    for (let i = 0; i < this.search.candidatesPerBeam; i++) {
      const tokenId = results.topIds[draw * results.topWidth + i];
      if (tokenId < 0) break;
      list.push({ tokenId, logprob: results.topLogprobs[draw * results.topWidth + i] });
    }
    this.candidates.set(seq, { length: seq.numTokens, list });
    seq.parked = true;
  }

  /** Whether every running beam has its candidates for its current length. */
  ready(): boolean {
    return this.seqs.every((seq) => this.candidates.get(seq)?.length === seq.numTokens);
  }

  /** The running beams' candidates, in the search's order; they are used once. */
  takeCandidates(): Candidate[][] {
    const lists = this.seqs.map((seq) => this.candidates.get(seq)!.list);
    this.candidates.clear();
    return lists;
  }
}
