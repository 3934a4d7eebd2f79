import { LLAMA_NORM_NAMES } from './decoder.ts';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture, readModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parseHfConfig = (json: unknown, source: string) => parseModelArchitecture(json, source).config as LlamaConfig;
const readModelConfig = (dir: string) => readModelArchitecture(dir).config as LlamaConfig;

/** The one window every layer has, or 'per-layer' when the layers differ. */
function window(c: LlamaConfig): number | null | 'per-layer' {
  return c.slidingWindows.every((w) => w === c.slidingWindows[0]) ? c.slidingWindows[0] : 'per-layer';
}

/** Llama-3.1-8B's config.json as transformers 4.x writes it. */
const LLAMA31_V4 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};

/** The same model as transformers 5 saves it. */
const LLAMA31_V5 = {
  ...withoutKeys(LLAMA31_V4, ['rope_scaling', 'rope_theta', 'torch_dtype']),
  dtype: 'bfloat16',
  rope_parameters: { rope_type: 'llama3', rope_theta: 500000.0, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
};

const TINY = { model_type: 'llama', vocab_size: 100, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4 };

function withoutKeys(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

function parse(json: Record<string, unknown>): LlamaConfig {
  return parseHfConfig(json, 'test/config.json');
}

function rejects(json: unknown, ...fragments: string[]): void {
  assertInvalidModel(() => parseHfConfig(json, 'test/config.json'), ...fragments);
}

test('a transformers 4.x Llama 3.1 config parses to the expected ModelConfig', () => {
  assert.deepEqual(parse(LLAMA31_V4), {
    modelType: 'llama',
    contextLength: 131072,
    vocabSize: 128256,
    hiddenSize: 4096,
    intermediateSize: 14336,
    mlpBias: false,
    mlp: 'gated',
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    maxPositionEmbeddings: 131072,
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    slidingWindows: new Array(32).fill(null),
    ropeLayers: new Array(32).fill(true),
    rotaryDim: 128,
    fusedQkv: false,
    attentionSinks: false,
    activation: { kind: 'silu' },
    multipliers: null,
    queryTemperature: null,
    qkNormAfterRope: false,
    qkNormOver: 'head',
    interleavedRope: false,
    fusedGateUp: false,
    normNames: LLAMA_NORM_NAMES,
    tieWordEmbeddings: false,
    dtype: 'bf16',
    bosTokenId: 128000,
    eosTokenIds: [128001, 128008, 128009],
  } satisfies LlamaConfig);
});

test('hidden_act picks the gated MLP\'s activation by its transformers name (the tanh GELUs are one formula)', () => {
  const activation = (hidden_act: string) => parse({ ...TINY, hidden_act }).activation;
  assert.deepEqual(['silu', 'swish'].map(activation), [{ kind: 'silu' }, { kind: 'silu' }]);
  assert.deepEqual(['gelu_pytorch_tanh', 'gelu_new', 'gelu_fast'].map(activation), new Array(3).fill({ kind: 'gelu-tanh' }));
  assert.deepEqual(activation('gelu'), { kind: 'gelu' });
  assert.deepEqual(activation('relu'), { kind: 'relu' });
});

test('LongRoPE in any decoder family, as transformers reads it: top-level original_max_position_embeddings first, attention factor from max / original', () => {
  const longrope = { rope_type: 'longrope', rope_theta: 1e4, short_factor: [1, 1.5], long_factor: [2, 4], original_max_position_embeddings: 32 };
  const c = parse({ ...TINY, max_position_embeddings: 128, rope_parameters: longrope });
  assert.deepEqual(c.ropeScaling, { type: 'longrope', shortFactor: [1, 1.5], longFactor: [2, 4], originalMaxPositionEmbeddings: 32, attentionFactor: Math.sqrt(1 + Math.log(4) / Math.log(32)) });
  const topLevel = parse({ ...TINY, max_position_embeddings: 128, original_max_position_embeddings: 64, rope_parameters: { ...longrope, attention_factor: 1.2 } }).ropeScaling;
  assert.deepEqual(topLevel.type === 'longrope' && [topLevel.originalMaxPositionEmbeddings, topLevel.attentionFactor], [64, 1.2]);
});

test('transformers 5.x keys (rope_parameters, dtype) give the same config as 4.x keys', () => {
  assert.deepEqual(parse(LLAMA31_V5), parse(LLAMA31_V4));
  const v4Linear = parse({ ...TINY, rope_theta: 1e6, rope_scaling: { type: 'linear', factor: 2 } });
  const v5Linear = parse({ ...TINY, rope_parameters: { rope_type: 'linear', rope_theta: 1e6, factor: 2 } });
  assert.deepEqual(v5Linear, v4Linear);
  assert.deepEqual(v4Linear.ropeScaling, { type: 'linear', factor: 2 });
  assert.equal(v4Linear.ropeTheta, 1e6);
  assert.deepEqual(parse({ ...TINY, rope_scaling: { rope_type: 'dynamic', factor: 4 } }).ropeScaling, { type: 'dynamic', factor: 4 });
  assert.equal(parse({ ...TINY, rope_parameters: { rope_type: 'default' }, rope_theta: 5000 }).ropeTheta, 5000);
  assert.equal(parse({ ...TINY, rope_parameters: { rope_type: 'default', rope_theta: 7000 } }).ropeTheta, 7000);
});

test('absent keys take the transformers defaults', () => {
  const c = parse(TINY);
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.headDim, 16);
  assert.equal(c.maxPositionEmbeddings, 2048);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: 'default' });
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.dtype, 'f32');
  assert.equal(c.bosTokenId, null);
  assert.deepEqual(c.eosTokenIds, []);
  assert.equal(parse({ ...TINY, num_key_value_heads: null, head_dim: null }).headDim, 16);
  assert.equal(parse({ ...TINY, head_dim: 32 }).headDim, 32);
  assert.deepEqual(parse({ ...TINY, eos_token_id: 7, tie_word_embeddings: true }).eosTokenIds, [7]);
  assert.equal(parse({ ...TINY, model_type: 'mistral' }).maxPositionEmbeddings, 131072);
});

