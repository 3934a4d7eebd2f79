import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { CudaTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// cuBLASLt's bf16 candidates (what `keel bench linear` times as cublaslt-first and cublaslt-best)
// each give cuBLAS's product: a candidate that computed something else would make those figures lie.

const rng = seededRng(testSeed('cuda cublas-lt'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
after(() => gpu.dispose());

test('every bf16 candidate of the heuristic gives the product cuBLAS gives', () => {
  for (const rows of [16, 64, randInt(rng, 9, 300)]) {
    const n = 8 * randInt(rng, 16, 600);
    const k = 8 * randInt(rng, 16, 600);
    const x = gpu.loadWeight(bf16Tensor([rows, k], randomBf16Values(rng, rows * k, 1))) as CudaTensor;
    const w = gpu.loadWeight(bf16Tensor([n, k], randomBf16Values(rng, n * k, 0.05))) as CudaTensor;
    const reference = gpu.device.alloc(2 * rows * n);
    const y = gpu.device.alloc(2 * rows * n);
    gpu.device.cublas.linearBf16(reference, x.ptr, w.ptr, rows, n, k);
    const download = (ptr: number) => gpu.toHost(new CudaTensor([rows, n], ptr, 'bf16'));
    const expected = download(reference);
    const count = gpu.device.cublasLt.bf16Candidates(rows, n, k);
    assert.ok(count > 0, `no candidate for [${rows}, ${k}] · [${n}, ${k}]ᵀ`);
    for (let i = 0; i < count; i++) {
      gpu.device.cublasLt.bf16(y, x.ptr, w.ptr, rows, n, k, i);
      const err = relativeError(download(y), expected);
      assert.ok(err < 1e-2, `candidate ${i} of ${count} at [${rows}, ${k}] · [${n}, ${k}]ᵀ: relative error ${err}`);
    }
    gpu.device.free(reference);
    gpu.device.free(y);
  }
});

test('with tuned bf16 GEMMs the backend linear gives the product cuBLAS gives, first call and later', () => {
  const tuned = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, bf16Gemm: 'tuned' });
  try {
    for (const rows of [9, 64, 256]) {
      const n = 8 * randInt(rng, 64, 800);
      const k = 8 * randInt(rng, 64, 800);
      const xValues = bf16Tensor([rows, k], randomBf16Values(rng, rows * k, 1));
      const wValues = bf16Tensor([n, k], randomBf16Values(rng, n * k, 0.05));
      const expected = gpu.toHost(gpu.linear(gpu.loadWeight(xValues), gpu.loadWeight(wValues), null));
      const x = tuned.loadWeight(xValues);
      const w = tuned.loadWeight(wValues);
      for (let pass = 0; pass < 2; pass++) {
        const err = relativeError(tuned.toHost(tuned.linear(x, w, null)), expected);
        assert.ok(err < 1e-2, `[${rows}, ${k}] · [${n}, ${k}]ᵀ, pass ${pass}: relative error ${err}`);
      }
    }
  } finally {
    tuned.dispose();
  }
});
