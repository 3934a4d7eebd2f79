import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Activation, ExpertRouting, RoutingParams, Tensor } from '../backend/backend.ts';
import { gatedValue } from '../backend/cpu/ops/activation.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { CpuTensor } from '../backend/cpu/cpu-tensor.ts';
import { float32ToHostTensor } from '../tensor/host-dtype.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { GatedMlp } from './gated-mlp.ts';
import { MoeBlock, type MoeOptions } from './moe.ts';
import type { TensorParallelShard, WeightSource } from './parameters.ts';

const random = new TestRandom(testSeed('moe layer'));
// 2n differs from the hidden size, so a fused stack stored either way round has a shape of its own.
const [E, HIDDEN, N, TOP_K] = [6, 16, 12, 2];
const SWIGLU: Activation = { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 };

/** One expert's matrices as transformers holds them: gate and up [n, hidden], down [hidden, n], optional biases. */
interface Expert {
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  gateBias: Float32Array;
  upBias: Float32Array;
  downBias: Float32Array;
}

const experts: Expert[] = Array.from({ length: E }, () => ({
  gate: random.floats(N * HIDDEN, 0.5),
  up: random.floats(N * HIDDEN, 0.5),
  down: random.floats(HIDDEN * N, 0.5),
  gateBias: random.floats(N, 0.3),
  upBias: random.floats(N, 0.3),
  downBias: random.floats(HIDDEN, 0.3),
}));
const router = random.floats(E * HIDDEN, 1);
const routerBias = random.floats(E, 0.5);

function source(tensors: Record<string, HostTensor>, shard?: TensorParallelShard): WeightSource {
  return {
    shard,
    read: (name) => {
      const t = tensors[name];
      if (t === undefined) throw new Error(`no tensor ${name}`);
      return t;
    },
  };
}

/** Mixtral's per-expert names. */
function perExpertTensors(): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = { 'moe.gate.weight': float32Tensor(router, [E, HIDDEN]) };
  experts.forEach((x, e) => {
    out[`moe.experts.${e}.w1.weight`] = float32Tensor(x.gate, [N, HIDDEN]);
    out[`moe.experts.${e}.w3.weight`] = float32Tensor(x.up, [N, HIDDEN]);
    out[`moe.experts.${e}.w2.weight`] = float32Tensor(x.down, [HIDDEN, N]);
  });
  return out;
}

/** The same experts in gpt-oss's fused, input-major, interleaved layout, with biases and a router bias. */
function fusedTensors(dtype: 'f32' | 'bf16'): Record<string, HostTensor> {
  const gateUp = new Float32Array(E * HIDDEN * 2 * N);
  const gateUpBias = new Float32Array(E * 2 * N);
  const down = new Float32Array(E * N * HIDDEN);
  const downBias = new Float32Array(E * HIDDEN);
  experts.forEach((x, e) => {
    for (let j = 0; j < N; j++) {
      for (let h = 0; h < HIDDEN; h++) {
        gateUp[(e * HIDDEN + h) * 2 * N + 2 * j] = x.gate[j * HIDDEN + h];
        gateUp[(e * HIDDEN + h) * 2 * N + 2 * j + 1] = x.up[j * HIDDEN + h];
        down[(e * N + j) * HIDDEN + h] = x.down[h * N + j];
      }
      gateUpBias[e * 2 * N + 2 * j] = x.gateBias[j];
      gateUpBias[e * 2 * N + 2 * j + 1] = x.upBias[j];
    }
    downBias.set(x.downBias, e * HIDDEN);
  });
  const t = (values: Float32Array, shape: number[]) => float32ToHostTensor(values, dtype, shape);
  return {
    'mlp.router.weight': t(router, [E, HIDDEN]),
    'mlp.router.bias': t(routerBias, [E]),
    'mlp.experts.gate_up_proj': t(gateUp, [E, HIDDEN, 2 * N]),
    'mlp.experts.gate_up_proj_bias': t(gateUpBias, [E, 2 * N]),
    'mlp.experts.down_proj': t(down, [E, N, HIDDEN]),
    'mlp.experts.down_proj_bias': t(downBias, [E, HIDDEN]),
  };
}

