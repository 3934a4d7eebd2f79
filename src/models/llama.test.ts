import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaConfig, LlamaModel } from './llama.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import type { KvCache } from '../backend/backend.ts';
import { describeBatch, type SequenceChunk } from '../step/batch.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { llamaConfig, loadLlamaModel, plainRopeTable, randomLlamaWeights, type HostLlamaWeights } from '../../test/helpers/cpu-random-llama.ts';
import { referenceLogits } from '../../test/helpers/cpu-reference-llama.ts';

const random = new TestRandom(testSeed('llama'));
const BLOCK_SIZE = 4;
const NUM_BLOCKS = 64;

const VARIANTS: Record<string, Partial<LlamaConfig>> = {
  'llama (GQA 2)': {},
  'llama MHA with attention and output bias': { numKvHeads: 4, attentionBias: true, outputBias: true },
  'qwen2 (qkv bias, tied embeddings)': { modelType: 'qwen2', attentionBias: true, tieWordEmbeddings: true },
  'qwen3 (qk-norm, MQA, head dim != hidden / heads)': { modelType: 'qwen3', qkNorm: true, numKvHeads: 1, headDim: 12 },
  'mistral (sliding window 5)': { modelType: 'mistral', slidingWindows: [5, 5, 5], numLayers: 3 },
  'qwen2 with windows on some layers (4, full, 6)': { modelType: 'qwen2', attentionBias: true, slidingWindows: [4, null, 6], numLayers: 3 },
};

/** A fresh KV pool and its free blocks in shuffled order, so block tables are neither ordered nor contiguous. */
interface PagedCache {
  kv: KvCache;
  allocate(length: number): number[];
}

class Harness {
  readonly backend = new CpuBackend();
  readonly config: LlamaConfig;
  readonly weights: HostLlamaWeights;
  readonly model: LlamaModel;

  constructor(config: LlamaConfig, weights: HostLlamaWeights) {
    this.config = config;
    this.weights = weights;
    this.model = loadLlamaModel(this.backend, config, weights);
  }

  newCache(): PagedCache {
    const kv = this.backend.createKvCache({ numBlocks: NUM_BLOCKS, blockSize: BLOCK_SIZE, layers: this.model.kvLayers });
    const free = random.shuffled(Array.from({ length: NUM_BLOCKS }, (_, i) => i));
    return { kv, allocate: (length) => free.splice(0, Math.ceil(length / BLOCK_SIZE)) };
  }

  /** Logits rows of one step, as host arrays. */
  step(cache: PagedCache, chunks: SequenceChunk[], logitsIndices?: number[]): Float32Array[] {
    const batch = describeBatch(chunks, BLOCK_SIZE, logitsIndices);
    const logits = this.backend.toHost(this.model.forward(this.backend, this.backend.beginStep(batch), cache.kv));
    const vocab = this.config.vocabSize;
    return Array.from(batch.logitsIndices, (_, i) => logits.subarray(i * vocab, (i + 1) * vocab));
  }

  /** Runs `tokens` in chunks of the given sizes (cycled); returns the last token's logits. */
  chunked(tokens: number[], sizes: number[]): Float32Array {
    const cache = this.newCache();
    const blockTable = cache.allocate(tokens.length);
    let last: Float32Array | null = null;
    for (let start = 0, i = 0; start < tokens.length; i++) {
      const end = Math.min(tokens.length, start + sizes[i % sizes.length]);
      [last] = this.step(cache, [{ tokens: tokens.slice(start, end), startPos: start, blockTables: [blockTable] }]);
      start = end;
    }
    return last!;
  }
}

function harness(overrides: Partial<LlamaConfig>): Harness {
  const config = llamaConfig(overrides);
  return new Harness(config, randomLlamaWeights(config, random));
}

function randomTokens(config: LlamaConfig, length: number): number[] {
  return Array.from({ length }, () => random.int(0, config.vocabSize - 1));
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  assert.ok(worst <= tolerance, `${what}: max |diff| ${worst} > ${tolerance}`);
}

for (const [name, overrides] of Object.entries(VARIANTS)) {
  test(`${name}: every position's logits match the naive dense reference`, () => {
    const h = harness(overrides);
    const tokens = randomTokens(h.config, 13);
    const expected = referenceLogits(h.config, h.weights, plainRopeTable(h.config.headDim, h.config.ropeTheta, 64), tokens);
    const everyToken = tokens.map((_, i) => i);
    const cache = h.newCache();
    const actual = h.step(cache, [{ tokens, startPos: 0, blockTables: [cache.allocate(tokens.length)] }], everyToken);
    actual.forEach((row, i) => assertClose(row, expected[i], 1e-4, `position ${i}`));
  });

  test(`${name}: prompt in chunks of 1, 3 and 7 through the paged cache equals the prompt in one step`, () => {
    const h = harness(overrides);
    const tokens = randomTokens(h.config, 23);
    const whole = h.chunked(tokens, [tokens.length]);
    for (const size of [1, 3, 7]) assertClose(h.chunked(tokens, [size]), whole, 1e-5, `chunks of ${size}`);
    assertClose(h.chunked(tokens, [2, 5, 1]), whole, 1e-5, 'chunks of 2, 5, 1');
  });

  test(`${name}: three sequences batched (decode, prefill chunk, whole prompt) equal each run alone`, () => {
    const h = harness(overrides);
    const prompts = [randomTokens(h.config, 9), randomTokens(h.config, 14), randomTokens(h.config, 6)];
    const alone = prompts.map((p) => h.chunked(p, [p.length]));

    const cache = h.newCache();
    const tables = prompts.map((p) => cache.allocate(p.length));
    // Bring sequence 0 to its last token and sequence 1 to mid-prompt, then batch all three.
    h.step(cache, [{ tokens: prompts[0].slice(0, 8), startPos: 0, blockTables: [tables[0]] }]);
    h.step(cache, [{ tokens: prompts[1].slice(0, 5), startPos: 0, blockTables: [tables[1]] }]);
    const batched = h.step(cache, [
      { tokens: prompts[0].slice(8), startPos: 8, blockTables: [tables[0]] },
      { tokens: prompts[1].slice(5), startPos: 5, blockTables: [tables[1]] },
      { tokens: prompts[2], startPos: 0, blockTables: [tables[2]] },
    ]);
    batched.forEach((row, s) => assertClose(row, alone[s], 1e-5, `sequence ${s}`));
  });
}

test('sliding window: with one layer, tokens before the window cannot change the last logits', () => {
  const narrow = harness({ slidingWindows: [4], numLayers: 1 });
  const wide = new Harness({ ...narrow.config, slidingWindows: [5] }, narrow.weights);
  const tail = randomTokens(narrow.config, 4);
  const first = [...randomTokens(narrow.config, 6), 0, ...tail];
  const second = [...randomTokens(narrow.config, 6), 1, ...tail];
  // The last token (position 10) sees positions 7..10 through a window of 4, and 6..10 through 5.
  assertClose(narrow.chunked(first, [3]), narrow.chunked(second, [5]), 0, 'window 4');
  assert.notDeepEqual(wide.chunked(first, [3]), wide.chunked(second, [5]), 'with a window of 5 the token at position 6 must matter');
});

test('kv specs name each layer\'s heads and window', () => {
  const h = harness({ modelType: 'qwen2', slidingWindows: [4, null], numKvHeads: 1 });
  assert.deepEqual(h.model.kvLayers, [
    { kind: 'attention', numKvHeads: 1, headDim: 8, slidingWindow: 4 },
    { kind: 'attention', numKvHeads: 1, headDim: 8, slidingWindow: null },
  ]);
});
