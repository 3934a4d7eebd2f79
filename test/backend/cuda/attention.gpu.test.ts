import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { KvCache, Tensor } from '../../../src/backend/backend.ts';
import { attentionLayout, plainAttention } from '../../helpers/kv-layout.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';
import { continueSeqs, randomChunks, runScenario, type Scenario, TOLERANCE } from '../../helpers/attention-scenario.ts';

// RoPE + paged KV write and the attention kernels (split-KV decode on tensor and CUDA cores, tiled prefill) against the
// CPU backend: head dims, GQA ratios, block sizes, contexts that cross blocks and decode
// partitions, mixed decode/prefill batches, sliding windows, soft-capped scores, learned sinks and
// partial rotary dims, StreamingLLM's sinks and window. Step tensors are poisoned with NaN, so any output element a kernel fails to
// write fails the comparison.

const rng = seededRng(testSeed('cuda attention'));
// Tensor cores for every decode their shape limits allow (auto would leave larger grids on CUDA cores), the CUDA-core kernel in its own test below;
// prefill on prefill-attention.cu, which Hopper's default would leave for the wgmma kernel where that covers the layer
// (prefill-attention-wgmma.gpu.test.ts tests that one).
const gpu = new CudaBackend({ poisonStepTensors: true, decodeAttention: 'tensor-cores', prefillAttention: 'legacy' });
const cpu = new CpuBackend();
after(() => gpu.dispose());
const run = (s: Scenario): void => runScenario(s, gpu, cpu, rng);

for (const headDim of [64, 96, 128]) {
  test(`prefill chunks then a mixed decode/chunk step, head dim ${headDim}`, () => {
    for (let trial = 0; trial < 3; trial++) {
      const first = randomChunks(rng, randInt(rng, 1, 5), 200);
      const second = continueSeqs(rng, first, 150);
      run({
        name: `d${headDim} trial ${trial}`,
        headDim,
        numKvHeads: randInt(rng, 1, 2),
        group: pick(rng, [1, 2, 4, 8]),
        blockSize: pick(rng, [8, 16, 32]),
        window: rng() < 0.3 ? randInt(rng, 16, 120) : null,
        steps: [first, second],
        attend: [true, true],
      });
    }
  });
}

// This file's backend runs bf16 decodes on tensor cores (decode-attention-mma.cu) wherever its shape
// limits allow, so the other scenarios test it; decode-attention.cu keeps StreamingLLM, Quest, head
// dims 72 and 512 and KEEL_DECODE_ATTENTION=cuda-cores, and these
// run it on the cases the other kernel takes.
test('bf16 decodes on the CUDA-core kernel: mixed steps, long split decodes with a window, soft-capping and sinks', () => {
  gpu.decodeAttention = 'cuda-cores';
  try {
    for (const [headDim, group] of [[64, 1], [128, 8], [96, 4], [256, 2]] as const) {
      const first = randomChunks(rng, 3, 200);
      run({ name: `cuda cores d${headDim} g${group}`, headDim, numKvHeads: 2, group, blockSize: 16, window: null, steps: [first, continueSeqs(rng, first, 150)], attend: [true, true] });
    }
    const history = [4000, 2500, 37].map((n) => ({ cached: 0, query: n }));
    const decode = history.map((q) => ({ cached: q.query, query: 1 }));
    run({ name: 'cuda cores long decode, window 1500', headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, window: 1500, steps: [history, decode], attend: [false, true] });
    run({
      name: 'cuda cores long decode, softcap and sinks',
      headDim: 128,
      numKvHeads: 2,
      group: 4,
      blockSize: 16,
      window: null,
      steps: [history, decode],
      attend: [false, true],
      scale: 8 / 16,
      softcap: 10,
      sinks: randomBf16Values(rng, 8, 3),
    });
  } finally {
    gpu.decodeAttention = 'tensor-cores';
  }
});

