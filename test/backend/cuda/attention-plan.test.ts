import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseDecodePartitions, chooseMlaPartitions, DECODE_TILE_KEYS, decodeSplit, MAX_CHAIN_DECODES, MIN_KEYS_PER_PARTITION, mlaMinKeysPerPartition, planAttention, PREFILL_TILE_ROWS, WIDE_PREFILL_TILE_ROWS } from '../../../src/backend/cuda/attention-plan.ts';
import { BlockAssignment, buildBatch, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch } from '../../../src/step/batch.ts';
import { randInt, testSeed } from '../../helpers/gpu-test-support.ts';

test('single-token sequences go to decode, longer chunks to prefill tiles covering every row', () => {
  const rng = seededRng(testSeed('attention plan'));
  for (let trial = 0; trial < 50; trial++) {
    const specs = Array.from({ length: randInt(rng, 1, 8) }, () => ({ cached: randInt(rng, 0, 500), query: rng() < 0.5 ? 1 : randInt(rng, 2, 300) }));
    const batch = buildBatch(specs, new BlockAssignment(rng, 1000, specs.length), 16);
    const plan = planAttention(batch);
    const decodes = specs.flatMap((s, i) => (s.query === 1 ? [i] : []));
    assert.deepEqual([...plan.decodeSeqs], decodes);
    assert.deepEqual([...plan.decodeTokens], decodes.map((i) => batch.queryStartLoc[i]));
    assert.deepEqual(plan.sparse, { decodeSeqs: plan.decodeSeqs, decodeTokens: plan.decodeTokens, prefillTiles: plan.prefillTiles, wideTiles: plan.wideTiles }, 'without verification chunks, sparse layers split alike');
    assert.equal(plan.maxDecodeSeqLen, Math.max(0, ...decodes.map((i) => specs[i].cached + 1)));
    for (const [tiles, rows] of [[plan.prefillTiles, PREFILL_TILE_ROWS], [plan.wideTiles, WIDE_PREFILL_TILE_ROWS]] as const) {
      const covered = specs.map(() => new Set<number>());
      for (let t = 0; t < tiles.length; t += 2) {
        const [seq, row] = [tiles[t], tiles[t + 1]];
        assert.equal(row % rows, 0);
        for (let r = row; r < Math.min(row + rows, specs[seq].query); r++) covered[seq].add(r);
      }
      specs.forEach((s, i) => assert.equal(covered[i].size, s.query === 1 ? 0 : s.query, `sequence ${i} rows in ${rows}-row tiles`));
    }
  }
});

test('sparse layers run each token of a verification chain as a decode at its position; dense layers as a chunk', () => {
  const chunks = [
    { tokens: [1, 2, 3, 4], startPos: 40, blockTables: [[0, 1, 2]], verification: true },
    { tokens: [5], startPos: 7, blockTables: [[3]] },
    { tokens: Array(20).fill(6), startPos: 0, blockTables: [[4, 5]] },
  ];
  const plan = planAttention(describeBatch(chunks, 16));
  assert.deepEqual([...plan.decodeSeqs], [1]);
  assert.deepEqual([...plan.decodeTokens], [4]);
  assert.deepEqual([...plan.prefillTiles], [0, 0, 2, 0]);
  assert.deepEqual([...plan.sparse.decodeSeqs], [0, 0, 0, 0, 1]);
  assert.deepEqual([...plan.sparse.decodeTokens], [0, 1, 2, 3, 4]);
  assert.deepEqual([...plan.sparse.prefillTiles], [2, 0]);
  assert.deepEqual([...plan.sparse.wideTiles], [2, 0]);
});

test('dense layers take the sparse split where the step verifies chains of at most MAX_CHAIN_DECODES tokens, and no trees', () => {
  const chain = (length: number, extra: object = {}) => ({ tokens: Array(length).fill(1), startPos: 40, blockTables: [[0, 1, 2, 3]], verification: true, ...extra });
  const prefill = { tokens: Array(20).fill(6), startPos: 0, blockTables: [[4, 5]] };
  assert.equal(planAttention(describeBatch([chain(5), chain(MAX_CHAIN_DECODES), prefill], 16)).chainsAsDecodes, true, 'beside a prefill chunk too');
  assert.equal(planAttention(describeBatch([chain(5), chain(MAX_CHAIN_DECODES + 1)], 16)).chainsAsDecodes, false, 'one chain too long');
  assert.equal(planAttention(describeBatch([chain(5, { treeParents: [-1, 0, 0, 1, 1] })], 16)).chainsAsDecodes, false, 'a tree');
  assert.equal(planAttention(describeBatch([prefill, { tokens: [5], startPos: 7, blockTables: [[3]] }], 16)).chainsAsDecodes, false, 'no verification');
});

