import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { CpuTensor } from '../backend/cpu/cpu-tensor.ts';
import { quantizedMatmul } from '../backend/cpu/ops/quantized-matmul.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { referenceMatmul } from '../../test/helpers/reference-matmul.ts';
import { aqlmReference, randomAqlmWeight } from '../../test/helpers/aqlm-weights.ts';
import { aqlmCodes } from './aqlm.ts';
import { dequantizeWeight, type AqlmFormat } from './quantized-weight.ts';

const random = new TestRandom(testSeed('aqlm'));
const uniform = () => random.uniform(0, 1);
const FORMATS: AqlmFormat[] = ['aqlm-2x8', 'aqlm-1x16'];

test('AQLM weights dequantize by the definition (each stacked part its own codebooks) and multiply bit-identically to their dequantized values', () => {
  for (const format of FORMATS) {
    // 1x16 codebooks are 512 Ki values a part: fewer cases.
    const shapes = format === 'aqlm-2x8' ? [[1], [5], [7, 3, 3], [4, 9]] : [[5, 3, 2]];
    for (const partRows of shapes) {
      for (const cols of format === 'aqlm-2x8' ? [8, 24, 64] : [8, 64]) {
        const what = `${format} parts ${partRows.join('+')} x ${cols}`;
        const weight = randomAqlmWeight(format, partRows, cols, uniform);
        const { w, codes } = weight;
        for (let r = 0; r < w.rows; r++) for (let g = 0; g < cols / 8; g++) assert.deepEqual(aqlmCodes(w, r, g), codes[r][g], `${what}: codes (${r}, ${g})`);
        const dense = aqlmReference(weight);
        assert.deepEqual(dequantizeWeight(w), dense, `${what}: dequantizeWeight`);
        for (const xRows of [1, 4, 7]) {
          const x = random.floats(xRows * cols);
          const bias = xRows === 7 ? random.floats(w.rows) : null;
          const out = new Float32Array(xRows * w.rows).fill(NaN);
          quantizedMatmul(x, xRows, w, bias, out);
          assert.deepEqual(out, referenceMatmul(x, xRows, dense, w.rows, cols, bias), `${what}, ${xRows} rows`);
        }
      }
    }
  }
});

test('the CPU backend runs an AQLM weight in linear and gatedLinear as its dequantized values', () => {
  const b = new CpuBackend();
  for (const format of FORMATS) {
    const weight = randomAqlmWeight(format, [6, 6], 32, uniform);
    const dense = new CpuTensor([12, 32], dequantizeWeight(weight.w));
    const quantized = b.loadQuantizedWeight(weight.w);
    const x = new CpuTensor([3, 32], random.floats(96));
    assert.deepEqual(b.toHost(b.linear(x, quantized, null)), b.toHost(b.linear(x, dense, null)), format);
    const act = { kind: 'silu' } as const;
    assert.deepEqual(b.toHost(b.gatedLinear(x, quantized, act)), b.toHost(b.gatedLinear(x, dense, act)), format);
  }
});
