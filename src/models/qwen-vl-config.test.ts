import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import type { QwenMoeConfig } from './qwen-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>, tensorNames: string[] | null = null) => parseModelArchitecture(json, 'test/config.json', tensorNames);
const llama = (json: Record<string, unknown>) => parse(json).config as LlamaConfig;

/** Qwen/Qwen2-VL-7B-Instruct's config.json (transformers 4.41): flat, the language model's keys at the top level, M-RoPE in rope_scaling. */
const QWEN2_VL_7B = {
  architectures: ['Qwen2VLForConditionalGeneration'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
  vision_token_id: 151654,
  image_token_id: 151655,
  video_token_id: 151656,
  hidden_act: 'silu',
  hidden_size: 3584,
  initializer_range: 0.02,
  intermediate_size: 18944,
  max_position_embeddings: 32768,
  max_window_layers: 28,
  model_type: 'qwen2_vl',
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.41.2',
  use_cache: true,
  use_sliding_window: false,
  vision_config: { depth: 32, embed_dim: 1280, mlp_ratio: 4, num_heads: 16, in_chans: 3, hidden_size: 3584, patch_size: 14, spatial_merge_size: 2, spatial_patch_size: 14, temporal_patch_size: 2 },
  rope_scaling: { type: 'mrope', mrope_section: [16, 24, 24] },
  vocab_size: 152064,
};

/** A Qwen2.5-VL-3B-Instruct-shaped config.json as transformers 5 writes it: text_config nested, RoPE in rope_parameters. */
const QWEN2_5_VL_3B = {
  architectures: ['Qwen2_5_VLForConditionalGeneration'],
  dtype: 'bfloat16',
  model_type: 'qwen2_5_vl',
  tie_word_embeddings: true,
  text_config: {
    model_type: 'qwen2_5_vl_text',
    hidden_size: 2048,
    intermediate_size: 11008,
    num_hidden_layers: 36,
    num_attention_heads: 16,
    num_key_value_heads: 2,
    max_position_embeddings: 128000,
    max_window_layers: 70,
    rms_norm_eps: 1e-6,
    rope_parameters: { rope_type: 'default', rope_theta: 1000000.0, mrope_section: [16, 24, 24] },
    sliding_window: null,
    use_sliding_window: false,
    vocab_size: 151936,
  },
  vision_config: { depth: 32, hidden_size: 1280, out_hidden_size: 2048, fullatt_block_indexes: [7, 15, 23, 31] },
};

/** Qwen/Qwen3-VL-8B-Instruct's config.json (transformers 4.57): interleaved M-RoPE in text_config's rope_scaling, rope_theta beside it. */
const QWEN3_VL_8B = {
  architectures: ['Qwen3VLForConditionalGeneration'],
  image_token_id: 151655,
  model_type: 'qwen3_vl',
  text_config: {
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 151643,
    dtype: 'bfloat16',
    eos_token_id: 151645,
    head_dim: 128,
    hidden_act: 'silu',
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 12288,
    max_position_embeddings: 262144,
    model_type: 'qwen3_vl_text',
    num_attention_heads: 32,
    num_hidden_layers: 36,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-6,
    rope_scaling: { mrope_interleaved: true, mrope_section: [24, 20, 20], rope_type: 'default' },
    rope_theta: 5000000,
    tie_word_embeddings: false,
    use_cache: true,
    vocab_size: 151936,
  },
  tie_word_embeddings: false,
  transformers_version: '4.57.0.dev0',
  video_token_id: 151656,
  vision_config: { deepstack_visual_indexes: [8, 16, 24], depth: 27, hidden_size: 1152, model_type: 'qwen3_vl', out_hidden_size: 4096 },
  vision_end_token_id: 151653,
  vision_start_token_id: 151652,
};

/** Qwen/Qwen3-VL-30B-A3B-Instruct's config.json, its text_config a MoE of 128 experts. */
const QWEN3_VL_30B_A3B = {
  ...QWEN3_VL_8B,
  architectures: ['Qwen3VLMoeForConditionalGeneration'],
  model_type: 'qwen3_vl_moe',
  text_config: {
    ...QWEN3_VL_8B.text_config,
    model_type: 'qwen3_vl_moe_text',
    decoder_sparse_step: 1,
    hidden_size: 2048,
    intermediate_size: 6144,
    mlp_only_layers: [],
    moe_intermediate_size: 768,
    norm_topk_prob: true,
    num_attention_heads: 32,
    num_experts: 128,
    num_experts_per_tok: 8,
    num_hidden_layers: 48,
    num_key_value_heads: 4,
  },
};

test('Qwen2-VL: a flat Hub config is read as its Qwen2 language model, M-RoPE as 1-D RoPE with its theta', () => {
  const architecture = parse(QWEN2_VL_7B);
  assert.equal(architecture.family.name, 'Llama');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as LlamaConfig;
  assert.deepEqual(
    { type: c.modelType, hidden: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, dtype: c.dtype, tied: c.tieWordEmbeddings },
    { type: 'qwen2_vl_text', hidden: 3584, layers: 28, heads: 28, kvHeads: 4, headDim: 128, dtype: 'bf16', tied: false },
  );
  // Qwen2's biases: q, k and v, never o.
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm], [true, false, false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rotaryDim, c.contextLength], [1e6, { type: 'default' }, 128, 32768]);
  assert.deepEqual([c.bosTokenId, c.eosTokenIds], [151643, [151645]]);
  assert.ok(c.slidingWindows.every((w) => w === null));
  // With use_sliding_window, the layers from max_window_layers on slide (by default 80, Qwen2VLTextConfig's).
  const sliding = llama({ ...QWEN2_VL_7B, use_sliding_window: true, sliding_window: 4096 }).slidingWindows;
  assert.deepEqual([sliding[27], sliding.filter((w) => w === 4096).length], [null, 0]);
  assert.equal(llama({ ...QWEN2_VL_7B, use_sliding_window: true, sliding_window: 4096, max_window_layers: 20 }).slidingWindows.filter((w) => w === 4096).length, 8);
});

