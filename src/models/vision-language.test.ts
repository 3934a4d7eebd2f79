import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { GemmaConfig } from './gemma.ts';
import type { LlamaConfig } from './llama.ts';
import { parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json');

const SIGLIP = { hidden_size: 1152, image_size: 896, intermediate_size: 4304, model_type: 'siglip_vision_model', num_attention_heads: 16, num_hidden_layers: 27, patch_size: 14, vision_use_head: false };

/** google/gemma-3-4b-it's config.json (transformers 4.50): its text_config names six keys, Gemma3TextConfig's defaults the rest. */
const GEMMA3_4B = {
  architectures: ['Gemma3ForConditionalGeneration'],
  boi_token_index: 255999,
  eoi_token_index: 256000,
  eos_token_id: [1, 106],
  image_token_index: 262144,
  initializer_range: 0.02,
  mm_tokens_per_image: 256,
  model_type: 'gemma3',
  text_config: {
    hidden_size: 2560,
    intermediate_size: 10240,
    model_type: 'gemma3_text',
    num_hidden_layers: 34,
    rope_scaling: { factor: 8.0, rope_type: 'linear' },
    sliding_window: 1024,
  },
  torch_dtype: 'bfloat16',
  transformers_version: '4.50.0.dev0',
  vision_config: SIGLIP,
};

/** A Mistral-Small-3.1-24B-Instruct-2503-shaped config.json: no tie_word_embeddings anywhere, and an lm_head in the checkpoint. */
const MISTRAL_SMALL_31 = {
  architectures: ['Mistral3ForConditionalGeneration'],
  image_token_index: 10,
  model_type: 'mistral3',
  multimodal_projector_bias: false,
  projector_hidden_act: 'gelu',
  spatial_merge_size: 2,
  text_config: {
    head_dim: 128,
    hidden_act: 'silu',
    hidden_size: 5120,
    intermediate_size: 32768,
    max_position_embeddings: 131072,
    model_type: 'mistral',
    num_attention_heads: 32,
    num_hidden_layers: 40,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000000.0,
    sliding_window: null,
    vocab_size: 131072,
  },
  torch_dtype: 'bfloat16',
  vision_config: { head_dim: 64, hidden_act: 'silu', hidden_size: 1024, image_size: 1540, intermediate_size: 4096, model_type: 'pixtral', num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, rope_theta: 10000.0 },
  vision_feature_layer: -1,
};

test('a Gemma 3 vision-language config is read as its Gemma 3 text model, Gemma3TextConfig defaults filling what text_config leaves out', () => {
  const architecture = parse(GEMMA3_4B);
  assert.equal(architecture.family.name, 'Gemma');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as GemmaConfig;
  assert.equal(c.modelType, 'gemma3_text');
  assert.deepEqual(
    { vocab: c.vocabSize, hidden: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, scalar: c.queryPreAttnScalar },
    { vocab: 262208, hidden: 2560, layers: 34, heads: 8, kvHeads: 4, headDim: 256, scalar: 256 },
  );
  // The dtype and the end-of-turn tokens are the top level's; the LM head is tied.
  assert.equal(c.dtype, 'bf16');
  assert.deepEqual(c.eosTokenIds, [1, 106]);
  assert.equal(c.bosTokenId, 2);
  assert.ok(c.tieWordEmbeddings);
  assert.equal(c.slidingWindows.filter((w) => w === 1024).length, 29);
  assert.deepEqual(c.globalRope, { ropeTheta: 1_000_000, ropeScaling: { type: 'linear', factor: 8 } });
  assert.equal(c.finalLogitSoftcap, null);
});

test('Gemma3ForConditionalGeneration never soft-caps its logits, whatever text_config says (Gemma3ForCausalLM does)', () => {
  const wrapped = parse({ ...GEMMA3_4B, text_config: { ...GEMMA3_4B.text_config, final_logit_softcapping: 30 } }).config as GemmaConfig;
  assert.equal(wrapped.finalLogitSoftcap, null);
  const text = parse({ ...GEMMA3_4B.text_config, final_logit_softcapping: 30 }).config as GemmaConfig;
  assert.equal(text.finalLogitSoftcap, 30);
});

test('a Mistral 3 config is read as its Mistral text model, tied by the wrapper alone (default true), reading the lm_head its checkpoint holds', () => {
  const architecture = parseModelArchitecture(MISTRAL_SMALL_31, 'test/config.json', ['lm_head.weight']);
  assert.equal(architecture.family.name, 'Llama');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as LlamaConfig;
  assert.deepEqual(
    { type: c.modelType, hidden: c.hiddenSize, layers: c.numLayers, headDim: c.headDim, dtype: c.dtype, tied: c.tieWordEmbeddings },
    { type: 'mistral', hidden: 5120, layers: 40, headDim: 128, dtype: 'bf16', tied: false },
  );
  assert.ok(c.slidingWindows.every((w) => w === null));
  // transformers 5 ties the wrapper's lm_head by the wrapper's tie_word_embeddings alone (Mistral3Config's default true).
  const tied = (top: boolean | undefined, text: boolean | undefined) =>
    (parse({ ...MISTRAL_SMALL_31, ...(top !== undefined && { tie_word_embeddings: top }), text_config: { ...MISTRAL_SMALL_31.text_config, ...(text !== undefined && { tie_word_embeddings: text }) } }).config as LlamaConfig)
      .tieWordEmbeddings;
  assert.deepEqual([tied(true, false), tied(false, true), tied(undefined, false), tied(undefined, undefined)], [true, false, true, true]);
  // text_config's own dtype and special tokens win over the top level's.
  const own = parse({ ...MISTRAL_SMALL_31, eos_token_id: 7, text_config: { ...MISTRAL_SMALL_31.text_config, dtype: 'float32', eos_token_id: 2 } }).config;
  assert.deepEqual([own.dtype, own.eosTokenIds], ['f32', [2]]);
});

test('a text-only config of a family is not read as a vision-language one', () => {
  assert.equal(parse({ ...GEMMA3_4B.text_config, vocab_size: 262144 }).languageModelOnly, false);
});

test('vision-language configs Keel cannot serve are named', () => {
  assertInvalidModel(() => parse({ ...GEMMA3_4B, text_config: undefined }), 'model_type "gemma3"', '"text_config"', 'missing');
  assertInvalidModel(() => parse({ ...GEMMA3_4B, text_config: 'gemma' }), '"text_config"', 'not an object');
  assertInvalidModel(() => parse({ ...MISTRAL_SMALL_31, text_config: { ...MISTRAL_SMALL_31.text_config, model_type: 'qwen2' } }), 'test/config.json text_config', '"qwen2"', 'inside a "mistral3"', 'mistral, ministral3');
  assertInvalidModel(() => parse({ ...MISTRAL_SMALL_31, text_config: { ...MISTRAL_SMALL_31.text_config, model_type: undefined } }), 'no model_type', 'inside a "mistral3"');
  // Errors in the text model's keys name text_config.
  assertInvalidModel(() => parse({ ...MISTRAL_SMALL_31, text_config: { ...MISTRAL_SMALL_31.text_config, hidden_act: 'gelu_10' } }), 'test/config.json text_config', 'hidden_act "gelu_10"');
  // An unknown model_type lists the wrappers too.
  assertInvalidModel(() => parse({ model_type: 'llava' }), '"llava" is not supported', 'gemma3, mistral3');
});
