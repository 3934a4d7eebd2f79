import { LLAMA_NORM_NAMES } from './decoder.ts';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MixtralConfig } from './mixtral.ts';
import type { QwenMoeConfig } from './qwen-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = <C>(json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as C;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** Mixtral-8x7B-v0.1's config.json. */
const MIXTRAL_8X7B = {
  architectures: ['MixtralForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mixtral',
  num_attention_heads: 32,
  num_experts_per_tok: 2,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  num_local_experts: 8,
  output_router_logits: false,
  rms_norm_eps: 1e-5,
  rope_theta: 1e6,
  router_aux_loss_coef: 0.02,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.36.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

/** Qwen1.5-MoE-A2.7B's config.json. */
const QWEN15_MOE = {
  architectures: ['Qwen2MoeForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 8192,
  max_window_layers: 21,
  model_type: 'qwen2_moe',
  num_attention_heads: 16,
  num_hidden_layers: 24,
  num_key_value_heads: 16,
  rms_norm_eps: 1e-6,
  rope_theta: 1e6,
  sliding_window: 32768,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
  decoder_sparse_step: 1,
  moe_intermediate_size: 1408,
  shared_expert_intermediate_size: 5632,
  num_experts_per_tok: 4,
  num_experts: 60,
  norm_topk_prob: false,
  output_router_logits: false,
  router_aux_loss_coef: 0.001,
};

const TINY_QWEN3_MOE = {
  model_type: 'qwen3_moe',
  vocab_size: 100,
  hidden_size: 64,
  intermediate_size: 96,
  moe_intermediate_size: 32,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_experts: 8,
  num_experts_per_tok: 2,
};

test('Mixtral-8x7B: Mistral attention, 8 experts of 14336, top-2, no sliding window', () => {
  assert.deepEqual(parse<MixtralConfig>(MIXTRAL_8X7B), {
    modelType: 'mixtral',
    contextLength: 32768,
    vocabSize: 32000,
    hiddenSize: 4096,
    numLayers: 32,
    tieWordEmbeddings: false,
    dtype: 'bf16',
    bosTokenId: 1,
    eosTokenIds: [2],
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    ropeTheta: 1e6,
    ropeScaling: { type: 'default' },
    maxPositionEmbeddings: 32768,
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
    normNames: LLAMA_NORM_NAMES,
    intermediateSize: 14336,
    numExperts: 8,
    numExpertsPerToken: 2,
  } satisfies MixtralConfig);
  const windowed = parse<MixtralConfig>({ ...MIXTRAL_8X7B, sliding_window: 4096, num_hidden_layers: 2 });
  assert.deepEqual(windowed.slidingWindows, [4096, 4096]);
  assert.deepEqual(parse<MixtralConfig>({ ...MIXTRAL_8X7B, head_dim: null, max_position_embeddings: null }).maxPositionEmbeddings, 131072);
});

test('Qwen1.5-MoE: q/k/v biases, a shared expert, 60 experts top-4 unnormalized, every layer sparse', () => {
  const c = parse<QwenMoeConfig>(QWEN15_MOE);
  assert.deepEqual(
    [c.hiddenSize, c.intermediateSize, c.moeIntermediateSize, c.sharedExpertIntermediateSize, c.numExperts, c.numExpertsPerToken],
    [2048, 5632, 1408, 5632, 60, 4],
  );
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm, c.normTopkProb], [true, false, false, false]);
  assert.equal(c.headDim, 128);
  assert.ok(c.sparseLayers.every((s) => s) && c.sparseLayers.length === 24);
  assert.ok(c.slidingWindows.every((w) => w === null));
  assert.equal(parse<QwenMoeConfig>({ ...QWEN15_MOE, qkv_bias: false }).attentionBias, false);
  rejects({ ...QWEN15_MOE, shared_expert_intermediate_size: undefined }, '"shared_expert_intermediate_size"', 'missing');
});

test('a layer is sparse unless mlp_only_layers names it or decoder_sparse_step skips it', () => {
  const layers = (extra: Record<string, unknown>) => parse<QwenMoeConfig>({ ...TINY_QWEN3_MOE, ...extra }).sparseLayers;
  assert.deepEqual(layers({}), [true, true, true, true]);
  assert.deepEqual(layers({ mlp_only_layers: [1] }), [true, false, true, true]);
  assert.deepEqual(layers({ decoder_sparse_step: 2 }), [false, true, false, true]);
  assert.deepEqual(layers({ decoder_sparse_step: 2, mlp_only_layers: [3] }), [false, true, false, false]);
  rejects({ ...TINY_QWEN3_MOE, mlp_only_layers: [4] }, 'mlp_only_layers', 'below 4');
  rejects({ ...TINY_QWEN3_MOE, mlp_only_layers: 'all' }, 'mlp_only_layers');
  rejects({ ...TINY_QWEN3_MOE, decoder_sparse_step: 0 }, '"decoder_sparse_step"');
});

test('the expert count is read under either spelling; both must agree when both are there', () => {
  const spelledLocal = { ...TINY_QWEN3_MOE, num_experts: undefined, num_local_experts: 8 };
  assert.deepEqual(parse<QwenMoeConfig>(spelledLocal), parse<QwenMoeConfig>(TINY_QWEN3_MOE));
  assert.equal(parse<QwenMoeConfig>({ ...TINY_QWEN3_MOE, num_local_experts: 8 }).numExperts, 8);
  assert.equal(parse<MixtralConfig>({ ...MIXTRAL_8X7B, num_local_experts: undefined, num_experts: 4 }).numExperts, 4);
  rejects({ ...TINY_QWEN3_MOE, num_local_experts: 16 }, 'num_local_experts (16)', 'num_experts (8)');
  rejects({ ...TINY_QWEN3_MOE, num_experts: undefined }, '"num_experts"', 'num_local_experts', 'missing');
  rejects({ ...TINY_QWEN3_MOE, num_experts_per_tok: 9 }, 'num_experts_per_tok (9)', '8 experts');
});

test('qwen3_moe: q/k norms, head_dim from hidden / heads unless given, attention_bias on all four projections', () => {
  const c = parse<QwenMoeConfig>(TINY_QWEN3_MOE);
  assert.equal(c.qkNorm, true);
  assert.equal(c.headDim, 16, 'not the dense Qwen3 default of 128');
  assert.equal(c.sharedExpertIntermediateSize, null);
  assert.equal(parse<QwenMoeConfig>({ ...TINY_QWEN3_MOE, head_dim: 32 }).headDim, 32);
  const biased = parse<QwenMoeConfig>({ ...TINY_QWEN3_MOE, attention_bias: true });
  assert.deepEqual([biased.attentionBias, biased.outputBias], [true, true]);
  assert.equal(parse<QwenMoeConfig>({ ...TINY_QWEN3_MOE, norm_topk_prob: true }).normTopkProb, true);
});

test('sliding windows: only with use_sliding_window; qwen3_moe slides every layer, qwen2_moe every other layer below max_window_layers', () => {
  const windows = (json: Record<string, unknown>) => parse<QwenMoeConfig>(json).slidingWindows;
  assert.deepEqual(windows({ ...TINY_QWEN3_MOE, sliding_window: 512 }), [null, null, null, null]);
  assert.deepEqual(windows({ ...TINY_QWEN3_MOE, use_sliding_window: true, sliding_window: 512 }), [512, 512, 512, 512]);
  const qwen2 = { ...QWEN15_MOE, num_hidden_layers: 4, use_sliding_window: true, sliding_window: 64 };
  assert.deepEqual(windows({ ...qwen2, max_window_layers: 3 }), [64, null, 64, null]);
  assert.deepEqual(windows({ ...qwen2, max_window_layers: 2 }), [64, null, null, null]);
  assert.deepEqual(windows({ ...qwen2, layer_types: ['full_attention', 'sliding_attention', 'full_attention', 'full_attention'] }), [null, 64, null, null]);
  rejects({ ...qwen2, layer_types: ['full_attention'] }, 'layer_types has 1 entries');
});

test('MoE configs are refused with the key named: activation, widths', () => {
  rejects({ ...MIXTRAL_8X7B, hidden_act: 'relu2' }, 'hidden_act', 'relu2');
  rejects({ ...TINY_QWEN3_MOE, moe_intermediate_size: undefined }, '"moe_intermediate_size"', 'missing');
  rejects({ ...MIXTRAL_8X7B, num_experts_per_tok: 0 }, '"num_experts_per_tok"');
});

test('the models build with a MoE block in sparse layers and a dense MLP elsewhere', () => {
  const names = (json: Record<string, unknown>) => createModel(parseModelArchitecture(json, 'test/config.json'), 64).parameters().map((p) => p.name);
  const qwen = names({ ...QWEN15_MOE, num_hidden_layers: 2, mlp_only_layers: [1], num_experts: 4 });
  assert.ok(qwen.includes('model.layers.0.mlp.experts.3.down_proj.weight'));
  assert.ok(qwen.includes('model.layers.0.mlp.shared_expert_gate.weight'));
  assert.ok(qwen.includes('model.layers.1.mlp.gate_proj.weight') && !qwen.some((n) => n.startsWith('model.layers.1.mlp.experts')));
  const mixtral = names({ ...MIXTRAL_8X7B, num_hidden_layers: 1 });
  assert.ok(mixtral.includes('model.layers.0.block_sparse_moe.experts.7.w3.weight'));
  assert.ok(mixtral.includes('model.layers.0.block_sparse_moe.gate.weight'));
});
