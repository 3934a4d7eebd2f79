import type { BlockId } from './block-pool.ts';
import type { ServedLora } from './lora-registry.ts';

export type SequenceId = number & { readonly __brand: 'SequenceId' };

/** `swapped`: preempted with its K/V moved to host memory, to be swapped back in (docs/long-context.md). */
export type SequenceStatus = 'waiting' | 'running' | 'swapped' | 'finished';

/** Stands in the token list for a sampled token the host has not read from the device yet. */
export const PENDING_TOKEN = -1;

/**
 * Stands in the token list for a draft the draft model proposes once the step's blocks are
 * allocated (model-runner.ts): its place is reserved before scheduling, so the step's budget and
 * blocks count it.
 */
export const UNPROPOSED_DRAFT = -2;

let sequencesCreated = 0;

/**
 * One stream of tokens: the prompt followed by the tokens sampled so far, then the drafts of a
 * speculative step (tokens proposed but not yet verified), and where their K/V live. The
 * scheduler owns `status` and `numComputedTokens`, the KV-cache manager owns `blockTables` and
 * `blockHashes`, the engine appends sampled tokens and drafts (the model runner fills in drafts
 * the draft model proposes).
 */
export class Sequence {
  readonly id: SequenceId;
  readonly requestId: string;
  /** Creation order: the scheduler serves the oldest first and preempts the youngest first. */
  readonly arrivalOrder: number;
  readonly numPromptTokens: number;
  /**
   * The start of this sequence's prefix-hash chain: sequences whose cached K/V would differ for
   * the same tokens (a model's rotation regime, a LoRA adapter) carry different salts, so they
   * never share blocks. Null for none.
   */
  readonly cacheSalt: string | null;
  /** The LoRA adapter it runs with; null for the base model. */
  readonly lora: ServedLora | null;
  /** Tokens whose K/V are in the cache; the rest run in later steps. */
  numComputedTokens = 0;
  /**
   * One block table per KV group (none before the first allocation): block i of group g's table
   * holds the group's layers' K/V of tokens i * blockSize .. (i + 1) * blockSize - 1. Every
   * group's table has the same length; a sliding group's entries behind its window name the null block.
   */
  blockTables: BlockId[][] = [];
  /**
   * The slot of its per-sequence state (models with state layers, `SequenceStateSpec`), held from
   * its first step until it finishes or is preempted; -1 while it holds none. Owned by the KV-cache manager.
   */
  stateSlot = -1;
  /**
   * Set when a verification rejected some of its drafts and its layers keep a state: the state
   * ran through every draft, so the step's tokens count as not computed, the state returns to
   * its snapshot from before the step (KvCacheManager.rewindState), and the kept tokens run again.
   */
  rewindsState = false;
  /** Entries of each block table: the blocks of tokens its tables cover. */
  get numBlocks(): number {
    return this.blockTables[0]?.length ?? 0;
  }

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
  /**
   * A beam that has its next-token candidates and waits for its request's other beams to reach
   * its length: while all its tokens are computed, the scheduler passes it by.
   */
  parked = false;
  /** Of its preemptions, those that swapped its K/V out to host memory (the others recompute it). */
  numSwaps = 0;
  private readonly tokens: number[];
  private drafts = 0;
  /** With a draft tree: each draft's parent draft, -1 for a child of the last sampled token; null for a chain. */
  private parents: number[] | null = null;

  constructor(requestId: string, tokenIds: readonly number[], numPromptTokens = tokenIds.length, cacheSalt: string | null = null, lora: ServedLora | null = null) {
    this.requestId = requestId;
    this.arrivalOrder = sequencesCreated++;
    this.id = this.arrivalOrder as SequenceId;
    this.tokens = [...tokenIds];
    this.numPromptTokens = numPromptTokens;
    this.cacheSalt = cacheSalt;
    this.lora = lora;
  }

  get tokenIds(): readonly number[] {
    return this.tokens;
  }

  get numTokens(): number {
    return this.tokens.length;
  }

  /** Sampled tokens (the pending one included); drafts are not output until verified. */
  get numOutputTokens(): number {
    return this.tokens.length - this.numPromptTokens - this.drafts;
  }

  /** The drafts at the end of the token list, counted in `numTokens`. */
  get numDraftTokens(): number {
    return this.drafts;
  }

  /** Drafts `index` 0, 1, ... are the tokens after the last sampled one. */
  draftTokenId(index: number): number {
    if (!(index >= 0 && index < this.drafts)) throw new RangeError(`sequence ${this.id} has no draft ${index} (it has ${this.drafts})`);
    return this.tokens[this.tokens.length - this.drafts + index];
  }

  get lastTokenId(): number {
    return this.tokens[this.tokens.length - 1];
  }

  /** Whether the last token is PENDING_TOKEN: sampled on the device, not yet read. */
  get hasPendingToken(): boolean {
    return this.drafts === 0 && this.tokens.length > this.numPromptTokens && this.lastTokenId === PENDING_TOKEN;
  }

  /**
   * Appends a sampled token, or puts it in the place `appendPendingToken` kept for it, or, when it
   * equals the first draft, makes that draft a sampled token.
   */
  appendToken(tokenId: number): void {
    if (this.drafts > 0) {
      if (this.parents !== null) throw new Error(`sequence ${this.id}: keep its draft tree's accepted path before appending tokens`);
      const draft = this.draftTokenId(0);
      if (draft !== tokenId) throw new Error(`sequence ${this.id}: token ${tokenId} is not its first draft ${draft}; drop the rejected drafts first`);
      this.drafts--;
    } else if (this.hasPendingToken) this.tokens[this.tokens.length - 1] = tokenId;
    else this.tokens.push(tokenId);
  }

