import { LLAMA_NORM_NAMES } from '../../src/models/decoder.ts';
import type { Backend, RopeTable } from '../../src/backend/backend.ts';
import type { WeightSource } from '../../src/layers/parameters.ts';
import { buildRopeTable } from '../../src/layers/rotary.ts';
import { LlamaModel, type LlamaConfig } from '../../src/models/llama.ts';
import type { HostTensor } from '../../src/tensor/host-tensor.ts';
import type { TestRandom } from './cpu-random.ts';
import { wholeModel } from '../../src/models/pipeline-stage.ts';

/** A layer's weights as host float32 arrays, q/k/v and gate/up stacked as the layers load them. */
export interface HostLayerWeights {
  inputNorm: Float32Array;
  qkv: Float32Array;
  qkvBias: Float32Array | null;
  qNorm: Float32Array | null;
  kNorm: Float32Array | null;
  o: Float32Array;
  oBias: Float32Array | null;
  postAttentionNorm: Float32Array;
  gateUp: Float32Array;
  down: Float32Array;
}

export interface HostLlamaWeights {
  embedding: Float32Array;
  layers: HostLayerWeights[];
  finalNorm: Float32Array;
  lmHead: Float32Array;
}

/** A small llama config; `overrides` switch on the variants (GQA, qk-norm, biases, sliding windows...). */
export function llamaConfig(overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  const numLayers = overrides.numLayers ?? 2;
  const headDim = overrides.headDim ?? 8;
  return {
    modelType: 'llama',
    contextLength: 256,
    vocabSize: 61,
    hiddenSize: 32,
    intermediateSize: 48,
    mlpBias: false,
    mlp: 'gated',
    fusedGateUp: false,
    numLayers,
    numHeads: 4,
    numKvHeads: 2,
    headDim,
    rotaryDim: headDim,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: { type: 'default' },
    maxPositionEmbeddings: 256,
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    slidingWindows: new Array<number | null>(numLayers).fill(null),
    ropeLayers: new Array<boolean>(numLayers).fill(true),
    fusedQkv: false,
    attentionSinks: false,
    activation: { kind: 'silu' },
    multipliers: null,
    queryTemperature: null,
    qkNormAfterRope: false,
    qkNormOver: 'head',
    interleavedRope: false,
    normNames: LLAMA_NORM_NAMES,
    tieWordEmbeddings: false,
    dtype: 'f32',
    bosTokenId: null,
    eosTokenIds: [],
    ...overrides,
  };
}

/** Random weights scaled so activations stay O(1) through every layer. */
export function randomLlamaWeights(config: LlamaConfig, random: TestRandom): HostLlamaWeights {
  const { hiddenSize: hidden, intermediateSize: inter, headDim } = config;
  const qkvRows = (config.numHeads + 2 * config.numKvHeads) * headDim;
  const attnWidth = config.numHeads * headDim;
  const linear = (out: number, inDim: number) => random.floats(out * inDim, Math.sqrt(3 / inDim));
  const norm = (n: number) => Float32Array.from({ length: n }, () => random.uniform(0.5, 1.5));
  const embedding = random.floats(config.vocabSize * hidden);
  return {
    embedding,
    layers: Array.from({ length: config.numLayers }, () => ({
      inputNorm: norm(hidden),
      qkv: linear(qkvRows, hidden),
      qkvBias: config.attentionBias ? random.floats(qkvRows, 0.1) : null,
      qNorm: config.qkNorm ? norm(headDim) : null,
      kNorm: config.qkNorm ? norm(headDim) : null,
      o: linear(hidden, attnWidth),
      oBias: config.outputBias ? random.floats(hidden, 0.1) : null,
      postAttentionNorm: norm(hidden),
      gateUp: linear(2 * inter, hidden),
      down: linear(hidden, inter),
    })),
    finalNorm: norm(hidden),
    lmHead: config.tieWordEmbeddings ? embedding : linear(config.vocabSize, hidden),
  };
}

export function f32HostTensor(values: Float32Array, shape: number[]): HostTensor {
  return { dtype: 'f32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** The host weights under their Hugging Face checkpoint names, q/k/v and gate/up split again. */
export function llamaWeightSource(config: LlamaConfig, host: HostLlamaWeights): WeightSource {
  const { hiddenSize: hidden, intermediateSize: inter, headDim } = config;
  const tensors = new Map<string, HostTensor>();
  const put = (name: string, values: Float32Array | null, shape: number[]) => {
    if (values !== null) tensors.set(name, f32HostTensor(values, shape));
  };
  const rows = (values: Float32Array | null, width: number, first: number, count: number) => values?.subarray(first * width, (first + count) * width) ?? null;
  put('model.embed_tokens.weight', host.embedding, [config.vocabSize, hidden]);
  const [q, kv] = [config.numHeads * headDim, config.numKvHeads * headDim];
  host.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, l.inputNorm, [hidden]);
    for (const [name, first, count] of [['q', 0, q], ['k', q, kv], ['v', q + kv, kv]] as const) {
      put(`${p}.self_attn.${name}_proj.weight`, rows(l.qkv, hidden, first, count), [count, hidden]);
      put(`${p}.self_attn.${name}_proj.bias`, rows(l.qkvBias, 1, first, count), [count]);
    }
    put(`${p}.self_attn.q_norm.weight`, l.qNorm, [headDim]);
    put(`${p}.self_attn.k_norm.weight`, l.kNorm, [headDim]);
    put(`${p}.self_attn.o_proj.weight`, l.o, [hidden, config.numHeads * headDim]);
    put(`${p}.self_attn.o_proj.bias`, l.oBias, [hidden]);
    put(`${p}.post_attention_layernorm.weight`, l.postAttentionNorm, [hidden]);
    put(`${p}.mlp.gate_proj.weight`, rows(l.gateUp, hidden, 0, inter), [inter, hidden]);
    put(`${p}.mlp.up_proj.weight`, rows(l.gateUp, hidden, inter, inter), [inter, hidden]);
    put(`${p}.mlp.down_proj.weight`, l.down, [hidden, inter]);
  });
  put('model.norm.weight', host.finalNorm, [hidden]);
  if (!config.tieWordEmbeddings) put('lm_head.weight', host.lmHead, [config.vocabSize, hidden]);
  return {
    read: (name) => {
      const t = tensors.get(name);
      if (t === undefined) throw new Error(`test weights have no tensor ${name}`);
      return t;
    },
  };
}

/** A Llama model with the host weights loaded on `backend`, rotary tables for `maxPositions`. */
export function loadLlamaModel(backend: Backend, config: LlamaConfig, host: HostLlamaWeights, maxPositions = config.maxPositionEmbeddings): LlamaModel {
  const model = new LlamaModel(config, maxPositions, null, wholeModel(config.numLayers));
  model.load(llamaWeightSource(config, host), backend);
  return model;
}

/** Plain (unscaled) RoPE tables, as the model builds them: angle = position * theta^(-2i / rotaryDim); rotaryDim < headDim is partial rotary. */
export function plainRopeTable(headDim: number, theta: number, maxPositions: number, rotaryDim = headDim): RopeTable {
  return buildRopeTable({ rotaryDim, theta, scaling: { type: 'default' }, maxPositionEmbeddings: maxPositions }, maxPositions);
}
