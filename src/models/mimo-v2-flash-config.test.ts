import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { MimoV2FlashConfig } from './mimo-v2-flash.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as MimoV2FlashConfig;

/** MiMo-V2-Flash as MiMoV2FlashConfig's defaults: the shape keys a config.json writes, nothing else. */
const MIMO_V2_FLASH = {
  architectures: ['MiMoV2FlashForCausalLM'],
  model_type: 'mimo_v2_flash',
  vocab_size: 152576,
  hidden_size: 4096,
  num_hidden_layers: 48,
  num_attention_heads: 64,
};

test('MiMo-V2-Flash reads MiMoV2FlashConfig\'s defaults: 192-wide q/k and 128-wide value heads, sliding layers but the first and every sixth, per-layer-type RoPE', () => {
  const c = parse(MIMO_V2_FLASH);
  assert.deepEqual(
    { kvHeads: c.numKvHeads, headDim: c.headDim, valueDim: c.valueDim, valueScale: c.valueScale, window: c.slidingWindow, eps: c.rmsNormEps, bias: c.attentionBias },
    { kvHeads: 4, headDim: 192, valueDim: 128, valueScale: 0.707, window: 128, eps: 1e-5, bias: false },
  );
  const full = c.slidingLayers.flatMap((sliding, i) => (sliding ? [] : [i]));
  assert.deepEqual(full, [0, 5, 11, 17, 23, 29, 35, 41, 47]);
  // int(192 · 0.334) = 64 rotary dims for both layer types.
  assert.deepEqual(c.fullRope, { ropeTheta: 5_000_000, ropeScaling: { type: 'default' }, rotaryDim: 64 });
  assert.deepEqual(c.slidingRope, { ropeTheta: 10_000, ropeScaling: { type: 'default' }, rotaryDim: 64 });
  assert.deepEqual(c.sparseLayers, [false, ...new Array<boolean>(47).fill(true)]);
  assert.deepEqual(c.moe, {
    numExperts: 256,
    numExpertsPerToken: 8,
    expertIntermediateSize: 2048,
    sharedIntermediateSize: 0,
    fusedExperts: false,
    routing: { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1 },
  });
});

test('MiMo-V2-Flash holds transformers\' parameter count: the sliding layers\' doubled KV heads and sinks, no shared experts', () => {
  // MiMoV2FlashForCausalLM(MiMoV2FlashConfig()) on the meta device: 308,778,768,832 parameters, plus 47 × 256 e_score_correction_bias values.
  const model = createModel(parseModelArchitecture(MIMO_V2_FLASH, 'test/config.json'), 64);
  assert.equal(parameterCount(model), 308_778_768_832 + 47 * 256);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.1.self_attn.k_proj.weight'), [8 * 192, 4096]);
  assert.deepEqual(shapes.get('model.layers.1.self_attn.v_proj.weight'), [8 * 128, 4096], 'v_proj as the checkpoint holds it, before its heads are padded');
  assert.deepEqual(shapes.get('model.layers.0.self_attn.v_proj.weight'), [4 * 128, 4096]);
  assert.deepEqual(shapes.get('model.layers.5.self_attn.o_proj.weight'), [4096, 64 * 128]);
  assert.deepEqual(shapes.get('model.layers.1.self_attn.attention_sink_bias'), [64]);
  assert.ok(!shapes.has('model.layers.0.self_attn.attention_sink_bias'), 'full-attention layers have no sinks');
  assert.ok(![...shapes.keys()].some((name) => name.includes('shared_expert')));
});

test('layer types, q/k/v biases and groups are read as transformers builds them; a null value scale is 1', () => {
  const json = {
    ...MIMO_V2_FLASH,
    num_hidden_layers: 3,
    attention_bias: true,
    layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
    mlp_layer_types: ['sparse', 'dense', 'sparse'],
    attention_value_scale: null,
    n_group: 8,
    topk_group: 2,
  };
  const c = parse(json);
  assert.deepEqual(c.slidingLayers, [true, false, true]);
  assert.deepEqual(c.sparseLayers, [true, false, true]);
  assert.equal(c.valueScale, 1);
  assert.deepEqual(c.moe.routing.groups, { numGroups: 8, topkGroups: 2, score: 'top2-sum' });
  // MiMoV2FlashForCausalLM(MiMoV2FlashConfig(those keys)): 14,616,172,928 parameters, plus 2 × 256 bias values.
  assert.equal(parameterCount(createModel(parseModelArchitecture(json, 'test/config.json'), 64)), 14_616_172_928 + 2 * 256);
});

test('RoPE per layer type: each entry its own theta and share of the head; the scaled types rotate whole heads unless told', () => {
  const c = parse({
    ...MIMO_V2_FLASH,
    head_dim: 64,
    v_head_dim: 64,
    rope_parameters: {
      full_attention: { rope_type: 'yarn', rope_theta: 1e6, factor: 4, original_max_position_embeddings: 4096 },
      sliding_attention: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.5 },
    },
  });
  assert.equal(c.fullRope.rotaryDim, 64);
  assert.equal(c.fullRope.ropeScaling.type, 'yarn');
  assert.deepEqual(c.slidingRope, { ropeTheta: 1e4, ropeScaling: { type: 'default' }, rotaryDim: 32 });
});

test('configs transformers cannot run, or Keel cannot serve, are refused by name', () => {
  assertInvalidModel(() => parse({ ...MIMO_V2_FLASH, rope_parameters: { rope_type: 'default', rope_theta: 1e4 } }), 'per layer type');
  assertInvalidModel(() => parse({ ...MIMO_V2_FLASH, rope_parameters: { full_attention: { rope_type: 'default' }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } } }), 'rope_theta');
  assertInvalidModel(() => parse({ ...MIMO_V2_FLASH, v_head_dim: 256 }), 'v_head_dim (256)', 'head_dim (192)');
  assertInvalidModel(() => parse({ ...MIMO_V2_FLASH, num_key_value_heads: 64 }), 'num_attention_heads (64)', '2 × num_key_value_heads (128)');
  assertInvalidModel(() => parse({ ...MIMO_V2_FLASH, num_hidden_layers: 2, mlp_layer_types: ['dense'] }), 'mlp_layer_types');
});
