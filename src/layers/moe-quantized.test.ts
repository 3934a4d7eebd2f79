import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Activation } from '../backend/backend.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { CpuTensor } from '../backend/cpu/cpu-tensor.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { quantizeRoundToNearest } from '../tensor/quantize-rtn.ts';
import {
  dequantizeWeight,
  emptyQuantizedWeight,
  fillInt4Padding,
  floatToFp8E4m3,
  numGroups,
  putCode,
  type LinearWeight,
  type QuantizedWeight,
} from '../tensor/quantized-weight.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { GatedMlp } from './gated-mlp.ts';
import { MoeBlock, type MoeOptions } from './moe.ts';
import type { WeightSource, WeightUploader } from './parameters.ts';

const random = new TestRandom(testSeed('quantized moe layer'));

/** How each expert matrix [rows, cols] is quantized: as the checkpoints and `--quantization` Keel reads make them. */
const FORMATS: Record<string, (values: Float32Array, rows: number, cols: number) => QuantizedWeight> = {
  // --quantization int4 / int8 / fp8: round to nearest (int4 asymmetric in groups of 128, 8-bit per channel).
  'rtn int4': (v, r, c) => quantizeRoundToNearest(v, r, c, 'int4'),
  'rtn int8': (v, r, c) => quantizeRoundToNearest(v, r, c, 'int8'),
  'rtn fp8': (v, r, c) => quantizeRoundToNearest(v, r, c, 'fp8'),
  // GPTQ / compressed-tensors int4 in groups of 16 with zero points, as their readers repack them.
  'int4 groups of 16, zeros': (_v, r, c) => randomInt4(r, c, 16),
  // DeepSeek-V3 / Qwen3-FP8 block scales (blocks of 8 x 16 here), as readFp8Layer lays them out.
  'fp8 blocks of 8 x 16': (v, r, c) => fp8Blocks(v, r, c, 8, 16),
};

function randomInt4(rows: number, cols: number, groupSize: number): QuantizedWeight {
  const w = emptyQuantizedWeight('int4', rows, cols, groupSize, true);
  for (let row = 0; row < rows; row++) for (let col = 0; col < cols; col++) putCode(w, row, col, random.int(0, 15));
  for (let i = 0; i < w.scales.length; i++) w.scales[i] = random.uniform(0.005, 0.05);
  for (let i = 0; i < w.zeros!.length; i++) w.zeros![i] = random.int(4, 11);
  fillInt4Padding(w);
  return w;
}

function fp8Blocks(values: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number): QuantizedWeight {
  const w = emptyQuantizedWeight('fp8-e4m3', rows, cols, blockCols, false);
  const groups = numGroups(w);
  for (let br = 0; br < rows; br += blockRows) {
    for (let g = 0; g < groups; g++) {
      let max = 0;
      for (let r = br; r < Math.min(rows, br + blockRows); r++) for (let c = g * blockCols; c < Math.min(cols, (g + 1) * blockCols); c++) max = Math.max(max, Math.abs(values[r * cols + c]));
      const scale = Math.fround(max / 448);
      for (let r = br; r < Math.min(rows, br + blockRows); r++) {
        w.scales[r * groups + g] = scale;
        for (let c = g * blockCols; c < Math.min(cols, (g + 1) * blockCols); c++) w.codes[r * cols + c] = floatToFp8E4m3(values[r * cols + c] / scale);
      }
    }
  }
  return w;
}

interface Shape {
  experts: number;
  hidden: number;
  n: number;
  topK: number;
  tokens: number;
  shared: boolean;
}

function randomShape(): Shape {
  const experts = random.int(3, 8);
  return { experts, hidden: 16 * random.int(2, 5), n: 16 * random.int(1, 3), topK: random.int(1, Math.min(3, experts)), tokens: random.int(1, 12), shared: random.int(0, 1) === 1 };
}

const expertName = (e: number, p: 'gate' | 'up' | 'down') => `mlp.experts.${e}.${p}_proj.weight`;

