import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AttentionParams, KvCache, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { buildRopeTable } from '../../../src/layers/rotary.ts';
import { describeBatch, type SequenceChunk } from '../../../src/step/batch.ts';
import { topTokensDraw } from '../../../src/sampling/draw.ts';
import { attentionLayout, plainAttention } from '../../helpers/kv-layout.ts';
import { kvCodeTolerance, pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The ops speculative tree verification adds, against the CPU backend: the prefill attention
// kernel's tree-mask variant (TREE=1) on batches mixing token trees, causal chunks and decodes;
// copySlots (moving an accepted path's K/V into place, pairs in order); gatherRows. Tree attention
// and copySlots run on bf16 and 8-bit caches (int8 slots move with their scales); 8-bit caches
// are compared within kvCodeTolerance (a code may land one apart: the CPU quantizes float32 keys,
// the GPU bf16 ones).

const rng = seededRng(testSeed('cuda speculative ops'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const DTYPES = ['auto', 'fp8_e4m3', 'int8', 'int4'] as const;

function randomTree(size: number): number[] {
  return Array.from({ length: size }, (_, i) => (i === 0 ? -1 : randInt(rng, Math.max(0, i - 5), i - 1)));
}

for (const [headDim, dtype] of DTYPES.flatMap((dtype) => [64, 128, 512].map((headDim) => [headDim, dtype] as const))) {
  test(`tree-masked prefill attention matches the CPU, head dim ${headDim}, ${dtype} cache`, () => {
    for (let trial = 0; trial < 4; trial++) {
      const numKvHeads = randInt(rng, 1, 2);
      const attn: AttentionParams = plainAttention({
        numHeads: numKvHeads * pick(rng, [1, 4]),
        numKvHeads,
        headDim,
        scale: headDim ** -0.5,
        slidingWindow: pick(rng, [null, 256]),
      });
      const blockSize = pick(rng, [8, 16]);
      const numSeqs = randInt(rng, 1, 4);
      // Each sequence: a context written by a first (causal) step, then a tree, a chunk or a decode.
      const contexts = Array.from({ length: numSeqs }, () => randInt(rng, 1, 300));
      const kinds = Array.from({ length: numSeqs }, (_, s) => (s === 0 ? 'tree' : pick(rng, ['tree', 'chunk', 'decode'] as const)));
      const sizes = kinds.map((kind) => (kind === 'tree' ? randInt(rng, 2, 90) : kind === 'chunk' ? randInt(rng, 2, 70) : 1));
      const numBlocks = contexts.reduce((n, c, s) => n + Math.ceil((c + sizes[s]) / blockSize), 0) + 4;
      const free = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rng() - 0.5);
      const tables = contexts.map((c, s) => free.splice(0, Math.ceil((c + sizes[s]) / blockSize)));
      const layout = { ...attentionLayout({ numLayers: 1, numBlocks, blockSize, numKvHeads, headDim }), dtype };
      const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
      const longest = Math.max(...contexts.map((c, s) => c + sizes[s]));
      const table = buildRopeTable({ rotaryDim: headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: longest }, longest);
      const rope: [Tensor, Tensor] = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
      const width = (attn.numHeads + 2 * numKvHeads) * headDim;
      const run = (chunks: SequenceChunk[], compare: boolean) => {
        const batch = describeBatch(chunks, blockSize);
        const host = bf16Tensor([batch.numTokens, width], randomBf16Values(rng, batch.numTokens * width, 2));
        const qkv = [cpu.loadWeight(host), gpu.loadWeight(host)];
        const steps = [cpu.beginStep(batch), gpu.beginStep(batch)];
        cpu.ropeAndCacheWrite(qkv[0], rope[0], caches[0], 0, steps[0], attn);
        gpu.ropeAndCacheWrite(qkv[1], rope[1], caches[1], 0, steps[1], attn);
        if (!compare) return;
        const err = relativeError(gpu.toHost(gpu.attention(qkv[1], caches[1], 0, steps[1], attn)), cpu.toHost(cpu.attention(qkv[0], caches[0], 0, steps[0], attn)));
        assert.ok(err < (dtype === 'auto' ? TOLERANCE : kvCodeTolerance(dtype)), `trial ${trial} [${kinds.map((k, s) => `${contexts[s]}+${k}${sizes[s]}`).join(' ')}]: relative error ${err}`);
      };
      run(contexts.map((c, s) => ({ tokens: new Array<number>(c).fill(0), startPos: 0, blockTables: [tables[s]] })), false);
      run(
        contexts.map((c, s) => {
          const chunk: SequenceChunk = { tokens: new Array<number>(sizes[s]).fill(0), startPos: c, blockTables: [tables[s]] };
          if (kinds[s] === 'tree') chunk.treeParents = randomTree(sizes[s]);
          return chunk;
        }),
        true,
      );
    }
  });
}

// Head dim 72 with one kv head: an 8-bit slot is 72 bytes, an int4 slot 36 and an int8 scale slot 4, not 16-byte multiples.
for (const [dtype, numKvHeads, headDim] of [['auto', 2, 64], ['fp8_e4m3', 1, 72], ['int8', 1, 72], ['int8', 2, 64], ['int4', 1, 72]] as const) {
  test(`copySlots moves slots in every layer, pairs in order, as the CPU does: ${dtype} cache, ${numKvHeads} kv heads of ${headDim}`, () => {
    const layout = { ...attentionLayout({ numLayers: 3, numBlocks: 6, blockSize: 4, numKvHeads, headDim }), dtype };
    const caches = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
    // Fill both caches alike through a step over every slot.
    const chunks: SequenceChunk[] = [{ tokens: new Array<number>(24).fill(0), startPos: 0, blockTables: [[0, 1, 2, 3, 4, 5]] }];
    const batch = describeBatch(chunks, 4);
    const attn = plainAttention({ numHeads: 2, numKvHeads, headDim, scale: headDim ** -0.5, slidingWindow: null });
    const width = (2 + 2 * numKvHeads) * headDim;
    const table = buildRopeTable({ rotaryDim: headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: 24 }, 24);
    const host = bf16Tensor([24, width], randomBf16Values(rng, 24 * width));
    for (const [backend, cache] of [[cpu, caches[0]], [gpu, caches[1]]] as const) {
      const step = backend.beginStep(batch);
      const rope = backend.uploadRopeTable(table);
      for (let layer = 0; layer < 3; layer++) backend.ropeAndCacheWrite(backend.loadWeight(host), rope, cache, layer, step, attn);
      // A chain of moves where later pairs read what earlier ones wrote.
      backend.copySlots(cache, Int32Array.from([9, 5, 17, 6]), Int32Array.from([5, 6, 7, 20]));
    }
    // Read both caches back through attention of one query per slot range.
    const probe = describeBatch([{ tokens: [0], startPos: 23, blockTables: [[0, 1, 2, 3, 4, 5]] }], 4);
    const q = bf16Tensor([1, width], randomBf16Values(rng, width));
    for (let layer = 0; layer < 3; layer++) {
      const outs = [cpu, gpu].map((backend, i) => backend.toHost(backend.attention(backend.loadWeight(q), caches[i], layer, backend.beginStep(probe), attn)));
      const err = relativeError(outs[1], outs[0]);
      assert.ok(err < (dtype === 'auto' ? TOLERANCE : kvCodeTolerance(dtype)), `layer ${layer}: relative error ${err}`);
    }
  });
}

test('gatherRows picks rows in any order, repeats included', () => {
  const values = randomBf16Values(rng, 10 * 24);
  const rows = Int32Array.from([7, 0, 7, 3, 9]);
  const got = gpu.toHost(gpu.gatherRows(gpu.loadWeight(bf16Tensor([10, 24], values)), rows));
  const expected = cpu.toHost(cpu.gatherRows(cpu.loadWeight(bf16Tensor([10, 24], values)), rows));
  assert.deepEqual([...got], [...expected]);
});

test('silu matches the CPU in place', () => {
  const values = randomBf16Values(rng, 7 * 40, 6);
  const [x, y] = [gpu.loadWeight(bf16Tensor([7, 40], values)), cpu.loadWeight(bf16Tensor([7, 40], values))];
  gpu.silu(x);
  cpu.silu(y);
  const err = relativeError(gpu.toHost(x), cpu.toHost(y));
  assert.ok(err < TOLERANCE, `relative error ${err}`);
});

test('writeCacheRows and readCacheRows put rows at slots and read them back as the CPU does, through copyBlocks and copySlots', () => {
  const layout = { numBlocks: 5, blockSize: 4, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'rows', width: 48 }] } as const;
  const caches = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
  const values = randomBf16Values(rng, 6 * 48);
  const slots = Int32Array.from([19, 0, 7, 8, 3, 12]);
  const reads = [cpu, gpu].map((backend, i) => {
    backend.writeCacheRows(caches[i], 1, backend.loadWeight(bf16Tensor([6, 48], values)), slots);
    backend.copyBlocks(caches[i], Int32Array.from([1]), Int32Array.from([2]));
    backend.copySlots(caches[i], Int32Array.from([19, 0]), Int32Array.from([16, 17]));
    return backend.toHost(backend.readCacheRows(caches[i], 1, Int32Array.from([16, 17, 11, 8, 3, 12, 0])));
  });
  assert.deepEqual([...reads[1]], [...reads[0]]);
});

