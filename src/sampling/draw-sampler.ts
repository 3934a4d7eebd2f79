import { checkDraws, DRAFT_HISTORY_COLUMNS, draftHistoryRows, drawEntries, entryCount, isAllowed, penalizedLogit, type Draw, type DrawResults } from './draw.ts';
import { gumbelNoise } from './gumbel.ts';
import { logSumExp, topTokenIds } from './logprobs.ts';

/** One draw's outcome: the token (-1 when no logit is left finite), its raw logprob, the top raw tokens. */
export interface DrawOutcome {
  tokenId: number;
  logprob: number;
  topIds: number[];
  topLogprobs: number[];
}

/**
 * The CPU twin of the GPU's sampling pass (kernels/sample-rows.cu), step for step in float32:
 * `raw` is the row's logits, untouched (its logit biases added to a copy); `outputTokens` the output tokens the host has not listed
 * in the draw's entries (its pending token and the drafts before it in the draft history), which
 * the penalties count as well. A draw with a scored token reports that token instead of drawing.
 * Truncation is a threshold on the scaled logits: min-p's, the k-th largest, then the smallest
 * value whose tokens at or above it hold topP of the mass left; Gumbel-max draws among the rest,
 * which is a draw from their renormalized softmax.
 */
export function sampleDraw(raw: Float32Array, draw: Draw, outputTokens: readonly number[]): DrawOutcome {
  const values = penalizedRow(raw, draw, outputTokens);
  const drawn = () => (draw.temperature === 0 ? argmax(values, () => true, (c) => values[c]) : randomDraw(values, draw));
  const tokenId = draw.scoredToken >= 0 ? draw.scoredToken : drawn();
  const normalizer = logSumExp(raw);
  const topIds = topTokenIds(raw, draw.topLogprobs);
  return {
    tokenId,
    logprob: tokenId < 0 ? -Infinity : raw[tokenId] - normalizer,
    topIds,
    topLogprobs: topIds.map((id) => raw[id] - normalizer),
  };
}

function penalizedRow(raw: Float32Array, draw: Draw, outputTokens: readonly number[]): Float32Array {
  const values = raw.slice();
  // How often each unlisted output token occurs: each occurrence is one more output count.
  const extra = new Map<number, number>();
  for (const id of outputTokens) extra.set(id, (extra.get(id) ?? 0) + 1);
  const { pairs, biases } = drawEntries(draw);
  for (let e = 0; e < pairs.length; e += 2) {
    const [id, count] = [pairs[e], pairs[e + 1]];
    const biased = biases === null ? raw[id] : Math.fround(raw[id] + biases[e / 2]);
    values[id] = penalizedLogit(biased, entryCount(count, extra.get(id) ?? 0), draw);
    extra.delete(id);
  }
  for (const [id, count] of extra) values[id] = penalizedLogit(raw[id], count, draw);
  if (draw.allowedTokens !== null) for (let c = 0; c < values.length; c++) if (!isAllowed(draw.allowedTokens, c)) values[c] = -Infinity;
  return values;
}

function randomDraw(values: Float32Array, draw: Draw): number {
  const kept = truncatedScaled(values, draw);
  return argmax(kept, () => true, (c) => Math.fround(kept[c] + gumbelNoise(draw.seed, c)));
}

/**
 * What a random draw chooses among: each penalized value divided by the temperature, and
 * -Infinity for the tokens min-p, top-k and top-p truncate. Its softmax is the distribution the
 * draw samples from.
 */
function truncatedScaled(values: Float32Array, draw: Draw): Float32Array {
  const inv = Math.fround(1 / draw.temperature);
  const scaled = values.map((v) => Math.fround(v * inv));
  let max = -Infinity;
  for (const s of scaled) if (s > max) max = s;
  let threshold = -Infinity;
  if (draw.minP > 0) threshold = Math.fround(max + Math.fround(Math.log(draw.minP)));
  if (draw.topK > 0) threshold = Math.max(threshold, kthLargest(scaled.filter((s) => s > -Infinity), draw.topK));
  if (draw.topP < 1) threshold = Math.max(threshold, nucleusThreshold(scaled, threshold, max, draw.topP));
  return scaled.map((s) => (s >= threshold ? s : -Infinity));
}

/**
 * The probability of each token that `draw` (not a scored one) gives row `raw`: one-hot on the
 * argmax for a greedy draw, else the softmax of what the Gumbel-max draw chooses among. Statistical
 * tests of sampling compare drawn frequencies with it.
 */