test("Qwen2.5-VL: text_config nested or flat reads alike, and the LM head is tied by the wrapper's tie_word_embeddings or text_config's", () => {
  const c = llama(QWEN2_5_VL_3B);
  assert.deepEqual([c.modelType, c.hiddenSize, c.numKvHeads, c.headDim, c.contextLength, c.dtype, c.tieWordEmbeddings], ['qwen2_5_vl_text', 2048, 2, 128, 128000, 'bf16', true]);
  const { text_config: text, ...top } = QWEN2_5_VL_3B;
  const flat = llama({ ...top, ...text, model_type: 'qwen2_5_vl' });
  assert.deepEqual(flat, c);
  // Qwen2_5_VLConfig forwards a true text_config tie_word_embeddings to the wrapper, whose default is false.
  const tied = (wrapper: boolean | undefined, own: boolean | undefined) =>
    llama({ ...QWEN2_5_VL_3B, tie_word_embeddings: wrapper, text_config: { ...text, ...(own !== undefined && { tie_word_embeddings: own }) } }).tieWordEmbeddings;
  assert.deepEqual([tied(true, undefined), tied(false, true), tied(undefined, true), tied(false, false), tied(undefined, undefined)], [true, true, true, false, false]);
  // Class defaults fill what text_config leaves out: rope_theta 1e6, rms_norm_eps 1e-5, 8 KV heads.
  const { rope_parameters: _rope, rms_norm_eps: _eps, num_key_value_heads: _kv, ...sparse } = text;
  const d = llama({ ...QWEN2_5_VL_3B, text_config: sparse });
  assert.deepEqual([d.ropeTheta, d.rmsNormEps, d.numKvHeads], [1e6, 1e-5, 8]);
});

test("Qwen3-VL: Qwen3's layers (q/k norms, head_dim 128), interleaved M-RoPE as 1-D RoPE, tied by the wrapper's tie_word_embeddings alone", () => {
  const c = llama(QWEN3_VL_8B);
  assert.deepEqual(
    { type: c.modelType, layers: c.numLayers, kvHeads: c.numKvHeads, headDim: c.headDim, qkNorm: c.qkNorm, bias: c.attentionBias, dtype: c.dtype },
    { type: 'qwen3_vl_text', layers: 36, kvHeads: 8, headDim: 128, qkNorm: true, bias: false, dtype: 'bf16' },
  );
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rotaryDim, c.contextLength], [5e6, { type: 'default' }, 128, 262144]);
  assert.ok(c.slidingWindows.every((w) => w === null));
  // Qwen3VLConfig ties by its own tie_word_embeddings (default false); text_config's is not read.
  const tied = (wrapper: boolean | undefined, own: boolean) => llama({ ...QWEN3_VL_8B, tie_word_embeddings: wrapper, text_config: { ...QWEN3_VL_8B.text_config, tie_word_embeddings: own } }).tieWordEmbeddings;
  assert.deepEqual([tied(true, false), tied(false, true), tied(undefined, true)], [true, false, false]);
  // transformers 5's spelling reads alike.
  const { rope_scaling: rope, rope_theta: theta, ...text } = QWEN3_VL_8B.text_config;
  assert.deepEqual(llama({ ...QWEN3_VL_8B, text_config: { ...text, rope_parameters: { ...rope, rope_theta: theta } } }), c);
});

