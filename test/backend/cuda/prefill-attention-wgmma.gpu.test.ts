import { after, test } from 'node:test';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { pick, randInt, testSeed } from '../../helpers/gpu-test-support.ts';
import { continueSeqs, randomChunks, runScenario, type Scenario } from '../../helpers/attention-scenario.ts';

// The Hopper prefill kernel (prefill-attention-wgmma.cu) against the CPU backend. The backend is
// forced onto it (prefillAttention 'wgmma' throws rather than fall back), so every multi-token
// chunk here runs on it. The tests go from one CTA with one key tile (operand layouts and
// descriptors alone) through several tiles (the mbarrier ring) and partial tiles (padding rows,
// zero-filled keys) to paged context, GQA, windows, soft-capping and sinks: the first that fails
// says where to look. Skipped on GPUs other than Hopper. Over fp8, int8 and int4 caches the kernel
// runs in kv-cache-quantization.gpu.test.ts (head dims 64, 96, 128, 192 and 256, forced onto it there too).

const rng = seededRng(testSeed('cuda wgmma prefill attention'));
const gpu = new CudaBackend({ poisonStepTensors: true, prefillAttention: 'wgmma' });
const cpu = new CpuBackend();
after(() => gpu.dispose());
const skip = gpu.device.info.arch === 'sm_90a' ? false : `needs a Hopper GPU (sm_90a), not ${gpu.device.info.arch}`;
const run = (s: Scenario): void => runScenario(s, gpu, cpu, rng);

function oneChunk(name: string, headDim: number, cached: number, query: number, extra: Partial<Scenario> = {}): Scenario {
  const steps = cached > 0 ? [[{ cached: 0, query: cached }], [{ cached, query }]] : [[{ cached: 0, query }]];
  // The context's step only writes the cache (no attention), so a failure names the chunk under test.
  return { name, headDim, numKvHeads: 1, group: 1, blockSize: 16, window: null, steps, attend: steps.map((_, i) => i === steps.length - 1), ...extra };
}

test('one CTA, one key tile: 128 query rows over 128 keys, head dim 128', { skip }, () => {
  run(oneChunk('one tile', 128, 0, 128));
});

test('one CTA over several key tiles (the stage ring wraps), head dim 128', { skip }, () => {
  for (const query of [256, 512, 640]) run(oneChunk(`${query} rows`, 128, 0, query));
});

test('partial tiles: query and key counts that are not multiples of 128', { skip }, () => {
  for (const query of [2, 65, 127, 129, 300]) run(oneChunk(`${query} rows`, 128, 0, query));
});

test('a chunk after cached context (prefix hit, chunked prefill), GQA, block sizes 8 / 16 / 32', { skip }, () => {
  for (const blockSize of [8, 16, 32]) {
    run(oneChunk(`context bs${blockSize}`, 128, randInt(rng, 1, 900), randInt(rng, 2, 400), { blockSize, numKvHeads: 2, group: 4 }));
  }
});

test('head dims 64 and 256', { skip }, () => {
  for (const headDim of [64, 256]) {
    run(oneChunk(`d${headDim} one tile`, headDim, 0, 128));
    run(oneChunk(`d${headDim} context`, headDim, 333, 421, { numKvHeads: 2, group: 2 }));
  }
});

test('head dims padded in shared memory: 80 and 96 as 128, 192 as 256', { skip }, () => {
  for (const headDim of [80, 96, 192]) {
    run(oneChunk(`d${headDim} one tile`, headDim, 0, 128));
    run(oneChunk(`d${headDim} context`, headDim, 333, 421, { numKvHeads: 2, group: 2 }));
  }
  run(oneChunk('d96 softcap', 96, 200, 300, { scale: 8 * 96 ** -0.5, softcap: 20 }));
  run(oneChunk('d96 sinks', 96, 200, 300, { numKvHeads: 2, group: 2, sinks: randomBf16Values(rng, 4, 4) }));
});

test('sliding windows, inside one tile and across many', { skip }, () => {
  for (const window of [16, 100, 128, 300]) run(oneChunk(`window ${window}`, 128, 500, 700, { window, numKvHeads: 2, group: 2 }));
});

test('soft-capped scores and learned sinks', { skip }, () => {
  for (const headDim of [128, 256]) {
    run(oneChunk(`softcap d${headDim}`, headDim, 200, 300, { scale: 8 * headDim ** -0.5, softcap: 20 }));
    run(oneChunk(`sinks d${headDim}`, headDim, 200, 300, { numKvHeads: 2, group: 2, sinks: randomBf16Values(rng, 4, 4) }));
  }
});

test('random batches: several sequences, then a mixed decode/chunk step', { skip }, () => {
  for (let trial = 0; trial < 6; trial++) {
    const headDim = pick(rng, [64, 96, 128, 256]);
    const first = randomChunks(rng, randInt(rng, 1, 5), 600);
    run({
      name: `d${headDim} trial ${trial}`,
      headDim,
      numKvHeads: randInt(rng, 1, 2),
      group: pick(rng, [1, 2, 4, 8]),
      blockSize: pick(rng, [8, 16, 32]),
      window: rng() < 0.3 ? randInt(rng, 16, 300) : null,
      steps: [first, continueSeqs(rng, first, 400)],
      attend: [true, true],
    });
  }
});
