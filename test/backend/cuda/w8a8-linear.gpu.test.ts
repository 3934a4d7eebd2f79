import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { quantizeRowsE4m3, w8a8Matmul } from '../../../src/backend/cpu/ops/fp8-activations.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import type { CudaQuantizedTensor, CudaTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { launchQuantizeRowsE4m3 } from '../../../src/backend/cuda/kernels/fp8-activations.ts';
import { QUANTIZED_GEMM_MAX_ROWS } from '../../../src/backend/cuda/kernels/quantized-gemm.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { quantizeRoundToNearest } from '../../../src/tensor/quantize-rtn.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// W8A8 on CUDA (kernels/w8a8-linear.ts): the per-token activation codes against the CPU twin bit
// for bit, then whole products through cuBLASLt's FP8 GEMM against the twin's float64 sums.

const rng = seededRng(testSeed('cuda w8a8'));
const gpu = new CudaBackend({ arenaBytes: 256 * 1024 * 1024, fp8Gemm: 'w8a8' });
after(() => gpu.dispose());

test('the activation quantizer gives the CPU twin codes and scales, bit for bit', () => {
  for (let trial = 0; trial < 8; trial++) {
    const rows = randInt(rng, 1, 300);
    const cols = 8 * randInt(rng, 1, 2000);
    const values = randomBf16Values(rng, rows * cols, pick(rng, [0.01, 1, 40]));
    if (trial === 0) values.fill(0, 0, cols); // a row of zeros
    const x = gpu.loadWeight(bf16Tensor([rows, cols], values)) as CudaTensor;
    const codes = gpu.device.alloc(rows * cols);
    const scales = gpu.device.alloc(4 * rows);
    launchQuantizeRowsE4m3(gpu.device, codes, scales, x.ptr, rows, cols);
    const gotCodes = new Uint8Array(rows * cols);
    const gotScales = new Float32Array(rows);
    gpu.device.download(gotCodes, codes);
    gpu.device.download(gotScales, scales);
    gpu.device.free(codes);
    gpu.device.free(scales);
    const ref = quantizeRowsE4m3(values, rows, cols);
    assert.deepEqual(gotScales, ref.scales, `[${rows}, ${cols}] scales`);
    const first = gotCodes.findIndex((c, i) => c !== ref.codes[i]);
    assert.equal(first, -1, `[${rows}, ${cols}]: code ${first} is ${gotCodes[first]}, the twin's ${ref.codes[first]}`);
  }
});

test('cuBLASLt has an FP8 GEMM with per-row scales on this GPU (else W8A8 falls back to the weight-only path)', () => {
  assert.ok(gpu.device.cublasLt.fp8RowScaledFits(256, 4096, 4096), `no algorithm on ${gpu.device.info.name} (${gpu.device.info.arch})`);
});

test('prefill-sized products of per-channel fp8 weights run W8A8 and match the CPU twin', () => {
  for (let trial = 0; trial < 8; trial++) {
    const rows = pick(rng, [QUANTIZED_GEMM_MAX_ROWS + 1, 200, 512, randInt(rng, 129, 700)]);
    const cols = 16 * randInt(rng, 1, 160);
    const outRows = 16 * randInt(rng, 1, 120);
    const w = quantizeRoundToNearest(randomBf16Values(rng, outRows * cols, 0.05), outRows, cols, 'fp8');
    const values = randomBf16Values(rng, rows * cols, pick(rng, [0.5, 4]));
    const biasValues = trial % 2 === 0 ? randomBf16Values(rng, outRows, 1) : null;
    const weight = gpu.loadQuantizedWeight(w) as CudaQuantizedTensor;
    const out = gpu.toHost(gpu.linear(gpu.loadWeight(bf16Tensor([rows, cols], values)), weight, biasValues && gpu.loadWeight(bf16Tensor([outRows], biasValues))));
    const ref = new Float32Array(rows * outRows);
    w8a8Matmul(values, rows, w, biasValues, ref);
    const err = relativeError(out, ref);
    // bf16 output (2^-9) and float32 sums in cuBLASLt's order: the activation codes are the same.
    assert.ok(err < 5e-3, `[${rows}, ${cols}] x [${outRows}, ${cols}]ᵀ: relative error ${err}`);
  }
});
