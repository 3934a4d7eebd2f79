import { drawEntries, MAX_TOP_LOGPROBS, type Draw, type DrawResults } from '../../../sampling/draw.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Words of one draw in sample-rows.cu's `struct Draw`. */
const DRAW_WORDS = 18;
/** The largest topLogprobs the kernel returns (its MAX_TOP). */
const MAX_TOP = MAX_TOP_LOGPROBS;
/**
 * The bitmap of listed tokens lives in dynamic shared memory beside the kernel's ~11 KB of static
 * arrays; sm_80 lets a block have 163 KB. 96 KB covers vocabularies up to 786,432 tokens.
 */
const MAX_BITMAP_BYTES = 96 * 1024;

/**
 * Draws in sample-rows.cu's layout: every draw's entries (int pairs), then the draws, then the
 * allowed-token masks of the draws that have one, then the entries' logit biases (float32) of the
 * draws that have one: one upload carries them all.
 */
export interface PackedDraws {
  words: Int32Array;
  /** Word offset of the draws in `words` (the entries start at 0). */
  drawsOffset: number;
  hasEntries: boolean;
  topWidth: number;
}

/** `draws` (checked: checkDraws) laid out for the kernel over rows of `cols` logits. */
export function packDraws(draws: readonly Draw[], cols: number): PackedDraws {
  const entries = draws.map(drawEntries);
  const entryWords = entries.reduce((n, e) => n + e.pairs.length, 0);
  const masksOffset = entryWords + DRAW_WORDS * draws.length;
  const maskWordCount = draws.reduce((n, draw) => n + (draw.allowedTokens?.length ?? 0), 0);
  const biasWordCount = entries.reduce((n, e) => n + (e.biases?.length ?? 0), 0);
  const words = new Int32Array(masksOffset + maskWordCount + biasWordCount);
  let nextMask = masksOffset;
  let nextBias = masksOffset + maskWordCount;
  const floats = new Float32Array(words.buffer);
  let next = 0;
  let topWidth = 0;
  draws.forEach((draw, d) => {
    if (draw.topLogprobs > MAX_TOP) throw new RangeError(`sampleRows: draw ${d} asks ${draw.topLogprobs} top logprobs, more than ${MAX_TOP}`);
    const { pairs, biases } = entries[d];
    words.set(pairs, next);
    const at = entryWords + DRAW_WORDS * d;
    words[at] = draw.row;
    words[at + 1] = draw.seed | 0;
    words[at + 2] = draw.topK;
    words[at + 3] = draw.pendingDraw;
    floats[at + 4] = draw.temperature === 0 ? 0 : 1 / draw.temperature;
    floats[at + 5] = draw.topP;
    floats[at + 6] = draw.minP > 0 ? Math.log(draw.minP) : -Infinity;
    floats[at + 7] = draw.repetitionPenalty;
    floats[at + 8] = draw.presencePenalty;
    floats[at + 9] = draw.frequencyPenalty;
    words[at + 10] = next / 2;
    words[at + 11] = (next += pairs.length) / 2;
    words[at + 12] = draw.topLogprobs;
    words[at + 13] = draw.scoredToken;
    // Word offset of the mask from the entries' start, the same buffer: -1 when every token may be drawn.
    words[at + 14] = draw.allowedTokens === null ? -1 : nextMask;
    words[at + 15] = draw.draftHistoryRow;
    words[at + 16] = draw.draftHistoryLength;
    if (draw.allowedTokens !== null) {
      words.set(draw.allowedTokens, nextMask);
      nextMask += draw.allowedTokens.length;
    }
    // Word offset of the entries' biases from the entries' start, one per entry: -1 without a logit bias.
    words[at + 17] = biases === null ? -1 : nextBias;
    if (biases !== null) {
      floats.set(biases, nextBias);
      nextBias += biases.length;
    }
    topWidth = Math.max(topWidth, draw.topLogprobs);
  });
  const hasEntries = draws.some((draw, d) => entries[d].pairs.length > 0 || draw.pendingDraw >= 0 || draw.draftHistoryLength > 0);
  if (hasEntries && 4 * Math.ceil(cols / 32) > MAX_BITMAP_BYTES) {
    throw new RangeError(`sampleRows: penalties and masks need a bitmap of ${cols} tokens, more than ${8 * MAX_BITMAP_BYTES} fit in shared memory`);
  }
  return { words, drawsOffset: entryWords, hasEntries, topWidth };
}

/** Where one sampling pass reads and writes on the device. */
export interface SampleRowsArgs {
  /** [draws] ids, [draws] f32 logprobs, [draws, topWidth] ids, [draws, topWidth] f32 logprobs, in that order. */
  out: DevicePtr;
  /** bf16 logits [rows, cols]. */
  x: DevicePtr;
  cols: number;
  /** `packed.words` on the device. */
  packed: DevicePtr;
  /** The previous pass's ids, where pending tokens are read. */
  previousIds: DevicePtr;
  /** The draft history, DRAFT_HISTORY_COLUMNS ids a row (Draw.draftHistoryRow): read, and written after. */
  draftHistory: DevicePtr;
}

export function launchSampleRows(device: CudaDevice, numDraws: number, packed: PackedDraws, args: SampleRowsArgs): void {
  if (numDraws === 0) return;
  const { out, x, cols, previousIds, draftHistory } = args;
  const width = packed.topWidth;
  const sharedBytes = packed.hasEntries ? 4 * Math.ceil(cols / 32) : 0;
  device.launch(device.kernel('sample-rows.cu', 'sample_rows_kernel', 'pppppippppi'), [numDraws], [1024], sharedBytes, [
    out,
    out + 4 * numDraws,
    out + 8 * numDraws,
    out + (8 + 4 * width) * numDraws,
    x,
    cols,
    args.packed + 4 * packed.drawsOffset,
    args.packed,
    previousIds,
    draftHistory,
    width,
  ]);
}

/** The results of `numDraws` draws from the words the kernel wrote (SampleRowsArgs.out's layout). */
export function unpackDrawResults(words: Int32Array, numDraws: number, topWidth: number): DrawResults {
  const floats = new Float32Array(words.buffer, words.byteOffset, words.length);
  const top = numDraws * topWidth;
  return {
    tokenIds: words.slice(0, numDraws),
    logprobs: floats.slice(numDraws, 2 * numDraws),
    topIds: words.slice(2 * numDraws, 2 * numDraws + top),
    topLogprobs: floats.slice(2 * numDraws + top, 2 * numDraws + 2 * top),
    topWidth,
  };
}
