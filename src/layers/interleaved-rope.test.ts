import assert from 'node:assert/strict';
import { test } from 'node:test';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { prune24 } from '../tensor/prune24.ts';
import { quantizeRoundToNearest } from '../tensor/quantize-rtn.ts';
import { dequantizeWeight, isQuantized, type LinearWeight } from '../tensor/quantized-weight.ts';
import { compressSparse24 } from '../tensor/sparse24.ts';
import { randomAqlmWeight } from '../../test/helpers/aqlm-weights.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import { interleavedRow, withPermutedElements, withPermutedRows } from './interleaved-rope.ts';
import type { WeightSource } from './parameters.ts';

const ROWS = 8;
const COLS = 32;
/** One head of 8 dims, its leading 4 rotating in interleaved pairs: rows 0, 2, 1, 3, then 4..7 in place. */
const row = (r: number) => (r < 4 ? interleavedRow(r, 4) : r);
const ORDER = [0, 2, 1, 3, 4, 5, 6, 7];

/** A checkpoint's matrix `name`, 16-bit through `read`, in the format `linear` gives through `readLinear`. */
function source(values: Float32Array, linear: (t: HostTensor) => LinearWeight): WeightSource {
  const t = float32Tensor(values, [ROWS, COLS]);
  return { read: () => t, readLinear: () => linear(t), readOptional: (name) => (name === 'k_scale' ? float32Tensor(Float32Array.of(0.5), [1]) : null) };
}

const rowsOf = (values: Float32Array, order: number[]) => Float32Array.from({ length: ROWS * COLS }, (_, i) => values[order[Math.floor(i / COLS)] * COLS + (i % COLS)]);

test('withPermutedRows moves the named rows of 16-bit and quantized weights alike, and leaves every other tensor to the source', () => {
  const random = new TestRandom(testSeed('interleaved-rope'));
  const values = random.floats(ROWS * COLS, 0.5);
  const plain = withPermutedRows(source(values, (t) => t), { q: row });
  assert.deepEqual(hostTensorToFloat32(plain.read('q')), rowsOf(values, ORDER));
  assert.deepEqual(hostTensorToFloat32(plain.readLinear!('q') as HostTensor), rowsOf(values, ORDER));
  assert.deepEqual(hostTensorToFloat32(plain.read('v')), values, 'a tensor not named reads as it is');
  assert.deepEqual(hostTensorToFloat32(plain.readOptional!('k_scale')!), Float32Array.of(0.5), "the source's optional tensors (an fp8 KV cache's scales) are still read");
  for (const method of ['int8', 'int4', 'fp8'] as const) {
    const quantized = quantizeRoundToNearest(values, ROWS, COLS, method);
    const moved = withPermutedRows(source(values, () => quantized), { q: row }).readLinear!('q');
    assert.ok(isQuantized(moved), `${method}: the rows move as codes`);
    assert.deepEqual(dequantizeWeight(moved), rowsOf(dequantizeWeight(quantized), ORDER), `${method}: codes, scales and zeros move with their rows`);
  }
});

test("withPermutedElements permutes a norm weight's elements and keeps the source's linear weights and optional tensors", () => {
  const random = new TestRandom(testSeed('interleaved-rope elements'));
  const values = random.floats(ROWS * COLS, 0.5);
  const quantized = quantizeRoundToNearest(values, ROWS, COLS, 'int8');
  const norm = float32Tensor(Float32Array.from({ length: ROWS }, (_, i) => i), [ROWS]);
  const base = source(values, () => quantized);
  const permuted = withPermutedElements({ ...base, read: (name) => (name === 'norm' ? norm : base.read(name)) }, { norm: row });
  assert.deepEqual(hostTensorToFloat32(permuted.read('norm')), Float32Array.from(ORDER));
  assert.equal(permuted.readLinear!('q'), quantized, 'a linear weight reads as the source holds it');
  assert.deepEqual(hostTensorToFloat32(permuted.readOptional!('k_scale')!), Float32Array.of(0.5));
});

test('withPermutedRows refuses, naming the tensor, the weights whose rows cannot move: AQLM (codebooks by row ranges) and 2:4 sparse', () => {
  const random = new TestRandom(testSeed('interleaved-rope refusals'));
  const values = random.floats(ROWS * COLS, 0.5);
  const aqlm = randomAqlmWeight('aqlm-2x8', [ROWS], COLS, () => random.uniform(0, 1)).w;
  assertInvalidModel(() => withPermutedRows(source(values, () => aqlm), { 'model.layers.0.self_attn.q_proj.weight': row }).readLinear!('model.layers.0.self_attn.q_proj.weight'), 'q_proj', 'codebooks');
  const sparse = compressSparse24(float32ToHostTensor(prune24(values, ROWS, COLS, null), 'bf16', [ROWS, COLS]), 'k_proj');
  assert.throws(() => withPermutedRows(source(values, () => sparse), { 'model.layers.0.self_attn.k_proj.weight': row }).readLinear!('model.layers.0.self_attn.k_proj.weight'), /k_proj\.weight: .*2:4 sparse/);
});
