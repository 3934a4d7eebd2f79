/**
 * In-place transforms of one row of logits ([vocabSize] float32). Masked tokens become -Infinity
 * (weight 0 once the row holds probabilities, for top-p). Each transform is a no-op at its neutral
 * value, and assumes the row has at least one finite logit. Keep-sets keep every token tied with
 * the last one kept, so ties never depend on order.
 */

/** Largest logit of the row (-Infinity when every token is masked). */
export function maxLogit(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  return max;
}

/** How often each token id occurs, for presence and frequency penalties. */
export function countTokens(tokenIds: ArrayLike<number>): Map<number, number> {
  const counts = new Map<number, number>();
  for (let i = 0; i < tokenIds.length; i++) counts.set(tokenIds[i], (counts.get(tokenIds[i]) ?? 0) + 1);
  return counts;
}

/**
 * Hugging Face / vLLM repetition penalty: once per distinct token seen in the prompt or the output,
 * a positive logit is divided by `penalty` and a negative one multiplied, so penalty > 1 always
 * makes the token less likely.
 */
export function applyRepetitionPenalty(
  logits: Float32Array,
  penalty: number,
  promptTokenIds: ArrayLike<number>,
  outputTokenIds: ArrayLike<number>,
): void {
  if (penalty === 1) return;
  const seen = new Uint8Array(logits.length);
  const penalize = (ids: ArrayLike<number>) => {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (seen[id]) continue;
      seen[id] = 1;
      logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
  };
  penalize(promptTokenIds);
  penalize(outputTokenIds);
}

/**
 * OpenAI presence and frequency penalties over the output tokens only:
 * logit -= presence + frequency * count for every token generated `count` > 0 times.
 */
export function applyPresenceFrequencyPenalties(
  logits: Float32Array,
  presence: number,
  frequency: number,
  outputCounts: ReadonlyMap<number, number>,
): void {
  if (presence === 0 && frequency === 0) return;
  for (const [id, count] of outputCounts) {
    if (count > 0) logits[id] -= presence + frequency * count;
  }
}

export function maskTokens(logits: Float32Array, tokenIds: Iterable<number>): void {
  for (const id of tokenIds) logits[id] = -Infinity;
}

export function applyTemperature(logits: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  for (let i = 0; i < logits.length; i++) logits[i] /= temperature;
}

/** Drops tokens whose probability is below `minP` times the most likely token's. */
export function applyMinP(logits: Float32Array, minP: number): void {
  if (minP <= 0) return;
  // p_i < minP * p_max  <=>  logit_i < max + ln(minP): no softmax needed.
  const threshold = maxLogit(logits) + Math.log(minP);
  for (let i = 0; i < logits.length; i++) if (logits[i] < threshold) logits[i] = -Infinity;
}

/** Keeps the `topK` largest logits (and any tied with the k-th); topK <= 0 keeps all. */
export function applyTopK(logits: Float32Array, topK: number): void {
  if (topK <= 0 || topK >= logits.length) return;
  const threshold = kthLargest(logits, topK);
  for (let i = 0; i < logits.length; i++) if (logits[i] < threshold) logits[i] = -Infinity;
}

/**
 * Turns the row into unnormalized probabilities exp(logit - max) in place and returns their sum;
 * masked tokens get weight 0. The one exp pass of random sampling: top-p and the draw reuse it.
 */
export function logitsToWeights(row: Float32Array): number {
  const max = maxLogit(row);
  let total = 0;
  for (let i = 0; i < row.length; i++) {
    const shifted = row[i] - max;
    // Below -104 even float32 subnormals underflow to 0: skip the exp (most masked tokens).
    row[i] = shifted > -104 ? Math.exp(shifted) : 0;
    total += row[i];
  }
  return total;
}

/**
 * Nucleus (top-p) truncation over `weights` from logitsToWeights, which sum to `total`: keeps the
 * smallest set of most likely tokens holding at least topP of the mass (the most likely token
 * always stays), zeroes the others and returns the kept mass.
 */
export function applyTopP(weights: Float32Array, total: number, topP: number): number {
  if (topP >= 1) return total;
  // Tokens weighing less than (1 - topP) * total / vocab hold, all together, less than
  // (1 - topP) * total, so the kept set lies among the tokens at or above that floor: for a peaked
  // LLM distribution a few hundred of 150k. The most likely token (weight 1) is always among them.
  const floor = ((1 - topP) * total) / weights.length;
  let numCandidates = 0;
  for (let i = 0; i < weights.length; i++) if (weights[i] >= floor) numCandidates++;
  const candidates = new Float32Array(numCandidates);
  for (let i = 0, j = 0; i < weights.length; i++) if (weights[i] >= floor) candidates[j++] = weights[i];
  const threshold = nucleusThreshold(candidates, topP * total);
  let kept = 0;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] < threshold) weights[i] = 0;
    else kept += weights[i];
  }
  return kept;
}

/**
 * The largest weight w such that the weights >= w sum to at least `target`: a quickselect that
 * descends by mass instead of by rank, O(n) expected with no sort. Reorders `weights`.
 */
function nucleusThreshold(weights: Float32Array, target: number): number {
  let lo = 0;
  let hi = weights.length;
  let need = target;
  let pivot = weights[0];
  while (lo < hi) {
    pivot = medianOfThree(weights[lo], weights[(lo + hi) >> 1], weights[hi - 1]);
    // Three-way partition of [lo, hi): [lo, greaterEnd) > pivot, [lessStart, hi) < pivot.
    let greaterEnd = lo;
    let lessStart = hi;
    for (let i = lo; i < lessStart; ) {
      const value = weights[i];
      if (value > pivot) {
        weights[i++] = weights[greaterEnd];
        weights[greaterEnd++] = value;
      } else if (value < pivot) {
        weights[i] = weights[--lessStart];
        weights[lessStart] = value;
      } else {
        i++;
      }
    }
    let greater = 0;
    for (let i = lo; i < greaterEnd; i++) greater += weights[i];
    if (greater >= need) {
      hi = greaterEnd;
      continue;
    }
    const withPivot = greater + pivot * (lessStart - greaterEnd);
    if (withPivot >= need) return pivot;
    need -= withPivot;
    lo = lessStart;
  }
  // Rounding left the target a hair out of reach: keep every candidate (the last pivot is the smallest).
  return pivot;
}

function medianOfThree(a: number, b: number, c: number): number {
  return Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
}

/** The k-th largest value (1 <= k <= length), through a k-slot min-heap: O(V log k), no full sort. */
function kthLargest(values: Float32Array, k: number): number {
  const heap = values.slice(0, k);
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(heap, i);
  for (let i = k; i < values.length; i++) {
    if (values[i] > heap[0]) {
      heap[0] = values[i];
      siftDown(heap, 0);
    }
  }
  return heap[0];
}

function siftDown(heap: Float32Array, start: number): void {
  const n = heap.length;
  const value = heap[start];
  let i = start;
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap[child + 1] < heap[child]) child++;
    if (heap[child] >= value) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = value;
}
