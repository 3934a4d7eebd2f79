import { MAX_DATA_PARALLEL_SIZE } from '../../config.ts';

/**
 * Chooses the data-parallel replica that runs an engine request (docs/parallelism.md).
 *
 * Each replica has its own prefix cache, so a prompt runs cheapest where its leading blocks were
 * run before. The router remembers, for the chained hash of every leading full block of the
 * prompts it routed (up to MAX_AFFINITY_BLOCKS a prompt), which replicas it sent it to: a hint,
 * since a replica may have evicted the block since. It then weighs that against load:
 *
 * - a replica's pressure is the larger of its share of `maxNumSeqs` taken by the sequences the
 *   router sent it that have not finished (counted at once, not when its stats next arrive) and
 *   the fraction of its KV blocks in use;
 * - a request goes to the replica holding the longest run of its leading blocks (or, for a
 *   Responses API follow-up, to the replica that ran the response it continues), unless that
 *   replica's pressure exceeds the least pressed replica's by more than AFFINITY_SLACK;
 * - otherwise, and when no replica holds its first block, to the least pressed replica, ties
 *   taken in turn so that equal replicas share unrelated requests.
 */

/** Leading full blocks of a prompt hashed for affinity: enough to tell conversations apart past a long shared system prompt. */
export const MAX_AFFINITY_BLOCKS = 512;
/** Block hashes remembered, least recently routed forgotten first (about 8 bytes of key and value each, plus the Map's own). */
export const AFFINITY_TABLE_SIZE = 1 << 18;
/** How much more pressed (in fractions of the batch or KV pool) a replica holding the prefix may be than the least pressed one. */
export const AFFINITY_SLACK = 0.25;

/** One replica as the router sees it when it chooses. */
export interface ReplicaLoad {
  alive: boolean;
  /** Sequences (prompts × n) routed to it that have not finished. */
  outstanding: number;
  /** Its KV blocks in use over its pool (0..1), from its latest stats. */
  kvUsage: number;
}

export type RouteReason = 'sticky' | 'prefix' | 'load';

export interface Route {
  replica: number;
  reason: RouteReason;
  /** Leading blocks of the prompt the chosen replica was last sent (0 when chosen by load). */
  matchedBlocks: number;
}

export interface RoutedPrompt {
  tokenIds: readonly number[];
  /** Prefix caches are per adapter: the same tokens under another adapter share nothing. */
  lora: string | null;
}

export class ReplicaRouter {
  private readonly numReplicas: number;
  private readonly blockSize: number;
  private readonly maxNumSeqs: number;
  /** Block hash -> bit mask of the replicas it was routed to; a Map's order is its recency. */
  private readonly holders = new Map<number, number>();
  private nextTie = 0;

  constructor(numReplicas: number, blockSize: number, maxNumSeqs: number) {
    if (!(Number.isInteger(numReplicas) && numReplicas >= 1 && numReplicas <= MAX_DATA_PARALLEL_SIZE)) throw new RangeError(`a router serves 1 to ${MAX_DATA_PARALLEL_SIZE} replicas (got ${numReplicas})`);
    this.numReplicas = numReplicas;
    this.blockSize = blockSize;
    this.maxNumSeqs = maxNumSeqs;
  }