/** The same experts as GraniteMoE stores them: output-major input_linear [E, 2n, hidden] (gate rows, then up) and output_linear [E, hidden, n]. */
function outputMajorTensors(): Record<string, HostTensor> {
  const gateUp = new Float32Array(E * 2 * N * HIDDEN);
  const down = new Float32Array(E * HIDDEN * N);
  experts.forEach((x, e) => {
    gateUp.set(x.gate, e * 2 * N * HIDDEN);
    gateUp.set(x.up, (e * 2 + 1) * N * HIDDEN);
    down.set(x.down, e * HIDDEN * N);
  });
  return {
    'moe.router.layer.weight': float32Tensor(router, [E, HIDDEN]),
    'moe.input_linear.weight': float32Tensor(gateUp, [E, 2 * N, HIDDEN]),
    'moe.output_linear.weight': float32Tensor(down, [E, HIDDEN, N]),
  };
}

const MIXTRAL: MoeOptions = {
  hiddenSize: HIDDEN,
  intermediateSize: N,
  numExperts: E,
  router: 'moe.gate.weight',
  routerBias: false,
  routing: { topK: TOP_K, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 },
  experts: { layout: 'per-expert', name: (e, p) => `moe.experts.${e}.${{ gate: 'w1', up: 'w3', down: 'w2' }[p]}.weight` },
  activation: { kind: 'silu' },
  shared: null,
};

const GPT_OSS: MoeOptions = {
  ...MIXTRAL,
  router: 'mlp.router.weight',
  routerBias: true,
  routing: { ...MIXTRAL.routing, scoring: 'topk-softmax', normalize: false },
  experts: {
    layout: 'fused-interleaved',
    gateUp: 'mlp.experts.gate_up_proj',
    gateUpBias: 'mlp.experts.gate_up_proj_bias',
    down: 'mlp.experts.down_proj',
    downBias: 'mlp.experts.down_proj_bias',
  },
  activation: SWIGLU,
};

const GRANITE: MoeOptions = {
  ...MIXTRAL,
  router: 'moe.router.layer.weight',
  experts: { layout: 'fused-output-major', gateUp: 'moe.input_linear.weight', gateUpBias: null, down: 'moe.output_linear.weight', downBias: null },
};

/**
 * The block by transformers' definition, token by token in float64: router logits (+ bias), the
 * chosen experts, each expert's output (biases, activation), weighted and summed.
 */
function reference(x: Float32Array, rows: number, options: { routerBias: boolean; biases: boolean; activation: Activation }): Float64Array {
  const out = new Float64Array(rows * HIDDEN);
  for (let t = 0; t < rows; t++) {
    const xt = x.subarray(t * HIDDEN, (t + 1) * HIDDEN);
    const logits = Array.from({ length: E }, (_, e) => {
      let s = options.routerBias ? routerBias[e] : 0;
      for (let h = 0; h < HIDDEN; h++) s += router[e * HIDDEN + h] * xt[h];
      return s;
    });
    const chosen = logits.map((l, e) => ({ l, e })).sort((a, b) => b.l - a.l).slice(0, TOP_K);
    // Softmax over all then renormalized over the top k, or a softmax over the top k: the same weights.
    const m = Math.max(...chosen.map((c) => c.l));
    const z = chosen.reduce((s, c) => s + Math.exp(c.l - m), 0);
    for (const { l, e } of chosen) {
      const w = Math.exp(l - m) / z;
      const x_ = experts[e];
      const hidden = Array.from({ length: N }, (_, j) => {
        let g = options.biases ? x_.gateBias[j] : 0;
        let u = options.biases ? x_.upBias[j] : 0;
        for (let h = 0; h < HIDDEN; h++) {
          g += x_.gate[j * HIDDEN + h] * xt[h];
          u += x_.up[j * HIDDEN + h] * xt[h];
        }
        return gatedValue(options.activation, g, u);
      });
      for (let h = 0; h < HIDDEN; h++) {
        let y = options.biases ? x_.downBias[h] : 0;
        for (let j = 0; j < N; j++) y += x_.down[h * N + j] * hidden[j];
        out[t * HIDDEN + h] += w * y;
      }
    }
  }
  return out;
}

