import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { ExpertWeights, MoeWeights, RoutingParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { expertTileRows } from '../../../src/backend/cuda/kernels/moe-route.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// Input-weighted routes (Llama 4: top-k of the router logits weighted by their sigmoid, each
// expert run on w · x and its output added as it is) on the CUDA backend's expert paths (one
// token, decode GEMVs, grouped GEMMs) and through the whole block (`moe`, whose fused decode
// kernel leaves them to the composed path), against the CPU backend.

const rng = seededRng(testSeed('cuda moe input-weighted'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, poisonStepTensors: true, moeDecode: 'fused' });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const LLAMA4 = (topK: number): RoutingParams => ({ topK, scoring: 'sigmoid', selectionBias: null, groups: null, normalize: false, scale: 1, weightInputs: true });

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function randomPair(shape: number[], scale: number): Pair {
  const t = bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

/** Router logits whose top k stand apart from the rest by at least 0.5, so float rounding cannot change a choice. */
function decisiveLogits(tokens: number, experts: number, topK: number): Float32Array {
  const out = new Float32Array(tokens * experts);
  for (let t = 0; t < tokens; t++) {
    const order = Array.from({ length: experts }, (_, e) => e).sort(() => rng() - 0.5);
    order.forEach((e, rank) => (out[t * experts + e] = rank < topK ? 1 + rng() * 2 : -1 - rng() * 2));
  }
  return out;
}

function experts(count: number, hidden: number, n: number): { cpu: ExpertWeights; gpu: ExpertWeights } {
  const gateUp = randomPair([count, 2 * n, hidden], 3 / Math.sqrt(hidden));
  const down = randomPair([count, hidden, n], 1 / Math.sqrt(n));
  const side = (k: 'cpu' | 'gpu'): ExpertWeights => ({ first: 0, count, gateUp: gateUp[k], down: down[k], gateUpBias: null, downBias: null });
  return { cpu: side('cpu'), gpu: side('gpu') };
}

test('expertMlp with input-weighted routes on every path equals the CPU', () => {
  const cases = [
    { tokens: 1, experts: 16, topK: 1, hidden: 512, n: 256 },
    { tokens: 1, experts: 8, topK: 2, hidden: 256, n: 128 },
    { tokens: 6, experts: 16, topK: 1, hidden: 512, n: 256 },
    { tokens: 40, experts: 8, topK: 1, hidden: 256, n: 128 },
    { tokens: 300, experts: 4, topK: 2, hidden: 136, n: 520 },
  ];
  for (const c of cases) {
    const logits = bf16Tensor([c.tokens, c.experts], decisiveLogits(c.tokens, c.experts, c.topK));
    const routing = { cpu: cpu.routeExperts(cpu.loadWeight(logits), LLAMA4(c.topK)), gpu: gpu.routeExperts(gpu.loadWeight(logits), LLAMA4(c.topK)) };
    const x = randomPair([c.tokens, c.hidden], 1);
    const w = experts(c.experts, c.hidden, c.n);
    const expected = cpu.toHost(cpu.expertMlp(x.cpu, routing.cpu, w.cpu, { kind: 'silu' }));
    const actual = gpu.toHost(gpu.expertMlp(x.gpu, routing.gpu, w.gpu, { kind: 'silu' }));
    const err = relativeError(actual, expected);
    assert.ok(err < TOLERANCE, `${JSON.stringify(c)} (tile rows ${expertTileRows(c.tokens, c.topK, c.experts)}): relative error ${err}`);
  }
});

test('a Llama 4 MoE block (top-1, input-weighted, ungated shared expert) of one and of several tokens equals the CPU', () => {
  const [numExperts, hidden, n] = [16, 256, 128];
  const router = randomPair([numExperts, hidden], 3 / Math.sqrt(hidden));
  const routed = experts(numExperts, hidden, n);
  const sharedGateUp = randomPair([2 * n, hidden], 3 / Math.sqrt(hidden));
  const sharedDown = randomPair([hidden, n], 1 / Math.sqrt(n));
  const side = (k: 'cpu' | 'gpu'): MoeWeights => ({
    router: router[k],
    routerBias: null,
    routing: LLAMA4(1),
    experts: routed[k],
    activation: { kind: 'silu' },
    shared: { gateUp: sharedGateUp[k], down: sharedDown[k], gate: null, activation: { kind: 'silu' } },
  });
  // Rows redrawn until their top-1 expert leads the next by 0.1: bf16 rounding cannot change the choice.
  const decisiveRow = (): Float32Array => {
    for (;;) {
      const row = randomBf16Values(rng, hidden, 1);
      const logits = Array.from(cpu.toHost(cpu.linear(cpu.loadWeight(bf16Tensor([1, hidden], row)), router.cpu, null, { float32: true }))).sort((a, b) => b - a);
      if (logits[0] - logits[1] > 0.1) return row;
    }
  };
  for (const tokens of [1, randInt(rng, 2, 8), 64]) {
    const rows = Array.from({ length: tokens }, decisiveRow);
    const host = bf16Tensor([tokens, hidden], Float32Array.from(rows.flatMap((r) => Array.from(r))));
    const x = { cpu: cpu.loadWeight(host), gpu: gpu.loadWeight(host) };
    const expected = cpu.toHost(cpu.moe(x.cpu, side('cpu')));
    const actual = gpu.toHost(gpu.moe(x.gpu, side('gpu')));
    const err = relativeError(actual, expected);
    assert.ok(err < TOLERANCE, `${tokens} tokens: relative error ${err}`);
  }
});
