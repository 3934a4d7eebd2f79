import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inputNormsFromGram, prune24 } from './prune24.ts';
import { hessianOf } from '../quantize/gptq.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('prune24'));

/** The indices of each group of 4 whose weights `pruned` zeroed, per group. */
function zeroedPerGroup(pruned: Float32Array): number[][] {
  const groups: number[][] = [];
  for (let at = 0; at < pruned.length; at += 4) groups.push([0, 1, 2, 3].filter((i) => pruned[at + i] === 0));
  return groups;
}

test('every group of 4 keeps at most 2 non-zeros, and the kept weights are unchanged', () => {
  const [rows, cols] = [7, 48];
  const w = random.floats(rows * cols, 1);
  for (const norms of [null, Float64Array.from({ length: cols }, () => random.uniform(0.1, 3))]) {
    const pruned = prune24(w, rows, cols, norms);
    for (const zeroed of zeroedPerGroup(pruned)) assert.ok(zeroed.length >= 2, `a group keeps ${4 - zeroed.length} weights`);
    pruned.forEach((v, i) => assert.ok(v === 0 || v === w[i], `weight ${i} changed from ${w[i]} to ${v}`));
  }
});

test('magnitude pruning zeroes the 2 smallest |w| of each group', () => {
  const [rows, cols] = [5, 32];
  const w = random.floats(rows * cols, 1);
  const pruned = prune24(w, rows, cols, null);
  zeroedPerGroup(pruned).forEach((zeroed, g) => {
    const abs = [0, 1, 2, 3].map((i) => Math.abs(w[4 * g + i]));
    const smallest = [0, 1, 2, 3].sort((a, b) => abs[a] - abs[b]).slice(0, 2).sort();
    assert.deepEqual(zeroed, smallest, `group ${g}: |w| ${abs.join(', ')}`);
  });
  // A worked group: of -0.5, 0.1, 2, -0.05 the two nearest zero go.
  assert.deepEqual([...prune24(Float32Array.from([-0.5, 0.1, 2, -0.05]), 1, 4, null)], [-0.5, 0, 2, 0]);
});

test('wanda zeroes the 2 smallest |w| · ‖x‖₂ of each group, which can differ from the smallest |w|', () => {
  const [rows, cols, n] = [6, 32, 40];
  const w = random.floats(rows * cols, 1);
  // Input channels of very different scales: what Wanda weighs the weights by.
  const gain = Float32Array.from({ length: cols }, () => Math.exp(random.uniform(-3, 3)));
  const x = Float32Array.from({ length: n * cols }, (_, i) => gain[i % cols] * random.uniform(-1, 1));
  const norms = inputNormsFromGram(hessianOf(x, n, cols), cols);
  for (let c = 0; c < cols; c++) {
    let sq = 0;
    for (let t = 0; t < n; t++) sq += x[t * cols + c] ** 2;
    assert.ok(Math.abs(norms[c] - Math.sqrt(sq)) <= 1e-9 * Math.sqrt(sq), `column ${c}'s norm`);
  }
  const pruned = prune24(w, rows, cols, norms);
  zeroedPerGroup(pruned).forEach((zeroed, g) => {
    const col = (4 * g) % cols;
    const score = [0, 1, 2, 3].map((i) => Math.abs(w[4 * g + i]) * norms[col + i]);
    assert.deepEqual(zeroed, [0, 1, 2, 3].sort((a, b) => score[a] - score[b]).slice(0, 2).sort(), `group ${g}`);
  });
  // A worked group: |w| alone would prune columns 1 and 3; the large input of column 3 keeps it.
  assert.deepEqual([...prune24(Float32Array.from([-0.5, 0.1, 2, -0.05]), 1, 4, Float64Array.from([1, 1, 1, 100]))], [0, 0, 2, Math.fround(-0.05)]);
  assert.notDeepEqual(pruned, prune24(w, rows, cols, null), 'the scales changed some choice');
});
