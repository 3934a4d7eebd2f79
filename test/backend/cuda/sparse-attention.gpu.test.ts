import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AttentionParams, KvCache, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import type { CpuKvCache, CpuTensor } from '../../../src/backend/cpu/cpu-tensor.ts';
import { blockScore } from '../../../src/backend/cpu/ops/key-summaries.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import type { CudaKvCache } from '../../../src/backend/cuda/cuda-tensor.ts';
import { BlockAssignment, bf16Tensor, bf16Value, buildBatch, randomBf16Values, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch } from '../../../src/step/batch.ts';
import { buildRopeTable } from '../../../src/layers/rotary.ts';
import { sparseBlockCounts, type KvCacheDtype, type KvCacheLayout, type SparseAttention } from '../../../src/step/kv-cache-layout.ts';
import { kvCodeTolerance, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// Quest's sparse decode attention on CUDA (key_summary_kernel, sparse_score_kernel and sparse_select_kernel, decode
// attention with SPARSE=1) against the CPU twin: the key summaries after prefill chunks and
// decodes, and each decode's output, which differs from dense attention as soon as one block is
// chosen differently; verification chains and trees, whose every token selects as a decode at its
// position (of its path, for a tree) would. Each block's keys are scaled by a factor of its own, so block scores
// mostly stand apart; where the twin's last block taken and first left out still score within
// nearTie(dtype), rounding may take the other, and those heads' rows are not compared (half of a
// scenario's selections at most, or it fails). Quantized caches compare at kvCodeTolerance. A failure
// names the worst token and whether it verifies. Step tensors are poisoned with NaN.

const rng = seededRng(testSeed('cuda sparse attention'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const LAYER = 1;
/**
 * Relative score gap under which the last block a selection takes and the first it leaves out are
 * a near-tie, so either may be taken and the head's output differs by design: CUDA rotates and keeps
 * the query in bf16 where the twin keeps float32 (a score moves by about 1e-4 of itself: 0.1 %
 * rounding over a sum of 512 products), and an 8-bit cache's codes may land a step apart where the
 * bf16 and float32 keys straddle a rounding boundary (a bound moves by up to 1/127 of its row, an
 * int4 one by up to 1/15 of its range: one of a score's 128 products, about 1e-3 of the score). On
 * the CPU, 0.3 % of the scenarios' selections lie within 1e-4 and 2 % within 1e-3; 15 % within 1e-2.
 * int4 takes 2e-2: at 7e-2, a whole code step of the score, 11 of the int4 scenario's 12 selections
 * were ties on the first GPU run (H100, 2026-12-06), and those it compared all matched.
 */
function nearTie(dtype: KvCacheDtype): number {
  return dtype === 'int8' ? 1e-2 : dtype === 'int4' ? 2e-2 : 1e-3;
}

/** Near-tie selections (see nearTie) as token * numKvHeads + kvHead, and how many selections the step makes. */
function nearTieRows(s: Scenario, specs: SeqSpec[], positions: Int32Array, qkv: Float32Array, summaries: Float32Array, tables: readonly (readonly number[])[]): Set<number> & { selecting: number } {
  const ties = Object.assign(new Set<number>(), { selecting: 0 });
  const counts = sparseBlockCounts(s.sparse, s.blockSize);
  const keep = counts.budget - counts.sinks - counts.window;
  const width = (s.numKvHeads * s.group + 2 * s.numKvHeads) * s.headDim;
  let t = 0;
  specs.forEach((q, i) => {
    const selects = q.query === 1 || q.verification === true;
    for (let j = 0; j < q.query; j++, t++) {
      const numBlocks = Math.ceil((positions[t] + 1) / s.blockSize);
      if (!selects || numBlocks <= counts.budget) continue;
      for (let kvHead = 0; kvHead < s.numKvHeads; kvHead++) {
        ties.selecting++;
        const scores: number[] = [];
        for (let b = counts.sinks; b < numBlocks - counts.window; b++) {
          scores.push(blockScore(qkv, t * width + kvHead * s.group * s.headDim, s.group, summaries, tables[i][b], kvHead, s.numKvHeads, s.headDim));
        }
        scores.sort((x, y) => y - x);
        if (scores[keep - 1] - scores[keep] < nearTie(s.dtype) * Math.abs(scores[keep - 1])) ties.add(t * s.numKvHeads + kvHead);
      }
    }
  });
  return ties;
}

/** `out` [tokens, heads * headDim] with the query heads of each near-tie selection zeroed. */
function withoutRows(out: Float32Array, ties: Set<number>, group: number, headDim: number): Float32Array {
  const copy = out.slice();
  for (const tie of ties) copy.fill(0, tie * group * headDim, (tie + 1) * group * headDim);
  return copy;
}

interface Scenario {
  headDim: number;
  numKvHeads: number;
  group: number;
  blockSize: number;
  dtype: KvCacheDtype;
  sparse: SparseAttention;
  prompts: number[];
  decodes: number;
  /**
   * KV groups (a model mixing sliding and full layers): layer 0 is a sliding layer of this window
   * in a group of its own, sharing the sparse layer's pool (and so its key summaries); each sequence
   * has a sliding table (group 0) and a full table (group 1) on disjoint blocks, and every step runs
   * layer 0 densely before layer 1 sparsely.
   */
  slidingWindow?: number;
  /**
   * After the decodes, three steps in which every other sequence verifies a chain of this many
   * tokens (each a decode at its position) beside the others' plain decodes; two tokens of each
   * chain are kept, so the next chain overwrites the rest.
   */
  verify?: number;
  /** The verified chunks are this tree (each token's parent, -1 for the root) instead of a chain. */
  tree?: number[];
  /**
   * The steps' block tables padded to this many blocks (a graph step's tables are widened, and a
   * long context's are this wide): the scoring grid and every score row span the whole width, of
   * which the sequences hold a few dozen blocks.
   */
  tableWidth?: number;
}

function run(s: Scenario): void {
  const tolerance = s.dtype === 'auto' ? TOLERANCE : kvCodeTolerance(s.dtype);
  const numHeads = s.numKvHeads * s.group;
  const verifyLength = s.tree?.length ?? s.verify ?? 0;
  const longest = Math.max(...s.prompts) + s.decodes + 3 * verifyLength;
  const numSeqs = s.prompts.length;
  const grouped = s.slidingWindow !== undefined;
  const numBlocks = (grouped ? 2 : 1) * numSeqs * (Math.ceil(longest / s.blockSize) + 1) + 4;
  const layer = { kind: 'attention' as const, numKvHeads: s.numKvHeads, headDim: s.headDim, slidingWindow: null, keySummaries: true };
  const layout: KvCacheLayout = grouped
    ? { numBlocks, blockSize: s.blockSize, dtype: s.dtype, layers: [{ ...layer, slidingWindow: s.slidingWindow!, keySummaries: undefined }, layer], groups: [0, 1] }
    : { numBlocks, blockSize: s.blockSize, dtype: s.dtype, layers: [layer, layer] };
  const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
  const table = buildRopeTable({ rotaryDim: s.headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: longest + 1 }, longest + 1);
  const rope: [Tensor, Tensor] = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
  const attn: AttentionParams = { numHeads, numKvHeads: s.numKvHeads, headDim: s.headDim, scale: s.headDim ** -0.5, slidingWindow: null, softcap: null, sinks: null, streaming: null, sparse: s.sparse };
  const slidingAttn: AttentionParams = { ...attn, slidingWindow: s.slidingWindow ?? null, sparse: null };
  // Full tables first (tables[i]), then with groups each sequence's sliding table (tables[numSeqs + i]).
  const blocks = new BlockAssignment(rng, numBlocks, (grouped ? 2 : 1) * numSeqs);
  const batchOf = (specs: SeqSpec[]) => {
    if (!grouped) return buildBatch(specs, blocks, s.blockSize, s.tableWidth);
    let nextTokenId = 0;
    const chunks = specs.map((q, i) => {
      blocks.ensure(i, q.cached + q.query, s.blockSize);
      blocks.ensure(numSeqs + i, q.cached + q.query, s.blockSize);
      return { tokens: Array.from({ length: q.query }, () => nextTokenId++), startPos: q.cached, blockTables: [blocks.tables[numSeqs + i], blocks.tables[i]], verification: q.verification, treeParents: q.treeParents };
    });
    return describeBatch(chunks, s.blockSize);
  };
  const width = (numHeads + 2 * s.numKvHeads) * s.headDim;
  const blockScale = Array.from({ length: Math.ceil(longest / s.blockSize) }, (_, b) => 0.25 + ((b * 7919) % 97) / 24);
  const step = (specs: SeqSpec[], label: string) => {
    const batch = batchOf(specs);
    const values = randomBf16Values(rng, batch.numTokens * width, 1);
    for (let t = 0; t < batch.numTokens; t++) {
      const factor = blockScale[Math.floor(batch.positions[t] / s.blockSize)];
      for (let i = numHeads * s.headDim; i < (numHeads + s.numKvHeads) * s.headDim; i++) values[t * width + i] *= factor;
    }
    const host = bf16Tensor([batch.numTokens, width], values);
    const qkv: [Tensor, Tensor] = [cpu.loadWeight(host), gpu.loadWeight(host)];
    const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    if (grouped) {
      // The sliding layer writes its own group's blocks of the shared pool and attends densely.
      const slidingHost = bf16Tensor([batch.numTokens, width], randomBf16Values(rng, batch.numTokens * width, 1));
      const slidingQkv: [Tensor, Tensor] = [cpu.loadWeight(slidingHost), gpu.loadWeight(slidingHost)];
      cpu.ropeAndCacheWrite(slidingQkv[0], rope[0], caches[0], 0, steps[0], slidingAttn);
      gpu.ropeAndCacheWrite(slidingQkv[1], rope[1], caches[1], 0, steps[1], slidingAttn);
      const slidingOut = [cpu.attention(slidingQkv[0], caches[0], 0, steps[0], slidingAttn), gpu.attention(slidingQkv[1], caches[1], 0, steps[1], slidingAttn)];
      const slidingErr = relativeError(gpu.toHost(slidingOut[1]), cpu.toHost(slidingOut[0]));
      assert.ok(slidingErr < tolerance, `${label}: sliding layer attention relative error ${slidingErr}`);
    }
    cpu.ropeAndCacheWrite(qkv[0], rope[0], caches[0], LAYER, steps[0], attn);
    gpu.ropeAndCacheWrite(qkv[1], rope[1], caches[1], LAYER, steps[1], attn);
    const cpuSummaries = (caches[0] as CpuKvCache).layerPools(LAYER)[2].codes as Float32Array;
    const ties = nearTieRows(s, specs, batch.positions, (qkv[0] as CpuTensor).data, cpuSummaries, blocks.tables);
    selections.total += ties.selecting;
    selections.ties += ties.size;
    const out = [cpu.attention(qkv[0], caches[0], LAYER, steps[0], attn), gpu.attention(qkv[1], caches[1], LAYER, steps[1], attn)];
    const [gpuOut, cpuOut] = [gpu.toHost(out[1]), cpu.toHost(out[0])].map((o) => withoutRows(o, ties, s.group, s.headDim));
    const err = relativeError(gpuOut, cpuOut);
    if (!(err < tolerance)) {
      const row = numHeads * s.headDim;
      const worst = Array.from({ length: batch.numTokens }, (_, t) => relativeError(gpuOut.subarray(t * row, (t + 1) * row), cpuOut.subarray(t * row, (t + 1) * row)));
      const t = worst.indexOf(Math.max(...worst));
      const seq = specs.findIndex((_, i) => t < batch.queryStartLoc[i + 1]);
      const kind = specs[seq].verification ? 'a verification token' : specs[seq].query === 1 ? 'a decode' : 'a prefill token';
      assert.fail(`${label}: attention relative error ${err} (${ties.size} near-tie selections left out); worst token ${t} (error ${worst[t]}), ${kind} of sequence ${seq} at position ${batch.positions[t]}`);
    }
    // Every block the sequences hold: its summaries on both backends.
    const perBlock = 2 * s.numKvHeads * s.headDim;
    const held = blocks.tables.slice(0, numSeqs).flatMap((t, i) => t.slice(0, Math.ceil((specs[i].cached + specs[i].query) / s.blockSize)));
    const bits = new Uint16Array(perBlock);
    const gpuRows: number[] = [];
    const cpuRows: number[] = [];
    for (const b of held) {
      gpu.device.download(bits, (caches[1] as CudaKvCache).keySummaries(LAYER) + b * perBlock * 2);
      gpuRows.push(...Array.from(bits, (x) => bf16Value(x)));
      cpuRows.push(...cpuSummaries.subarray(b * perBlock, (b + 1) * perBlock));
    }
    const summaryErr = relativeError(Float32Array.from(gpuRows), Float32Array.from(cpuRows));
    assert.ok(summaryErr < tolerance, `${label}: key summary relative error ${summaryErr}`);
  };
  const selections = { total: 0, ties: 0 };
  let specs: SeqSpec[] = s.prompts.map((n) => ({ cached: 0, query: n }));
  step(specs, 'prefill');
  for (let i = 0; i < s.decodes; i++) {
    specs = specs.map((q) => ({ cached: q.cached + q.query, query: 1 }));
    step(specs, `decode ${i} [${specs.map((q) => q.cached + 1).join(' ')}]`);
  }
  for (let i = 0; verifyLength > 0 && i < 3; i++) {
    specs = specs.map((q, j) => ({
      cached: q.cached + (q.verification === true ? 2 : q.query),
      query: j % 2 === 0 ? verifyLength : 1,
      verification: j % 2 === 0,
      treeParents: j % 2 === 0 ? s.tree : undefined,
    }));
    step(specs, `verification ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`);
  }
  // At int8's 1e-2 near-tie margin about half of random blocks' selections are near-ties (13 of 24 and
  // 7 of 12 in two int8 scenarios on one H100 run, their attention matching): the check asks for a
  // quarter of the selections compared rather than half. (Scenarios whose budget covers every
  // sequence make none.)
  assert.ok(selections.ties <= 0.75 * selections.total, `${selections.ties} of ${selections.total} selections are near-ties: the scenario no longer tests selection`);
}

const CASES: (Scenario & { name: string })[] = [
  { name: 'GQA 4, bf16, budget 256 of up to 1,200 tokens', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [1200, 700, 40], decodes: 4 },
  // Six decodes: with three, its 12 selections were few for the near-tie check (7 of 12 at seed 508002, H100).
  { name: 'GQA 3, head dim 64, int8, budget 96', headDim: 64, numKvHeads: 2, group: 3, blockSize: 8, dtype: 'int8', sparse: { tokenBudget: 96, sinkTokens: 8, windowTokens: 24 }, prompts: [500, 333], decodes: 6 },
  { name: 'one kv head of 8 queries, fp8, a budget covering every sequence', headDim: 128, numKvHeads: 1, group: 8, blockSize: 16, dtype: 'fp8_e4m3', sparse: { tokenBudget: 4096, sinkTokens: 4, windowTokens: 64 }, prompts: [900, 100], decodes: 2 },
  { name: 'KV groups: beside a sliding layer sharing its pool, int8, budget 128', headDim: 64, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'int8', sparse: { tokenBudget: 128, sinkTokens: 4, windowTokens: 32 }, prompts: [700, 260, 30], decodes: 3, slidingWindow: 64 },
  { name: 'verification chains of 5 beside decodes, GQA 4, bf16, budget 256', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [1200, 700, 500], decodes: 1, verify: 5 },
  { name: 'verification chains of 4 crossing blocks of 8, int8, KV groups, budget 96', headDim: 64, numKvHeads: 2, group: 3, blockSize: 8, dtype: 'int8', sparse: { tokenBudget: 96, sinkTokens: 8, windowTokens: 16 }, prompts: [500, 333, 90], decodes: 1, verify: 4, slidingWindow: 32 },
  { name: 'draft trees of 9 beside decodes, GQA 4, bf16, budget 256', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [1200, 700, 500], decodes: 1, tree: [-1, 0, 0, 1, 1, 2, 3, 5, 6] },
  { name: 'draft trees of 7 crossing blocks of 8, int8, KV groups, budget 96', headDim: 64, numKvHeads: 2, group: 3, blockSize: 8, dtype: 'int8', sparse: { tokenBudget: 96, sinkTokens: 8, windowTokens: 16 }, prompts: [500, 333, 90], decodes: 1, tree: [-1, 0, 1, 0, 3, 2, 4], slidingWindow: 32 },
  { name: 'head dim 512 (Gemma 4\'s full layers), GQA 8, int8, budget 192, draft trees of 7', headDim: 512, numKvHeads: 1, group: 8, blockSize: 16, dtype: 'int8', sparse: { tokenBudget: 192, sinkTokens: 4, windowTokens: 32 }, prompts: [700, 300], decodes: 1, tree: [-1, 0, 1, 0, 3, 2, 4] },
  { name: 'head dim 512, GQA 2, bf16, budget 256 of up to 900 tokens', headDim: 512, numKvHeads: 2, group: 2, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [900, 400], decodes: 3 },
  { name: 'block tables of 60,000 entries about sequences of a few dozen blocks, GQA 4, bf16, budget 256', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [1200, 700], decodes: 2, tableWidth: 60_000 },
  { name: 'GQA 4, int4, budget 256 of up to 1,000 tokens', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, dtype: 'int4', sparse: { tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, prompts: [1000, 600], decodes: 3 },
  { name: 'a draft tree of 5 within a covering budget, fp8', headDim: 64, numKvHeads: 2, group: 2, blockSize: 16, dtype: 'fp8_e4m3', sparse: { tokenBudget: 4096, sinkTokens: 4, windowTokens: 64 }, prompts: [300, 40], decodes: 1, tree: [-1, 0, 0, 2, 2] },
  // Small heads: the CPU twin's prefill of 9,000 tokens at 8 kv heads x 4 of 128 took 524 s (the file's limit is 150 s);
  // one kv head splits the context over more decode partitions, not fewer.
  { name: 'long contexts split over decode partitions, budget 2,048', headDim: 64, numKvHeads: 1, group: 2, blockSize: 16, dtype: 'auto', sparse: { tokenBudget: 2048, sinkTokens: 4, windowTokens: 64 }, prompts: [9000, 3000], decodes: 2 },
];

for (const c of CASES) test(`sparse attention on CUDA matches the CPU twin: ${c.name}`, () => run(c));
