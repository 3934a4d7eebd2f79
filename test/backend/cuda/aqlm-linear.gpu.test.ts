import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { AQLM_GEMV_MAX_ROWS } from '../../../src/backend/cuda/kernels/aqlm-linear.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeQuantized, type AqlmFormat, type QuantizedWeight } from '../../../src/tensor/quantized-weight.ts';
import { randomAqlmWeight } from '../../helpers/aqlm-weights.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The CUDA AQLM linear (codebook-lookup GEMV for decode rows, dequantize + cuBLAS beyond) against
// the CPU backend's, which equals multiplying by the dequantized weight. bf16 outputs get 1e-2.

const rng = seededRng(testSeed('cuda aqlm linear'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const FORMATS: AqlmFormat[] = ['aqlm-2x8', 'aqlm-1x16'];

function both(w: QuantizedWeight): { cpu: Tensor; gpu: Tensor } {
  return { cpu: cpu.loadQuantizedWeight(w), gpu: gpu.loadQuantizedWeight(w) };
}

function input(rows: number, cols: number): { cpu: Tensor; gpu: Tensor } {
  const t = bf16Tensor([rows, cols], randomBf16Values(rng, rows * cols, 1));
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

function check(weight: QuantizedWeight, xRows: number, withBias: boolean): void {
  const w = both(weight);
  const x = input(xRows, weight.cols);
  const biasValues = withBias ? bf16Tensor([weight.rows], randomBf16Values(rng, weight.rows, 1)) : null;
  const bias = biasValues && { cpu: cpu.loadWeight(biasValues), gpu: gpu.loadWeight(biasValues) };
  const label = `${describeQuantized(weight)} parts ${weight.codebooks!.partRows.join('+')} x ${xRows} rows${withBias ? ' + bias' : ''}`;
  const err = relativeError(gpu.toHost(gpu.linear(x.gpu, w.gpu, bias?.gpu ?? null)), cpu.toHost(cpu.linear(x.cpu, w.cpu, bias?.cpu ?? null)));
  assert.ok(err < TOLERANCE, `${label}: relative error ${err}`);
}

test('AQLM linear matches the CPU at every GEMV row count and past it, with stacked parts and biases', () => {
  for (const format of FORMATS) {
    for (const partRows of [[64], [40, 24, 24], [8, 136]]) {
      const weight = randomAqlmWeight(format, partRows, 256, rng, 65536).w;
      for (let rows = 1; rows <= AQLM_GEMV_MAX_ROWS; rows++) check(weight, rows, rows % 3 === 0);
      for (const rows of [AQLM_GEMV_MAX_ROWS + 1, 40]) check(weight, rows, rows === 40);
    }
  }
});

test('AQLM linear on random shapes: input widths the GEMV does not take (not a multiple of 64) dequantize instead; many blocks, parts ending inside a block', () => {
  for (let i = 0; i < 24; i++) {
    const format = pick(rng, FORMATS);
    const cols = 8 * randInt(rng, 1, 96);
    const parts = Array.from({ length: randInt(rng, 1, 3) }, () => randInt(rng, 1, 700));
    check(randomAqlmWeight(format, parts, cols, rng, 65536).w, randInt(rng, 1, 12), rng() < 0.3);
  }
});

test('gatedLinear with an AQLM gate/up weight (two parts, two codebook sets) matches the CPU', () => {
  for (const format of FORMATS) {
    for (const xRows of [1, 5, 40]) {
      const n = 8 * randInt(rng, 1, 64);
      const cols = 128 * randInt(rng, 1, 4);
      const w = both(randomAqlmWeight(format, [n, n], cols, rng, 65536).w);
      const x = input(xRows, cols);
      const act = { kind: 'silu' } as const;
      const err = relativeError(gpu.toHost(gpu.gatedLinear(x.gpu, w.gpu, act)), cpu.toHost(cpu.gatedLinear(x.cpu, w.cpu, act)));
      assert.ok(err < TOLERANCE, `gatedLinear ${format} [${2 * n}] x ${xRows}: relative error ${err}`);
    }
  }
});

test('an AQLM weight of more stacked parts than the kernels take is refused at load', () => {
  assert.throws(() => gpu.loadQuantizedWeight(randomAqlmWeight('aqlm-2x8', [8, 8, 8, 8, 8], 64, rng).w), /5 stacked parts, each with its own codebooks: the CUDA kernels take at most 4/);
});
