import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { CudaSparse24Tensor } from '../src/backend/cuda/cuda-tensor.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import { prune24 } from '../src/tensor/prune24.ts';
import { pruneCheckpoint } from '../src/prune/prune-checkpoint.ts';
import { describeBatch } from '../src/step/batch.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { compressSparse24 } from '../src/tensor/sparse24.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

// The 2:4 path on CUDA (cuSPARSELt past the decode GEMV's rows) against the dense product of the
// pruned weights, and keel-tiny pruned 2:4 generating on CUDA as on the CPU backend.

const random = new TestRandom(testSeed('sparsity gpu'));
const backend = new CudaBackend({ device: 0, arenaBytes: 256 << 20 });
after(() => backend.dispose());

test('2:4 linear and gatedLinear on CUDA equal the dense product of the pruned weight (bf16 tolerance) at decode and prefill row counts', () => {
  for (const [n, k] of [[64, 64], [256, 128], [96, 512], [40, 64]]) {
    const w = float32ToHostTensor(prune24(random.floats(n * k, 0.5), n, k, null), 'bf16', [n, k]);
    const sparse = backend.loadSparseWeight(compressSparse24(w, `[${n}, ${k}]`)) as CudaSparse24Tensor;
    assert.equal(sparse.compressed === null, n % 32 !== 0, `[${n}, ${k}] runs on cuSPARSELt iff its dimensions are multiples of 32`);
    const weight = hostTensorToFloat32(w);
    const bias = float32ToHostTensor(random.floats(n, 1), 'bf16', [n]);
    for (const rows of [1, 8, 9, 16, 37, 256, 600]) {
      backend.beginStep(describeBatch([{ tokens: [1], startPos: 0, blockTables: [[0]] }], 16));
      const xHost = float32ToHostTensor(random.floats(rows * k, 2), 'bf16', [rows, k]);
      const x = backend.loadWeight(xHost);
      const xs = hostTensorToFloat32(xHost);
      const reference = new CpuBackend();
      const want = reference.toHost(reference.linear(reference.loadWeight(xHost), reference.loadWeight(w), reference.loadWeight(bias)));
      const got = backend.toHost(backend.linear(x, sparse, backend.loadWeight(bias)));
      assert.equal(got.length, rows * n);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < n; o++) {
          // fp32 accumulation, one bf16 rounding of the sum (2^-8 relative) and of the bias add.
          let magnitude = 0;
          for (let c = 0; c < k; c++) magnitude += Math.abs(xs[r * k + c] * weight[o * k + c]);
          const i = r * n + o;
          assert.ok(Math.abs(got[i] - want[i]) <= 2 ** -7 * (Math.abs(want[i]) + 1) + 1e-5 * magnitude, `[${n}, ${k}] rows ${rows}, (${r}, ${o}): ${got[i]} vs ${want[i]}`);
        }
      }
      if (n % 16 === 0) {
        const gated = backend.toHost(backend.gatedLinear(x, sparse, { kind: 'silu' }));
        const wantGated = reference.toHost(reference.gatedLinear(reference.loadWeight(xHost), reference.loadWeight(w), { kind: 'silu' }));
        gated.forEach((v, i) => assert.ok(Math.abs(v - wantGated[i]) <= 2 ** -6 * (Math.abs(wantGated[i]) + 1), `gated [${n}, ${k}] rows ${rows}, ${i}: ${v} vs ${wantGated[i]}`));
      }
    }
  }
});

test('keel-tiny pruned 2:4 generates greedily on CUDA (cuSPARSELt prefill) as on the CPU backend', async (t) => {
  const model = join(tempDir(t), 'keel-tiny-2of4');
  pruneCheckpoint({ model: DEFAULT_MODEL_DIR, method: 'magnitude', pattern: '2:4', samples: [], output: model });
  // Prompts past the GEMV's 8 rows, so that prefill runs on cuSPARSELt.
  const prompts = ['def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n', 'import os\nimport sys\n\ndef main(argv):\n    path = argv[1]\n'];
  const run = async (which: 'cpu' | 'cuda') => {
    const llm = await LLM.load({ model, backend: which, showProgress: false });
    try {
      return (await llm.generate(prompts, { temperature: 0, maxTokens: 16, ignoreEos: true })).map((o) => o.outputs[0].tokenIds);
    } finally {
      await llm.close();
    }
  };
  const [cpu, cuda] = [await run('cpu'), await run('cuda')];
  // bf16 activations on CUDA against float32 on the CPU: greedy paths may part at near-ties, late.
  cpu.forEach((tokens, i) => assert.deepEqual(cuda[i].slice(0, 8), tokens.slice(0, 8), `prompt ${i}: CUDA ${cuda[i].join(',')} vs CPU ${tokens.join(',')}`));
});
