import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** An Apertus-8B-shaped config.json. */
const APERTUS_8B = {
  architectures: ['ApertusForCausalLM'],
  attention_bias: false,
  bos_token_id: 1,
  dtype: 'bfloat16',
  eos_token_id: 68,
  hidden_act: 'xielu',
  hidden_size: 4096,
  intermediate_size: 21504,
  max_position_embeddings: 65536,
  model_type: 'apertus',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_parameters: { factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_theta: 12000000.0, rope_type: 'llama3' },
  tie_word_embeddings: false,
  vocab_size: 131072,
};

const TINY = { ...APERTUS_8B, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 32, num_hidden_layers: 1, vocab_size: 64 };

const layerParameters = (json: Record<string, unknown>) =>
  createModel(parseModelArchitecture(json, 'test/config.json'), 64)
    .parameters()
    .filter((p) => p.name.startsWith('model.layers.0.') && !p.name.includes('self_attn.') && !p.name.endsWith('proj.weight'))
    .map((p) => `${p.name} ${JSON.stringify(p.shape)}`)
    .sort();

test('Apertus: q/k norms before RoPE, its own layer-norm names, an xIELU MLP without a gate reading its constants per layer', () => {
  const c = parse(APERTUS_8B);
  assert.equal(c.mlp, 'xielu');
  assert.equal(c.qkNorm && !c.qkNormAfterRope, true);
  assert.deepEqual([c.normNames.input, c.normNames.postAttention], ['attention_layernorm', 'feedforward_layernorm']);
  assert.deepEqual(layerParameters(TINY), [
    'model.layers.0.attention_layernorm.weight [64]',
    'model.layers.0.feedforward_layernorm.weight [64]',
    'model.layers.0.mlp.act_fn.alpha_n [1]',
    'model.layers.0.mlp.act_fn.alpha_p [1]',
  ]);
  const names = createModel(parseModelArchitecture(TINY, 'test/config.json'), 64).parameters().map((p) => p.name);
  assert.ok(names.includes('model.layers.0.mlp.up_proj.weight') && !names.some((n) => n.includes('gate_proj')), names.join(', '));
});

test("ApertusConfig's defaults: hidden_act xielu, rms_norm_eps 1e-5, llama3 RoPE ×8 over 8192 at theta 1.2e7, no window", () => {
  const { rope_parameters: _, hidden_act: __, rms_norm_eps: ___, ...bare } = APERTUS_8B;
  const c = parse({ ...bare, num_hidden_layers: 2, use_sliding_window: true, sliding_window: 16 });
  assert.equal(c.mlp, 'xielu');
  assert.equal(c.rmsNormEps, 1e-5);
  assert.equal(c.ropeTheta, 12e6);
  assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.deepEqual(c.slidingWindows, [null, null]);
  // A RoPE dict without a theta takes the class's default theta.
  assert.equal(parse({ ...bare, rope_parameters: { rope_type: 'default' } }).ropeTheta, 12e6);
});

test('Apertus with hidden_act relu2 runs it as Arcee does (relu with up as its own gate); other activations are refused by name', () => {
  const c = parse({ ...APERTUS_8B, hidden_act: 'relu2' });
  assert.equal(c.mlp, 'relu2');
  assert.deepEqual(c.activation, { kind: 'relu' });
  assert.deepEqual(layerParameters({ ...TINY, hidden_act: 'relu2' }), ['model.layers.0.attention_layernorm.weight [64]', 'model.layers.0.feedforward_layernorm.weight [64]']);
  assertInvalidModel(() => parse({ ...APERTUS_8B, hidden_act: 'silu' }), 'hidden_act "silu" is not supported for apertus', 'xielu or relu2');
  assertInvalidModel(() => parse({ ...APERTUS_8B, model_type: 'arcee', hidden_act: 'xielu' }), 'hidden_act "xielu" is not supported for arcee');
});