// Qwen3's q/k norms: ropeAndCacheWrite norms, rotates and caches in one kernel (rope-norm-cache.cu)
// where the whole head rotates and its dim is a multiple of 64; elsewhere the norm runs first.
test('head norms before the rotation: fused (head dims 64 to 512), and norm first (head dim 96, a partial rotary dim, value norms, StreamingLLM)', () => {
  const scenario = (name: string, headDim: number, extra: Partial<Scenario>) => {
    const first = randomChunks(rng, 3, 150);
    run({ name, headDim, numKvHeads: 2, group: pick(rng, [1, 4, 8]), blockSize: 16, window: null, steps: [first, continueSeqs(rng, first, 100)], attend: [true, true], headNorm: { values: false }, ...extra });
  };
  for (const headDim of [64, 128, 256, 512]) scenario(`fused head norm d${headDim}`, headDim, {});
  scenario('head norm d96', 96, {});
  scenario('head norm, rotary dim 64 of 128', 128, { rotaryDim: 64 });
  scenario('head norm with value norms d128', 128, { headNorm: { values: true } });
  scenario('head norm with StreamingLLM', 64, { streaming: { sinks: 4, window: 60 } });
});

test('head dims 72 and 256 (padded and largest tiles)', () => {
  for (const headDim of [72, 256]) {
    const first = randomChunks(rng, 3, 150);
    run({
      name: `d${headDim}`,
      headDim,
      numKvHeads: 2,
      group: 2,
      blockSize: 16,
      window: null,
      steps: [first, continueSeqs(rng, first, 100)],
      attend: [true, true],
    });
  }
});

// Head dims over 256 split each head across a pair of warps in prefill (32-row CTAs, half a planned
// tile each, so short chunks leave the second half empty) and fill the decode CTA's largest tiles.
test('head dim 512 (Gemma 4\'s full layers) and 264 (a split head with padded slices): prefill chunks, then a mixed decode/chunk step', () => {
  for (const [headDim, trials] of [[512, 4], [264, 1]] as const) {
    for (let trial = 0; trial < trials; trial++) {
      const first = randomChunks(rng, randInt(rng, 1, 4), 150);
      run({
        name: `d${headDim} trial ${trial}`,
        headDim,
        numKvHeads: randInt(rng, 1, 2),
        group: pick(rng, [1, 2, 8]),
        blockSize: pick(rng, [8, 16, 32]),
        window: rng() < 0.3 ? randInt(rng, 16, 120) : null,
        steps: [first, continueSeqs(rng, first, 100)],
        attend: [true, true],
      });
    }
  }
});

test('head dim 512: soft-capped scores and learned sinks in prefill and long split decodes, GQA 8, with and without a window', () => {
  for (const window of [null, 500]) {
    const history = [1500, 600, 33].map((n) => ({ cached: 0, query: n }));
    const mixed = [{ cached: 1500, query: 1 }, { cached: 600, query: 70 }, { cached: 33, query: 1 }];
    run({
      name: `d512 softcap sinks window ${window}`,
      headDim: 512,
      numKvHeads: 1,
      group: 8,
      blockSize: 16,
      window,
      steps: [history, mixed, mixed.map((q) => ({ cached: q.cached + q.query, query: 1 }))],
      attend: [true, true, true],
      scale: 8 * 512 ** -0.5,
      softcap: 30,
      sinks: randomBf16Values(rng, 8, 3),
    });
  }
});

test('head dim 512 with a rotary dim of 128 (Gemma 4\'s partial RoPE) and with StreamingLLM\'s sinks and window', () => {
  const first = randomChunks(rng, 3, 200);
  run({
    name: 'd512 rotary 128',
    headDim: 512,
    numKvHeads: 2,
    group: 2,
    blockSize: 16,
    window: null,
    steps: [first, continueSeqs(rng, first, 80)],
    attend: [true, true],
    rotaryDim: 128,
  });
  const history = [1200, 300].map((n) => ({ cached: 0, query: n }));
  run({
    name: 'd512 streaming',
    headDim: 512,
    numKvHeads: 1,
    group: 4,
    blockSize: 16,
    window: null,
    steps: [history, [{ cached: 1200, query: 1 }, { cached: 300, query: 90 }]],
    attend: [true, true],
    streaming: { sinks: 4, window: 200 },
  });
});

test('long-context decode split over many partitions, with and without a sliding window', () => {
  for (const window of [null, 1500]) {
    const history = [4000, 2500, 1000, 37].map((n) => ({ cached: 0, query: n }));
    run({
      name: `long decode window ${window}`,
      headDim: 128,
      numKvHeads: 2,
      group: 4,
      blockSize: 16,
      window,
      steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))],
      attend: [false, true],
    });
  }
});