test('prefill tiles are ordered longest context first', () => {
  const batch = buildBatch([{ cached: 0, query: 100 }, { cached: 900, query: 70 }], new BlockAssignment(seededRng(1), 200, 2), 16);
  const plan = planAttention(batch);
  const seqs = (tiles: Int32Array) => [...tiles].filter((_, i) => i % 2 === 0);
  assert.deepEqual(seqs(plan.prefillTiles), [1, 1, 0, 0]);
  assert.deepEqual(seqs(plan.wideTiles), [1, 0]);
});

test("a launch's decode partitions are its longest decode's split: whole tiles, the GPU filled only when worthwhile", () => {
  for (const [numDecode, numKvHeads, keys] of [[1, 8, 1024], [1, 8, 32768], [16, 8, 8192], [256, 8, 500], [1, 1, 1], [3, 2, 4000], [1, 4, 200]]) {
    const numPartitions = chooseDecodePartitions(numDecode, numKvHeads, keys, 132);
    // The longest decode, split over the launch's partitions, uses them all.
    const { numPartitions: used, partitionSize } = decodeSplit(keys, numPartitions, MIN_KEYS_PER_PARTITION, DECODE_TILE_KEYS);
    assert.equal(used, numPartitions, `${keys} keys: no CTA of the launch idle for its longest decode`);
    assert.equal(partitionSize % DECODE_TILE_KEYS, 0);
    assert.ok(numPartitions * partitionSize >= keys, `${keys} keys covered`);
    assert.ok(2 * partitionSize > MIN_KEYS_PER_PARTITION || numPartitions === 1, 'partitions longer than half the size they aim at');
  }
  assert.equal(chooseDecodePartitions(256, 8, 500, 132), 1, 'a wide batch fills the GPU unsplit');
  assert.ok(chooseDecodePartitions(1, 8, 32768, 132) >= 32, 'one long sequence is split');
  assert.equal(chooseDecodePartitions(1, 4, 200, 132), 4, '200 keys: four partitions of 64, 64, 64 and 8');
});

test('MLA decode partitions: whole tiles, one wave of CTAs, none shorter than half the size they aim at', () => {
  for (const heads of [16, 32, 64]) {
    for (const [ctas, keys, tileKeys] of [[1, 131072, 64], [2, 32768, 64], [64, 4096, 64], [200, 8000, 64], [1, 1, 16], [3, 700, 16]]) {
      const { numPartitions, partitionSize } = chooseMlaPartitions(ctas, heads, keys, tileKeys, 132);
      assert.equal(partitionSize % tileKeys, 0);
      assert.ok(numPartitions * partitionSize >= keys, `${keys} keys covered`);
      assert.ok((numPartitions - 1) * partitionSize < keys, 'no empty trailing partition');
      assert.ok(ctas * numPartitions <= Math.max(132, ctas), 'at most one CTA per multiprocessor when split');
      assert.ok(2 * partitionSize > mlaMinKeysPerPartition(heads) || numPartitions === 1, 'partitions longer than half the size they aim at');
    }
  }
  assert.ok(chooseMlaPartitions(1, 16, 131072, 64, 132).numPartitions >= 0.95 * 132, 'batch 1 at long context spreads over (nearly) every multiprocessor');
  assert.equal(chooseMlaPartitions(200, 16, 8000, 64, 132).numPartitions, 1, 'a wide batch fills the GPU unsplit');
});

test('an MLA partition aims at more keys the more heads its CTA holds: 64 at 16 heads, 256 at 64', () => {
  assert.deepEqual([16, 32, 64].map(mlaMinKeysPerPartition), [64, 128, 256]);
  // DeepSeek-V2-Lite's 16 heads, one decode at 4k keys: 64 partitions of 64 where 256-key partitions made 16.
  assert.equal(chooseMlaPartitions(1, 16, 4096, 64, 132).numPartitions, 64);
  assert.equal(chooseMlaPartitions(2, 64, 4096, 64, 132).numPartitions, 16);
});
