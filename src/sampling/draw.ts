import { KeelError } from '../errors.ts';
import type { TokenIdLogprob, TokenLogprobs } from './logprobs.ts';
import type { PenaltyTokens } from './penalty-tokens.ts';
import type { Rng } from './rng.ts';
import type { SamplingParams } from './sampling-params.ts';

/** The most top tokens one draw returns on every backend (sample-rows.cu's MAX_TOP). */
export const MAX_TOP_LOGPROBS = 32;

/**
 * Columns of a row of the draft history (Draw.draftHistoryRow): the most drafts one sequence
 * chains on the device in a step while its penalties count them.
 */
export const DRAFT_HISTORY_COLUMNS = 64;

/** Temperatures below this sample greedily, as in vLLM: dividing by them only overflows. */
export const GREEDY_TEMPERATURE = 1e-5;

/**
 * One token to draw from one row of a step's logits: all the backend's sampling pass needs, so
 * that logits never leave the device. In vLLM's order: the masked tokens are removed, the logit
 * biases added and the penalties applied, then a greedy draw takes the argmax, and a random one
 * divides by the temperature, keeps the tokens that min-p, top-k and top-p keep (each keeps every
 * token tied with its last one) and draws among them by Gumbel-max with `seed` (gumbel.ts).
 */
export interface Draw {
  /** The logits row it reads. A row forking into n completions is drawn n times. */
  row: number;
  /** 0: greedy. */
  temperature: number;
  seed: number;
  /** 0: no top-k. */
  topK: number;
  /** 1: no top-p. */
  topP: number;
  /** 0: no min-p. */
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /**
   * (token id, output count) pairs of the distinct tokens the penalties touch: count 0 for a
   * prompt token (repetition penalty only), then the output's tokens (penalty-tokens.ts). Empty
   * when no penalty applies.
   */
  penaltyEntries: Int32Array;
  /**
   * Added to the logits of its tokens before the penalties (OpenAI's logit_bias, as vLLM applies
   * it); null: none. Like the masks it changes what is drawn, never the raw logprobs.
   */
  logitBias: LogitBias | null;
  /** Tokens that cannot be drawn: EOS and the stop ids while the output is shorter than minTokens, and those bad words ban. */
  maskedTokenIds: Int32Array;
  /**
   * The only tokens that can be drawn (a request's allowed token ids, a grammar's mask for
   * structured output, or both intersected): bit t % 32 of word
   * floor(t / 32) set for an allowed token t, ceil(cols / 32) words; null: every token. Like the
   * masked tokens it changes what is drawn, never the raw logprobs.
   */
  allowedTokens: Int32Array | null;
  /**
   * Where the previous sampling pass left this sequence's last token, which the host has not read
   * yet (its draw index there), or -1. The penalties count it as one more output token.
   */
  pendingDraw: number;
  /**
   * The row of the backend's draft history holding the drafts drawn before this one in this step
   * (a draft model's proposal passes, chained on the device), or -1. The penalties count the row's
   * first `draftHistoryLength` ids as output tokens, as they count the pending token, and the drawn
   * token is written after them (column draftHistoryLength), where the next pass's draw reads it:
   * the host need not have read the drafts before a draw whose penalties count them. Draws of one
   * pass name distinct rows.
   */
  draftHistoryRow: number;
  /** How many drafts of `draftHistoryRow` come before this draw (0 to DRAFT_HISTORY_COLUMNS - 1). */
  draftHistoryLength: number;
  /** How many of the most likely tokens' raw logprobs to return (0 to MAX_TOP_LOGPROBS; the API allows 20). */
  topLogprobs: number;
  /**
   * -1, or a token that is reported instead of drawing one, with its raw logprob and the top
   * alternatives': how a prompt position's next token is scored (prompt logprobs, perplexity).
   */
  scoredToken: number;
}

/** Biases of a draw's logits: distinct token ids and the bias of each, the same length. */
export interface LogitBias {
  tokenIds: Int32Array;
  biases: Float32Array;
}

