import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
import { scoreDraw } from '../../../sampling/draw.ts';
import { describeBatch, type SequenceChunk } from '../../../step/batch.ts';
import { draftTreeSlots } from './draft-trees.ts';
import { expandDepth } from './tree-expansion.ts';

// The CPU twins of the ops that grow EAGLE-2 trees on the device (draft-trees.cu): a depth keeps
// what expandDepth keeps, the trees' tokens become the ids the next pass embeds, and the mask and
// feature slots follow the parents in the trees, not the ones the host placed the nodes with.

const tensor = (shape: number[], values: number[]) => new CpuTensor(shape, Float32Array.from(values));

/** Logits whose log-softmax ranks `order` first to last (the rest far below). */
function rowFavoring(cols: number, order: number[]): number[] {
  const row = new Array<number>(cols).fill(-30);
  order.forEach((id, rank) => (row[id] = -rank));
  return row;
}

test('expandDraftTrees keeps each growing tree\'s best children as expandDepth does, maps ids, and leaves the trees\' tokens for the next pass', () => {
  const b = new CpuBackend();
  const cols = 10;
  const map = Int32Array.from({ length: cols }, (_, i) => 100 + i);
  const trees = b.beginDraftTrees(2, 4);
  // Depth 1: both roots (rows 0 and 1).
  let pass = b.sampleRows(tensor([2, cols], [...rowFavoring(cols, [3, 5, 1]), ...rowFavoring(cols, [7, 2])]), [0, 1].map((row) => scoreDraw(row, 0, 2)));
  b.expandDraftTrees(trees, { counts: Int32Array.from([0, 0]), frontiers: Int32Array.from([0, 0]), keeps: Int32Array.from([2, 2]), rows: Int32Array.from([0, 1]) }, map);
  const first = pass.read();
  const candidates = (row: number) => [0, 1].map((rank) => ({ token: 100 + first.topIds[row * 2 + rank], logprob: first.topLogprobs[row * 2 + rank] }));
  const tree0 = expandDepth([], [-1], [candidates(0)], 2);
  // Depth 2: tree 1 alone grows (its frontier, nodes 0 and 1, at rows 0 and 1); tree 0 stays.
  pass = b.sampleRows(tensor([2, cols], [...rowFavoring(cols, [4, 6]), ...rowFavoring(cols, [9, 8])]), [0, 1].map((row) => scoreDraw(row, 0, 2)));
  b.expandDraftTrees(trees, { counts: Int32Array.from([2, 2]), frontiers: Int32Array.from([2, 2]), keeps: Int32Array.from([0, 2]), rows: Int32Array.from([0, 0]) }, map);
  const second = pass.read();
  const tree1 = expandDepth([], [-1], [candidates(1)], 2);
  const next = (row: number) => [0, 1].map((rank) => ({ token: 100 + second.topIds[row * 2 + rank], logprob: second.topLogprobs[row * 2 + rank] }));
  tree1.push(...expandDepth(tree1, [0, 1], [next(0), next(1)], 2));
  const { tokens, parents, logprobs } = trees.read();
  assert.deepEqual([...tokens.subarray(0, 2)], tree0.map((n) => n.token));
  assert.deepEqual([...tokens.subarray(4, 8)], tree1.map((n) => n.token));
  assert.deepEqual([...parents.subarray(4, 8)], tree1.map((n) => n.parent));
  assert.deepEqual([...logprobs.subarray(4, 8)], tree1.map((n) => n.logprob));
  assert.deepEqual(tree0.map((n) => n.token), [103, 105], 'the head\'s ids mapped');
  // The next pass embeds the nodes from the trees' tokens (id t * size + i).
  const table = tensor([120, 1], Array.from({ length: 120 }, (_, i) => i));
  const step = b.beginStep(describeBatch([{ tokens: [0, 0, 0, 0], startPos: 0, blockTables: [[0]], tokenSources: [4, 5, 6, 7] }], 4));
  assert.deepEqual([...b.toHost(b.embedding(table, step, 1, 0))], tree1.map((n) => n.token));
});

