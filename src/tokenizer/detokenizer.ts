import type { Tokenizer } from './tokenizer.ts';

/** Prompt tokens kept as left context, so the first generated token decodes as it would mid-text (e.g. its leading space). */
const PROMPT_CONTEXT_TOKENS = 5;
const REPLACEMENT_CHARACTER = '\uFFFD';

/**
 * Turns generated token ids into text one token at a time. It decodes a short window — the tokens
 * of the last emitted piece (`prefix`) plus those not yet emitted — and emits what the window
 * adds beyond the prefix's text, so each step costs O(1) however long the output grows. Text
 * ending in U+FFFD (an incomplete UTF-8 sequence, e.g. an emoji whose bytes span two byte-level
 * tokens) is held back until a later token completes it. Without prompt context, the pieces
 * concatenate to `decode(allIds)`.
 */
export class IncrementalDetokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly skipSpecialTokens: boolean;
  /** The prefix tokens, then the unemitted ones. */
  private window: number[];
  private prefixLength: number;

  constructor(tokenizer: Tokenizer, promptTokenIds: readonly number[], options: { skipSpecialTokens: boolean }) {
    this.tokenizer = tokenizer;
    this.skipSpecialTokens = options.skipSpecialTokens;
    this.window = promptTokenIds.filter((id) => this.keeps(id)).slice(-PROMPT_CONTEXT_TOKENS);
    this.prefixLength = this.window.length;
  }

  /** Adds one generated token; returns the text that became final (often '', never a partial character). */
  push(tokenId: number): string {
    if (!this.keeps(tokenId)) return '';
    this.window.push(tokenId);
    return this.emit(false);
  }

  /** Returns whatever is still held back, as the end of the output. */
  flush(): string {
    return this.emit(true);
  }

  private emit(final: boolean): string {
    const decode = (ids: number[]) => this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens });
    const prefixText = decode(this.window.slice(0, this.prefixLength));
    const text = decode(this.window);
    if (text.length <= prefixText.length || (!final && text.endsWith(REPLACEMENT_CHARACTER))) return '';
    this.window = this.window.slice(this.prefixLength);
    this.prefixLength = this.window.length;
    return text.slice(prefixText.length);
  }

  private keeps(tokenId: number): boolean {
    return !(this.skipSpecialTokens && this.tokenizer.isSpecial(tokenId));
  }
}
