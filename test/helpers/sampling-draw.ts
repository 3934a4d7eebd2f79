import type { Draw } from '../../src/sampling/draw.ts';

const NONE = new Int32Array(0);

/** A draw of row 0 at temperature 1 with nothing else set, changed by `fields`. */
export function testDraw(fields: Partial<Draw> = {}): Draw {
  return {
    row: 0,
    temperature: 1,
    seed: 0,
    topK: 0,
    topP: 1,
    minP: 0,
    repetitionPenalty: 1,
    presencePenalty: 0,
    frequencyPenalty: 0,
    penaltyEntries: NONE,
    logitBias: null,
    maskedTokenIds: NONE,
    allowedTokens: null,
    pendingDraw: -1,
    draftHistoryRow: -1,
    draftHistoryLength: 0,
    topLogprobs: 0,
    scoredToken: -1,
    ...fields,
  };
}

/** Penalty entries from (token id, output count) pairs. */
export function penaltyEntries(entries: [number, number][]): Pick<Draw, 'penaltyEntries'> {
  return { penaltyEntries: Int32Array.from(entries.flat()) };
}

/** An allowed-token mask (Draw.allowedTokens) over `cols` tokens allowing exactly `ids`. */
export function allowedMask(cols: number, ids: Iterable<number>): Int32Array {
  const mask = new Int32Array(Math.ceil(cols / 32));
  for (const id of ids) mask[id >>> 5] |= 1 << (id & 31);
  return mask;
}

/** A logit bias (Draw.logitBias) from (token id, bias) pairs. */
export function logitBias(pairs: [number, number][]): Pick<Draw, 'logitBias'> {
  return { logitBias: { tokenIds: Int32Array.from(pairs, ([id]) => id), biases: Float32Array.from(pairs, ([, bias]) => bias) } };
}