test('writeDraftTreeMask and draftTreeSlots follow the trees\' parents', () => {
  const b = new CpuBackend();
  const trees = b.beginDraftTrees(1, 4);
  const cols = 8;
  b.sampleRows(tensor([1, cols], rowFavoring(cols, [1, 2])), [scoreDraw(0, 0, 2)]);
  b.expandDraftTrees(trees, { counts: Int32Array.from([0]), frontiers: Int32Array.from([0]), keeps: Int32Array.from([2]), rows: Int32Array.from([0]) }, null);
  // Node 1's children outrank node 0's: the depth's nodes hang from node 1, not from node 0 where the host places them.
  // Node 0 (log-probability ≈ -0.31) has a flat row (children ≈ -2.39); node 1 (≈ -1.31) two even children (≈ -2.0).
  const even = new Array<number>(cols).fill(-30);
  even[5] = even[6] = 0;
  b.sampleRows(tensor([2, cols], [...new Array<number>(cols).fill(0), ...even]), [0, 1].map((row) => scoreDraw(row, 0, 2)));
  b.expandDraftTrees(trees, { counts: Int32Array.from([2]), frontiers: Int32Array.from([2]), keeps: Int32Array.from([2]), rows: Int32Array.from([0]) }, null);
  const { parents } = trees.read();
  assert.deepEqual([...parents], [-1, -1, 1, 1]);
  const chunk = (treeParents: number[]): SequenceChunk => ({ tokens: [0, 0, 0, 0, 0], startPos: 6, blockTables: [[0, 1, 2]], treeParents });
  const placed = describeBatch([chunk([-1, 0, 0, 1, 1])], 4);
  const step = b.beginStep(placed);
  b.writeDraftTreeMask(trees, step, Int32Array.from([0]));
  assert.deepEqual([...step.batch.treeMask!], [...describeBatch([chunk([-1, 0, 0, 2, 2])], 4).treeMask!]);
  // Slots of cache indices 6 .. 11: the root reads index 6's, children of the root index 7's, node 1's children index 9's.
  assert.deepEqual([...draftTreeSlots(placed, parents, 4, Int32Array.from([0]), Int32Array.from([60, 70, 80, 90, 100, 110]))], [60, 70, 70, 90, 90]);
});

test('draft tree ops refuse depths and chunks outside their trees, naming the problem', () => {
  const b = new CpuBackend();
  const trees = b.beginDraftTrees(2, 3);
  b.sampleRows(tensor([1, 4], [0, 1, 2, 3]), [scoreDraw(0, 0, 2)]);
  const depth = { counts: Int32Array.from([0, 0]), frontiers: Int32Array.from([0, 0]), keeps: Int32Array.from([2, 0]), rows: Int32Array.from([0, 0]) };
  assert.throws(() => b.expandDraftTrees(trees, { ...depth, keeps: Int32Array.from([2]) }, null), /1 keeps for 2 trees/);
  assert.throws(() => b.expandDraftTrees(trees, { ...depth, keeps: Int32Array.from([4, 0]) }, null), /tree 0 keeps 4 after 0 nodes, past its 3/);
  assert.throws(() => b.expandDraftTrees(trees, { ...depth, rows: Int32Array.from([1, 0]) }, null), /tree 0's candidates at row 1 are outside the 1 rows/);
  const step = b.beginStep(describeBatch([{ tokens: [0, 0, 0, 0, 0], startPos: 0, blockTables: [[0, 1]], treeParents: [-1, 0, 0, 1, 1] }], 4));
  assert.throws(() => b.writeDraftTreeMask(trees, step, Int32Array.from([0])), /chunk 0 has 5 tokens, a root and up to 3 nodes expected/);
  assert.throws(() => b.writeDraftTreeMask(trees, step, Int32Array.from([2])), /chunk 0's tree 2 is not one of the 2/);
  assert.throws(() => describeBatch([{ tokens: [0, 0], startPos: 0, blockTables: [[0]], tokenSources: [3] }], 4), /sequence 0: 1 token sources for 2 tokens/);
});
