// The quantized linear layer against bf16 on the GPU host, on Llama-3.1-8B's projection shapes:
//
//   source .gpu/env.sh && node scripts/bench-quantized-linear.ts [--rows 1,2,4,8,16,32,64,128] [--json]
//
// For each weight shape, format (bf16, fp8, int8, int4 round-to-nearest) and batch rows, times
// the backend's `linear` (median of 30 runs after warm-up) and prints microseconds, the weight
// bytes read per microsecond (GB/s), and the speed-up over bf16 at the same rows. Random weights:
// the kernels' speed does not depend on the values.
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { Tensor } from '../src/backend/backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../src/bench/synthetic-batch.ts';
import { describeBatch } from '../src/step/batch.ts';
import { quantizeRoundToNearest } from '../src/tensor/quantize-rtn.ts';
import { numGroups, rowBytes } from '../src/tensor/quantized-weight.ts';

const { values } = parseArgs({ options: { rows: { type: 'string' }, json: { type: 'boolean' } } });
const batchRows = (values.rows ?? '1,2,4,8,16,32,64,128').split(',').map(Number);
const SHAPES: [string, number, number][] = [
  ['qkv', 6144, 4096],
  ['o', 4096, 4096],
  ['gate_up', 28672, 4096],
  ['down', 4096, 14336],
];
const FORMATS = ['bf16', 'fp8', 'int8', 'int4'] as const;

const backend = new CudaBackend({ arenaBytes: 256 * 1024 * 1024 });
const rng = seededRng(1);
const resetArena = () => backend.beginStep(describeBatch([{ tokens: [1], startPos: 0, blockTable: [0] }], 16));

for (const [name, n, k] of SHAPES) {
  const values16 = randomBf16Values(rng, n * k, 0.02);
  const weights = new Map<string, { tensor: Tensor; bytes: number }>();
  for (const format of FORMATS) {
    if (format === 'bf16') {
      weights.set(format, { tensor: backend.loadWeight(bf16Tensor([n, k], values16)), bytes: 2 * n * k });
      continue;
    }
    const q = quantizeRoundToNearest(values16, n, k, format);
    const bytes = n * rowBytes(q.format, k) + 4 * n * numGroups(q) + (q.zeros ? n * numGroups(q) : 0);
    weights.set(format, { tensor: backend.loadQuantizedWeight(q), bytes });
  }
  for (const rows of batchRows) {
    const x = backend.loadWeight(bf16Tensor([rows, k], randomBf16Values(rng, rows * k, 1)));
    let bf16Us = 0;
    for (const format of FORMATS) {
      const { tensor, bytes } = weights.get(format)!;
      const times: number[] = [];
      for (let i = 0; i < 35; i++) {
        resetArena();
        times.push(backend.device.timeMs(() => backend.linear(x, tensor, null)));
      }
      const us = 1000 * times.slice(5).sort((a, b) => a - b)[15];
      if (format === 'bf16') bf16Us = us;
      const row = { shape: name, n, k, rows, format, us: Number(us.toFixed(2)), gbPerS: Number((bytes / us / 1000).toFixed(0)), speedupOverBf16: Number((bf16Us / us).toFixed(2)) };
      console.log(values.json ? JSON.stringify(row) : `${name.padEnd(8)} [${n}, ${k}] M=${String(rows).padEnd(4)} ${format.padEnd(5)} ${row.us.toFixed(1).padStart(8)} us ${String(row.gbPerS).padStart(6)} GB/s  ×${row.speedupOverBf16}`);
    }
  }
}
backend.dispose();
