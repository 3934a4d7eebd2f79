// Synthetic steps for kernel benchmarks and GPU tests: seeded random data that is exactly
// representable in bf16 (so the CPU oracle and the GPU start from identical inputs) and batches
// over a shuffled block pool.
import type { RopeTable } from '../backend/backend.ts';
import { buildRopeTable } from '../layers/rotary.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from '../step/batch.ts';
import { floatToBf16Bits } from '../tensor/host-dtype.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';

import type { Rng } from '../tensor/seeded-rng.ts';

export { seededRng, type Rng } from '../tensor/seeded-rng.ts';

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** The float value of bf16 bits (through one shared scratch word: tests make hundreds of millions). */
export function bf16Value(bits: number): number {
  scratchBits[0] = bits << 16;
  return scratchFloat[0];
}

/** Uniform values in [-scale, scale), already rounded to bf16. */
export function randomBf16Values(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = bf16Value(floatToBf16Bits((rng() * 2 - 1) * scale));
  return out;
}

/** A checkpoint-style bf16 tensor holding `values` (which should be bf16-representable). */
export function bf16Tensor(shape: number[], values: Float32Array): HostTensor {
  const data = new Uint8Array(values.length * 2);
  const view = new DataView(data.buffer);
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, floatToBf16Bits(values[i]), true);
  return { dtype: 'bf16', shape, data };
}

/** One sequence of a step: tokens already cached, and tokens this step runs. */
export interface SeqSpec {
  cached: number;
  query: number;
  /** The chunk is a last sampled token and its drafts (BatchDescription.verificationChunks). */
  verification?: boolean;
  /** Its tokens form a tree (SequenceChunk.treeParents). */
  treeParents?: number[];
}

/**
 * Block tables for sequences whose blocks are drawn from a shuffled pool (so the kernels must
 * follow the table, not assume contiguity). Reused across steps by passing the same tables.
 */
export class BlockAssignment {
  readonly tables: number[][];
  private readonly free: number[];

  constructor(rng: Rng, numBlocks: number, numSeqs: number) {
    this.free = Array.from({ length: numBlocks }, (_, i) => i);
    for (let i = this.free.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      [this.free[i], this.free[j]] = [this.free[j], this.free[i]];
    }
    this.tables = Array.from({ length: numSeqs }, () => []);
  }

  ensure(seq: number, tokens: number, blockSize: number): void {
    while (this.tables[seq].length * blockSize < tokens) {
      const block = this.free.pop();
      if (block === undefined) throw new Error('test KV pool too small');
      this.tables[seq].push(block);
    }
  }
}

/**
 * The chunks for running `specs[s].query` new tokens of each sequence after `specs[s].cached`
 * cached ones. Token ids are 0..numTokens-1, so an embedding table of random rows supplies any
 * activation (the tests' way to put data into a step).
 */
export function seqChunks(specs: readonly SeqSpec[], blocks: BlockAssignment, blockSize: number): SequenceChunk[] {
  let nextTokenId = 0;
  return specs.map((s, i) => {
    blocks.ensure(i, s.cached + s.query, blockSize);
    const tokens = Array.from({ length: s.query }, () => nextTokenId++);
    return { tokens, startPos: s.cached, blockTables: [blocks.tables[i]], verification: s.verification, treeParents: s.treeParents };
  });
}

/**
 * The batch of `seqChunks`. Logits are asked as the model runner asks them: for a chunk's last
 * token, and for every token of a verification chunk (each decides a draft; the last follows them).
 */
export function buildBatch(specs: readonly SeqSpec[], blocks: BlockAssignment, blockSize: number, minBlocksPerSeq = 1): BatchDescription {
  const chunks = seqChunks(specs, blocks, blockSize);
  const logitsIndices: number[] = [];
  let end = 0;
  for (const chunk of chunks) {
    end += chunk.tokens.length;
    for (let t = chunk.verification ? end - chunk.tokens.length : end - 1; t < end; t++) logitsIndices.push(t);
  }
  return describeBatch(chunks, blockSize, logitsIndices, minBlocksPerSeq);
}

/** HF default RoPE tables (theta 10000), rotate_half layout over whole heads, as the model builds them. */
export function ropeTables(maxPositions: number, headDim: number): RopeTable {
  return buildRopeTable({ rotaryDim: headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: maxPositions }, maxPositions);
}