/** What a sampling pass returns for its draws. */
export interface DrawResults {
  /** The drawn token of each draw; -1 where no logit was left finite. */
  tokenIds: Int32Array;
  /** Each drawn token's log-probability under softmax of the raw row (before penalties and temperature). */
  logprobs: Float32Array;
  /** [draws, topWidth]: each draw's most likely raw tokens, most likely first, lower id among equals; -1 past its topLogprobs. */
  topIds: Int32Array;
  topLogprobs: Float32Array;
  topWidth: number;
}

/** What the engine knows of a sequence when it asks for its next token. */
export interface DrawContext {
  row: number;
  /** The completion's own random stream: one seed per random draw. */
  rng: Rng;
  /** The completion's penalty pairs, over the output tokens the host knows (not the pending one); null without penalties. */
  penaltyTokens: PenaltyTokens | null;
  /** Output tokens so far, the pending one included. */
  numOutputTokens: number;
  pendingDraw: number;
  /** Where the drafts before this draw lie on the device (Draw.draftHistoryRow), or null: the host knows them all. */
  draftHistory: { row: number; length: number } | null;
  eosTokenIds: readonly number[];
  /** See Draw.allowedTokens. */
  allowedTokens: Int32Array | null;
  /** The request's logit bias (Draw.logitBias), built once for all its draws (request-token-filters.ts). */
  logitBias: LogitBias | null;
  /** Tokens the request's bad words ban at this draw (BadWords.bannedAfter), masked like the minTokens ones. */
  bannedTokenIds: readonly number[];
}

const NO_TOKENS = new Int32Array(0);

/** How a completion's next token is drawn; a random draw takes its seed from the completion's stream. */
export function drawFor(params: SamplingParams, context: DrawContext): Draw {
  const greedy = params.temperature < GREEDY_TEMPERATURE;
  const penalized = hasPenalties(params);
  if (penalized !== (context.penaltyTokens !== null)) throw new Error('drawFor: penalty tokens are kept exactly when a penalty applies');
  const early = context.numOutputTokens < params.minTokens ? [...params.stopTokenIds, ...(params.ignoreEos ? [] : context.eosTokenIds)] : [];
  const masked = context.bannedTokenIds.length === 0 ? early : [...early, ...context.bannedTokenIds];
  return {
    row: context.row,
    temperature: greedy ? 0 : params.temperature,
    seed: greedy ? 0 : context.rng.nextUint32(),
    topK: params.topK > 0 ? params.topK : 0,
    topP: params.topP,
    minP: params.minP,
    repetitionPenalty: params.repetitionPenalty,
    presencePenalty: params.presencePenalty,
    frequencyPenalty: params.frequencyPenalty,
    penaltyEntries: context.penaltyTokens?.entries() ?? NO_TOKENS,
    logitBias: context.logitBias,
    maskedTokenIds: masked.length === 0 ? NO_TOKENS : Int32Array.from(new Set(masked)),
    allowedTokens: context.allowedTokens,
    pendingDraw: penalized ? context.pendingDraw : -1,
    // Only penalties read the drafts before a draw: an unpenalized draw's history would go unread.
    draftHistoryRow: penalized ? (context.draftHistory?.row ?? -1) : -1,
    draftHistoryLength: penalized ? (context.draftHistory?.length ?? 0) : 0,
    topLogprobs: params.logprobs ?? 0,
    scoredToken: -1,
  };
}

/** The `topLogprobs` most likely raw tokens at logits row `row` and their logprobs (beam search's candidates). */
export function topTokensDraw(row: number, topLogprobs: number): Draw {
  return scoreDraw(row, -1, topLogprobs);
}

/**
 * Scores `token` at logits row `row`: its raw logprob and the `topLogprobs` most likely raw tokens',
 * with nothing drawn (a prompt position whose next token is known).
 */