function options(s: Shape): MoeOptions {
  const activation: Activation = { kind: 'silu' };
  return {
    hiddenSize: s.hidden,
    intermediateSize: s.n,
    numExperts: s.experts,
    router: 'mlp.gate.weight',
    routerBias: false,
    routing: { topK: s.topK, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 },
    experts: { layout: 'per-expert', name: expertName },
    activation,
    shared: s.shared
      ? { mlp: new GatedMlp({ gate: 'mlp.shared_expert.gate_proj.weight', up: 'mlp.shared_expert.up_proj.weight', down: 'mlp.shared_expert.down_proj.weight' }, s.hidden, s.n, activation, { sharedExpert: true }), gate: 'mlp.shared_expert_gate.weight' }
      : null,
  };
}

/**
 * A checkpoint whose linear layers (experts and shared expert alike) read quantized through
 * `readLinear`, and the dequantized values through `read`, as a quantized checkpoint does.
 */
function quantizedSource(s: Shape, quantize: (values: Float32Array, rows: number, cols: number, name: string) => QuantizedWeight): { source: WeightSource; dequantized: WeightSource } {
  const dense: Record<string, HostTensor> = {
    'mlp.gate.weight': float32Tensor(random.floats(s.experts * s.hidden, 1), [s.experts, s.hidden]),
    ...(s.shared ? { 'mlp.shared_expert_gate.weight': float32Tensor(random.floats(s.hidden, 0.5), [1, s.hidden]) } : {}),
  };
  const quantized: Record<string, QuantizedWeight> = {};
  const matrix = (name: string, rows: number, cols: number) => (quantized[name] = quantize(random.floats(rows * cols, 0.5), rows, cols, name));
  for (let e = 0; e < s.experts; e++) {
    matrix(expertName(e, 'gate'), s.n, s.hidden);
    matrix(expertName(e, 'up'), s.n, s.hidden);
    matrix(expertName(e, 'down'), s.hidden, s.n);
  }
  if (s.shared) {
    matrix('mlp.shared_expert.gate_proj.weight', s.n, s.hidden);
    matrix('mlp.shared_expert.up_proj.weight', s.n, s.hidden);
    matrix('mlp.shared_expert.down_proj.weight', s.hidden, s.n);
  }
  const values = (name: string): HostTensor => {
    const w = quantized[name];
    if (w !== undefined) return float32Tensor(dequantizeWeight(w), [w.rows, w.cols]);
    if (dense[name] === undefined) throw new Error(`no tensor ${name}`);
    return dense[name];
  };
  return {
    source: { read: values, readLinear: (name): LinearWeight => quantized[name] ?? values(name) },
    dequantized: { read: values },
  };
}

/** A CPU backend's uploader that counts the expert stacks it keeps quantized. */
function countingUploader(b: CpuBackend): { uploader: WeightUploader; quantizedExperts: () => number } {
  let count = 0;
  const uploader: WeightUploader = {
    loadWeight: b.loadWeight.bind(b),
    loadQuantizedWeight: b.loadQuantizedWeight.bind(b),
    loadSparseWeight: b.loadSparseWeight.bind(b),
    loadMxfp4Weight: b.loadMxfp4Weight.bind(b),
    uploadRopeTable: b.uploadRopeTable.bind(b),
    loadQuantizedExperts: (w, experts) => {
      count++;
      return b.loadQuantizedExperts(w, experts);
    },
  };
  return { uploader, quantizedExperts: () => count };
}

function forward(block: MoeBlock, b: CpuBackend, x: Float32Array, s: Shape): Float32Array {
  return b.toHost(block.forward(b, new CpuTensor([s.tokens, s.hidden], x)));
}