test('qwen2 biases q/k/v only and slides only when use_sliding_window is on, on the layers it names', () => {
  const qwen2 = { ...TINY, model_type: 'qwen2', tie_word_embeddings: true, sliding_window: 4096, max_window_layers: 28 };
  const c = parse(qwen2);
  assert.equal(c.attentionBias, true);
  assert.equal(c.outputBias, false);
  assert.equal(c.qkNorm, false);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(window(c), null);
  assert.equal(window(parse({ ...qwen2, use_sliding_window: false })), null);
  assert.equal(window(parse({ ...qwen2, use_sliding_window: true })), null, 'max_window_layers past the last layer slides none');
  assert.equal(window(parse({ ...qwen2, use_sliding_window: true, max_window_layers: 0 })), 4096);
  assert.equal(window(parse({ ...qwen2, use_sliding_window: true, layer_types: ['sliding_attention', 'sliding_attention'] })), 4096);
  assert.equal(window(parse({ ...qwen2, use_sliding_window: true, sliding_window: null, max_window_layers: 0 })), null);
  assert.deepEqual(parse({ ...qwen2, use_sliding_window: true, max_window_layers: 1 }).slidingWindows, [null, 4096]);
  assert.deepEqual(parse({ ...qwen2, use_sliding_window: true, layer_types: ['sliding_attention', 'full_attention'] }).slidingWindows, [4096, null]);
  rejects({ ...qwen2, use_sliding_window: true, layer_types: ['full_attention'] }, 'layer_types has 1 entries');
});

test('qwen3 has qk-norm, a 128 head_dim default, and attention_bias on all four projections', () => {
  const qwen3 = { ...TINY, model_type: 'qwen3' };
  const c = parse(qwen3);
  assert.equal(c.qkNorm, true);
  assert.equal(c.headDim, 128);
  assert.equal(c.attentionBias, false);
  const biased = parse({ ...qwen3, head_dim: 16, attention_bias: true });
  assert.equal(biased.headDim, 16);
  assert.equal(biased.attentionBias, true);
  assert.equal(biased.outputBias, true);
  assert.equal(window(parse({ ...qwen3, use_sliding_window: true, max_window_layers: 0, sliding_window: 512 })), 512);
});