function forward(options: MoeOptions, tensors: Record<string, HostTensor>, x: Float32Array, rows: number, shard?: TensorParallelShard): Float32Array {
  const cpu = new CpuBackend();
  const block = new MoeBlock(options);
  block.load(source(tensors, shard), cpu);
  return cpu.toHost(block.forward(cpu, new CpuTensor([rows, HIDDEN], x)));
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
}

test('per-expert checkpoint tensors (Mixtral names) are stacked into [E, 2n, hidden] gate-then-up and [E, hidden, n]', () => {
  const uploader = new RecordingUploader();
  new MoeBlock(MIXTRAL).load(source(perExpertTensors()), uploader);
  const [, gateUp, down] = uploader.uploaded.map((t) => new CpuTensor(t.shape, float32Values(t)));
  assert.deepEqual(gateUp.shape, [E, 2 * N, HIDDEN]);
  assert.deepEqual(down.shape, [E, HIDDEN, N]);
  const e = 4;
  assert.deepEqual(gateUp.data.subarray(e * 2 * N * HIDDEN, (e * 2 + 1) * N * HIDDEN), experts[e].gate);
  assert.deepEqual(gateUp.data.subarray((e * 2 + 1) * N * HIDDEN, (e + 1) * 2 * N * HIDDEN), experts[e].up);
  assert.deepEqual(down.data.subarray(e * HIDDEN * N, (e + 1) * HIDDEN * N), experts[e].down);
});

test('a Mixtral-style block (softmax, renormalized top-2, silu) matches the definition', () => {
  const rows = 7;
  const x = random.floats(rows * HIDDEN, 1);
  const expected = reference(x, rows, { routerBias: false, biases: false, activation: { kind: 'silu' } });
  assertClose(forward(MIXTRAL, perExpertTensors(), x, rows), expected, 1e-5, 'mixtral');
});

test('gpt-oss fused, interleaved experts with biases, router bias and clamped swiglu match the definition', () => {
  const rows = 9;
  const x = random.floats(rows * HIDDEN, 1);
  const expected = reference(x, rows, { routerBias: true, biases: true, activation: SWIGLU });
  assertClose(forward(GPT_OSS, fusedTensors('f32'), x, rows), expected, 1e-5, 'gpt-oss f32');
  // bf16 storage goes through the same rearrangement of 2-byte elements.
  const uploader = new RecordingUploader();
  new MoeBlock(GPT_OSS).load(source(fusedTensors('bf16')), uploader);
  const gateUp = uploader.uploaded.find((t) => t.shape.length === 3 && t.shape[1] === 2 * N)!;
  assert.equal(gateUp.dtype, 'bf16');
  const values = float32Values(gateUp);
  const [e, j, h] = [3, 5, 11];
  assert.ok(Math.abs(values[(e * 2 * N + N + j) * HIDDEN + h] - experts[e].up[j * HIDDEN + h]) < 1e-2, 'up row j of expert e');
});

test('GraniteMoE\'s output-major fused experts (input_linear, output_linear) read as the per-expert ones, whole and sharded', () => {
  const rows = 6;
  const x = random.floats(rows * HIDDEN, 1);
  const expected = reference(x, rows, { routerBias: false, biases: false, activation: { kind: 'silu' } });
  assertClose(forward(GRANITE, outputMajorTensors(), x, rows), expected, 1e-5, 'granite');
  assert.deepEqual(
    new MoeBlock(GRANITE).parameters().filter((p) => p.name.includes('_linear')).map((p) => p.shape),
    [[E, 2 * N, HIDDEN], [E, HIDDEN, N]],
  );
  const experts = [{ first: 0, count: 2 }, { first: 2, count: 4 }].map((shard) => forward({ ...GRANITE, shard }, outputMajorTensors(), x, rows));
  assertClose(expected, experts[0].map((v, i) => v + experts[1][i]), 1e-5, 'expert shards');
});