export function scoreDraw(row: number, token: number, topLogprobs: number): Draw {
  // -1 (topTokensDraw) draws greedily: the top tokens come back whatever is drawn.
  return {
    row,
    temperature: 0,
    seed: 0,
    topK: 0,
    topP: 1,
    minP: 0,
    repetitionPenalty: 1,
    presencePenalty: 0,
    frequencyPenalty: 0,
    penaltyEntries: NO_TOKENS,
    logitBias: null,
    maskedTokenIds: NO_TOKENS,
    allowedTokens: null,
    pendingDraw: -1,
    draftHistoryRow: -1,
    draftHistoryLength: 0,
    topLogprobs,
    scoredToken: token,
  };
}

/**
 * What both backends check before a sampling pass over logits [rows, cols], whose previous pass
 * made `previousDraws` draws: every row, token id and pending draw a draw names exists.
 */
export function checkDraws(draws: readonly Draw[], rows: number, cols: number, previousDraws: number): void {
  const outside = (id: number) => !(id >= 0 && id < cols);
  const historyRows = new Map<number, number>();
  draws.forEach((draw, d) => {
    if (!(draw.row >= 0 && draw.row < rows)) throw new RangeError(`sampleRows: draw ${d} reads row ${draw.row}, outside [0, ${rows})`);
    if (draw.allowedTokens !== null && draw.allowedTokens.length !== maskWords(cols)) {
      throw new RangeError(`sampleRows: draw ${d}'s allowed-token mask has ${draw.allowedTokens.length} words, not the ${maskWords(cols)} of ${cols} columns`);
    }
    if (draw.pendingDraw >= previousDraws) throw new RangeError(`sampleRows: draw ${d}'s pending token ${draw.pendingDraw} is outside the ${previousDraws} previous draws`);
    if (draw.draftHistoryRow >= 0) {
      if (!(draw.draftHistoryLength >= 0 && draw.draftHistoryLength < DRAFT_HISTORY_COLUMNS)) {
        throw new RangeError(`sampleRows: draw ${d} follows ${draw.draftHistoryLength} drafts in the draft history, which holds ${DRAFT_HISTORY_COLUMNS} per row`);
      }
      if (historyRows.has(draw.draftHistoryRow)) throw new RangeError(`sampleRows: draws ${historyRows.get(draw.draftHistoryRow)} and ${d} both write draft history row ${draw.draftHistoryRow}`);
      historyRows.set(draw.draftHistoryRow, d);
    }
    let bad = draw.scoredToken >= 0 && outside(draw.scoredToken) ? draw.scoredToken : draw.maskedTokenIds.find(outside);
    for (let e = 0; e < draw.penaltyEntries.length && bad === undefined; e += 2) if (outside(draw.penaltyEntries[e])) bad = draw.penaltyEntries[e];
    if (draw.logitBias !== null) {
      if (draw.logitBias.tokenIds.length !== draw.logitBias.biases.length) throw new RangeError(`sampleRows: draw ${d}'s logit bias has ${draw.logitBias.tokenIds.length} token ids but ${draw.logitBias.biases.length} biases`);
      bad ??= draw.logitBias.tokenIds.find(outside);
    }
    if (bad !== undefined) throw new RangeError(`sampleRows: draw ${d} names token ${bad}, outside the ${cols} columns`);
  });
}

/** How many rows the draft history needs for `draws`: one past the last row they name. */
export function draftHistoryRows(draws: readonly Draw[]): number {
  return draws.reduce((n, draw) => Math.max(n, draw.draftHistoryRow + 1), 0);
}

/** Words of a token bitmask over `cols` tokens (Draw.allowedTokens). */
export function maskWords(cols: number): number {
  return Math.ceil(cols / 32);
}

/** Whether token `id` is allowed by a draw's mask (Draw.allowedTokens). */
export function isAllowed(allowedTokens: Int32Array | null, id: number): boolean {
  return allowedTokens === null || ((allowedTokens[id >>> 5] >>> (id & 31)) & 1) === 1;
}

/** Whether any of the repetition, presence and frequency penalties applies. */
export function hasPenalties(params: SamplingParams): boolean {
  return params.repetitionPenalty !== 1 || params.presencePenalty !== 0 || params.frequencyPenalty !== 0;
}