  /**
   * Appends proposed tokens after the last sampled one, to be verified by the next step: a chain
   * (each draft follows the one before), or with `parents` a tree (speculative tree verification):
   * draft i follows draft parents[i] < i, or the last sampled token for -1.
   */
  appendDraftTokens(tokenIds: readonly number[], parents: readonly number[] | null = null): void {
    if (this.drafts > 0 || this.hasPendingToken) throw new Error(`sequence ${this.id} cannot take drafts while it has drafts or a pending token`);
    if (parents !== null) checkDraftTree(this.id, parents, tokenIds.length);
    this.tokens.push(...tokenIds);
    this.drafts = tokenIds.length;
    this.parents = parents === null ? null : [...parents];
  }

  /** Whether the drafts form a tree rather than a chain. */
  get hasDraftTree(): boolean {
    return this.parents !== null;
  }

  /** Draft `index`'s parent draft, -1 when it follows the last sampled token. */
  draftParent(index: number): number {
    this.draftTokenId(index);
    return this.parents === null ? index - 1 : this.parents[index];
  }

  /** Fills in a draft reserved as UNPROPOSED_DRAFT. */
  setDraftToken(index: number, tokenId: number): void {
    if (this.draftTokenId(index) !== UNPROPOSED_DRAFT) throw new Error(`sequence ${this.id}: draft ${index} was already proposed`);
    this.tokens[this.tokens.length - this.drafts + index] = tokenId;
  }

  /**
   * Fills every draft reserved as UNPROPOSED_DRAFT at once with a tree of as many tokens (a
   * proposer that picks its tree's shape as it drafts).
   */
  setDraftTree(tokenIds: readonly number[], parents: readonly number[]): void {
    if (tokenIds.length !== this.drafts) throw new Error(`sequence ${this.id}: ${tokenIds.length} drafts proposed for its ${this.drafts} places`);
    for (let i = 0; i < this.drafts; i++) if (this.draftTokenId(i) !== UNPROPOSED_DRAFT) throw new Error(`sequence ${this.id}: draft ${i} was already proposed`);
    checkDraftTree(this.id, parents, tokenIds.length);
    this.tokens.splice(this.tokens.length - this.drafts, this.drafts, ...tokenIds);
    this.parents = [...parents];
  }

  /**
   * Removes the drafts after the first `numKept` (all of them with 0). A tree's drafts are listed
   * parents first, so the first ones still form a tree.
   */
  dropDraftTokens(numKept: number): void {
    if (!(numKept >= 0 && numKept <= this.drafts)) throw new RangeError(`sequence ${this.id} cannot keep ${numKept} of its ${this.drafts} drafts`);
    this.tokens.length -= this.drafts - numKept;
    this.drafts = numKept;
    if (this.parents !== null) this.parents.length = numKept;
    if (numKept === 0) this.parents = null;
  }

  /**
   * Keeps the drafts along `path` (draft indices, each a child of the one before, the first a
   * child of the last sampled token), in that order, as a chain, and drops the others: a tree's
   * accepted branch. The K/V of the kept drafts must be moved to match (ModelRunner.keepDraftPath).
   */
  keepDraftPath(path: readonly number[]): void {
    path.forEach((index, k) => {
      if (this.draftParent(index) !== (k === 0 ? -1 : path[k - 1])) throw new Error(`sequence ${this.id}: draft ${index} does not follow ${k === 0 ? 'the last sampled token' : `draft ${path[k - 1]}`}`);
    });
    const kept = path.map((index) => this.draftTokenId(index));
    this.tokens.length -= this.drafts;
    this.tokens.push(...kept);
    this.drafts = kept.length;
    this.parents = null;
  }

  /**
   * Counts a token the device is sampling as if known, so the next step can be scheduled (and its
   * input read on the device) before the host sees it; `appendToken` fills it in.
   */
  appendPendingToken(): void {
    if (this.hasPendingToken || this.drafts > 0) throw new Error(`sequence ${this.id} already waits for a sampled token or has drafts`);
    this.tokens.push(PENDING_TOKEN);
  }

  /**
   * A sibling completion of the same request with the same tokens and computed state, younger
   * than every existing sequence. Its blocks are shared through `KvCacheManager.fork`.
   */
  fork(): Sequence {
    if (this.hasPendingToken || this.drafts > 0) throw new Error(`sequence ${this.id} cannot fork while its last token is on the device or it has drafts`);
    const child = new Sequence(this.requestId, this.tokens, this.numPromptTokens, this.cacheSalt, this.lora);
    child.numComputedTokens = this.numComputedTokens;
    child.numCachedTokens = this.numCachedTokens;
    return child;
  }
}

function checkDraftTree(id: SequenceId, parents: readonly number[], numDrafts: number): void {
  if (parents.length !== numDrafts) throw new Error(`sequence ${id}: ${parents.length} draft parents for ${numDrafts} drafts`);
  parents.forEach((parent, i) => {
    if (!(Number.isInteger(parent) && parent >= -1 && parent < i)) throw new Error(`sequence ${id}: draft ${i}'s parent ${parent} is not an earlier draft or -1`);
  });
}
