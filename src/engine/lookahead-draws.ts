import { DRAFT_HISTORY_COLUMNS, drawFor, maskWords, type Draw } from '../sampling/draw.ts';
import type { PenaltyTokens } from '../sampling/penalty-tokens.ts';
import { bannedTokenIds, intersectAllowed, type RequestTokenFilters } from '../sampling/request-token-filters.ts';
import type { Rng } from '../sampling/rng.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { TokenConstraint } from '../structured/token-constraint.ts';
import { UNPROPOSED_DRAFT, type Sequence } from './sequence.ts';

/** What a completion's draws start from: its random stream and its penalty tokens, neither of which a lookahead changes. */
export interface LookaheadStart {
  params: SamplingParams;
  /** The request's logit bias and allowed tokens: every draw here applies them, as plain decoding's do. */
  tokenFilters: RequestTokenFilters;
  /** The completion's output tokens the host knows (all of them: a speculative step follows a step that was read). */
  outputTokenIds: readonly number[];
  rng: Rng;
  penaltyTokens: PenaltyTokens | null;
  eosTokenIds: readonly number[];
  /** The completion's structured-output constraint, caught up with its known tokens; null for free text. */
  constraint: TokenConstraint | null;
  /** Columns of the logits: the size of a constraint's masks. */
  vocabSize: number;
}

/**
 * A speculative step's draws for one sequence: one for the token after its last sampled token,
 * and one after each draft. The draw after draft v (its path: the drafts from the first to v,
 * one after another; a chain's draft v follows drafts 0..v-1, a tree's its ancestors) is
 * exactly the draw plain decoding would make for that token had the path been sampled: its seed
 * is the one the completion's random stream gives the token at that depth, and its penalties,
 * minTokens mask and structured-output mask count the path. The draft model proposes draft i with
 * the draw after draft i - 1 on its own logits (its penalties reading drafts 0..i-1 on the device,
 * in the draft history, while the host has not read them); the target draws with the same draw
 * on its row after that draft, and accepts a child of it when it drew that child's token (see
 * docs/speculative-decoding.md for why that keeps the target's distribution). Draws at one depth
 * share their seed, so the branch kept is the one plain decoding takes. The completion's stream
 * is not consumed: once the step's accepted tokens are known, it continues from `rngAfter`. A
 * constraint is given each path's tokens for its mask and then rolled back; a path the grammar
 * refuses keeps the mask before the refused draft (that draft is never accepted, so draws past
 * it are never taken).
 */
export class LookaheadDraws {
  private readonly start: LookaheadStart;
  private readonly seq: Sequence;
  private readonly numOutputTokens: number;
  /** The stream's state before the draw at each depth. */
  private readonly rngs: Rng[];

  constructor(start: LookaheadStart, seq: Sequence) {
    this.start = start;
    this.seq = seq;
    this.numOutputTokens = seq.numOutputTokens;
    this.rngs = [start.rng.clone()];
  }

  /**
   * Whether a draw reads the tokens of the drafts on its path on the host, so that they must be
   * known there before it is asked: a grammar's mask follows them, so do the bans of bad words of
   * more than one token, and so do penalties past what
   * the draft history holds (DRAFT_HISTORY_COLUMNS drafts). Otherwise a drafting pass can draw
   * draft i while the drafts before it are still on the device: penalties count them in the draft
   * history (`draw`'s `draftHistoryRow`), and nothing else reads them.
   */
  get readsPathOnHost(): boolean {
    const { constraint, penaltyTokens, tokenFilters } = this.start;
    return constraint !== null || tokenFilters.badWords?.readsOutput === true || (penaltyTokens !== null && this.seq.numDraftTokens > DRAFT_HISTORY_COLUMNS);
  }

  /**
   * Whether this sequence's verification draws (each after its path, `draw` with no draft history
   * row) read the path's drafts on the host: readsPathOnHost's cases, and penalties, which count
   * the path there. Otherwise its drafts may still be on the device when they are asked.
   */
  get verificationReadsPath(): boolean {
    return this.readsPathOnHost || this.start.penaltyTokens !== null;
  }

  /**
   * The draw of the token after draft `after` (-1: after the last sampled token) reading logits
   * row `row`. With `draftHistoryRow` -1 the drafts on its path must be known when the draw reads
   * them (`readsPathOnHost`, or penalties). Otherwise its path is a chain (drafts 0..after) that the
   * passes before drew in that row of the draft history (a draft model's proposal passes): its
   * penalties count them there, and it writes its own token after them.
   */
  draw(after: number, row: number, draftHistoryRow = -1): Draw {
    const onDevice = draftHistoryRow >= 0;
    const path: number[] = [];
    for (let v = after; v >= 0; v = this.seq.draftParent(v)) {
      const draft = this.seq.draftTokenId(v);
      if (draft === UNPROPOSED_DRAFT && (this.readsPathOnHost || (!onDevice && this.start.penaltyTokens !== null))) {
        throw new Error(`sequence ${this.seq.id}: a draw follows draft ${v}, which is not proposed yet`);
      }
      path.unshift(draft);
    }
    const depth = path.length;
    if (onDevice && depth !== after + 1) throw new Error(`sequence ${this.seq.id}: draft ${after} is not on a chain, so no draft history row holds its path`);
    const penaltyTokens = this.start.penaltyTokens?.clone() ?? null;
    if (!onDevice) for (const token of path) penaltyTokens?.add(token);
    const rng = this.rngBefore(depth).clone();
    const draw = drawFor(this.start.params, {
      row,
      rng,
      penaltyTokens,
      numOutputTokens: this.numOutputTokens + depth,
      pendingDraw: -1,
      draftHistory: onDevice ? { row: draftHistoryRow, length: depth } : null,
      eosTokenIds: this.start.eosTokenIds,
      allowedTokens: this.allowedAfter(path),
      logitBias: this.start.tokenFilters.logitBias,
      bannedTokenIds: bannedTokenIds(this.start.tokenFilters, () => [...this.start.outputTokenIds, ...path]),
    });
    if (this.rngs.length === depth + 1) this.rngs.push(rng);
    return draw;
  }

  /** The completion's stream once `numDraws` of these draws (along one path) gave it tokens. */
  rngAfter(numDraws: number): Rng {
    if (!(numDraws >= 1)) throw new RangeError(`${numDraws} draws taken`);
    return this.rngBefore(numDraws);
  }

  /** The stream before the draw at `depth`: each draw before it took its seed, whatever its token. */
  private rngBefore(depth: number): Rng {
    while (this.rngs.length <= depth) {
      const rng = this.rngs[this.rngs.length - 1].clone();
      drawFor(this.start.params, { row: 0, rng, penaltyTokens: this.start.penaltyTokens, numOutputTokens: 0, pendingDraw: -1, draftHistory: null, eosTokenIds: [], allowedTokens: null, logitBias: null, bannedTokenIds: [] });
      this.rngs.push(rng);
    }
    return this.rngs[depth];
  }

  /** The constraint's mask after the path's tokens (up to the first it refuses) within the request's allowed tokens; without a constraint, those alone. */
  private allowedAfter(path: readonly number[]): Int32Array | null {
    const constraint = this.start.constraint;
    if (constraint === null) return this.start.tokenFilters.allowedTokens;
    let taken = 0;
    while (taken < path.length && constraint.tryAccept(path[taken])) taken++;
    const mask = new Int32Array(maskWords(this.start.vocabSize));
    constraint.fillAllowed(mask);
    constraint.rollback(taken);
    return intersectAllowed(mask, this.start.tokenFilters.allowedTokens);
  }
}
