import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { CudaQuantizedTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { marlinConfig } from '../../../src/backend/cuda/kernels/marlin-gemm.ts';
import { marlinLayoutOnHost } from '../../../src/backend/cuda/kernels/marlin-layout.ts';
import { MARLIN_MAX_ROWS, quantizedPath } from '../../../src/backend/cuda/kernels/quantized-path.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch } from '../../../src/step/batch.ts';
import { quantizeRoundToNearest } from '../../../src/tensor/quantize-rtn.ts';
import { describeQuantized, emptyQuantizedWeight, fp8E4m3Values, putCode, type QuantizedWeight } from '../../../src/tensor/quantized-weight.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The fragment-layout (Marlin-style) GEMM against the CPU backend, which multiplies by the
// dequantized weight in Keel's row layout: the device's re-layout byte for byte against its host
// twin, then x · Wᵀ at every batch size 1..256 (and the dequantize path past it) over random
// shapes, formats, groups, zeros and act-order. bf16 outputs get 1e-2, as the classic kernels.

const rng = seededRng(testSeed('cuda marlin gemm'));
const gpu = new CudaBackend({ arenaBytes: 256 * 1024 * 1024, marlin: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
/** Resets the step arena, so that hundreds of checks reuse its memory. */
const newStep = () => gpu.beginStep(describeBatch([{ tokens: [1], startPos: 0, blockTables: [[0]] }], 16));
const FORMATS = ['int4', 'int8', 'fp8-e4m3'] as const;
type Format = (typeof FORMATS)[number];

function randomWeight(format: Format, rows: number, cols: number, groupSize: number, asymmetric: boolean, actOrder: boolean): QuantizedWeight {
  const w = emptyQuantizedWeight(format, rows, cols, groupSize, asymmetric);
  const fp8 = fp8E4m3Values();
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      let code = randInt(rng, 0, format === 'int4' ? 15 : 255);
      while (format === 'fp8-e4m3' && Number.isNaN(fp8[code])) code = randInt(rng, 0, 255);
      putCode(w, r, k, code);
    }
  }
  const scale = format === 'fp8-e4m3' ? 0.01 : format === 'int4' ? 0.02 : 0.002;
  for (let i = 0; i < w.scales.length; i++) w.scales[i] = scale * (0.5 + rng());
  if (w.zeros) for (let i = 0; i < w.zeros.length; i++) w.zeros[i] = randInt(rng, 0, format === 'int4' ? 15 : 255);
  if (actOrder) {
    const perm = Int32Array.from({ length: cols }, (_, i) => i);
    for (let i = cols - 1; i > 0; i--) {
      const j = randInt(rng, 0, i);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    w.perm = perm;
  }
  return w;
}

function randomCase(format: Format, rows: number, cols: number): QuantizedWeight {
  const groupSize = pick(rng, [64, 128, cols].filter((g) => g <= cols && (cols % g === 0 || g === cols)));
  return randomWeight(format, rows, cols, groupSize, format !== 'fp8-e4m3' && rng() < 0.5, rng() < 0.3);
}

function loaded(w: QuantizedWeight): { cpu: Tensor; gpu: CudaQuantizedTensor } {
  const g = gpu.loadQuantizedWeight(w) as CudaQuantizedTensor;
  assert.equal(g.layout, 'marlin', `${describeQuantized(w)} loads in the fragment layout`);
  return { cpu: cpu.loadQuantizedWeight(w), gpu: g };
}

function check(w: QuantizedWeight, both: { cpu: Tensor; gpu: CudaQuantizedTensor }, xRows: number, withBias: boolean): void {
  const t = bf16Tensor([xRows, w.cols], randomBf16Values(rng, xRows * w.cols, 1));
  const bias = withBias ? bf16Tensor([w.rows], randomBf16Values(rng, w.rows, 1)) : null;
  newStep();
  const out = gpu.toHost(gpu.linear(gpu.loadWeight(t), both.gpu, bias && gpu.loadWeight(bias)));
  const ref = cpu.toHost(cpu.linear(cpu.loadWeight(t), both.cpu, bias && cpu.loadWeight(bias)));
  const err = relativeError(out, ref);
  const c = marlinConfig(w.rows, w.cols, xRows, gpu.device.info.multiprocessorCount, w.format, w.zeros !== null);
  const label = `${describeQuantized(w)} x ${xRows} rows${withBias ? ' + bias' : ''} (${quantizedPath(both.gpu, xRows)}, MT ${c.mTiles} WK ${c.kWarps} grid ${c.grid.join('x')})`;
  assert.ok(err < TOLERANCE, `${label}: relative error ${err}`);
}

test('the device re-lays codes, scales and zeros exactly as the host twin does', () => {
  for (const format of FORMATS) {
    for (let trial = 0; trial < 4; trial++) {
      const w = randomCase(format, 16 * randInt(rng, 1, 40), 64 * randInt(rng, 1, 24));
      const g = loaded(w).gpu;
      const host = marlinLayoutOnHost(w);
      const codes = new Uint8Array(host.codes.length);
      gpu.device.download(codes, g.codes);
      assert.deepEqual(codes, host.codes, `${describeQuantized(w)} codes`);
      const scales = new Float32Array(host.scales.length);
      gpu.device.download(scales, g.scales);
      assert.deepEqual(scales, host.scales, `${describeQuantized(w)} scales`);
      if (host.zeros !== null) {
        const zeros = new Uint8Array(host.zeros.length);
        gpu.device.download(zeros, g.zeros);
        assert.deepEqual(zeros, host.zeros, `${describeQuantized(w)} zeros`);
      }
    }
  }
});

test('every batch size from 1 to 256 rows matches the CPU', () => {
  for (const format of FORMATS) {
    const w = randomCase(format, 16 * randInt(rng, 2, 24), 64 * randInt(rng, 2, 12));
    const both = loaded(w);
    for (let xRows = 1; xRows <= MARLIN_MAX_ROWS; xRows++) check(w, both, xRows, rng() < 0.3);
  }
});

test('random shapes, groups, zeros and act-order match the CPU: every tile shape, k split over warps and over the grid', () => {
  for (const format of FORMATS) {
    for (let trial = 0; trial < 8; trial++) {
      const w = randomCase(format, 16 * randInt(rng, 1, 300), 64 * randInt(rng, 1, 80));
      const both = loaded(w);
      for (const xRows of [1, randInt(rng, 2, 16), randInt(rng, 17, 32), randInt(rng, 33, 64), randInt(rng, 65, MARLIN_MAX_ROWS)]) check(w, both, xRows, rng() < 0.3);
    }
    // Few output rows over long rows (o_proj, down_proj of a small model): k split over the grid.
    for (const [rows, cols] of [[64, 14336], [256, 8192], [4096, 1024]]) {
      const w = randomCase(format, rows, cols);
      const both = loaded(w);
      for (const xRows of [1, 7, 16, 40, 100]) check(w, both, xRows, true);
    }
  }
});

test('batches past the fragment-layout GEMM dequantize it back, act-order included, and match the CPU', () => {
  for (const format of FORMATS) {
    const w = randomWeight(format, 208, 320, 64, format !== 'fp8-e4m3', true);
    const both = loaded(w);
    assert.equal(quantizedPath(both.gpu, MARLIN_MAX_ROWS + 5), 'dequantize');
    check(w, both, MARLIN_MAX_ROWS + 5, true);
  }
});

test('round-to-nearest weights (as --quantization makes them) and a gate/up weight multiply as the CPU does', () => {
  for (const method of ['fp8', 'int8', 'int4'] as const) {
    const rows = 16 * randInt(rng, 1, 64);
    const cols = 128 * randInt(rng, 1, 12);
    const w = quantizeRoundToNearest(randomBf16Values(rng, rows * cols, 0.05), rows, cols, method);
    const both = loaded(w);
    for (const xRows of [1, 3, 16, 100]) check(w, both, xRows, false);
    const act = { kind: 'silu' } as const;
    for (const xRows of [1, 20]) {
      const x = bf16Tensor([xRows, cols], randomBf16Values(rng, xRows * cols, 1));
      newStep();
      const err = relativeError(gpu.toHost(gpu.gatedLinear(gpu.loadWeight(x), both.gpu, act)), cpu.toHost(cpu.gatedLinear(cpu.loadWeight(x), both.cpu, act)));
      assert.ok(err < TOLERANCE, `gatedLinear ${method} [${rows}, ${cols}] x ${xRows}: relative error ${err}`);
    }
  }
});