test('many decodes in one step (a single partition per sequence)', () => {
  const history = Array.from({ length: 96 }, () => ({ cached: 0, query: randInt(rng, 1, 400) }));
  run({
    name: 'wide decode',
    headDim: 128,
    numKvHeads: 8,
    group: 4,
    blockSize: 16,
    window: null,
    steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))],
    attend: [false, true],
  });
});

test('a long chunk after cached context, with a sliding window inside the chunk', () => {
  run({
    name: 'windowed chunk',
    headDim: 64,
    numKvHeads: 1,
    group: 2,
    blockSize: 16,
    window: 256,
    steps: [[{ cached: 0, query: 700 }], [{ cached: 700, query: 600 }]],
    attend: [false, true],
  });
});

test('soft-capped scores (Gemma 2) in prefill chunks and split decodes, head dims 256 and 128', () => {
  for (const [headDim, window] of [[256, 64], [128, null]] as const) {
    const first = randomChunks(rng, 3, 300);
    // Scaled up so that many scores reach the cap's bend: the cap must shape the softmax.
    run({
      name: `softcap d${headDim}`,
      headDim,
      numKvHeads: 2,
      group: 2,
      blockSize: 16,
      window,
      steps: [first, continueSeqs(rng, first, 100)],
      attend: [true, true],
      scale: 8 * headDim ** -0.5,
      softcap: pick(rng, [5, 20]),
    });
  }
  const history = [3000, 700, 40].map((n) => ({ cached: 0, query: n }));
  run({
    name: 'softcap long decode',
    headDim: 256,
    numKvHeads: 1,
    group: 4,
    blockSize: 16,
    window: null,
    steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))],
    attend: [false, true],
    scale: 8 / 16,
    softcap: 10,
  });
});

test('learned sinks (gpt-oss) join each head\'s denominator once: prefill, single and split decodes, sliding windows', () => {
  for (const [window, sinkScale] of [[null, 3], [128, 3], [null, 12]] as const) {
    const group = 4;
    const numKvHeads = 2;
    const sinks = randomBf16Values(rng, group * numKvHeads, sinkScale);
    const history = [3000, 600, 64, 3].map((n) => ({ cached: 0, query: n }));
    // Decodes beside chunks after cached context, then a decode of every sequence (the longest split over partitions).
    const mixed = [{ cached: 3000, query: 1 }, { cached: 600, query: 70 }, { cached: 64, query: 1 }, { cached: 3, query: 40 }];
    run({
      name: `sinks window ${window} scale ${sinkScale}`,
      headDim: 64,
      numKvHeads,
      group,
      blockSize: 16,
      window,
      steps: [history, mixed, mixed.map((q) => ({ cached: q.cached + q.query, query: 1 }))],
      attend: [false, true, true],
      sinks,
    });
  }
  const prompts = Array.from({ length: 40 }, () => ({ cached: 0, query: randInt(rng, 1, 300) }));
  run({
    name: 'sinks with softcap, fresh prompts then many decodes',
    headDim: 128,
    numKvHeads: 4,
    group: 2,
    blockSize: 32,
    window: null,
    steps: [prompts, prompts.map((q) => ({ cached: q.query, query: 1 }))],
    attend: [true, true],
    softcap: 20,
    sinks: randomBf16Values(rng, 8, 4),
  });
});

test('a rotary dim below the head dim rotates the leading dims and caches the rest as they are; tokens read their rotary rows', () => {
  for (const [headDim, rotaryDim] of [[16, 12], [128, 96], [96, 32]] as const) {
    const first = randomChunks(rng, 3, 120);
    run({
      name: `d${headDim} rotary ${rotaryDim}`,
      headDim,
      numKvHeads: 2,
      group: pick(rng, [1, 3]),
      blockSize: pick(rng, [4, 16]),
      window: null,
      steps: [first, continueSeqs(rng, first, 50)],
      attend: [true, true],
      rotaryDim,
      randomRotaryRows: true,
    });
  }
});

