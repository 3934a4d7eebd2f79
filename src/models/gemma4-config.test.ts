import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { Gemma4Config } from './gemma4-config.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Gemma4Config;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parse(json), ...fragments);
}

/** A config of Gemma 4 31B's shape: 60 layers (every sixth full), keys as values on the full layers' 4 KV heads of 512. */
const DENSE = {
  model_type: 'gemma4_text',
  hidden_size: 5376,
  intermediate_size: 21504,
  num_hidden_layers: 60,
  num_attention_heads: 32,
  num_key_value_heads: 16,
  head_dim: 256,
  global_head_dim: 512,
  num_global_key_value_heads: 4,
  attention_k_eq_v: true,
  hidden_size_per_layer_input: 0,
  sliding_window: 1024,
  final_logit_softcapping: 30.0,
};

/** A config of Gemma 4 E2B's shape: per-layer inputs of 256, the last 20 of 35 layers KV-shared with doubled MLPs. */
const SMALL = {
  model_type: 'gemma4_text',
  hidden_size: 1536,
  intermediate_size: 6144,
  num_hidden_layers: 35,
  num_attention_heads: 8,
  num_key_value_heads: 1,
  head_dim: 256,
  global_head_dim: 512,
  hidden_size_per_layer_input: 256,
  num_kv_shared_layers: 20,
  use_double_wide_mlp: true,
  sliding_window: 512,
  final_logit_softcapping: 30.0,
};

/** A config of Gemma 4 26B-A4B's shape: 128 experts of 704, top 8, beside each layer's dense MLP of 2112. */
const MOE = {
  model_type: 'gemma4_text',
  hidden_size: 2816,
  intermediate_size: 2112,
  num_hidden_layers: 30,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 256,
  global_head_dim: 512,
  num_global_key_value_heads: 2,
  attention_k_eq_v: true,
  hidden_size_per_layer_input: 0,
  enable_moe_block: true,
  num_experts: 128,
  top_k_experts: 8,
  moe_intermediate_size: 704,
  sliding_window: 1024,
  final_logit_softcapping: 30.0,
};

// Gemma4ForCausalLM.from_config(each config) on the meta device; Keel's lists add each layer's
// layer_scalar, a buffer the checkpoint stores.
test("Gemma 4 configs of the 31B's, E2B's and 26B-A4B's shapes read transformers' parameter counts", () => {
  const count = (json: Record<string, unknown>) => parameterCount(createModel(parseModelArchitecture(json, 'test/config.json'), 64));
  assert.equal(count(DENSE), 30_697_345_280 + 60);
  assert.equal(count(SMALL), 4_621_490_944 + 35);
  assert.equal(count(MOE), 25_233_141_760 + 30);
});

test('Gemma 4 dense: every sixth layer full, with global_head_dim and num_global_key_value_heads; proportional RoPE there', () => {
  const c = parse(DENSE);
  const layer = (i: number) => c.layers[i];
  assert.deepEqual(layer(0), { sliding: true, headDim: 256, numKvHeads: 16, kvSource: null, intermediateSize: 21504 });
  assert.deepEqual(layer(5), { sliding: false, headDim: 512, numKvHeads: 4, kvSource: null, intermediateSize: 21504 });
  assert.equal(c.layers.filter((l) => !l.sliding).length, 10);
  assert.deepEqual([c.attentionKEqV, c.slidingWindow, c.finalLogitSoftcap, c.perLayerInput, c.moe], [true, 1024, 30, null, null]);
  assert.deepEqual(c.fullRope, { ropeTheta: 1e6, ropeScaling: { type: 'proportional', factor: 1, partialRotaryFactor: 0.25 } });
  assert.deepEqual(c.slidingRope, { ropeTheta: 1e4, ropeScaling: { type: 'default' } });
  // Without attention_k_eq_v, num_global_key_value_heads is not read (Gemma4TextConfig gates it so).
  assert.equal(parse({ ...DENSE, attention_k_eq_v: false }).layers[5].numKvHeads, 16);
});

test('Gemma 4 small: the last layers read the last earlier layer of their type, with doubled MLPs; per-layer inputs', () => {
  const c = parse(SMALL);
  // Layers 0-14 cache their own; 14 (sliding) and 11 (full) are the last of each type before layer 15.
  assert.deepEqual(c.layers.slice(14, 18).map((l) => l.kvSource), [null, 14, 14, 11]);
  assert.equal(c.layers[34].sliding, false, 'transformers forces the last layer to full attention');
  assert.equal(c.layers[34].kvSource, 11);
  assert.deepEqual([c.layers[14].intermediateSize, c.layers[15].intermediateSize], [6144, 12288]);
  assert.deepEqual(c.perLayerInput, { hiddenSize: 256, vocabSize: 262_144 });
  const kv = createModel(parseModelArchitecture(SMALL, 'test/config.json'), 64).kvLayers;
  assert.deepEqual([kv[16], kv[17]], [
    { kind: 'attention', numKvHeads: 1, headDim: 256, slidingWindow: 512, sharedKvDistance: 2 },
    { kind: 'attention', numKvHeads: 1, headDim: 512, slidingWindow: null, sharedKvDistance: 6 },
  ]);
});

test('Gemma 4 reads per_layer_config as transformers 5 saves it, and refuses what it does not read per layer', () => {
  const saved = { ...DENSE, num_hidden_layers: 6, per_layer_config: { '5': { head_dim: 512, num_key_value_heads: 4 }, '1': { num_key_value_heads: 8 } } };
  const c = parse(saved);
  assert.deepEqual(
    c.layers.map((l) => [l.headDim, l.numKvHeads]),
    [[256, 16], [256, 8], [256, 16], [256, 16], [256, 16], [512, 4]],
  );
  rejects({ ...saved, per_layer_config: { '5': { intermediate_size: 1 } } }, 'per_layer_config["5"]', 'intermediate_size');
  rejects({ ...saved, per_layer_config: { '6': { head_dim: 512 } } }, 'per_layer_config["6"]', 'not a layer index');
  rejects({ ...saved, per_layer_config: { '1': { head_dim: 128 } } }, 'sliding-attention layers have head dims 256, 128');
});

test('Gemma 4 refuses bidirectional attention over every token, KV sharing without a source layer, and RoPE not given per layer type', () => {
  rejects({ ...DENSE, use_bidirectional_attention: 'all' }, 'use_bidirectional_attention "all"');
  assert.equal(parse({ ...DENSE, use_bidirectional_attention: 'vision' }).numLayers, 60);
  const types = ['full_attention', 'sliding_attention', 'full_attention'];
  rejects({ ...SMALL, num_hidden_layers: 3, layer_types: types, num_kv_shared_layers: 2 }, 'layer 1 shares', 'sliding-attention layer before layer 1');
  rejects({ ...SMALL, num_kv_shared_layers: 35 }, 'num_kv_shared_layers (35)');
  rejects({ ...DENSE, rope_parameters: { rope_type: 'default', rope_theta: 1e4 } }, 'one RoPE dict per layer type');
  rejects({ ...DENSE, rope_parameters: { full_attention: { rope_type: 'default' } } }, 'no RoPE dict for the sliding_attention layers');
});

test('the gemma4 wrapper serves its text_config, tied by its own tie_word_embeddings (true by default)', () => {
  const c = parse({ model_type: 'gemma4', text_config: { ...MOE, tie_word_embeddings: false }, dtype: 'bfloat16' });
  assert.deepEqual([c.modelType, c.tieWordEmbeddings, c.dtype, c.moe?.numExperts], ['gemma4_text', true, 'bf16', 128]);
});
