import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { quantizeActivationsInt8 } from '../../../src/backend/cpu/ops/llm-int8-matmul.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { LLM_INT8_GEMV_MAX_ROWS } from '../../../src/backend/cuda/kernels/llm-int8.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { quantizeRoundToNearest } from '../../../src/tensor/quantize-rtn.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The CUDA LLM.int8() path (outlier columns, int8 activations, __dp4a GEMV up to 8 rows and tiled
// GEMM beyond) against the CPU twin on the same bf16 activations. Both quantize the activations
// alike, so only float rounding (and a rare activation rounded the other way at .5) differs.

const rng = seededRng(testSeed('cuda llm-int8'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;

function check(rows: number, cols: number, outRows: number, threshold: number, withBias: boolean): void {
  const w = quantizeRoundToNearest(randomBf16Values(rng, outRows * cols, 0.05), outRows, cols, 'llm-int8');
  w.mixedInt8 = { threshold };
  const values = randomBf16Values(rng, rows * cols, 2);
  // A few large activations in a few columns: outlier columns with small values in other rows.
  for (let i = 0; i < randInt(rng, 0, 5); i++) values[randInt(rng, 0, rows - 1) * cols + randInt(rng, 0, cols - 1)] = pick(rng, [-20, 9, 64]);
  const x = bf16Tensor([rows, cols], values);
  const bias = withBias ? bf16Tensor([outRows], randomBf16Values(rng, outRows, 1)) : null;
  const out = gpu.toHost(gpu.linear(gpu.loadWeight(x), gpu.loadQuantizedWeight(w), bias && gpu.loadWeight(bias)));
  const ref = cpu.toHost(cpu.linear(cpu.loadWeight(x), cpu.loadQuantizedWeight(w), bias && cpu.loadWeight(bias)));
  const outliers = quantizeActivationsInt8(cpu.toHost(cpu.loadWeight(x)), rows, cols, threshold).outliers.length;
  const err = relativeError(out, ref);
  assert.ok(err < TOLERANCE, `[${rows}, ${cols}] x [${outRows}, ${cols}]ᵀ, threshold ${threshold} (${outliers} outlier columns): relative error ${err}`);
}

test('LLM.int8() decode rows (the GEMV) match the CPU twin, with and without outlier columns', () => {
  for (let trial = 0; trial < 16; trial++) {
    const cols = 16 * randInt(rng, 1, 300);
    for (let rows = 1; rows <= LLM_INT8_GEMV_MAX_ROWS; rows += randInt(rng, 1, 3)) check(rows, cols, randInt(rng, 1, 600), pick(rng, [0, 6, 6, 1.5]), rng() < 0.3);
  }
});

test('LLM.int8() prefill rows (the tiled int8 GEMM) match the CPU twin, ragged tiles included', () => {
  for (let trial = 0; trial < 10; trial++) {
    check(pick(rng, [LLM_INT8_GEMV_MAX_ROWS + 1, 64, 65, 200]), 16 * randInt(rng, 1, 200), randInt(rng, 1, 300), pick(rng, [0, 6, 1.5]), rng() < 0.3);
  }
});

test('LLM.int8() prefill rows summed on the tensor cores (cuBLAS int8, then the epilogue) give the outputs of the dp4a GEMM', () => {
  const tensorCores = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, llmInt8Gemm: 'tensor-cores' });
  try {
    for (let trial = 0; trial < 9; trial++) {
      // The last: 80 MB of int32 sums, taken in two slices of rows.
      const rows = trial === 8 ? 1000 : pick(rng, [LLM_INT8_GEMV_MAX_ROWS + 1, 64, 200, 700]);
      const cols = trial === 8 ? 32 : 16 * randInt(rng, 1, 200);
      const outRows = trial === 8 ? 20000 : 4 * randInt(rng, 1, 300);
      const w = quantizeRoundToNearest(randomBf16Values(rng, outRows * cols, 0.05), outRows, cols, 'llm-int8');
      w.mixedInt8 = { threshold: pick(rng, [0, 6, 1.5]) };
      const values = randomBf16Values(rng, rows * cols, 2);
      for (let i = 0; i < randInt(rng, 0, 5); i++) values[randInt(rng, 0, rows - 1) * cols + randInt(rng, 0, cols - 1)] = pick(rng, [-20, 9, 64]);
      const x = bf16Tensor([rows, cols], values);
      const bias = rng() < 0.3 ? bf16Tensor([outRows], randomBf16Values(rng, outRows, 1)) : null;
      const got = tensorCores.toHost(tensorCores.linear(tensorCores.loadWeight(x), tensorCores.loadQuantizedWeight(w), bias && tensorCores.loadWeight(bias)));
      const dp4a = gpu.toHost(gpu.linear(gpu.loadWeight(x), gpu.loadQuantizedWeight(w), bias && gpu.loadWeight(bias)));
      // The same exact int32 sums and the same float epilogue: equal but for the compiler's contractions.
      const err = relativeError(got, dp4a);
      assert.ok(err < 1e-3, `[${rows}, ${cols}] x [${outRows}, ${cols}]ᵀ: relative difference ${err} from the dp4a GEMM`);
    }
  } finally {
    tensorCores.dispose();
  }
});

test('gatedLinear with an LLM.int8() gate/up weight matches the CPU twin', () => {
  for (const rows of [1, 5, 40]) {
    const n = 8 * randInt(rng, 1, 40);
    const cols = 64 * randInt(rng, 1, 8);
    const w = quantizeRoundToNearest(randomBf16Values(rng, 2 * n * cols, 0.05), 2 * n, cols, 'llm-int8');
    const x = bf16Tensor([rows, cols], randomBf16Values(rng, rows * cols, 8));
    const act = { kind: 'silu' } as const;
    const out = gpu.toHost(gpu.gatedLinear(gpu.loadWeight(x), gpu.loadQuantizedWeight(w), act));
    const ref = cpu.toHost(cpu.gatedLinear(cpu.loadWeight(x), cpu.loadQuantizedWeight(w), act));
    assert.ok(relativeError(out, ref) < TOLERANCE, `gatedLinear [${2 * n}, ${cols}] x ${rows}: relative error ${relativeError(out, ref)}`);
  }
});

test('an LLM.int8() weight whose input features are not a multiple of 16 is refused at load on CUDA', () => {
  const w = quantizeRoundToNearest(randomBf16Values(rng, 8 * 24, 0.05), 8, 24, 'llm-int8');
  assert.throws(() => gpu.loadQuantizedWeight(w), /LLM\.int8\(\) on CUDA needs input features in multiples of 16 \(got \[8, 24\]\)/);
});