/** A count that marks a masked token among a draw's entries. */
export const MASKED = -1;

/** A count that marks a token listed only for its logit bias: no penalty touches it, unless it is an unlisted output token. */
export const UNSEEN = -2;

/** What both backends walk of a draw besides its row: its listed tokens, each once. */
export interface DrawEntries {
  /** (token id, output count) pairs: the penalty entries' counts, MASKED for a masked token, UNSEEN for one only biased. */
  pairs: Int32Array;
  /** Each pair's logit bias (0 for a token without one); null when the draw has no logit bias. */
  biases: Float32Array | null;
}

/** A draw's penalty tokens, masked tokens and biased tokens as one list (DrawEntries). */
export function drawEntries(draw: Draw): DrawEntries {
  const bias = draw.logitBias;
  if (draw.maskedTokenIds.length === 0 && bias === null) return { pairs: draw.penaltyEntries, biases: null };
  const masked = new Set(draw.maskedTokenIds);
  const pairs = Array.from(draw.penaltyEntries);
  const listed = new Set<number>();
  for (let e = 0; e < pairs.length; e += 2) {
    listed.add(pairs[e]);
    if (masked.has(pairs[e])) pairs[e + 1] = MASKED;
  }
  const list = (id: number, count: number) => {
    if (listed.has(id)) return;
    listed.add(id);
    pairs.push(id, count);
  };
  for (const id of masked) list(id, MASKED);
  if (bias === null) return { pairs: Int32Array.from(pairs), biases: null };
  for (const id of bias.tokenIds) list(id, UNSEEN);
  const biasOf = new Map<number, number>();
  bias.tokenIds.forEach((id, i) => biasOf.set(id, bias.biases[i]));
  const biases = new Float32Array(pairs.length / 2);
  for (let e = 0; e < pairs.length; e += 2) biases[e / 2] = biasOf.get(pairs[e]) ?? 0;
  return { pairs: Int32Array.from(pairs), biases };
}

/** An entry's count once `extra` more occurrences of its token among the output count too. */
export function entryCount(count: number, extra: number): number {
  if (count === MASKED) return MASKED;
  if (count === UNSEEN) return extra > 0 ? extra : UNSEEN;
  return count + extra;
}

/**
 * A penalized logit in float32, operation by operation as the GPU computes it: the repetition
 * penalty divides a positive logit and multiplies a negative one of every token seen; presence
 * and frequency subtract from a token generated `count` > 0 times. `logit` is already biased.
 */
export function penalizedLogit(logit: number, count: number, draw: Draw): number {
  if (count === MASKED) return -Infinity;
  if (count === UNSEEN) return logit;
  const r = Math.fround(draw.repetitionPenalty);
  let v = logit > 0 ? Math.fround(logit / r) : Math.fround(logit * r);
  if (count > 0) {
    const penalty = Math.fround(Math.fround(Math.fround(draw.frequencyPenalty) * count) + Math.fround(draw.presencePenalty));
    v = Math.fround(v - penalty);
  }
  return v;
}

/** A drawn token as the engine takes it. */
export interface SampledToken {
  tokenId: number;
  /** Present when params.logprobs is not null. */
  logprobs?: TokenLogprobs;
}

/** Draw `d` of a sampling pass, with the logprobs `params` asked for; an error when no logit was finite. */
export function drawnToken(results: DrawResults, d: number, params: SamplingParams): SampledToken {
  const tokenId = results.tokenIds[d];
  if (tokenId < 0) throw new KeelError('backend', 'no token can be sampled: every logit is NaN or -Infinity after masking');
  if (params.logprobs === null) return { tokenId };
  const top: TokenIdLogprob[] = [];
  for (let j = 0; j < params.logprobs; j++) {
    const at = d * results.topWidth + j;
    if (results.topIds[at] < 0) break;
    top.push({ tokenId: results.topIds[at], logprob: results.topLogprobs[at] });
  }
  return { tokenId, logprobs: { sampled: { tokenId, logprob: results.logprobs[d] }, top } };
}