test('Qwen3-VL-MoE\'s fused experts read either way round: input-major as the Hub ships them, output-major as transformers 5 saves them', () => {
  const rows = 5;
  const x = random.floats(rows * HIDDEN, 1);
  const expected = reference(x, rows, { routerBias: false, biases: false, activation: { kind: 'silu' } });
  const either: MoeOptions = { ...GRANITE, experts: { ...(GRANITE.experts as Extract<MoeOptions['experts'], { gateUp: string }>), layout: 'fused-halves-either-major' } };
  const outputMajor = outputMajorTensors();
  // The Hub's orientation: each expert's [rows, cols] stored transposed, [cols, rows].
  const transposed = (t: HostTensor): HostTensor => {
    const [e, r, c] = t.shape;
    const from = float32Values(t);
    const to = new Float32Array(from.length);
    for (let i = 0; i < e; i++) for (let j = 0; j < r; j++) for (let k = 0; k < c; k++) to[(i * c + k) * r + j] = from[(i * r + j) * c + k];
    return float32Tensor(to, [e, c, r]);
  };
  const inputMajor = { ...outputMajor, 'moe.input_linear.weight': transposed(outputMajor['moe.input_linear.weight']), 'moe.output_linear.weight': transposed(outputMajor['moe.output_linear.weight']) };
  for (const [what, tensors] of [['output-major', outputMajor], ['input-major', inputMajor]] as const) {
    assertClose(forward(either, tensors, x, rows), expected, 1e-5, what);
    const parts = [0, 1].map((rank) => forward(either, tensors, x, rows, { rank, size: 2, expertParallel: false }));
    assertClose(expected, parts[0].map((v, i) => v + parts[1][i]), 1e-5, `${what}, tensor-parallel halves`);
  }
  const specs = new MoeBlock(either).parameters().filter((p) => p.name.includes('_linear'));
  assert.deepEqual(specs.map((p) => [p.shape, p.orShape]), [[[E, 2 * N, HIDDEN], [E, HIDDEN, 2 * N]], [[E, HIDDEN, N], [E, N, HIDDEN]]]);
});

test('expert shards load only their experts and sum to the whole block', () => {
  const rows = 6;
  const x = random.floats(rows * HIDDEN, 1);
  const whole = forward(MIXTRAL, perExpertTensors(), x, rows);
  const shards = [
    { first: 0, count: 2 },
    { first: 2, count: 4 },
  ];
  const names = new MoeBlock({ ...MIXTRAL, shard: shards[1] }).parameters().map((p) => p.name);
  assert.ok(names.includes('moe.experts.2.w1.weight') && !names.includes('moe.experts.1.w1.weight'), 'shard 1 reads experts 2..5');
  const parts = shards.map((shard) => forward({ ...MIXTRAL, shard }, perExpertTensors(), x, rows));
  assertClose(whole, parts[0].map((v, i) => v + parts[1][i]), 1e-6, 'shards');
  const fusedParts = shards.map((shard) => forward({ ...GPT_OSS, shard }, fusedTensors('f32'), x, rows));
  const fused = forward(GPT_OSS, fusedTensors('f32'), x, rows);
  assertClose(fused, fusedParts[0].map((v, i) => v + fusedParts[1][i]), 1e-6, 'fused shards');
  assert.throws(() => new MoeBlock({ ...MIXTRAL, shard: { first: 4, count: 3 } }), /outside the 6 experts/);
});

