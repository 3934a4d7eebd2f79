import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CudaQuantizedTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { gemvMmaFits, gemvMmaSplits } from '../../../src/backend/cuda/kernels/gemv-mma.ts';
import { quantizedPath, takesW8a8 } from '../../../src/backend/cuda/kernels/quantized-path.ts';
import type { QuantizedFormat } from '../../../src/tensor/quantized-weight.ts';

// The CUDA backend's choice of quantized kernel, without a GPU: only shapes and formats matter here.

function weight(format: QuantizedFormat, rows: number, cols: number, groupSize: number, extra: { mins?: boolean; layout?: 'rows' | 'marlin' } = {}): CudaQuantizedTensor {
  const groups = Math.ceil(cols / groupSize);
  return new CudaQuantizedTensor({
    shape: [rows, cols],
    format,
    groupSize,
    groups,
    rowBytes: format === 'int4' ? cols / 2 : cols,
    codes: 1,
    scales: 1,
    zeros: 0,
    mins: extra.mins ? 1 : 0,
    perm: 0,
    mixedInt8Threshold: null,
    codebooks: 0,
    partEnds: [],
    layout: extra.layout ?? 'rows',
  });
}

test('the tensor-core GEMV takes int4 in 128-column steps and fp8 in 64-column ones, each inside a group, when chosen', () => {
  const int4 = weight('int4', 4096, 4096, 128);
  assert.deepEqual([1, 8, 9].map((rows) => quantizedPath(int4, rows, 'tensor-cores')), ['gemv-mma', 'gemv-mma', 'gemm']);
  assert.equal(quantizedPath(int4, 1, 'cuda-cores'), 'gemv', 'the CUDA-core GEMV when chosen');
  assert.equal(quantizedPath(weight('fp8-e4m3', 4096, 14336, 14336), 1, 'tensor-cores'), 'gemv-mma', 'fp8 per channel');
  assert.equal(quantizedPath(weight('fp8-e4m3', 4096, 4096, 128), 1, 'tensor-cores'), 'gemv-mma', 'fp8 in 128-column blocks');
  for (const [what, w] of [
    ['int4 in groups of 32 (GGUF Q4_K)', weight('int4', 4096, 4096, 32, { mins: true })],
    ['int4 with mins', weight('int4', 4096, 4096, 128, { mins: true })],
    ['int4 rows not of whole steps', weight('int4', 4096, 4096 + 32, 4096 + 32)],
    ['int4 in groups of 64', weight('int4', 4096, 4096, 64)],
    ['int8', weight('int8', 4096, 4096, 128)],
    ['nf4', weight('nf4', 4096, 4096, 64)],
  ] as const) {
    assert.equal(gemvMmaFits(w), false, what);
    assert.equal(quantizedPath(w, 1, 'tensor-cores'), 'gemv', what);
  }
  assert.equal(quantizedPath(weight('int4', 4096, 4096, 128, { layout: 'marlin' }), 1, 'tensor-cores'), 'marlin', 'the fragment layout keeps its GEMM');
});

test('auto, the default, puts fp8 on the tensor cores at every decode row count and int4 from two rows', () => {
  const int4 = weight('int4', 4096, 14336, 128);
  const fp8 = weight('fp8-e4m3', 4096, 14336, 14336);
  assert.deepEqual([1, 2, 8, 9].map((rows) => quantizedPath(int4, rows)), ['gemv', 'gemv-mma', 'gemv-mma', 'gemm']);
  assert.deepEqual([1, 2, 8, 9].map((rows) => quantizedPath(fp8, rows)), ['gemv-mma', 'gemv-mma', 'gemv-mma', 'gemm']);
  assert.deepEqual([1, 2].map((rows) => quantizedPath(weight('int4', 4096, 4096, 128, { mins: true }), rows)), ['gemv', 'gemv'], 'int4 with mins stays on the CUDA cores');
});

test('the tensor-core GEMV splits the steps of few output rows over the grid, at least a round of its block\'s warps each', () => {
  // 132 multiprocessors want 2,112 warps; a block is 16 rows of 8 warps, each part at least 16 steps.
  assert.equal(gemvMmaSplits(weight('int4', 28672, 4096, 128), 132), 1, 'gate_up fills the GPU by its rows');
  assert.equal(gemvMmaSplits(weight('int4', 6, 14336, 128), 132), 7, '112 steps of one block: 7 parts of 16');
  assert.equal(gemvMmaSplits(weight('int4', 100, 4096, 128), 132), 2, '32 steps: at most 2 parts');
  assert.equal(gemvMmaSplits(weight('int4', 64, 1024, 128), 132), 1, '8 steps cannot split');
  assert.equal(gemvMmaSplits(weight('fp8-e4m3', 1024, 4096, 4096), 132), 4, 'fp8: 64 steps of 64 columns, 512 warps want 5 parts, 4 fit');
});

test('W8A8 takes fp8 weights with one scale per row past the tensor-core GEMM, only when chosen', () => {
  const perChannel = weight('fp8-e4m3', 4096, 14336, 14336);
  assert.deepEqual([128, 129, 4096].map((rows) => takesW8a8(perChannel, rows, 'w8a8')), [false, true, true]);
  assert.equal(takesW8a8(perChannel, 4096, 'w8a16'), false, 'the weight-only path unless chosen');
  for (const [what, w] of [
    ['fp8 in 128-column blocks', weight('fp8-e4m3', 4096, 4096, 128)],
    ['int8', weight('int8', 4096, 4096, 4096)],
    ['fp8 rows not a multiple of 16', weight('fp8-e4m3', 4104, 4096, 4096)],
    ['fp8 in the fragment layout', weight('fp8-e4m3', 4096, 4096, 4096, { layout: 'marlin' })],
  ] as const) {
    assert.equal(takesW8a8(w, 4096, 'w8a8'), false, what);
  }
});
