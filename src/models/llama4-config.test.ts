import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import { KeelError } from '../errors.ts';
import type { Llama4Config } from './llama4.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Llama4Config;

/** A Llama-4-Scout-17B-16E-Instruct-shaped text_config: an MoE block in every layer, `no_rope_layers` left empty, attn_temperature_tuning 4, llama3 RoPE with equal factors. */
const SCOUT_TEXT = {
  attention_bias: false,
  attention_chunk_size: 8192,
  attn_scale: 0.1,
  attn_temperature_tuning: 4,
  bos_token_id: 200000,
  eos_token_id: [200001, 200007, 200008],
  floor_scale: 8192,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 5120,
  interleave_moe_layer_step: 1,
  intermediate_size: 8192,
  intermediate_size_mlp: 16384,
  max_position_embeddings: 10485760,
  model_type: 'llama4_text',
  no_rope_layers: [],
  num_attention_heads: 40,
  num_experts_per_tok: 1,
  num_hidden_layers: 48,
  num_key_value_heads: 8,
  num_local_experts: 16,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 16.0, high_freq_factor: 1.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  torch_dtype: 'bfloat16',
  use_qk_norm: true,
  vocab_size: 202048,
};

const SCOUT = {
  architectures: ['Llama4ForConditionalGeneration'],
  boi_token_index: 200080,
  eoi_token_index: 200081,
  image_token_index: 200092,
  model_type: 'llama4',
  text_config: SCOUT_TEXT,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vision_config: { model_type: 'llama4_vision_model', hidden_size: 1408, num_hidden_layers: 34, image_size: 336, patch_size: 14 },
};

/** A tiny llama4_text config (Llama4ForCausalLM) to build models from. */
const TINY = { model_type: 'llama4_text', vocab_size: 64, hidden_size: 32, intermediate_size: 16, intermediate_size_mlp: 24, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, num_local_experts: 3 };

test('a Llama 4 Scout config: MoE in every layer, every fourth layer NoPE with full attention and temperature tuning, the others chunked', () => {
  const architecture = parseModelArchitecture(SCOUT, 'test/config.json');
  assert.equal(architecture.family.name, 'Llama 4');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as Llama4Config;
  assert.deepEqual(
    { layers: c.numLayers, experts: c.numExperts, topK: c.numExpertsPerToken, n: c.intermediateSize, dense: c.denseIntermediateSize, headDim: c.headDim, dtype: c.dtype, tied: c.tieWordEmbeddings },
    { layers: 48, experts: 16, topK: 1, n: 8192, dense: 16384, headDim: 128, dtype: 'bf16', tied: false },
  );
  assert.ok(c.moeLayers.every((m) => m));
  assert.deepEqual(c.ropeLayers.slice(0, 8), [true, true, true, false, true, true, true, false]);
  assert.deepEqual(c.attentionChunks.slice(0, 4), [8192, 8192, 8192, null]);
  assert.deepEqual(c.queryTemperature, { floorScale: 8192, attnScale: 0.1, positionOffset: 1 });
  assert.ok(c.qkL2Norm);
  assert.equal(c.rmsNormEps, 1e-5);
  assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 16, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositionEmbeddings: 8192 });
  assert.deepEqual(c.eosTokenIds, [200001, 200007, 200008]);
});

test('Llama4ForConditionalGeneration ties its lm_head by text_config, not by the wrapper', () => {
  assert.equal(parse({ ...SCOUT, tie_word_embeddings: true }).tieWordEmbeddings, false);
  assert.equal(parse({ ...SCOUT, text_config: { ...SCOUT_TEXT, tie_word_embeddings: true } }).tieWordEmbeddings, true);
});

test('Llama4TextConfig defaults: MoE layers by interleave_moe_layer_step, NoPE by no_rope_layer_interval, chunks by layer_types', () => {
  const c = parse({ ...TINY, interleave_moe_layer_step: 2, no_rope_layer_interval: 2 });
  assert.deepEqual(c.moeLayers, [false, true, false, true]);
  assert.deepEqual(c.ropeLayers, [true, false, true, false]);
  assert.deepEqual(c.attentionChunks, [8192, null, 8192, null]);
  assert.equal(c.numExpertsPerToken, 1);
  const listed = parse({ ...TINY, moe_layers: [0], no_rope_layers: [0, 1, 1, 1], layer_types: ['full_attention', 'full_attention', 'chunked_attention', 'full_attention'], attention_chunk_size: 32 });
  assert.deepEqual(listed.moeLayers, [true, false, false, false]);
  assert.deepEqual(listed.ropeLayers, [false, true, true, true]);
  assert.deepEqual(listed.attentionChunks, [null, null, 32, null]);
  assert.equal(parse({ ...TINY, attn_temperature_tuning: false }).queryTemperature, null);
  assert.equal(parse({ ...TINY, attn_temperature_tuning: 0 }).queryTemperature, null);
});

test('a Llama 4 model names the Hub tensors: fused experts, router, shared expert, dense MLP; no q/k norm weights', () => {
  const names = new Map(createModel(parseModelArchitecture({ ...TINY, interleave_moe_layer_step: 2 }, 'c'), 64).parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(names.get('model.layers.1.feed_forward.experts.gate_up_proj'), [3, 32, 32]);
  assert.deepEqual(names.get('model.layers.1.feed_forward.experts.down_proj'), [3, 16, 32]);
  assert.deepEqual(names.get('model.layers.1.feed_forward.router.weight'), [3, 32]);
  assert.deepEqual(names.get('model.layers.1.feed_forward.shared_expert.gate_proj.weight'), [16, 32]);
  assert.deepEqual(names.get('model.layers.0.feed_forward.gate_proj.weight'), [24, 32]);
  assert.ok(![...names.keys()].some((n) => n.includes('norm') && n.includes('self_attn')));
  assert.ok(names.has('lm_head.weight'));
});

test('a chunked layer keeps its chunk of the KV cache, a NoPE layer all of it', () => {
  const model = createModel(parseModelArchitecture({ ...TINY, attention_chunk_size: 16 }, 'c'), 64);
  assert.deepEqual(model.kvLayers.map((l) => (l.kind === 'attention' ? l.slidingWindow : 'mla')), [16, 16, 16, null]);
});

test('Llama 4 options Keel cannot run are named', () => {
  assertInvalidModel(() => parse({ ...TINY, hidden_act: 'gelu_accurate' }), 'hidden_act "gelu_accurate"');
  assertInvalidModel(() => parse({ ...TINY, attention_chunk_size: null }), 'attention_chunk_size', 'chunked_attention');
  assertInvalidModel(() => parse({ ...TINY, layer_types: ['full_attention'] }), 'layer_types', '4 layers');
  assertInvalidModel(() => parse({ ...TINY, no_rope_layers: [1, 1] }), '"no_rope_layers"', '4 layers');
  assertInvalidModel(() => parse({ ...TINY, moe_layers: [4] }), '"moe_layers"', 'below 4');
  assertInvalidModel(() => parse({ ...TINY, num_experts_per_tok: 4 }), 'num_experts_per_tok (4)', '3 experts');
  assertInvalidModel(() => parse({ ...TINY, attn_temperature_tuning: 'yes' }), 'attn_temperature_tuning');
  assertInvalidModel(() => parse({ ...SCOUT, text_config: { ...SCOUT_TEXT, model_type: 'llama' } }), 'inside a "llama4"', 'llama4_text');
  assert.throws(
    () => createModel(parseModelArchitecture(TINY, 'c'), 64, { sinks: 4, window: 16 }),
    (e: unknown) => e instanceof KeelError && e.message.includes('StreamingLLM'),
  );
});