// replayForward checks a step's slots against the smallest KV pool its backend ever made (a graph
// does not know which cache it was recorded on), and the tests above make pools of 20 slots: the
// graph tests below replay over 36 slots on a backend of their own.
const replayer = new CudaBackend({ poisonStepTensors: true });
after(() => replayer.dispose());

test('writeStepCacheRows writes each token\'s row at its slot of the layer\'s KV group as the CPU does, also replayed as a graph over new slots', () => {
  // Two KV groups: the rows layer is in group 1, whose slots differ from group 0's.
  const layout = { numBlocks: 9, blockSize: 4, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'rows', width: 48 }], groups: [0, 1] } as const;
  const caches = [cpu.createKvCache(layout), replayer.createKvCache(layout)];
  // The rows are the embedding of the step's tokens: made inside the graph, from the step's own inputs.
  const table = bf16Tensor([16, 48], randomBf16Values(rng, 16 * 48));
  const tables = [cpu.loadWeight(table), replayer.loadWeight(table)];
  const tableValues = cpu.toHost(tables[0]);
  const owner = {};
  for (const [groups, start, tokens] of [[[[0, 1], [5, 2]], 6, [3, 9]], [[[3, 4], [7, 6]], 5, [11, 2]], [[[3, 4], [8, 6]], 2, [7, 7]]] as const) {
    const chunks: SequenceChunk[] = [
      { tokens: [tokens[0]], startPos: start, blockTables: [[...groups[0]], [...groups[1]]] },
      { tokens: [tokens[1]], startPos: start - 1, blockTables: [[...groups[0]].reverse(), [...groups[1]].reverse()] },
    ];
    const batch = describeBatch(chunks, 4, undefined, 2);
    const slots = batch.slotMapping.subarray(batch.numTokens);
    const reads = [cpu, replayer].map((backend, i) => {
      const step = backend.beginStep(batch);
      backend.replayForward(step, owner, () => backend.writeStepCacheRows(caches[i], 1, backend.embedding(tables[i], step, 1, 0), step));
      return [...backend.toHost(backend.readCacheRows(caches[i], 1, slots))];
    });
    assert.deepEqual(reads[1], reads[0], `slots ${[...slots].join(', ')}`);
    assert.deepEqual(reads[0], tokens.flatMap((t) => [...tableValues.subarray(t * 48, t * 48 + 48)]), 'each token\'s row is at its slot');
  }
});