export function drawDistribution(raw: Float32Array, draw: Draw, outputTokens: readonly number[]): Float64Array {
  const values = penalizedRow(raw, draw, outputTokens);
  const probabilities = new Float64Array(raw.length);
  if (draw.temperature === 0) {
    const best = argmax(values, () => true, (c) => values[c]);
    if (best >= 0) probabilities[best] = 1;
    return probabilities;
  }
  const kept = truncatedScaled(values, draw);
  let max = -Infinity;
  for (const s of kept) if (s > max) max = s;
  if (max === -Infinity) return probabilities;
  let total = 0;
  kept.forEach((s, c) => (total += probabilities[c] = Math.exp(s - max)));
  return probabilities.map((p) => p / total);
}

/** The k-th largest of `values`, or -Infinity when there are fewer than k. */
function kthLargest(values: Float32Array, k: number): number {
  if (values.length < k) return -Infinity;
  return values.sort().reverse()[k - 1];
}

/**
 * The largest value x such that the weights exp(s - max) of the values s >= max(x, floor) hold at
 * least topP of those of the values >= floor.
 */
function nucleusThreshold(scaled: Float32Array, floor: number, max: number, topP: number): number {
  const kept = scaled.filter((s) => s >= floor && s > -Infinity).sort().reverse();
  let total = 0;
  for (const s of kept) total += Math.exp(s - max);
  const target = topP * total;
  let mass = 0;
  for (const s of kept) {
    mass += Math.exp(s - max);
    if (mass >= target) return s;
  }
  return kept[kept.length - 1];
}

/** The index with the largest key among those `eligible`, the lowest on ties; -1 when none is finite. */
function argmax(values: Float32Array, eligible: (c: number) => boolean, key: (c: number) => number): number {
  let best = -1;
  let bestKey = -Infinity;
  for (let c = 0; c < values.length; c++) {
    if (!(values[c] > -Infinity) || !eligible(c)) continue;
    const k = key(c);
    if (k > bestKey) {
      best = c;
      bestKey = k;
    }
  }
  return best;
}

/**
 * Every draw of a sampling pass over logits [rows, cols]; `previousIds` are the previous pass's
 * ids, where pending tokens are read, and `draftHistory` the draft history, DRAFT_HISTORY_COLUMNS
 * ids a row (at least draftHistoryRows(draws) rows), where the drafts before a draw are read and
 * its token written (Draw.draftHistoryRow).
 */
export function sampleDraws(logits: Float32Array, rows: number, cols: number, draws: readonly Draw[], previousIds: Int32Array, draftHistory: Int32Array): DrawResults {
  const topWidth = Math.max(0, ...draws.map((d) => d.topLogprobs));
  const results: DrawResults = {
    tokenIds: new Int32Array(draws.length),
    logprobs: new Float32Array(draws.length),
    topIds: new Int32Array(draws.length * topWidth).fill(-1),
    topLogprobs: new Float32Array(draws.length * topWidth).fill(-Infinity),
    topWidth,
  };
  checkDraws(draws, rows, cols, previousIds.length);
  if (draftHistory.length < DRAFT_HISTORY_COLUMNS * draftHistoryRows(draws)) throw new RangeError(`sampleDraws: the draft history has ${draftHistory.length / DRAFT_HISTORY_COLUMNS} rows, fewer than the draws name`);
  const history = (draw: Draw) => draftHistory.subarray(draw.draftHistoryRow * DRAFT_HISTORY_COLUMNS, draw.draftHistoryRow * DRAFT_HISTORY_COLUMNS + draw.draftHistoryLength);
  draws.forEach((draw, d) => {
    const outputTokens = [...(draw.pendingDraw >= 0 ? [previousIds[draw.pendingDraw]] : []), ...(draw.draftHistoryRow >= 0 ? history(draw) : [])];
    // An id past the columns (or -1, nothing drawn) is no token of this row: it counts for nothing.
    const outcome = sampleDraw(logits.subarray(draw.row * cols, (draw.row + 1) * cols), draw, outputTokens.filter((id) => id >= 0 && id < cols));
    results.tokenIds[d] = outcome.tokenId;
    results.logprobs[d] = outcome.logprob;
    results.topIds.set(outcome.topIds, d * topWidth);
    results.topLogprobs.set(outcome.topLogprobs, d * topWidth);
  });
  // Written once every draw has read: a pass's draws name distinct rows, and each reads only its own.
  draws.forEach((draw, d) => {
    if (draw.draftHistoryRow >= 0) draftHistory[draw.draftHistoryRow * DRAFT_HISTORY_COLUMNS + draw.draftHistoryLength] = results.tokenIds[d];
  });
  return results;
}