test('Qwen3-VL-MoE: Qwen3-MoE always renormalizing its top k, its experts fused as the Hub holds them, or per expert where the checkpoint has them so', () => {
  const architecture = parse(QWEN3_VL_30B_A3B);
  assert.equal(architecture.family.name, 'Qwen-MoE');
  const c = architecture.config as QwenMoeConfig;
  assert.deepEqual(
    { type: c.modelType, experts: c.numExperts, topK: c.numExpertsPerToken, width: c.moeIntermediateSize, shared: c.sharedExpertIntermediateSize, headDim: c.headDim, qkNorm: c.qkNorm },
    { type: 'qwen3_vl_moe_text', experts: 128, topK: 8, width: 768, shared: null, headDim: 128, qkNorm: true },
  );
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.tieWordEmbeddings, c.expertTensors], [5e6, { type: 'default' }, false, 'fused']);
  assert.ok(c.sparseLayers.every(Boolean));
  assert.equal((parse({ ...QWEN3_VL_30B_A3B, text_config: { ...QWEN3_VL_30B_A3B.text_config, norm_topk_prob: false } }).config as QwenMoeConfig).normTopkProb, true);
  // Its config class never slides.
  assert.ok((parse({ ...QWEN3_VL_30B_A3B, text_config: { ...QWEN3_VL_30B_A3B.text_config, use_sliding_window: true, sliding_window: 4096 } }).config as QwenMoeConfig).slidingWindows.every((w) => w === null));
  // Fused experts, output-major as transformers 5 saves them or input-major as the Hub's; an llm-compressor checkpoint's per-expert tensors.
  const specs = (names: string[] | null) => new Map(createModel(parse(QWEN3_VL_30B_A3B, names), 64).parameters().map((p) => [p.name, p]));
  const fused = specs(['model.language_model.layers.0.mlp.experts.gate_up_proj', 'model.visual.blocks.0.attn.qkv.weight']);
  assert.deepEqual(
    ['gate_up_proj', 'down_proj'].map((t) => fused.get(`model.layers.0.mlp.experts.${t}`)).map((p) => [p?.shape, p?.orShape]),
    [[[128, 1536, 2048], [128, 2048, 1536]], [[128, 2048, 768], [128, 768, 2048]]],
  );
  const shapes = (names: string[] | null) => new Map([...specs(names)].map(([name, p]) => [name, p.shape]));
  const perExpert = shapes(['model.language_model.layers.0.mlp.experts.0.gate_proj.weight_packed']);
  assert.deepEqual([perExpert.get('model.layers.0.mlp.experts.127.up_proj.weight'), perExpert.has('model.layers.0.mlp.experts.gate_up_proj')], [[768, 2048], false]);
});

test('Qwen VL configs Keel cannot serve are refused, naming the key', () => {
  // Chunked M-RoPE sections must split head_dim / 2 frequencies, as transformers' torch.split needs.
  assertInvalidModel(() => parse({ ...QWEN2_VL_7B, rope_scaling: { type: 'mrope', mrope_section: [16, 24, 16] } }), 'test/config.json rope_scaling', 'mrope_section [16,24,16]', 'sums to 56', '64 frequencies');
  assertInvalidModel(() => parse({ ...QWEN2_VL_7B, rope_scaling: null, hidden_size: 1792 }), 'mrope_section [16,24,24] (the default)', '64 rotary dims');
  assertInvalidModel(() => parse({ ...QWEN2_VL_7B, rope_scaling: { type: 'mrope', mrope_section: 'thw' } }), 'mrope_section "thw"', 'list of non-negative integers');
  // Qwen2-VL's attention sizes heads by hidden_size alone, while its rotary would read head_dim.
  assertInvalidModel(() => parse({ ...QWEN2_VL_7B, head_dim: 64 }), 'head_dim 64', 'hidden_size / num_attention_heads (3584 / 28)', 'qwen2_vl_text');
  // Interleaved sections read three of them; Qwen3VLTextConfig does not rename an "mrope" type.
  const qwen3Rope = (rope: Record<string, unknown>) => ({ ...QWEN3_VL_8B, text_config: { ...QWEN3_VL_8B.text_config, rope_scaling: rope } });
  assertInvalidModel(() => parse(qwen3Rope({ mrope_interleaved: true, mrope_section: [32, 32], rope_type: 'default' })), 'test/config.json text_config rope_scaling', 'must give 3 sections');
  assertInvalidModel(() => parse(qwen3Rope({ mrope_section: [24, 20, 20], rope_type: 'mrope' })), 'rope type "mrope" is not supported');
  // Qwen3-VL has no flat spelling: its language model must be under text_config.
  const { text_config: _text, ...flat } = QWEN3_VL_8B;
  assertInvalidModel(() => parse({ ...flat, ...QWEN3_VL_8B.text_config, model_type: 'qwen3_vl' }), 'model_type "qwen3_vl"', '"text_config"', 'missing');
  assertInvalidModel(() => parse({ ...QWEN3_VL_30B_A3B, text_config: { ...QWEN3_VL_8B.text_config } }), 'text_config', '"qwen3_vl_text"', 'inside a "qwen3_vl_moe"', 'qwen3_vl_moe_text');
  assertInvalidModel(() => parse({ model_type: 'qwen2_vl', text_config: { ...QWEN2_5_VL_3B.text_config } }), '"qwen2_5_vl_text"', 'inside a "qwen2_vl"');
});
