import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { describeBatch } from '../../../step/batch.ts';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';

const random = new TestRandom(testSeed('cpu addLora'));

test('addLora adds each token\'s own adapter delta, x · (scale B · A)ᵀ per slice, and nothing for the base tokens', () => {
  const cpu = new CpuBackend();
  for (let trial = 0; trial < 20; trial++) {
    const inDim = random.int(1, 40);
    const sliceRows = Array.from({ length: random.int(1, 3) }, () => random.int(1, 30));
    const outDim = sliceRows.reduce((a, b) => a + b, 0);
    const slots = random.int(1, 4);
    const maxRank = random.int(1, 12);
    const w = cpu.createLoraWeights({ slots, maxRank, inFeatures: inDim, sliceRows });
    // Per slot, the dense delta [outDim, inDim] it stands for (null slices contribute nothing).
    const deltas = Array.from({ length: slots }, (_, slot) => {
      const rank = random.int(1, maxRank);
      const slices = sliceRows.map((rows) => (random.int(0, 3) === 0 ? null : { a: random.floats(rank * inDim), b: random.floats(rows * rank) }));
      cpu.setLoraSlot(w, slot, rank, slices);
      const delta = new Float64Array(outDim * inDim);
      let first = 0;
      slices.forEach((slice, s) => {
        for (let o = 0; o < sliceRows[s] && slice !== null; o++) {
          for (let i = 0; i < inDim; i++) {
            let sum = 0;
            for (let k = 0; k < rank; k++) sum += slice.b[o * rank + k] * slice.a[k * inDim + i];
            delta[(first + o) * inDim + i] = sum;
          }
        }
        first += sliceRows[s];
      });
      return delta;
    });
    const lengths = Array.from({ length: random.int(1, 4) }, () => random.int(1, 5));
    const chunkSlots = lengths.map(() => random.int(-1, slots - 1));
    const chunks = lengths.map((n, s) => ({ tokens: new Array<number>(n).fill(0), startPos: 0, blockTables: [[s]], ...(chunkSlots[s] >= 0 ? { loraSlot: chunkSlots[s] } : {}) }));
    const batch = describeBatch(chunks, 8);
    const rows = batch.numTokens;
    const x = new CpuTensor([rows, inDim], random.floats(rows * inDim));
    const start = random.floats(rows * outDim);
    const out = new CpuTensor([rows, outDim], start.slice());
    cpu.addLora(out, x, w, cpu.beginStep(batch));
    for (let t = 0; t < rows; t++) {
      const slot = batch.loraSlots?.[t] ?? -1;
      for (let o = 0; o < outDim; o++) {
        let expected = start[t * outDim + o];
        if (slot >= 0) for (let i = 0; i < inDim; i++) expected += deltas[slot][o * inDim + i] * x.data[t * inDim + i];
        assert.ok(Math.abs(out.data[t * outDim + o] - expected) < 1e-4, `trial ${trial}, token ${t} (slot ${slot}), output ${o}: ${out.data[t * outDim + o]} vs ${expected}`);
      }
    }
  }
});
