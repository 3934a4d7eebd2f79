import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { QUANTIZED_GEMV_MAX_ROWS, quantizedGemvSplits } from '../../../src/backend/cuda/kernels/quantized-linear.ts';
import { QUANTIZED_GEMM_MAX_ROWS, quantizedGemmSplits } from '../../../src/backend/cuda/kernels/quantized-gemm.ts';
import { quantizedPath } from '../../../src/backend/cuda/kernels/quantized-path.ts';
import { CudaQuantizedTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { quantizeRoundToNearest } from '../../../src/tensor/quantize-rtn.ts';
import {
  describeQuantized,
  emptyQuantizedWeight,
  fillInt4Padding,
  fp8E4m3Values,
  hasZeroPoint,
  isFourBit,
  maxCode,
  numGroups,
  putCode,
  type AqlmFormat,
  type QuantizedFormat,
  type QuantizedWeight,
} from '../../../src/tensor/quantized-weight.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The CUDA quantized linear (GEMV for decode rows, the tensor-core GEMM for batches up to
// QUANTIZED_GEMM_MAX_ROWS, dequantize + cuBLAS beyond) against the CPU backend's, which equals
// multiplying by the dequantized weight. bf16 outputs get 1e-2.

const rng = seededRng(testSeed('cuda quantized linear'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const FORMATS: Exclude<QuantizedFormat, AqlmFormat>[] = ['int4', 'int8', 'fp8-e4m3', 'nf4', 'fp4'];

interface Case {
  format: QuantizedFormat;
  rows: number;
  cols: number;
  groupSize: number;
  asymmetric: boolean;
  actOrder: boolean;
}

/** Random codes, scales, zeros and permutation: every field a checkpoint can set. */
function randomWeight(c: Case): QuantizedWeight {
  const w = emptyQuantizedWeight(c.format, c.rows, c.cols, c.groupSize, c.asymmetric);
  const fp8 = fp8E4m3Values();
  for (let r = 0; r < c.rows; r++) {
    for (let k = 0; k < c.cols; k++) {
      let code = randInt(rng, 0, c.format === 'fp8-e4m3' ? 255 : maxCode(c.format));
      while (c.format === 'fp8-e4m3' && Number.isNaN(fp8[code])) code = randInt(rng, 0, 255);
      putCode(w, r, k, code);
    }
  }
  const scale = c.format === 'fp8-e4m3' ? 0.01 : c.format === 'int4' ? 0.02 : c.format === 'int8' ? 0.002 : 0.1;
  for (let i = 0; i < w.scales.length; i++) w.scales[i] = scale * (0.5 + rng());
  if (w.zeros) for (let i = 0; i < w.zeros.length; i++) w.zeros[i] = randInt(rng, 0, maxCode(c.format));
  fillInt4Padding(w);
  if (c.actOrder) {
    const perm = Int32Array.from({ length: c.cols }, (_, i) => i);
    for (let i = c.cols - 1; i > 0; i--) {
      const j = randInt(rng, 0, i);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    w.perm = perm;
  }
  return w;
}

function both(w: QuantizedWeight): { cpu: Tensor; gpu: Tensor } {
  return { cpu: cpu.loadQuantizedWeight(w), gpu: gpu.loadQuantizedWeight(w) };
}

function input(rows: number, cols: number): { cpu: Tensor; gpu: Tensor } {
  const t = bf16Tensor([rows, cols], randomBf16Values(rng, rows * cols, 1));
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

function check(what: string, weight: QuantizedWeight, xRows: number, withBias: boolean): void {
  const w = both(weight);
  const x = input(xRows, weight.cols);
  const biasValues = withBias ? bf16Tensor([weight.rows], randomBf16Values(rng, weight.rows, 1)) : null;
  const flatBias = biasValues && { cpu: cpu.loadWeight(biasValues), gpu: gpu.loadWeight(biasValues) };
  const label = `${what} ${describeQuantized(weight)} x ${xRows} rows${withBias ? ' + bias' : ''}`;
  const err = relativeError(gpu.toHost(gpu.linear(x.gpu, w.gpu, flatBias?.gpu ?? null)), cpu.toHost(cpu.linear(x.cpu, w.cpu, flatBias?.cpu ?? null)));
  assert.ok(err < TOLERANCE, `${label}: relative error ${err}`);
}

test('the quantized GEMV matches the CPU on decode batches: every format, group layout, zeros and act-order', () => {
  for (const format of FORMATS) {
    const chunk = isFourBit(format) ? 32 : 16;
    for (let trial = 0; trial < 12; trial++) {
      const cols = chunk * randInt(rng, 1, 200);
      const groupSize = pick(rng, [cols, chunk, 4 * chunk, 128].filter((g) => g <= cols && (g % chunk === 0 || g === cols)));
      const c = { format, rows: randInt(rng, 1, 700), cols, groupSize, asymmetric: hasZeroPoint(format) && rng() < 0.5, actOrder: rng() < 0.3 };
      for (let xRows = 1; xRows <= QUANTIZED_GEMV_MAX_ROWS; xRows += randInt(rng, 1, 3)) check('GEMV', randomWeight(c), xRows, rng() < 0.3);
    }
  }
});

test('the GEMV with its columns split over the grid (few output rows, long rows) matches the CPU, and a partial last warp of rows too', () => {
  for (const format of FORMATS) {
    const chunk = isFourBit(format) ? 32 : 16;
    for (const [rows, cols] of [[6, 14336], [61, 8192], [130, 4096 + chunk]]) {
      const c = { format, rows, cols, groupSize: pick(rng, [cols, 128]), asymmetric: hasZeroPoint(format) && rng() < 0.5, actOrder: rng() < 0.3 };
      const weight = randomWeight(c);
      const splits = quantizedGemvSplits(gpu.loadQuantizedWeight(weight) as CudaQuantizedTensor, 132);
      assert.ok(splits > 1, `[${rows}, ${cols}] ${format} is split (${splits})`);
      for (const xRows of [1, 4, QUANTIZED_GEMV_MAX_ROWS]) check('split GEMV', weight, xRows, rng() < 0.5);
    }
  }
});

test('the tensor-core int4 GEMV (KEEL_INT4_GEMV=tensor-cores) matches the CPU: groups of 128 or whole rows, zeros, act-order, partial row tiles, split steps', () => {
  const mma = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, int4Gemv: 'tensor-cores' });
  try {
    const cases: Case[] = [];
    for (let trial = 0; trial < 14; trial++) {
      const cols = 128 * randInt(rng, 1, 60);
      cases.push({ format: 'int4', rows: randInt(rng, 1, 700), cols, groupSize: pick(rng, [cols, 128, 256].filter((g) => g <= cols && cols % g === 0)), asymmetric: rng() < 0.5, actOrder: rng() < 0.3 });
    }
    // Few output rows over long ones: the steps split over the grid.
    for (const [rows, cols] of [[6, 14336], [61, 8192], [100, 4096]]) cases.push({ format: 'int4', rows, cols, groupSize: 128, asymmetric: rng() < 0.5, actOrder: false });
    for (const c of cases) {
      const weight = randomWeight(c);
      const w = { cpu: cpu.loadQuantizedWeight(weight), gpu: mma.loadQuantizedWeight(weight) };
      assert.equal(quantizedPath(w.gpu as CudaQuantizedTensor, 1, mma.int4Gemv), 'gemv-mma', `${describeQuantized(weight)} takes the tensor-core GEMV`);
      for (const xRows of [1, randInt(rng, 2, 7), QUANTIZED_GEMV_MAX_ROWS]) {
        const t = bf16Tensor([xRows, c.cols], randomBf16Values(rng, xRows * c.cols, 1));
        const biasValues = rng() < 0.3 ? bf16Tensor([c.rows], randomBf16Values(rng, c.rows, 1)) : null;
        const got = mma.toHost(mma.linear(mma.loadWeight(t), w.gpu, biasValues && mma.loadWeight(biasValues)));
        const want = cpu.toHost(cpu.linear(cpu.loadWeight(t), w.cpu, biasValues && cpu.loadWeight(biasValues)));
        const err = relativeError(got, want);
        assert.ok(err < TOLERANCE, `tensor-core GEMV ${describeQuantized(weight)} x ${xRows} rows: relative error ${err}`);
      }
    }
    // GGUF's groups of 32 with mins, and other formats, stay on the CUDA-core GEMV.
    const q4k = randomWeight({ format: 'int4', rows: 64, cols: 256, groupSize: 32, asymmetric: true, actOrder: false });
    assert.equal(quantizedPath(mma.loadQuantizedWeight(q4k) as CudaQuantizedTensor, 1, mma.int4Gemv), 'gemv');
    const int8 = randomWeight({ format: 'int8', rows: 64, cols: 256, groupSize: 128, asymmetric: false, actOrder: false });
    assert.equal(quantizedPath(mma.loadQuantizedWeight(int8) as CudaQuantizedTensor, 1, mma.int4Gemv), 'gemv');
  } finally {
    mma.dispose();
  }
});

test('the tensor-core GEMM matches the CPU over random batches, shapes (ragged tiles, k tails), formats, groups, zeros and act-order', () => {
  for (const format of FORMATS) {
    const chunk = isFourBit(format) ? 32 : 16;
    for (let trial = 0; trial < 10; trial++) {
      const cols = chunk * randInt(rng, 1, 160);
      const groupSize = pick(rng, [cols, chunk, 4 * chunk, 128].filter((g) => g <= cols && (g % chunk === 0 || g === cols)));
      const c = { format, rows: randInt(rng, 1, 400), cols, groupSize, asymmetric: hasZeroPoint(format) && rng() < 0.5, actOrder: rng() < 0.3 };
      const weight = randomWeight(c);
      for (const xRows of [QUANTIZED_GEMV_MAX_ROWS + 1, randInt(rng, 17, 64), randInt(rng, 65, QUANTIZED_GEMM_MAX_ROWS), QUANTIZED_GEMM_MAX_ROWS]) {
        check('GEMM', weight, xRows, rng() < 0.3);
      }
    }
  }
});

test('the tensor-core GEMM with k split over the grid matches the CPU', () => {
  for (const format of FORMATS) {
    const [rows, cols] = [96, 8192];
    assert.ok(quantizedGemmSplits(Math.ceil(rows / 64), cols / 64, 132, 40) > 1, 'the shape is split');
    const weight = randomWeight({ format, rows, cols, groupSize: 128, asymmetric: hasZeroPoint(format), actOrder: false });
    for (const xRows of [9, 16, 40]) check('split GEMM', weight, xRows, true);
  }
});

test('prefill batches past the GEMM, and shapes the quantized kernels do not take, dequantize and match the CPU', () => {
  for (const format of FORMATS) {
    const cols = 256;
    check('dequantized', randomWeight({ format, rows: 200, cols, groupSize: 128, asymmetric: hasZeroPoint(format), actOrder: true }), QUANTIZED_GEMM_MAX_ROWS + 7, true);
  }
  for (const format of FORMATS) {
    for (let trial = 0; trial < 6; trial++) {
      const cols = randInt(rng, 1, 700);
      const c = { format, rows: randInt(rng, 1, 300), cols, groupSize: randInt(rng, 1, cols), asymmetric: hasZeroPoint(format) && rng() < 0.5, actOrder: rng() < 0.3 };
      check('dequantized', randomWeight(c), pick(rng, [1, 3, QUANTIZED_GEMV_MAX_ROWS + 1, 70]), rng() < 0.3);
    }
  }
});

test('int4 with a float min per group (GGUF Q4_K repacked: groups of 32, zeros 0) matches the CPU on the GEMV, split GEMV, GEMM, split GEMM and dequantize paths', () => {
  const withMins = (rows: number, cols: number): QuantizedWeight => {
    const w = randomWeight({ format: 'int4', rows, cols, groupSize: 32, asymmetric: true, actOrder: false });
    w.zeros!.fill(0);
    w.mins = Float32Array.from({ length: w.scales.length }, () => 0.15 * rng());
    return w;
  };
  for (let trial = 0; trial < 6; trial++) {
    const weight = withMins(randInt(rng, 1, 500), 32 * randInt(rng, 1, 160));
    for (const xRows of [1, 3, QUANTIZED_GEMV_MAX_ROWS, QUANTIZED_GEMV_MAX_ROWS + 1, 40, QUANTIZED_GEMM_MAX_ROWS, QUANTIZED_GEMM_MAX_ROWS + 5]) check('mins', weight, xRows, rng() < 0.3);
  }
  const long = withMins(61, 8192);
  for (const xRows of [1, 8, 16, 40]) check('mins, split', long, xRows, true);
});

test('gatedLinear with a quantized gate/up weight matches the CPU', () => {
  for (const format of FORMATS) {
    for (const xRows of [1, 5, 40]) {
      const n = 8 * randInt(rng, 1, 64);
      const cols = 128 * randInt(rng, 1, 8);
      const values = randomBf16Values(rng, 2 * n * cols, 0.1);
      const w = both(quantizeRoundToNearest(values, 2 * n, cols, format === 'fp8-e4m3' ? 'fp8' : format === 'fp4' ? 'nf4' : format));
      const x = input(xRows, cols);
      const act = { kind: 'silu' } as const;
      const err = relativeError(gpu.toHost(gpu.gatedLinear(x.gpu, w.gpu, act)), cpu.toHost(cpu.gatedLinear(x.cpu, w.cpu, act)));
      assert.ok(err < TOLERANCE, `gatedLinear ${format} [${2 * n}, ${cols}] x ${xRows}: relative error ${err}`);
    }
  }
});

test('round-to-nearest weights of every load-time format multiply as the CPU does', () => {
  for (const method of ['fp8', 'int8', 'int4', 'nf4'] as const) {
    const rows = randInt(rng, 1, 500);
    const cols = 128 * randInt(rng, 1, 12);
    const w = quantizeRoundToNearest(randomBf16Values(rng, rows * cols, 0.05), rows, cols, method);
    assert.equal(numGroups(w), method === 'int4' ? cols / 128 : method === 'nf4' ? cols / 64 : 1);
    for (const xRows of [1, 2, 16]) check(`RTN ${method}`, w, xRows, false);
  }
});
