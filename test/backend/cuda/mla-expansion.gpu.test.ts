import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { KvCache, MlaParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { mlaExpansionUnsupported } from '../../../src/backend/cuda/kernels/mla-expansion.ts';
import { MLA_EXPANSION_MIN_CHUNK } from '../../../src/backend/cuda/mla-expansion-plan.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import type { KvCacheDtype, KvCacheLayout } from '../../../src/step/kv-cache-layout.ts';
import { kvCodeTolerance, pick, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// MLA's expanded prefill (kernels/mla-expansion.ts: the chunks' contexts gathered from the paged
// pool, projected to every head's keys and values by two GEMMs, attended by the wgmma prefill
// kernel with a value head narrower than the key's) against the CPU backend's mlaAttentionHeads,
// the absorbed definition: chunks over cached prefixes, chunks beside decodes (those absorbed in
// the same op, as are shorter chunks), bf16 and 8-bit caches, DeepSeek-V2-Lite's, V3's and smaller shapes. Step tensors
// are poisoned with NaN, so a chunk row left unwritten fails the comparison. Hopper only.

const rng = seededRng(testSeed('cuda mla expansion'));
const gpu = new CudaBackend({ poisonStepTensors: true, mlaPrefill: 'expanded' });
const cpu = new CpuBackend();
after(() => gpu.dispose());
const hopper = gpu.device.info.arch === 'sm_90a';

interface Shape {
  heads: number;
  latent: number;
  rope: number;
  nope: number;
  value: number;
}

const V2_LITE: Shape = { heads: 16, latent: 512, rope: 64, nope: 128, value: 128 };
const V3: Shape = { heads: 128, latent: 512, rope: 64, nope: 128, value: 128 };
// Keys of 64 (a whole panel) beside values of 32; 20 heads.
const SMALL: Shape = { heads: 20, latent: 64, rope: 16, nope: 48, value: 32 };
const LAYER = 1;

function mlaParams(s: Shape): MlaParams {
  return { numHeads: s.heads, latentDim: s.latent, ropeDim: s.rope, nopeDim: s.nope, scale: (s.nope + s.rope) ** -0.5 * 1.2 };
}

/** Runs `steps` through both backends' cache write and mlaAttentionHeads, comparing each step's heads. */
function runScenario(name: string, shape: Shape, dtype: KvCacheDtype, blockSize: number, steps: SeqSpec[][]): void {
  const mla = mlaParams(shape);
  const numSeqs = Math.max(...steps.map((s) => s.length));
  const longest = Math.max(...steps.flat().map((q) => q.cached + q.query));
  const numBlocks = numSeqs * (Math.ceil(longest / blockSize) + 1) + 4;
  const layout: KvCacheLayout = {
    numBlocks,
    blockSize,
    layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'mla', latentDim: shape.latent, ropeDim: shape.rope }],
    dtype,
  };
  const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
  const table = ropeTables(longest + 1, shape.rope);
  const rope = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)] as const;
  const pair = (dims: number[], values: Float32Array) => {
    const host = bf16Tensor(dims, values);
    return [cpu.loadWeight(host), gpu.loadWeight(host)] as const;
  };
  const random = (dims: number[], scale: number) => pair(dims, randomBf16Values(rng, dims.reduce((a, b) => a * b, 1), scale));
  const norm = pair([shape.latent], Float32Array.from({ length: shape.latent }, () => 0.5 + rng()));
  const keyAbsorption = random([shape.heads, shape.latent, shape.nope], 1 / Math.sqrt(shape.latent));
  const valueAbsorption = random([shape.heads, shape.value, shape.latent], 1 / Math.sqrt(shape.latent));
  const blocks = new BlockAssignment(rng, numBlocks, numSeqs);
  const tolerance = dtype === 'auto' ? 1e-2 : kvCodeTolerance(dtype);
  steps.forEach((specs, i) => {
    const batch = buildBatch(specs, blocks, blockSize);
    const q = random([batch.numTokens, shape.heads * (shape.nope + shape.rope)], 1);
    const kv = random([batch.numTokens, shape.latent + shape.rope], 2);
    const out = ([cpu, gpu] as const).map((b, at): Tensor => {
      const step = b.beginStep(batch);
      b.mlaRopeAndCacheWrite(q[at], kv[at], norm[at], 1e-6, rope[at], caches[at], LAYER, step, mla);
      return b.mlaAttentionHeads(q[at], caches[at], LAYER, step, mla, { keyAbsorption: keyAbsorption[at], valueAbsorption: valueAbsorption[at] });
    });
    const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
    const label = `${name}, ${dtype} cache, blocks of ${blockSize}, step ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`;
    assert.ok(err < tolerance, `${label}: relative error ${err}`);
  });
}

test('the expanded form takes DeepSeek-V2-Lite and V3 shapes on Hopper, and names why not elsewhere', () => {
  const reason = mlaExpansionUnsupported(gpu.device, mlaParams(V2_LITE), 128);
  if (hopper) assert.equal(reason, null);
  else assert.match(reason ?? '', /Hopper/);
  // Keys of 8 + 16 are no wgmma head dim: forced, the step names the reason.
  const odd = mlaExpansionUnsupported(gpu.device, mlaParams({ heads: 4, latent: 32, rope: 16, nope: 8, value: 16 }), 16);
  assert.ok(odd !== null);
});

test('whole prompts, then chunks over cached prefixes beside decodes: DeepSeek-V2-Lite shape, every cache dtype', { skip: !hopper && 'needs sm_90a' }, () => {
  for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
    const first = [{ cached: 0, query: 300 }, { cached: 0, query: 150 }, { cached: 0, query: 70 }];
    const second = [{ cached: 300, query: 1 }, { cached: 150, query: 200 }, { cached: 70, query: 65 }];
    runScenario('V2-Lite', V2_LITE, dtype, pick(rng, [16, 64]), [first, second]);
  }
});

test('a long context expanded for a chunk at its end, and a shape of 20 heads with keys of 64 and values of 32', { skip: !hopper && 'needs sm_90a' }, () => {
  runScenario('V2-Lite long', V2_LITE, 'auto', 16, [[{ cached: 0, query: 1200 }], [{ cached: 1200, query: 200 }, { cached: 0, query: 1 }]]);
  runScenario('small', SMALL, 'auto', 4, [[{ cached: 0, query: 129 }, { cached: 0, query: 64 }], [{ cached: 129, query: 80 }, { cached: 64, query: 1 }]]);
});

test('DeepSeek-V3 shape: 128 heads', { skip: !hopper && 'needs sm_90a' }, () => {
  runScenario('V3', V3, 'auto', 16, [[{ cached: 0, query: 200 }, { cached: 0, query: 96 }]]);
});

test(`chunks under ${MLA_EXPANSION_MIN_CHUNK} tokens run absorbed beside a long one expanded, in one step`, { skip: !hopper && 'needs sm_90a' }, () => {
  runScenario('short chunks', V2_LITE, 'auto', 16, [[{ cached: 0, query: 200 }, { cached: 0, query: MLA_EXPANSION_MIN_CHUNK - 1 }, { cached: 0, query: 5 }]]);
  runScenario('short chunks, 8-bit', V2_LITE, 'int8', 64, [[{ cached: 0, query: 40 }, { cached: 0, query: 150 }], [{ cached: 40, query: 17 }, { cached: 150, query: 90 }]]);
});