test('StreamingLLM: sink keys behind the window scored at cache positions, in prefill chunks, single and split decodes, beside sliding layers', () => {
  for (const [sinks, window, layerWindow] of [[4, 252, null], [4, 60, null], [1, 1000, null], [4, 100, 64], [4, 100, 300]] as const) {
    const history = [3000, 600, 64, 3].map((n) => ({ cached: 0, query: n }));
    const mixed = [{ cached: 3000, query: 1 }, { cached: 600, query: 130 }, { cached: 64, query: 1 }, { cached: 3, query: 300 }];
    run({
      name: `streaming sinks ${sinks} window ${window} layer window ${layerWindow}`,
      headDim: pick(rng, [64, 128]),
      numKvHeads: 2,
      group: pick(rng, [1, 3, 4]),
      blockSize: 16,
      window: layerWindow,
      steps: [history, mixed, mixed.map((q) => ({ cached: q.cached + q.query, query: 1 }))],
      attend: [true, true, true],
      streaming: { sinks, window },
    });
  }
  const first = randomChunks(rng, 3, 200);
  run({
    name: 'streaming with soft-capping, learned sinks and partial rotary',
    headDim: 128,
    numKvHeads: 2,
    group: 2,
    blockSize: 16,
    window: null,
    steps: [first, continueSeqs(rng, first, 100)],
    attend: [true, true],
    softcap: 20,
    sinks: randomBf16Values(rng, 4, 3),
    rotaryDim: 96,
    streaming: { sinks: 3, window: 50 },
  });
});

test('a decode step captured as a CUDA graph replays for the next tokens', () => {
  const headDim = 128;
  const shape = plainAttention({ numHeads: 8, numKvHeads: 2, headDim, scale: headDim ** -0.5, slidingWindow: null });
  const spec = attentionLayout({ numLayers: 1, numBlocks: 64, blockSize: 16, numKvHeads: 2, headDim });
  const caches: [KvCache, KvCache] = [cpu.createKvCache(spec), gpu.createKvCache(spec)];
  const table = ropeTables(1024, headDim);
  const rope: [Tensor, Tensor] = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
  const blocks = new BlockAssignment(rng, spec.numBlocks, 3);
  const width = (shape.numHeads + 2 * shape.numKvHeads) * headDim;
  const hidden = 256;
  const wHost = bf16Tensor([width, hidden], randomBf16Values(rng, width * hidden, 1 / 16));
  const w: [Tensor, Tensor] = [cpu.loadWeight(wHost), gpu.loadWeight(wHost)];

  // Fill 300 tokens of history for three sequences; then decode steps at growing positions.
  const history = [{ cached: 0, query: 300 }, { cached: 0, query: 200 }, { cached: 0, query: 250 }];
  const decodeStep = (n: number) => history.map((q) => ({ cached: q.query + n, query: 1 }));
  const embedHost = bf16Tensor([750, hidden], randomBf16Values(rng, 750 * hidden, 1));
  const embed: [Tensor, Tensor] = [cpu.loadWeight(embedHost), gpu.loadWeight(embedHost)];
  const forward = (backend: CpuBackend | CudaBackend, i: 0 | 1, step: ReturnType<CudaBackend['beginStep']>): Tensor => {
    const qkv = backend.linear(backend.embedding(embed[i], step, 1, 0), w[i], null);
    backend.ropeAndCacheWrite(qkv, rope[i], caches[i], 0, step, shape);
    return backend.attention(qkv, caches[i], 0, step, shape);
  };
  const fill = buildBatch(history, blocks, spec.blockSize);
  forward(cpu, 0, cpu.beginStep(fill));
  forward(gpu, 1, gpu.beginStep(fill));

  // Capture at the longest context the replays will see, so the decode split covers them all.
  // One eager run first: kernels must be compiled and loaded before capture (module loads are not
  // stream work). It writes position 303, which no replay reads.
  const capturedAt = buildBatch(decodeStep(3), blocks, spec.blockSize);
  forward(gpu, 1, gpu.beginStep(capturedAt));
  const captureStep = gpu.beginStep(capturedAt);
  const captured: { out?: Tensor } = {};
  const graph = gpu.captureGraph(() => {
    captured.out = forward(gpu, 1, captureStep);
  });
  try {
    for (let n = 0; n < 3; n++) {
      const batch = buildBatch(decodeStep(n), blocks, spec.blockSize);
      batch.tokenIds = Int32Array.from([n, n + 1, n + 2]);
      assert.equal(batch.maxBlocksPerSeq, capturedAt.maxBlocksPerSeq, 'replay needs the captured table width');
      const expected = cpu.toHost(forward(cpu, 0, cpu.beginStep(batch)));
      gpu.beginStep(batch);
      graph.replay();
      const err = relativeError(gpu.toHost(captured.out!), expected);
      assert.ok(err < TOLERANCE, `replay ${n}: relative error ${err}`);
    }
  } finally {
    graph.dispose();
  }
});
