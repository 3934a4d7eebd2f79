/**
 * The tokens a completion's penalties touch, kept as the (token id, output count) pairs a draw
 * hands the backend: every distinct prompt token with count 0 when a repetition penalty needs
 * them, then each output token with its count. Updated one token at a time, so a step hands over
 * the pairs as they are instead of rebuilding them (with 256 sequences of 700 distinct tokens,
 * rebuilding took the host ~10 ms a step).
 */
export class PenaltyTokens {
  private pairs: Int32Array;
  private length = 0;
  /** Where each listed token's pair starts in `pairs`. */
  private readonly at = new Map<number, number>();

  constructor(promptTokenIds: readonly number[], withPrompt: boolean) {
    this.pairs = new Int32Array(Math.max(64, withPrompt ? 4 * promptTokenIds.length : 0));
    if (withPrompt) for (const id of promptTokenIds) if (!this.at.has(id)) this.append(id, 0);
  }

  /** A copy that later `add`s to either leave the other alone. */
  clone(): PenaltyTokens {
    const copy = new PenaltyTokens([], false);
    copy.pairs = this.pairs.slice();
    copy.length = this.length;
    for (const [id, at] of this.at) copy.at.set(id, at);
    return copy;
  }

  /** One more output token. */
  add(tokenId: number): void {
    const at = this.at.get(tokenId);
    if (at === undefined) this.append(tokenId, 1);
    else this.pairs[at + 1]++;
  }

  /** The pairs, a view that later `add`s may change or outgrow: hand it over before the next one. */
  entries(): Int32Array {
    return this.pairs.subarray(0, this.length);
  }

  private append(tokenId: number, count: number): void {
    if (this.length + 2 > this.pairs.length) {
      const grown = new Int32Array(2 * this.pairs.length);
      grown.set(this.pairs);
      this.pairs = grown;
    }
    this.at.set(tokenId, this.length);
    this.pairs[this.length++] = tokenId;
    this.pairs[this.length++] = count;
  }
}