  /**
   * The replica to run `prompt`, and records it there. `sticky` is the replica that ran the
   * response a follow-up continues, if any. Throws when no replica is alive.
   */
  route(prompt: RoutedPrompt, loads: readonly ReplicaLoad[], sticky: number | null = null): Route {
    const alive = loads.flatMap((load, replica) => (load.alive ? [replica] : []));
    if (alive.length === 0) throw new Error('no replica is alive');
    const pressure = loads.map((load) => Math.max(load.outstanding / this.maxNumSeqs, load.kvUsage));
    const least = Math.min(...alive.map((r) => pressure[r]));
    const affordable = (r: number) => loads[r].alive && pressure[r] <= least + AFFINITY_SLACK;
    const hashes = blockHashes(prompt, this.blockSize);
    const matched = this.matchedBlocks(hashes, alive);
    let route: Route;
    if (sticky !== null && sticky < this.numReplicas && affordable(sticky)) {
      route = { replica: sticky, reason: 'sticky', matchedBlocks: matched[sticky] };
    } else {
      const holders = alive.filter((r) => matched[r] > 0 && affordable(r));
      if (holders.length > 0) {
        // The longest run first, then the less pressed.
        const best = holders.reduce((a, b) => (matched[b] > matched[a] || (matched[b] === matched[a] && pressure[b] < pressure[a]) ? b : a));
        route = { replica: best, reason: 'prefix', matchedBlocks: matched[best] };
      } else {
        route = { replica: this.leastPressed(alive, pressure, least), reason: 'load', matchedBlocks: 0 };
      }
    }
    this.record(hashes, route.replica);
    return route;
  }

  /** Forgets every block routed to `replica` (its prefix cache was lost with its engine). */
  forget(replica: number): void {
    const bit = 1 << replica;
    for (const [hash, mask] of this.holders) {
      if ((mask & bit) === 0) continue;
      if (mask === bit) this.holders.delete(hash);
      else this.holders.set(hash, mask & ~bit);
    }
  }

  /** How many leading blocks of the prompt each replica holds in an unbroken run (per the table). */
  private matchedBlocks(hashes: readonly number[], alive: readonly number[]): number[] {
    const matched = new Array<number>(this.numReplicas).fill(0);
    let running = alive.reduce((mask, r) => mask | (1 << r), 0);
    for (let i = 0; i < hashes.length && running !== 0; i++) {
      running &= this.holders.get(hashes[i]) ?? 0;
      for (let r = 0; r < this.numReplicas; r++) if (running & (1 << r)) matched[r] = i + 1;
    }
    return matched;
  }

  private leastPressed(alive: readonly number[], pressure: readonly number[], least: number): number {
    const tied = alive.filter((r) => pressure[r] === least);
    const choice = tied.find((r) => r >= this.nextTie) ?? tied[0];
    this.nextTie = choice + 1;
    return choice;
  }

  private record(hashes: readonly number[], replica: number): void {
    for (const hash of hashes) {
      const mask = this.holders.get(hash) ?? 0;
      this.holders.delete(hash);
      this.holders.set(hash, mask | (1 << replica));
    }
    for (const oldest of this.holders.keys()) {
      if (this.holders.size <= AFFINITY_TABLE_SIZE) break;
      this.holders.delete(oldest);
    }
  }
}

/**
 * Chained hashes of the prompt's leading full blocks (up to MAX_AFFINITY_BLOCKS): each covers
 * every token before its block's end, so equal hashes mean equal prefixes (up to collisions, which
 * only misplace a request). Two 32-bit FNV-1a-style lanes make a 53-bit value; not the engine's
 * SHA-256 (prefix-hash.ts): the router needs speed, not collision resistance.
 */
export function blockHashes(prompt: RoutedPrompt, blockSize: number): number[] {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9;
  for (const char of prompt.lora ?? '') {
    a = Math.imul(a ^ char.charCodeAt(0), 0x01000193);
    b = Math.imul(b ^ char.charCodeAt(0), 0x5bd1e995);
  }
  const blocks = Math.min(Math.floor(prompt.tokenIds.length / blockSize), MAX_AFFINITY_BLOCKS);
  const hashes: number[] = [];
  for (let block = 0; block < blocks; block++) {
    for (let i = block * blockSize; i < (block + 1) * blockSize; i++) {
      const token = prompt.tokenIds[i];
      a = Math.imul(a ^ token, 0x01000193);
      b = Math.imul(b ^ token, 0x5bd1e995);
      b ^= b >>> 15;
    }
    hashes.push((a >>> 0) * 0x200000 + (b >>> 11));
  }
  return hashes;
}
