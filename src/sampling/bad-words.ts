/**
 * vLLM's bad_words: token sequences a completion never generates. Each word is tokenized as it
 * would begin the text and as it would follow a space (most tokenizers spell the two with other
 * tokens); a draw whose output so far ends with all of a sequence but its last token may not draw
 * that token, so a one-token sequence is banned at every draw. Only the output counts, as in vLLM:
 * a sequence begun in the prompt is not completed by this rule.
 */
export class BadWords {
  /** The last tokens of the one-token sequences: banned at every draw. */
  private readonly always: number[];
  /** The sequences of two tokens or more. */
  private readonly longer: number[][];

  constructor(sequences: readonly (readonly number[])[]) {
    this.always = [...new Set(sequences.filter((s) => s.length === 1).map((s) => s[0]))];
    this.longer = sequences.filter((s) => s.length > 1).map((s) => [...s]);
  }

  /** The sequences of `words` under `encode` (a tokenizer's, without special tokens), each spelling once. */
  static tokenize(words: readonly string[], encode: (text: string) => number[]): BadWords {
    const spellings = new Map<string, number[]>();
    for (const word of words) {
      for (const text of [word.trimStart(), ` ${word.trimStart()}`]) {
        const ids = encode(text);
        if (ids.length > 0) spellings.set(ids.join(','), ids);
      }
    }
    return new BadWords([...spellings.values()]);
  }

  /** Whether a draw's bans depend on the output before it: some sequence has more than one token. */
  get readsOutput(): boolean {
    return this.longer.length > 0;
  }

  /** The tokens a draw after `output` (the completion's output tokens so far) may not draw. */
  bannedAfter(output: readonly number[]): number[] {
    const banned = [...this.always];
    for (const sequence of this.longer) {
      const prefix = sequence.length - 1;
      if (prefix > output.length) continue;
      let matches = true;
      for (let i = 0; i < prefix && matches; i++) matches = output[output.length - prefix + i] === sequence[i];
      if (matches) banned.push(sequence[prefix]);
    }
    return banned;
  }
}
