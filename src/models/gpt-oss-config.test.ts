import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GptOssConfig } from './gpt-oss.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as GptOssConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parse(json), ...fragments);
}

const alternating = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention'));

/** openai/gpt-oss-20b's config.json (transformers 4.55), with its MXFP4 quantization_config. */
const GPT_OSS_20B = {
  architectures: ['GptOssForCausalLM'],
  attention_bias: true,
  attention_dropout: 0.0,
  eos_token_id: 200002,
  experts_per_token: 4,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2880,
  initial_context_length: 4096,
  intermediate_size: 2880,
  layer_types: alternating(24),
  max_position_embeddings: 131072,
  model_type: 'gpt_oss',
  num_attention_heads: 64,
  num_experts_per_tok: 4,
  num_hidden_layers: 24,
  num_key_value_heads: 8,
  num_local_experts: 32,
  pad_token_id: 199999,
  quantization_config: { modules_to_not_convert: ['model.layers.*.self_attn', 'model.layers.*.mlp.router', 'model.embed_tokens', 'lm_head'], quant_method: 'mxfp4' },
  rms_norm_eps: 1e-5,
  rope_scaling: { beta_fast: 32.0, beta_slow: 1.0, factor: 32.0, original_max_position_embeddings: 4096, rope_type: 'yarn', truncate: false },
  rope_theta: 150000,
  sliding_window: 128,
  swiglu_limit: 7.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 201088,
};
const { quantization_config: _mxfp4, ...BF16_20B } = GPT_OSS_20B;

test('gpt-oss-20b, in MXFP4 as published or dequantized to bf16: biased attention with sinks, alternating windows, YaRN, 32 experts top-4', () => {
  assert.deepEqual(parse(GPT_OSS_20B), parse(BF16_20B));
  const c = parse(BF16_20B);
  assert.deepEqual([c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim], [64, 8, 64, 64]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.attentionSinks, c.qkNorm, c.fusedQkv], [true, true, true, false, false]);
  assert.deepEqual([c.numExperts, c.numExpertsPerToken, c.intermediateSize], [32, 4, 2880]);
  assert.deepEqual(c.slidingWindows.slice(0, 4), [128, null, 128, null]);
  assert.equal(c.ropeTheta, 150000);
  assert.deepEqual(c.ropeScaling, {
    type: 'yarn',
    factor: 32,
    originalMaxPositionEmbeddings: 4096,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(32) + 1,
    truncate: false,
  });
  assert.equal(c.contextLength, 131072);
  assert.equal(c.rmsNormEps, 1e-5);
});

test('absent keys take GptOssConfig\'s defaults: YaRN ×32 at theta 150000, even layers sliding 128, biases on', () => {
  const { rope_scaling: _s, rope_theta: _t, layer_types: _l, sliding_window: _w, attention_bias: _b, ...bare } = BF16_20B;
  const c = parse(bare);
  const full = parse(BF16_20B);
  assert.deepEqual([c.ropeTheta, c.ropeScaling], [full.ropeTheta, full.ropeScaling]);
  assert.deepEqual(c.slidingWindows, full.slidingWindows);
  assert.equal(c.attentionBias, true);
  assert.deepEqual(parse({ ...BF16_20B, sliding_window: null }).slidingWindows, new Array(24).fill(null));
});

test('a gpt-oss layer reads biased projections, sinks, a biased router and the fused experts with their biases', () => {
  const tiny = { ...BF16_20B, hidden_size: 64, intermediate_size: 32, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, num_hidden_layers: 2, layer_types: alternating(2), num_local_experts: 4, num_experts_per_tok: 2, vocab_size: 16 };
  const names = createModel(parseModelArchitecture(tiny, 'c'), 64)
    .parameters()
    .filter(({ name }) => name.startsWith('model.layers.0.'))
    .map(({ name, shape }) => `${name.slice('model.layers.0.'.length)} [${shape.join(', ')}]`);
  assert.deepEqual(names.sort(), [
    'input_layernorm.weight [64]',
    'mlp.experts.down_proj [4, 32, 64]',
    'mlp.experts.down_proj_bias [4, 64]',
    'mlp.experts.gate_up_proj [4, 64, 64]',
    'mlp.experts.gate_up_proj_bias [4, 64]',
    'mlp.router.bias [4]',
    'mlp.router.weight [4, 64]',
    'post_attention_layernorm.weight [64]',
    'self_attn.k_proj.bias [32]',
    'self_attn.k_proj.weight [32, 64]',
    'self_attn.o_proj.bias [64]',
    'self_attn.o_proj.weight [64, 64]',
    'self_attn.q_proj.bias [64]',
    'self_attn.q_proj.weight [64, 64]',
    'self_attn.sinks [4]',
    'self_attn.v_proj.bias [32]',
    'self_attn.v_proj.weight [32, 64]',
  ]);
});

test('unsupported gpt-oss options are named', () => {
  rejects({ ...BF16_20B, layer_types: alternating(23) }, 'layer_types', '24 layers');
  rejects({ ...BF16_20B, num_experts_per_tok: 33 }, 'num_experts_per_tok', '32 experts');
  rejects({ ...BF16_20B, rope_scaling: { rope_type: 'ntk-aware', factor: 2 } }, 'rope type "ntk-aware"');
});