test('mistral slides every layer, 4096 by default, none when sliding_window is null', () => {
  const mistral = { ...TINY, model_type: 'mistral' };
  assert.equal(window(parse(mistral)), 4096);
  assert.equal(window(parse({ ...mistral, sliding_window: 1024 })), 1024);
  assert.equal(window(parse({ ...mistral, sliding_window: null })), null);
  assert.equal(parse({ ...mistral, attention_bias: true }).attentionBias, false);
});

test('llama attention_bias covers q, k, v and o; mlp_bias gives gate, up and down biases (llama only, as transformers)', () => {
  const c = parse({ ...TINY, attention_bias: true });
  assert.equal(c.attentionBias, true);
  assert.equal(c.outputBias, true);
  assert.equal(c.mlpBias, false);
  const names = (json: Record<string, unknown>) => createModel(parseModelArchitecture(json, 'test/config.json'), 64).parameters().map((p) => p.name);
  const biased = names({ ...TINY, mlp_bias: true }).filter((n) => n.startsWith('model.layers.0.mlp.'));
  assert.deepEqual(biased.sort(), ['bias', 'weight'].flatMap((k) => ['down_proj', 'gate_proj', 'up_proj'].map((p) => `model.layers.0.mlp.${p}.${k}`)).sort());
  assert.equal(parse({ ...TINY, model_type: 'mistral', mlp_bias: true }).mlpBias, false);
});

test('yarn follows transformers: attention factor from factor or mscale, beta and truncate defaults', () => {
  const yarn = (params: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    parse({ ...TINY, model_type: 'qwen3', max_position_embeddings: 131072, rope_scaling: { rope_type: 'yarn', ...params }, ...extra }).ropeScaling;
  assert.deepEqual(yarn({ factor: 4, original_max_position_embeddings: 32768 }), {
    type: 'yarn',
    factor: 4,
    originalMaxPositionEmbeddings: 32768,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(4) + 1,
    truncate: true,
  });
  const mscaled = yarn({ factor: 40, original_max_position_embeddings: 4096, mscale: 0.707, mscale_all_dim: 1, beta_fast: 16, beta_slow: 2, truncate: false });
  assert.ok(mscaled.type === 'yarn');
  assert.equal(mscaled.attentionFactor, (0.1 * 0.707 * Math.log(40) + 1) / (0.1 * Math.log(40) + 1));
  assert.equal(mscaled.betaFast, 16);
  assert.equal(mscaled.betaSlow, 2);
  assert.equal(mscaled.truncate, false);
  const onlyMscale = yarn({ factor: 40, mscale: 0.707 });
  assert.ok(onlyMscale.type === 'yarn');
  assert.equal(onlyMscale.attentionFactor, 0.1 * Math.log(40) + 1, 'mscale without mscale_all_dim is ignored');
  assert.equal(onlyMscale.originalMaxPositionEmbeddings, 131072, 'defaults to max_position_embeddings');
  const explicit = yarn({ factor: 4, attention_factor: 1.5 });
  assert.ok(explicit.type === 'yarn' && explicit.attentionFactor === 1.5);
  const implicitFactor = yarn({ original_max_position_embeddings: 32768 });
  assert.ok(implicitFactor.type === 'yarn' && implicitFactor.factor === 4);
  const topLevelOriginal = yarn({ factor: 4, original_max_position_embeddings: 32768 }, { original_max_position_embeddings: 16384 });
  assert.ok(topLevelOriginal.type === 'yarn' && topLevelOriginal.originalMaxPositionEmbeddings === 16384);
});

test('llama3 rope takes original_max_position_embeddings from the dict, else max_position_embeddings', () => {
  const scaling = parse({ ...TINY, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 } }).ropeScaling;
  assert.ok(scaling.type === 'llama3' && scaling.originalMaxPositionEmbeddings === 2048);
  rejects({ ...TINY, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 2 } }, 'high_freq_factor');
  // Equal factors (Llama 4 Scout's) leave no band to smooth: transformers only warns.
  assert.equal(parse({ ...TINY, rope_scaling: { rope_type: 'llama3', factor: 16, low_freq_factor: 1, high_freq_factor: 1, original_max_position_embeddings: 8192 } }).ropeScaling.type, 'llama3');
  rejects({ ...TINY, rope_scaling: { rope_type: 'llama3', factor: 8, high_freq_factor: 4 } }, 'low_freq_factor', 'missing');
});

