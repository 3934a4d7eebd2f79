import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { QUANTIZED_GEMM_MAX_ROWS } from '../../../src/backend/cuda/kernels/quantized-gemm.ts';
import { ggmlType } from '../../../src/checkpoint/gguf/ggml-types.ts';
import { repackBlocks } from '../../../src/checkpoint/gguf/repack-blocks.ts';
import { bf16Tensor, bf16Value, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch } from '../../../src/step/batch.ts';
import { floatToBf16Bits, roundToBf16 } from '../../../src/tensor/host-dtype.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { quantizeQ4_0, quantizeQ4_K, quantizeQ6_K, quantizeQ8_0 } from '../../helpers/ggml-quantize.ts';
import { relativeError, testSeed } from '../../helpers/gpu-test-support.ts';
import { testDraw } from '../../helpers/sampling-draw.ts';

// A GGUF file's token embedding and LM head loaded as quantized tables (loadQuantizedWeight's
// `table`): the CUDA gather (embed_quantized_tokens_kernel) against the CPU twin, and the LM head's
// quantized linear, batches past the tensor-core GEMM's rows included (run in slices of rows: a
// table sizes no dequantize scratch, and this backend loads nothing else), against the CPU's.

const rng = seededRng(testSeed('cuda quantized embedding'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

// Vocabulary rows no multiple of any tile; 512 columns: whole K-quant super-blocks.
const [VOCAB, HIDDEN] = [300, 512];
const TYPES = [
  { name: 'Q8_0', id: 8, quantize: quantizeQ8_0 },
  { name: 'Q4_0', id: 2, quantize: quantizeQ4_0 },
  { name: 'Q4_K', id: 12, quantize: quantizeQ4_K },
  { name: 'Q6_K', id: 14, quantize: quantizeQ6_K },
];

/** A random [VOCAB, HIDDEN] matrix in `type`'s blocks, repacked as a GGUF file's vocabulary matrices load, on both backends. */
function tables(type: (typeof TYPES)[number]) {
  const values = Float32Array.from({ length: VOCAB * HIDDEN }, () => (rng() * 2 - 1) * 0.05);
  const w = repackBlocks(ggmlType(type.id)!, type.quantize(values), VOCAB, HIDDEN);
  return { gpu: gpu.loadQuantizedWeight(w, { table: true }), cpu: cpu.loadQuantizedWeight(w, { table: true }) };
}

const bf16 = (v: number) => bf16Value(floatToBf16Bits(v));

for (const type of TYPES) {
  test(`${type.name}: the quantized gather equals the CPU twin's rows, rounded to bf16 (ids outside the shard zero, a sampled id, scale 1 and √hidden)`, () => {
    const table = tables(type);
    // Both backends draw token 45 greedily (table row 5), which the second sequence's last token reads where it was drawn.
    const logits = new Float32Array(VOCAB).fill(-1);
    logits[45] = 9;
    for (const b of [gpu, cpu]) assert.deepEqual([...b.sampleRows(b.loadWeight(bf16Tensor([1, VOCAB], logits)), [testDraw({ temperature: 0 })]).read().tokenIds], [45]);
    const batch = describeBatch(
      [
        { tokens: [41, 0, 339, 299, 120], startPos: 0, blockTables: [[0]] },
        { tokens: [77, 1], startPos: 0, blockTables: [[1]], lastTokenSource: 0 },
      ],
      16,
    );
    for (const scale of [1, Math.sqrt(HIDDEN)]) {
      // firstRow 40: ids below 40 or from 340 on are another shard's (zero rows).
      const actual = gpu.toHost(gpu.embedding(table.gpu, gpu.beginStep(batch), scale, 40));
      // Each backend rounds the scale to its activation dtype (Backend.embedding): the CPU gets CUDA's bf16 one.
      const expected = cpu.toHost(cpu.embedding(table.cpu, cpu.beginStep(batch), roundToBf16(scale), 40));
      assert.equal(actual.length, 7 * HIDDEN);
      let worst = 0;
      expected.forEach((e, i) => (worst = Math.max(worst, Math.abs(actual[i] - bf16(e)) / Math.max(Math.abs(e), 1e-30))));
      // The same float32 value rounded once to bf16; a min subtracted in one fused step may round differently: one bf16 step at most.
      assert.ok(worst <= 2 ** -8, `scale ${scale}: worst relative difference ${worst}`);
      assert.ok(expected.subarray(HIDDEN, 2 * HIDDEN).every((v) => v === 0) && actual.subarray(HIDDEN, 2 * HIDDEN).every((v) => v === 0), 'id 0 is outside the shard');
    }
  });

  test(`${type.name}: the LM head over the quantized table matches the CPU's at decode, GEMM and sliced batch sizes`, () => {
    const table = tables(type);
    for (const rows of [1, 40, 2 * QUANTIZED_GEMM_MAX_ROWS + 44]) {
      const x = randomBf16Values(rng, rows * HIDDEN);
      const actual = gpu.toHost(gpu.linear(gpu.loadWeight(bf16Tensor([rows, HIDDEN], x)), table.gpu, null));
      const expected = cpu.toHost(cpu.linear(cpu.loadWeight(float32Tensor(x, [rows, HIDDEN])), table.cpu, null));
      const err = relativeError(actual, expected);
      assert.ok(err <= 1e-2, `${rows} rows: relative error ${err}`);
    }
  });
}
