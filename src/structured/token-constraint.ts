import { KeelError } from '../errors.ts';
import type { MatcherHandle, XGrammarModule } from './xgrammar-module.ts';

/**
 * One completion's place in its structured output's grammar (an xgrammar matcher): it takes the
 * completion's tokens as they become known and gives the mask of the tokens allowed next.
 * Once the grammar is complete and a stop token (EOS) taken, only stop tokens are allowed, and
 * tokens after it (ignore_eos) are not matched.
 */
export class TokenConstraint {
  private readonly module: XGrammarModule;
  private readonly matcher: MatcherHandle;
  private readonly vocabSize: number;
  private readonly stopMask: Int32Array;
  /** Tokens taken so far, those after the grammar terminated included. */
  private taken = 0;
  /** Of those, the ones after it terminated (which the matcher did not see). */
  private takenAfterEnd = 0;
  private disposed = false;

  constructor(module: XGrammarModule, matcher: MatcherHandle, vocabSize: number, stopMask: Int32Array) {
    this.module = module;
    this.matcher = matcher;
    this.vocabSize = vocabSize;
    this.stopMask = stopMask;
  }

  /** How many tokens it has taken. */
  get numTokens(): number {
    return this.taken;
  }

  /** Takes the next token if the grammar allows it; false (and nothing changes) if not. */
  tryAccept(tokenId: number): boolean {
    if (this.matcher.IsTerminated()) {
      this.taken++;
      this.takenAfterEnd++;
      return true;
    }
    if (!this.matcher.AcceptToken(tokenId, false)) return false;
    this.taken++;
    return true;
  }

  /** Takes a token that was drawn under this constraint's mask: its refusal is a bug, not a user error. */
  accept(tokenId: number): void {
    if (!this.tryAccept(tokenId)) throw new KeelError('backend', `token ${tokenId} was drawn under a structured output's mask, yet its grammar refuses it`);
  }

  /** Gives back the latest `count` tokens (drafts a speculative step looked ahead with). */
  rollback(count: number): void {
    if (!(count >= 0 && count <= this.taken)) throw new RangeError(`rollback of ${count} tokens of the ${this.taken} taken`);
    const afterEnd = Math.min(count, this.takenAfterEnd);
    this.takenAfterEnd -= afterEnd;
    if (count > afterEnd) this.matcher.Rollback(count - afterEnd);
    this.taken -= count;
  }

  /** Writes the mask of the tokens allowed next (Draw.allowedTokens) into `out`. */
  fillAllowed(out: Int32Array): void {
    if (this.matcher.IsTerminated()) out.set(this.stopMask);
    else this.module.fillNextTokenBitmask(this.matcher, this.vocabSize, out);
  }

  /** The text the grammar forces next (jump-forward decoding's string); '' when it leaves a choice. */
  forcedText(): string {
    return this.matcher.IsTerminated() ? '' : this.matcher.FindJumpForwardString();
  }

  /** Frees the matcher's C++ memory; called once the completion has ended. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcher.delete();
  }
}