test('tensor-parallel devices each hold every expert\'s part of the intermediate width, and sum to the whole block', () => {
  const rows = 5;
  const x = random.floats(rows * HIDDEN, 1);
  const halves: MoeOptions = {
    ...GPT_OSS,
    experts: { ...(GPT_OSS.experts as Extract<MoeOptions['experts'], { gateUp: string }>), layout: 'fused-halves' },
  };
  for (const [what, options, tensors] of [
    ['per-expert', MIXTRAL, perExpertTensors()],
    ['fused, interleaved gate/up, with biases', GPT_OSS, fusedTensors('f32')],
    ['fused, gate then up', halves, fusedTensors('f32')],
    ['fused, output-major', GRANITE, outputMajorTensors()],
  ] as const) {
    const whole = forward(options, tensors, x, rows);
    const parts = [0, 1].map((rank) => forward(options, tensors, x, rows, { rank, size: 2, expertParallel: false }));
    // The down bias is added once, by rank 0: summed, the parts equal the whole block.
    assertClose(whole, parts[0].map((v, i) => v + parts[1][i]), 1e-5, what);
  }
});

test('a gated shared expert (Qwen2-MoE) adds σ(gate · x) times the dense MLP to the routed experts', () => {
  const rows = 5;
  const x = random.floats(rows * HIDDEN, 1);
  const sharedN = 12;
  const sharedWeights = { gate: random.floats(sharedN * HIDDEN, 0.5), up: random.floats(sharedN * HIDDEN, 0.5), down: random.floats(HIDDEN * sharedN, 0.5) };
  const gate = random.floats(HIDDEN, 1);
  const tensors = {
    ...perExpertTensors(),
    'shared.gate_proj.weight': float32Tensor(sharedWeights.gate, [sharedN, HIDDEN]),
    'shared.up_proj.weight': float32Tensor(sharedWeights.up, [sharedN, HIDDEN]),
    'shared.down_proj.weight': float32Tensor(sharedWeights.down, [HIDDEN, sharedN]),
    'shared_gate.weight': float32Tensor(gate, [1, HIDDEN]),
  };
  const mlp = new GatedMlp({ gate: 'shared.gate_proj.weight', up: 'shared.up_proj.weight', down: 'shared.down_proj.weight' }, HIDDEN, sharedN, { kind: 'silu' }, { sharedExpert: true });
  const options: MoeOptions = { ...MIXTRAL, shared: { mlp, gate: 'shared_gate.weight' } };
  const routed = reference(x, rows, { routerBias: false, biases: false, activation: { kind: 'silu' } });
  const expected = new Float64Array(rows * HIDDEN);
  for (let t = 0; t < rows; t++) {
    const xt = x.subarray(t * HIDDEN, (t + 1) * HIDDEN);
    const g = 1 / (1 + Math.exp(-xt.reduce((s, v, h) => s + v * gate[h], 0)));
    const h = Array.from({ length: sharedN }, (_, j) => {
      const dot = (w: Float32Array) => xt.reduce((s, v, i) => s + v * w[j * HIDDEN + i], 0);
      return gatedValue({ kind: 'silu' }, dot(sharedWeights.gate), dot(sharedWeights.up));
    });
    for (let i = 0; i < HIDDEN; i++) expected[t * HIDDEN + i] = routed[t * HIDDEN + i] + g * h.reduce((s, v, j) => s + v * sharedWeights.down[i * sharedN + j], 0);
  }
  assertClose(forward(options, tensors, x, rows), expected, 1e-5, 'shared expert');
  const names = new MoeBlock(options).parameters().map((p) => p.name);
  assert.ok(names.includes('shared_gate.weight') && names.includes('shared.down_proj.weight'));
});

/** A CPU backend that notes each linear's output and float32 option, and the logits routeExperts gets. */
class LinearRecorder extends CpuBackend {
  readonly linears: { out: Tensor; float32: boolean }[] = [];
  readonly routed: Tensor[] = [];

  override linear(x: Tensor, weight: Tensor, bias: Tensor | null, options: { float32?: boolean } = {}): Tensor {
    const out = super.linear(x, weight, bias, options);
    this.linears.push({ out, float32: options.float32 ?? false });
    return out;
  }

  override routeExperts(logits: Tensor, params: RoutingParams): ExpertRouting {
    this.routed.push(logits);
    return super.routeExperts(logits, params);
  }
}

