import type { BlockId } from './block-pool.ts';

export type SequenceId = number & { readonly __brand: 'SequenceId' };

export type SequenceStatus = 'waiting' | 'running' | 'finished';

/** Stands in the token list for a sampled token the host has not read from the device yet. */
export const PENDING_TOKEN = -1;

let sequencesCreated = 0;

/**
 * One stream of tokens: the prompt followed by the tokens sampled so far, and where their K/V
 * live. The scheduler owns `status` and `numComputedTokens`, the KV-cache manager owns
 * `blockTable` and `blockHashes`, the engine appends sampled tokens.
 */
export class Sequence {
  readonly id: SequenceId;
  readonly requestId: string;
  /** Creation order: the scheduler serves the oldest first and preempts the youngest first. */
  readonly arrivalOrder: number;
  readonly numPromptTokens: number;
  /**
   * The start of this sequence's prefix-hash chain: sequences whose cached K/V would differ for
   * the same tokens (a model's rotation regime, later an adapter) carry different salts, so they
   * never share blocks. Null for none.
   */
  readonly cacheSalt: string | null;
  /** Tokens whose K/V are in the cache; the rest run in later steps. */
  numComputedTokens = 0;
  /** Block i holds the K/V of tokens i * blockSize .. (i + 1) * blockSize - 1. */
  blockTable: BlockId[] = [];
  /** Prefix hash of each full block, filled lazily by the KV-cache manager. */
  blockHashes: string[] = [];
  status: SequenceStatus = 'waiting';
  /** Prompt tokens served from the prefix cache when first scheduled. */
  numCachedTokens = 0;
  /**
   * Every prompt position's logits are wanted (prompt logprobs), so prefix-cache hits, which
   * would skip computing them, are not taken.
   */
  needsPromptLogits = false;
  numPreemptions = 0;
  private readonly tokens: number[];

  constructor(requestId: string, tokenIds: readonly number[], numPromptTokens = tokenIds.length, cacheSalt: string | null = null) {
    this.requestId = requestId;
    this.arrivalOrder = sequencesCreated++;
    this.id = this.arrivalOrder as SequenceId;
    this.tokens = [...tokenIds];
    this.numPromptTokens = numPromptTokens;
    this.cacheSalt = cacheSalt;
  }

  get tokenIds(): readonly number[] {
    return this.tokens;
  }

  get numTokens(): number {
    return this.tokens.length;
  }

  get numOutputTokens(): number {
    return this.tokens.length - this.numPromptTokens;
  }

  get lastTokenId(): number {
    return this.tokens[this.tokens.length - 1];
  }

  /** Whether the last token is PENDING_TOKEN: sampled on the device, not yet read. */
  get hasPendingToken(): boolean {
    return this.tokens.length > this.numPromptTokens && this.lastTokenId === PENDING_TOKEN;
  }

  /** Appends a sampled token, or puts it in the place `appendPendingToken` kept for it. */
  appendToken(tokenId: number): void {
    if (this.hasPendingToken) this.tokens[this.tokens.length - 1] = tokenId;
    else this.tokens.push(tokenId);
  }

  /**
   * Counts a token the device is sampling as if known, so the next step can be scheduled (and its
   * input read on the device) before the host sees it; `appendToken` fills it in.
   */
  appendPendingToken(): void {
    if (this.hasPendingToken) throw new Error(`sequence ${this.id} already waits for a sampled token`);
    this.tokens.push(PENDING_TOKEN);
  }

  /**
   * A sibling completion of the same request with the same tokens and computed state, younger
   * than every existing sequence. Its blocks are shared through `KvCacheManager.fork`.
   */
  fork(): Sequence {
    if (this.hasPendingToken) throw new Error(`sequence ${this.id} cannot fork while its last token is on the device`);
    const child = new Sequence(this.requestId, this.tokens, this.numPromptTokens, this.cacheSalt);
    child.numComputedTokens = this.numComputedTokens;
    child.numCachedTokens = this.numCachedTokens;
    return child;
  }
}