test('a quantized MoE block keeps its experts quantized and computes exactly what it computes on the dequantized experts', () => {
  for (const [format, quantize] of Object.entries(FORMATS)) {
    for (let trial = 0; trial < 3; trial++) {
      const s = randomShape();
      const what = `${format}, ${JSON.stringify(s)}`;
      const { source, dequantized } = quantizedSource(s, quantize);
      const b = new CpuBackend();
      const { uploader, quantizedExperts } = countingUploader(b);
      const block = new MoeBlock(options(s));
      block.load(source, uploader);
      assert.equal(quantizedExperts(), 2, `${what}: gate/up and down stacks kept quantized`);
      const reference = new MoeBlock(options(s));
      reference.load(dequantized, b);
      const x = random.floats(s.tokens * s.hidden, 1);
      assert.deepEqual(forward(block, b, x, s), forward(reference, b, x, s), what);
    }
  }
});

/**
 * GPTQ act-order (int4 groups of 16 with zeros): each layer's columns in a random order of its
 * own, except the layers `sameOrder` maps to one key (gate and up read one input: GPTQ orders
 * them alike).
 */
function actOrder(sameOrder: (name: string) => string) {
  const orders = new Map<string, Int32Array>();
  return (_v: Float32Array, r: number, c: number, name: string): QuantizedWeight => {
    const w = randomInt4(r, c, 16);
    const key = sameOrder(name);
    if (!orders.has(key)) orders.set(key, Int32Array.from(random.shuffled(Array.from({ length: c }, (_, i) => i))));
    w.perm = orders.get(key)!;
    return w;
  };
}

test('act-order experts stay quantized, each with its own column order, and compute exactly what their dequantized values do', () => {
  for (let trial = 0; trial < 4; trial++) {
    const s = randomShape();
    const { source, dequantized } = quantizedSource(s, actOrder((name) => name.replace(/(gate|up)_proj/, 'gate_up')));
    const b = new CpuBackend();
    const { uploader, quantizedExperts } = countingUploader(b);
    const block = new MoeBlock(options(s));
    block.load(source, uploader);
    assert.equal(quantizedExperts(), 2, JSON.stringify(s));
    const reference = new MoeBlock(options(s));
    reference.load(dequantized, b);
    const x = random.floats(s.tokens * s.hidden, 1);
    assert.deepEqual(forward(block, b, x, s), forward(reference, b, x, s), JSON.stringify(s));
  }
});

test('experts in a layout the expert kernels do not take (gate and up in different act-orders, nf4) load 16-bit, as their dequantized values', () => {
  const s: Shape = { experts: 4, hidden: 32, n: 16, topK: 2, tokens: 5, shared: false };
  for (const quantize of [actOrder((name) => name), (v: Float32Array, r: number, c: number) => quantizeRoundToNearest(v, r, c, 'nf4')]) {
    const { source, dequantized } = quantizedSource(s, quantize);
    const b = new CpuBackend();
    const { uploader, quantizedExperts } = countingUploader(b);
    const block = new MoeBlock(options(s));
    block.load(source, uploader);
    assert.equal(quantizedExperts(), 0);
    const reference = new MoeBlock(options(s));
    reference.load(dequantized, b);
    const x = random.floats(s.tokens * s.hidden, 1);
    assert.deepEqual(forward(block, b, x, s), forward(reference, b, x, s));
  }
});

test('loadQuantizedExperts refuses stacks the expert kernels do not take, naming the problem', () => {
  const b = new CpuBackend();
  const w = quantizeRoundToNearest(random.floats(12 * 32, 1), 12, 32, 'int8');
  assert.throws(() => b.loadQuantizedExperts(w, 5), /12 rows do not split into 5 experts/);
  assert.throws(() => b.loadQuantizedExperts({ ...w, perm: Int32Array.from({ length: 32 }, (_, i) => i) }, 4), /permutation of 32 columns is not one of 32 per expert for 4 experts/);
  assert.throws(() => b.loadQuantizedExperts(quantizeRoundToNearest(random.floats(12 * 32, 1), 12, 32, 'nf4'), 4), /nf4 .*are not run quantized/);
});