test('readStepCacheRows and writeNextCacheRows read each token\'s own slot and write each sequence\'s row after its last token, as the CPU does, also replayed as a graph', () => {
  // A head's chained drafting pass: each token reads the feature at its slot, its output goes to the next slot (across a block boundary too).
  const layout = { numBlocks: 9, blockSize: 4, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'rows', width: 48 }], groups: [0, 1] } as const;
  const caches = [cpu.createKvCache(layout), replayer.createKvCache(layout)];
  const initial = bf16Tensor([36, 48], randomBf16Values(rng, 36 * 48));
  const slotsAll = Int32Array.from({ length: 36 }, (_, i) => i);
  [cpu, replayer].forEach((backend, i) => backend.writeCacheRows(caches[i], 1, backend.loadWeight(initial), slotsAll));
  // The pool as the host expects it, row by slot.
  const pool = cpu.toHost(cpu.readCacheRows(caches[0], 1, slotsAll));
  const row = (slot: number) => [...pool.subarray(slot * 48, slot * 48 + 48)];
  const owner = {};
  for (const [tables, start] of [[[[0, 1], [5, 2]], 3], [[[3, 4], [7, 6]], 2], [[[3, 4], [8, 6]], 3]] as const) {
    const groupTables = [[...tables[1]], [...tables[1]].reverse()];
    const chunks: SequenceChunk[] = [
      { tokens: [1], startPos: start, blockTables: [[...tables[0]], groupTables[0]] },
      { tokens: [2], startPos: start + 2, blockTables: [[...tables[0]].reverse(), groupTables[1]] },
    ];
    const batch = describeBatch(chunks, 4, undefined, 2);
    const slotOf = (s: number, index: number) => groupTables[s][Math.floor(index / 4)] * 4 + (index % 4);
    const own = [slotOf(0, start), slotOf(1, start + 2)];
    const next = [slotOf(0, start + 1), slotOf(1, start + 3)];
    const ownRows = own.map(row);
    next.forEach((slot, s) => pool.set(ownRows[s], slot * 48));
    const reads = [cpu, replayer].map((backend, i) => {
      const step = backend.beginStep(batch);
      const read = backend.replayForward(step, owner, () => {
        const rows = backend.readStepCacheRows(caches[i], 1, step);
        backend.writeNextCacheRows(caches[i], 1, rows, step);
        return rows;
      });
      return { read: [...backend.toHost(read)], pool: [...backend.toHost(backend.readCacheRows(caches[i], 1, slotsAll))] };
    });
    const where = `tables ${JSON.stringify(tables)}, start ${start}`;
    assert.deepEqual(reads[1], reads[0], where);
    assert.deepEqual(reads[0].read, ownRows.flat(), `${where}: each token's own slot read`);
    assert.deepEqual(reads[0].pool, [...pool], `${where}: each row written to the slot after its token`);
  }
});

