import { drawFor, maskWords, type Draw } from '../sampling/draw.ts';
import type { PenaltyTokens } from '../sampling/penalty-tokens.ts';
import type { Rng } from '../sampling/rng.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { TokenConstraint } from '../structured/token-constraint.ts';
import { UNPROPOSED_DRAFT, type Sequence } from './sequence.ts';

/** What a completion's draws start from: its random stream and its penalty tokens, neither of which a lookahead changes. */
export interface LookaheadStart {
  params: SamplingParams;
  rng: Rng;
  penaltyTokens: PenaltyTokens | null;
  eosTokenIds: readonly number[];
  /** The completion's structured-output constraint, caught up with its known tokens; null for free text. */
  constraint: TokenConstraint | null;
  /** Columns of the logits: the size of a constraint's masks. */
  vocabSize: number;
}

/**
 * A speculative step's draws for one sequence, one per token the step may give it: draw i gives
 * the token after its last sampled token and its drafts 0..i-1, exactly as plain decoding would
 * draw that token had those drafts been sampled: its seed is the one the completion's random
 * stream gives that token, and its penalties and minTokens mask count the drafts before it. The
 * draft model proposes draft i with draw i on its own logits; the target draws with draw i on its
 * row after draft i-1, and accepts the draft when both drew the same token (see
 * docs/speculative-decoding.md for why that keeps the target's distribution). The completion's
 * stream is not consumed: once the step's accepted tokens are known, it continues from `rngAfter`.
 * Under a structured output, draw i's mask is the grammar's after the drafts before it: the
 * constraint takes the drafts as the draws are made and gives them back in `releaseConstraint`.
 * A draft the grammar refuses is never accepted (the draw before it is masked), so the draws after
 * it keep the last mask: they are never taken.
 */
export class LookaheadDraws {
  private readonly start: LookaheadStart;
  private readonly seq: Sequence;
  private readonly numOutputTokens: number;
  private readonly rng: Rng;
  private readonly penaltyTokens: PenaltyTokens | null;
  private readonly draws: Draw[] = [];
  /** The stream's state after each draw. */
  private readonly rngs: Rng[] = [];
  /** Drafts the constraint took; once one is refused, it takes no more. */
  private draftsInConstraint = 0;
  private constraintRefused = false;
  private lastMask: Int32Array | null = null;

  constructor(start: LookaheadStart, seq: Sequence) {
    this.start = start;
    this.seq = seq;
    this.numOutputTokens = seq.numOutputTokens;
    this.rng = start.rng.clone();
    this.penaltyTokens = start.penaltyTokens?.clone() ?? null;
  }

  /** Draw `index` reading logits row `row`; the drafts before it must be known. */
  draw(index: number, row: number): Draw {
    while (this.draws.length <= index) this.extend();
    return { ...this.draws[index], row };
  }

  /** Gives back the drafts the constraint took, once the step has been verified. */
  releaseConstraint(): void {
    this.start.constraint?.rollback(this.draftsInConstraint);
    this.draftsInConstraint = 0;
  }

  /** The completion's stream once `numDraws` of these draws gave it tokens. */
  rngAfter(numDraws: number): Rng {
    if (!(numDraws >= 1 && numDraws <= this.rngs.length)) throw new RangeError(`${numDraws} draws taken of the ${this.rngs.length} made`);
    return this.rngs[numDraws - 1];
  }

  private extend(): void {
    const index = this.draws.length;
    if (index > 0) {
      const draft = this.seq.draftTokenId(index - 1);
      if (draft === UNPROPOSED_DRAFT) throw new Error(`sequence ${this.seq.id}: draw ${index} follows draft ${index - 1}, which is not proposed yet`);
      this.penaltyTokens?.add(draft);
      if (this.start.constraint !== null && !this.constraintRefused) {
        if (this.start.constraint.tryAccept(draft)) this.draftsInConstraint++;
        else this.constraintRefused = true;
      }
    }
    if (this.start.constraint !== null && !this.constraintRefused) {
      this.start.constraint.fillAllowed((this.lastMask = new Int32Array(maskWords(this.start.vocabSize))));
    }
    const draw = drawFor(this.start.params, {
      row: 0,
      rng: this.rng,
      penaltyTokens: this.penaltyTokens,
      numOutputTokens: this.numOutputTokens + index,
      pendingDraw: -1,
      eosTokenIds: this.start.eosTokenIds,
      allowedTokens: this.lastMask,
    });
    // The entries are a view of the penalty tokens, which the next draft changes.
    this.draws.push({ ...draw, penaltyEntries: draw.penaltyEntries.slice() });
    this.rngs.push(this.rng.clone());
  }
}
