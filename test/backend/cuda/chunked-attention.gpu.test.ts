import { after, test } from 'node:test';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { seededRng } from '../../../src/bench/synthetic-batch.ts';
import { randInt, testSeed } from '../../helpers/gpu-test-support.ts';
import { continueSeqs, randomChunks, runScenario, type Scenario } from '../../helpers/attention-scenario.ts';

// Llama 4's per-query attention options in the CUDA kernels (split-KV decode, the mma prefill and,
// on sm_90, the wgmma prefill) against the CPU backend: chunked attention (a query sees the keys
// of its chunk only) in prefill tiles whose rows straddle chunk boundaries and in decodes at and
// past a chunk's start, alone and under a sliding window; the query temperature of the NoPE
// layers, alone and with soft-capping. Step tensors are poisoned with NaN.

const rng = seededRng(testSeed('cuda chunked attention'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());
const run = (s: Scenario): void => runScenario(s, gpu, cpu, rng);

for (const headDim of [64, 128]) {
  test(`chunked attention, head dim ${headDim}: prefill chunks crossing chunk boundaries, then decodes and chunks after them`, () => {
    for (const attentionChunk of [16, 64, 200]) {
      const first = randomChunks(rng, randInt(rng, 2, 5), 400);
      run({
        name: `d${headDim} chunk ${attentionChunk}`,
        headDim,
        numKvHeads: 2,
        group: 4,
        blockSize: 16,
        window: null,
        steps: [first, continueSeqs(rng, first, 150)],
        attend: [true, true],
        attentionChunk,
      });
    }
  });
}

test('chunked attention under a sliding window, and long decodes split over partitions inside one chunk', () => {
  const first = randomChunks(rng, 3, 300);
  run({ name: 'chunk 48 window 20', headDim: 128, numKvHeads: 1, group: 8, blockSize: 16, window: 20, steps: [first, continueSeqs(rng, first, 100)], attend: [true, true], attentionChunk: 48 });
  // Decodes at the first position of a chunk (8192), one past it and deep inside it.
  const history = [8192, 8193, 12000, 37].map((n) => ({ cached: 0, query: n }));
  run({
    name: 'chunk 8192 long decode',
    headDim: 128,
    numKvHeads: 2,
    group: 4,
    blockSize: 16,
    window: null,
    steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))],
    attend: [false, true],
    attentionChunk: 8192,
  });
});

test('query temperature (Llama 4\'s NoPE layers, Ministral 3): each query scaled by its position\'s factor, in prefill and decodes, with and without a soft-cap', () => {
  for (const [softcap, positionOffset] of [[undefined, 1], [20, 1], [undefined, 0]] as const) {
    const first = randomChunks(rng, 4, 300);
    run({
      name: `temperature softcap ${softcap} offset ${positionOffset}`,
      headDim: 128,
      numKvHeads: 2,
      group: 4,
      blockSize: 16,
      window: null,
      steps: [first, continueSeqs(rng, first, 120)],
      attend: [true, true],
      queryTemperature: { floorScale: 8, attnScale: 0.1, positionOffset },
      ...(softcap !== undefined && { softcap, scale: 4 * 128 ** -0.5 }),
    });
  }
});

// The Hopper prefill kernel, forced (it throws rather than fall back): tile rows that straddle
// chunk boundaries mask per row, and the warps' unmasked fast path stays off for chunked layers.
const wgmma = new CudaBackend({ poisonStepTensors: true, prefillAttention: 'wgmma' });
after(() => wgmma.dispose());
const skip = wgmma.device.info.arch === 'sm_90a' ? false : `needs a Hopper GPU (sm_90a), not ${wgmma.device.info.arch}`;

test('chunked attention and query temperature in the wgmma prefill kernel (head dim 128)', { skip }, () => {
  for (const options of [{ attentionChunk: 48 }, { attentionChunk: 256 }, { queryTemperature: { floorScale: 8, attnScale: 0.1, positionOffset: 1 } }, { queryTemperature: { floorScale: 8, attnScale: 0.1, positionOffset: 0 } }]) {
    const first = [{ cached: 0, query: 700 }, { cached: 0, query: 130 }];
    runScenario(
      { name: `wgmma ${JSON.stringify(options)}`, headDim: 128, numKvHeads: 2, group: 2, blockSize: 16, window: null, steps: [first, continueSeqs(rng, first, 300)], attend: [true, true], ...options },
      wgmma,
      cpu,
      rng,
    );
  }
});
