import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
import { prune24 } from '../../../tensor/prune24.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../../../tensor/host-dtype.ts';
import { compressSparse24, concatSparse24Rows, expandSparse24, keptColumns } from '../../../tensor/sparse24.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('sparse24-matmul'));

/** A random 2:4 weight in bf16, some groups with more than 2 zeros. */
function prunedBf16(rows: number, cols: number) {
  const w = prune24(random.floats(rows * cols, 1), rows, cols, null);
  for (let i = 0; i < w.length; i++) if (random.uniform(0, 1) < 0.1) w[i] = 0;
  return float32ToHostTensor(w, 'bf16', [rows, cols]);
}

test('compression keeps 2 columns of each group in order, and expands back to the same weight', () => {
  for (const [rows, cols] of [[3, 8], [17, 64], [5, 40]]) {
    const t = prunedBf16(rows, cols);
    const w = compressSparse24(t, 'w');
    assert.deepEqual(w.values.shape, [rows, cols / 2]);
    assert.equal(w.meta.length, (rows * cols) / 8);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < cols / 4; g++) {
        const [a, b] = keptColumns(w, r, g);
        assert.ok(a < b && b < 4, `row ${r} group ${g} keeps ${a}, ${b}`);
      }
    }
    assert.deepEqual(expandSparse24(w), t);
  }
});

test('a weight with 3 non-zeros in a group is refused, naming the layer, the row and the columns', () => {
  const w = prune24(random.floats(4 * 16, 1), 4, 16, null);
  w.fill(0, 2 * 16 + 8, 2 * 16 + 12);
  w[2 * 16 + 9] = 0.25;
  w[2 * 16 + 10] = 0.5;
  w[2 * 16 + 11] = 0.75;
  assert.throws(() => compressSparse24(float32ToHostTensor(w, 'f32', [4, 16]), 'model.layers.3.mlp.up_proj.weight'), /model\.layers\.3\.mlp\.up_proj\.weight is not 2:4 sparse: row 2, columns 8\.\.11 hold 3 non-zero values/);
});

test('the sparse linear equals the dense product of the pruned weight, bit for bit, at every row count and with a bias', () => {
  const backend = new CpuBackend();
  for (const [rows, outDim, inDim] of [[1, 24, 32], [5, 14, 64], [9, 40, 128], [33, 8, 16]]) {
    const t = prunedBf16(outDim, inDim);
    const sparse = backend.loadSparseWeight(compressSparse24(t, 'w'));
    const dense = backend.loadWeight(t);
    const bias = backend.loadWeight(float32ToHostTensor(random.floats(outDim, 1), 'f32', [outDim]));
    const x = new CpuTensor([rows, inDim], random.floats(rows * inDim, 2));
    for (const b of [null, bias]) {
      const got = backend.toHost(backend.linear(x, sparse, b));
      const want = backend.toHost(backend.linear(x, dense, b));
      assert.equal(got.length, want.length);
      for (let i = 0; i < got.length; i++) assert.ok(got[i] === want[i], `[${rows}, ${outDim}, ${inDim}] output ${i}: ${got[i]} vs ${want[i]}`);
    }
    const gated = backend.toHost(backend.gatedLinear(x, sparse, { kind: 'silu' }));
    assert.deepEqual(gated, backend.toHost(backend.gatedLinear(x, dense, { kind: 'silu' })));
  }
});

test('stacked parts (q/k/v, gate/up) stay compressed and expand to the stacked weights', () => {
  const parts = [prunedBf16(3, 32), prunedBf16(5, 32)];
  const stacked = concatSparse24Rows(parts.map((p, i) => compressSparse24(p, `part${i}`)));
  const expanded = hostTensorToFloat32(expandSparse24(stacked));
  assert.deepEqual(expanded, Float32Array.from([...hostTensorToFloat32(parts[0]), ...hostTensorToFloat32(parts[1])]));
});
