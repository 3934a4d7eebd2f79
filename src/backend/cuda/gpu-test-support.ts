// Helpers shared by the *.gpu.test.ts files: seeded random data that is exactly representable in
// bf16 (so the CPU oracle and the GPU start from identical inputs), batch construction over a
// shuffled block pool, and the relative-error metric.
import type { HostTensor, RopeTable } from '../backend.ts';
import { buildRopeTable } from '../../model/rope.ts';
import { llamaConfig } from '../../../test/helpers/cpu-random-llama.ts';
import { describeBatch, type BatchDescription } from '../../engine/batch.ts';

export type Rng = () => number;

/** mulberry32: small, fast, and reproducible from a printed seed. */
export function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seed from the environment (KEEL_TEST_SEED) or the clock, printed so a failure can be replayed. */
export function testSeed(name: string): number {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`${name}: seed ${seed}`);
  return seed;
}

export function randInt(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Round-to-nearest-even f32 -> bf16 bits. */
export function bf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16Value(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/** Uniform values in [-scale, scale), already rounded to bf16. */
export function randomBf16Values(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = bf16Value(bf16Bits((rng() * 2 - 1) * scale));
  return out;
}

/** A checkpoint-style bf16 tensor holding `values` (which should be bf16-representable). */
export function bf16Tensor(shape: number[], values: Float32Array): HostTensor {
  const data = new Uint8Array(values.length * 2);
  const view = new DataView(data.buffer);
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, bf16Bits(values[i]), true);
  return { dtype: 'bf16', shape, data };
}

/** ‖out − ref‖ / ‖ref‖, Infinity when out holds a NaN or the sizes differ. */
export function relativeError(out: Float32Array, ref: Float32Array): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < out.length; i++) {
    if (Number.isNaN(out[i])) return Infinity;
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** One sequence of a step: tokens already cached, and tokens this step runs. */
export interface SeqSpec {
  cached: number;
  query: number;
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
 * The batch for running `specs[s].query` new tokens of each sequence after `specs[s].cached`
 * cached ones. Token ids are 0..numTokens-1, so an embedding table of random rows supplies any
 * activation (the tests' way to put data into a step).
 */
export function buildBatch(specs: readonly SeqSpec[], blocks: BlockAssignment, blockSize: number): BatchDescription {
  let nextTokenId = 0;
  const chunks = specs.map((s, i) => {
    blocks.ensure(i, s.cached + s.query, blockSize);
    const tokens = Array.from({ length: s.query }, () => nextTokenId++);
    return { tokens, startPos: s.cached, blockTable: blocks.tables[i] };
  });
  return describeBatch(chunks, blockSize);
}

/** HF default RoPE tables (theta 10000), rotate_half layout, as the model builds them. */
export function ropeTables(maxPositions: number, headDim: number): RopeTable {
  return buildRopeTable(llamaConfig({ headDim, ropeTheta: 10000, ropeScaling: { type: 'default' } }), maxPositions);
}