test('the router, and nothing else in the block, asks for float32 logits', () => {
  const sharedN = 8;
  const mlp = new GatedMlp({ gate: 'shared.gate_proj.weight', up: 'shared.up_proj.weight', down: 'shared.down_proj.weight' }, HIDDEN, sharedN, { kind: 'silu' }, { sharedExpert: true });
  const tensors = {
    ...fusedTensors('f32'),
    'shared.gate_proj.weight': float32Tensor(random.floats(sharedN * HIDDEN, 0.5), [sharedN, HIDDEN]),
    'shared.up_proj.weight': float32Tensor(random.floats(sharedN * HIDDEN, 0.5), [sharedN, HIDDEN]),
    'shared.down_proj.weight': float32Tensor(random.floats(HIDDEN * sharedN, 0.5), [HIDDEN, sharedN]),
    'shared_gate.weight': float32Tensor(random.floats(HIDDEN, 1), [1, HIDDEN]),
  };
  const backend = new LinearRecorder();
  const block = new MoeBlock({ ...GPT_OSS, shared: { mlp, gate: 'shared_gate.weight' } });
  block.load(source(tensors), backend);
  block.forward(backend, new CpuTensor([3, HIDDEN], random.floats(3 * HIDDEN, 1)));
  const float32 = backend.linears.filter((l) => l.float32);
  assert.equal(backend.routed.length, 1);
  assert.equal(float32.length, 1, 'one float32 linear');
  assert.equal(float32[0].out, backend.routed[0], 'its output is what routeExperts reads');
  assert.ok(backend.linears.filter((l) => !l.float32).length >= 2, 'the shared expert and its gate run in the activation dtype');
});

test('parameters mark routed experts, and only them, as read per routed token', () => {
  const specs = new MoeBlock({ ...GPT_OSS, routing: { ...GPT_OSS.routing, selectionBias: 'mlp.router.e_score_correction_bias' } }).parameters();
  const routed = specs.filter((p) => p.access?.kind === 'expert');
  assert.deepEqual(routed.map((p) => p.name).sort(), ['mlp.experts.down_proj', 'mlp.experts.down_proj_bias', 'mlp.experts.gate_up_proj', 'mlp.experts.gate_up_proj_bias']);
  assert.ok(routed.every((p) => p.access?.kind === 'expert' && p.access.numExperts === E && p.access.topK === TOP_K));
  const dense = specs.filter((p) => p.access === undefined).map((p) => `${p.name} [${p.shape}]`);
  assert.deepEqual(dense, [`mlp.router.weight [${E},${HIDDEN}]`, `mlp.router.bias [${E}]`, `mlp.router.e_score_correction_bias [${E}]`]);
});

test('the selection bias, and nothing else, is uploaded in float32 whatever the checkpoint dtype', () => {
  const float32Shapes: number[][] = [];
  const recorder = new RecordingUploader();
  const uploader = {
    loadWeight: (t: HostTensor, options?: { float32?: boolean }) => {
      if (options?.float32) float32Shapes.push(t.shape);
      return recorder.loadWeight(t);
    },
    loadQuantizedWeight: recorder.loadQuantizedWeight.bind(recorder),
    loadSparseWeight: recorder.loadSparseWeight.bind(recorder),
    loadMxfp4Weight: recorder.loadMxfp4Weight.bind(recorder),
    loadQuantizedExperts: recorder.loadQuantizedExperts.bind(recorder),
    uploadRopeTable: recorder.uploadRopeTable.bind(recorder),
  };
  const tensors = { ...perExpertTensors(), 'moe.gate.e_score_correction_bias': float32Tensor(random.floats(E), [E]) };
  const options = { ...MIXTRAL, routing: { ...MIXTRAL.routing, scoring: 'sigmoid' as const, selectionBias: 'moe.gate.e_score_correction_bias' } };
  new MoeBlock(options).load(source(tensors), uploader);
  assert.deepEqual(float32Shapes, [[E]]);
  assert.equal(recorder.uploaded.length, 4, 'router, selection bias, gate/up and down');
});

function float32Values(t: HostTensor): Float32Array {
  return new CpuBackend().toHost(new CpuBackend().loadWeight(t));
}