test('unsupported or malformed configs are rejected with messages naming the key', () => {
  rejects(withoutKeys(TINY, ['model_type']), 'no model_type', 'llama, mistral, ministral3, qwen2, qwen3');
  rejects({ ...TINY, model_type: 'gpt2' }, '"gpt2" is not supported', 'Llama (llama, mistral, ministral3, qwen2, qwen3');
  rejects([TINY], 'JSON object');
  rejects(withoutKeys(TINY, ['hidden_size']), '"hidden_size"', 'missing');
  rejects({ ...TINY, vocab_size: -5 }, '"vocab_size"', 'positive integer', '-5');
  rejects({ ...TINY, num_hidden_layers: '2' }, '"num_hidden_layers"');
  rejects({ ...TINY, intermediate_size: 1.5 }, '"intermediate_size"');
  rejects({ ...TINY, num_key_value_heads: 3 }, 'num_attention_heads (4)', 'num_key_value_heads (3)');
  rejects({ ...TINY, hidden_size: 66 }, 'not divisible');
  rejects({ ...TINY, head_dim: 15 }, 'head_dim', 'even');
  rejects({ ...TINY, rms_norm_eps: 0 }, '"rms_norm_eps"');
  rejects({ ...TINY, hidden_act: 'gelu_accurate' }, 'hidden_act', 'gelu_accurate');
  rejects({ ...TINY, torch_dtype: 'int8' }, 'torch_dtype', 'int8');
  rejects({ ...TINY, dtype: 'float8' }, 'dtype', 'float8');
  rejects({ ...TINY, eos_token_id: 'x' }, '"eos_token_id"');
  rejects({ ...TINY, rope_scaling: { rope_type: 'longrope', factor: 2 } }, '"short_factor"');
  rejects({ ...TINY, rope_scaling: { rope_type: 'ntk', factor: 2 } }, '"ntk"', 'default, linear, dynamic, llama3, yarn, longrope');
  rejects({ ...TINY, rope_scaling: { type: 'su' } }, '"su"');
  rejects({ ...TINY, rope_scaling: { type: 'linear' } }, 'rope_scaling', '"factor"');
  rejects({ ...TINY, rope_parameters: { rope_type: 'dynamic', factor: 'big' } }, 'rope_parameters', '"factor"');
  rejects({ ...TINY, rope_scaling: 'linear' }, 'rope_scaling must be an object');
  rejects({ ...TINY, partial_rotary_factor: 0.5 }, 'partial_rotary_factor');
  rejects({ ...TINY, rope_parameters: { full_attention: { rope_type: 'default' } } }, 'per-layer-type');
  rejects({ ...TINY, rope_theta: -1 }, '"rope_theta"');
});

test('readModelConfig reads config.json and names the path when it is missing or broken', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'config.json');
  assert.throws(() => readModelConfig(dir), (e: unknown) => e instanceof KeelError && e.kind === 'invalid_model' && e.message.includes(path));
  writeFileSync(path, '{"model_type": "llama",');
  assert.throws(() => readModelConfig(dir), (e: unknown) => e instanceof KeelError && e.message.includes(path) && e.message.includes('not valid JSON'));
  writeFileSync(path, JSON.stringify(LLAMA31_V5));
  assert.equal(readModelConfig(dir).numKvHeads, 8);
});
