import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { HunyuanMoeConfig } from './hunyuan-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as HunyuanMoeConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** Hunyuan-A13B's config.json shape, with the keys of Tencent's own code that transformers ignores. */
const HUNYUAN_A13B = {
  architectures: ['HunYuanMoEV1ForCausalLM'],
  model_type: 'hunyuan_v1_moe',
  hidden_size: 4096,
  intermediate_size: 3072,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  num_experts: 64,
  moe_topk: new Array(32).fill(8),
  moe_intermediate_size: new Array(32).fill(3072),
  num_shared_expert: new Array(32).fill(1),
  use_mixed_mlp_moe: true,
  use_qk_norm: true,
  attention_bias: false,
  vocab_size: 128167,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  rope_scaling: { alpha: 1000.0, factor: 1.0, type: 'dynamic' },
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 127960,
};

test("Hunyuan-A13B: Hunyuan dense's attention (q/k norms after RoPE, NTK-alpha), 8 of 64 experts per layer", () => {
  const c = parse(HUNYUAN_A13B);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [4096, 32, 32, 8, 128, 128167]);
  assert.deepEqual([c.modelType, c.qkNorm, c.qkNormAfterRope, c.normNames.q, c.normNames.k], ['hunyuan_v1_moe', true, true, 'self_attn.query_layernorm', 'self_attn.key_layernorm']);
  assert.deepEqual(c.ropeScaling, { type: 'default' });
  assert.ok(Math.abs(c.ropeTheta / (1e4 * 1000 ** (128 / 126)) - 1) < 1e-12);
  assert.deepEqual([c.numExperts, c.intermediateSize, c.tieWordEmbeddings], [64, 3072, true]);
  assert.deepEqual(c.numExpertsPerToken, new Array(32).fill(8));
});

test("Hunyuan-A13B reads transformers' parameter count: experts and the shared MLP intermediate_size wide", () => {
  const model = createModel(parseModelArchitecture(HUNYUAN_A13B, 'test/config.json'), 64);
  // HunYuanMoEV1ForCausalLM.from_config(this config) on the meta device holds 80,393,183,232 parameters (the head tied).
  assert.equal(parameterCount(model), 80_393_183_232);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate.wg.weight'), [64, 4096]);
  assert.deepEqual(shapes.get('model.layers.31.mlp.shared_mlp.down_proj.weight'), [4096, 3072]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.experts.63.up_proj.weight'), [3072, 4096]);
});

test('Hunyuan MoE: moe_topk one number for every layer or a list, either spelling of the keys, and the class defaults', () => {
  const small = { ...HUNYUAN_A13B, num_hidden_layers: 3 };
  assert.deepEqual(parse({ ...small, moe_topk: 2 }).numExpertsPerToken, [2, 2, 2]);
  assert.deepEqual(parse({ ...small, moe_topk: [1, 2, 3] }).numExpertsPerToken, [1, 2, 3]);
  const { moe_topk: _k, num_experts: _e, ...plain } = small;
  const aliased = parse({ ...plain, num_local_experts: 16, num_experts_per_tok: 4 });
  assert.deepEqual([aliased.numExperts, aliased.numExpertsPerToken], [16, [4, 4, 4]]);
  const defaults = parse({ model_type: 'hunyuan_v1_moe', vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, head_dim: 8 });
  assert.deepEqual([defaults.numExperts, defaults.numExpertsPerToken, defaults.intermediateSize, defaults.numKvHeads, defaults.tieWordEmbeddings], [1, [1, 1], 11008, 4, false]);
});

test('Hunyuan MoE refuses, by key, what transformers would not build', () => {
  rejects({ ...HUNYUAN_A13B, num_experts: new Array(32).fill(64) }, 'num_experts', 'list');
  rejects({ ...HUNYUAN_A13B, moe_topk: [8, 8] }, 'moe_topk', 'one per layer');
  rejects({ ...HUNYUAN_A13B, moe_topk: 65 }, 'moe_topk', '64');
  rejects({ ...HUNYUAN_A13B, head_dim: undefined }, 'head_dim');
  rejects({ ...HUNYUAN_A13B, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1], original_max_position_embeddings: 4096 } }, 'LongRoPE', 'hunyuan_v1_moe');
});