test('mapSampledIds maps the ids where the next step reads its tokens, as the CPU does, and leaves the host\'s results alone', () => {
  const cols = 40;
  const logits = randomBf16Values(rng, 3 * cols);
  const map = Int32Array.from({ length: cols }, (_, i) => 1000 + 7 * i);
  const table = bf16Tensor([2000, 8], randomBf16Values(rng, 2000 * 8));
  const [got, expected] = [gpu, cpu].map((backend) => {
    const x = backend.loadWeight(bf16Tensor([3, cols], logits));
    const sampled = backend.sampleRows(x, [0, 1, 2].map((row) => topTokensDraw(row, 1)));
    backend.mapSampledIds(map);
    const drawn = [...sampled.read().tokenIds];
    // The next step's tokens come from the mapped ids: the embedding rows show which ids they were.
    const step = backend.beginStep(describeBatch([0, 1, 2].map((row): SequenceChunk => ({ tokens: [0], startPos: 0, blockTables: [[row]], lastTokenSource: 2 - row })), 4));
    return { drawn, rows: [...backend.toHost(backend.embedding(backend.loadWeight(table), step, 1, 0))] };
  });
  assert.deepEqual(got.drawn, expected.drawn, 'the host reads the drawn ids');
  assert.ok(got.drawn.every((id) => id >= 0 && id < cols));
  assert.deepEqual(got.rows, expected.rows, 'the embedding read the mapped ids');
  const tableValues = cpu.toHost(cpu.loadWeight(table));
  const mappedRows = [2, 1, 0].flatMap((row) => [...tableValues.subarray(map[got.drawn[row]] * 8, map[got.drawn[row]] * 8 + 8)]);
  assert.deepEqual(got.rows, mappedRows);
});

test('concatColumns lays the parts side by side as the CPU does, in whole 16-byte chunks or not', () => {
  // The second set: widths of a few heads' per-head values (Kimi Delta Attention's beta beside its forget gate).
  for (const widths of [[16, 40, 8], [2, 16], [3, 5, 8]]) {
    const parts = widths.map((cols) => bf16Tensor([5, cols], randomBf16Values(rng, 5 * cols)));
    const [got, expected] = [gpu, cpu].map((backend) => backend.toHost(backend.concatColumns(parts.map((p) => backend.loadWeight(p)))));
    assert.deepEqual([...got], [...expected], `widths ${widths.join(', ')}`);
  }
});
