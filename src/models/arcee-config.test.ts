import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** An AFM-4.5B-shaped config.json. */
const AFM_4_5B = {
  architectures: ['ArceeForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 128,
  hidden_act: 'relu2',
  hidden_size: 2560,
  intermediate_size: 18432,
  max_position_embeddings: 65536,
  mlp_bias: false,
  model_type: 'arcee',
  num_attention_heads: 20,
  num_hidden_layers: 36,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-5,
  rope_scaling: { beta_fast: 32.0, beta_slow: 1.0, factor: 20.0, mscale: 1.0, original_max_position_embeddings: 4096, rope_type: 'yarn', mscale_all_dim: 1.0 },
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 128004,
};

test("Arcee's MLP has no gate: relu2 runs as relu with up as its own gate (relu(u) · u = relu(u)²)", () => {
  const config = parse(AFM_4_5B);
  assert.equal(config.mlp, 'relu2');
  assert.deepEqual(config.activation, { kind: 'relu' });
  assert.equal(parse({ ...AFM_4_5B, hidden_act: undefined, rms_norm_eps: undefined }).mlp, 'relu2', 'hidden_act defaults to relu2');
  assert.equal(parse({ ...AFM_4_5B, rms_norm_eps: undefined }).rmsNormEps, 1e-5, "ArceeConfig's default rms_norm_eps");
  assert.equal(parse({ ...AFM_4_5B, model_type: 'llama', hidden_act: 'silu' }).mlp, 'gated');
  const names = createModel(parseModelArchitecture({ ...AFM_4_5B, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 32, num_hidden_layers: 1, vocab_size: 64, mlp_bias: true }, 'test/config.json'), 64)
    .parameters()
    .map((p) => p.name)
    .filter((n) => n.includes('.mlp.'));
  assert.deepEqual(names.sort(), ['model.layers.0.mlp.down_proj.bias', 'model.layers.0.mlp.down_proj.weight', 'model.layers.0.mlp.up_proj.bias', 'model.layers.0.mlp.up_proj.weight']);
});

test('Arcee refuses any hidden_act but relu2, naming it', () => {
  assertInvalidModel(() => parse({ ...AFM_4_5B, hidden_act: 'silu' }), 'hidden_act "silu" is not supported for arcee');
});
