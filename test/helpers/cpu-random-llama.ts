import { buildRopeTable } from '../../src/model/rope.ts';
import type { Backend, HostTensor, RopeTable, Tensor } from '../../src/backend/backend.ts';
import type { LlamaWeights } from '../../src/model/llama-weights.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';
import type { TestRandom } from './cpu-random.ts';

/** A layer's weights as host float32 arrays, in the merged layout of LayerWeights. */
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

/** A small llama config; `overrides` switch on the variants (GQA, qk-norm, biases, sliding window...). */
export function llamaConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    modelType: 'llama',
    vocabSize: 61,
    hiddenSize: 32,
    intermediateSize: 48,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: { type: 'default' },
    maxPositionEmbeddings: 256,
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    slidingWindow: null,
    tieWordEmbeddings: false,
    dtype: 'f32',
    bosTokenId: null,
    eosTokenIds: [],
    ...overrides,
  };
}

/** Random weights scaled so activations stay O(1) through every layer. */
export function randomLlamaWeights(config: ModelConfig, random: TestRandom): HostLlamaWeights {
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

/** Loads host weights through `backend.loadWeight`; a tied lm head shares the embedding's tensor. */
export function uploadLlamaWeights(backend: Backend, config: ModelConfig, host: HostLlamaWeights): LlamaWeights {
  const { hiddenSize: hidden, intermediateSize: inter, headDim } = config;
  const qkvRows = (config.numHeads + 2 * config.numKvHeads) * headDim;
  const load = (values: Float32Array, shape: number[]) => backend.loadWeight(f32HostTensor(values, shape));
  const loadOptional = (values: Float32Array | null, shape: number[]): Tensor | null => (values === null ? null : load(values, shape));
  const embedding = load(host.embedding, [config.vocabSize, hidden]);
  return {
    embedding,
    layers: host.layers.map((l) => ({
      inputNorm: load(l.inputNorm, [hidden]),
      qkv: load(l.qkv, [qkvRows, hidden]),
      qkvBias: loadOptional(l.qkvBias, [qkvRows]),
      qNorm: loadOptional(l.qNorm, [headDim]),
      kNorm: loadOptional(l.kNorm, [headDim]),
      o: load(l.o, [hidden, config.numHeads * headDim]),
      oBias: loadOptional(l.oBias, [hidden]),
      postAttentionNorm: load(l.postAttentionNorm, [hidden]),
      gateUp: load(l.gateUp, [2 * inter, hidden]),
      down: load(l.down, [hidden, inter]),
    })),
    finalNorm: load(host.finalNorm, [hidden]),
    lmHead: host.lmHead === host.embedding ? embedding : load(host.lmHead, [config.vocabSize, hidden]),
  };
}

/** Plain (unscaled) RoPE tables, as the model builds them: angle = position * theta^(-2i / headDim). */
export function plainRopeTable(headDim: number, theta: number, maxPositions: number): RopeTable {
  return buildRopeTable(llamaConfig({ headDim, ropeTheta: theta, ropeScaling: { type: 'default' } }), maxPositions);
}
