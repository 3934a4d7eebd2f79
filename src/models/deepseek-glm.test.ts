import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerToken } from '../step/kv-cache-layout.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { MtpHead } from './mtp-head.ts';
import { createModel, mtpLayersOf, parseModelArchitecture } from './registry.ts';
import { GLM5 } from '../../test/helpers/deepseek-configs.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

// Z.ai's MLA models, which the DeepSeek family reads: GLM-4.7-Flash (glm4_moe_lite) and GLM-5 (glm_moe_dsa).

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** GLM-4.7-Flash's sizes (transformers' Glm4MoeLiteConfig defaults), with the keys it has no default for. */
const GLM47_FLASH = { model_type: 'glm4_moe_lite', vocab_size: 154880, hidden_size: 2048, intermediate_size: 10240, num_hidden_layers: 47, num_attention_heads: 20, num_experts_per_tok: 4 };

/** GLM-4.7-Flash-shaped, with the keys its config.json writes beside the sizes (4.x spellings), which transformers ignores or agrees with. */
const GLM47_FLASH_KEYS = {
  ...GLM47_FLASH,
  partial_rotary_factor: 1.0,
  topk_method: 'noaux_tc',
  first_k_dense_replace: 1,
  num_nextn_predict_layers: 1,
  rope_theta: 1000000,
  rope_scaling: null,
};

test('glm4_moe_lite takes Glm4MoeLiteConfig\'s defaults: V3\'s MLA at 192 nope / 256 v, layer 0 dense, 64 experts in one group scaled by 1.8', () => {
  const c = parse(GLM47_FLASH);
  assert.deepEqual([c.queryRank, c.latentDim, c.nopeDim, c.ropeDim, c.valueDim, c.rmsNormEps, c.maxPositionEmbeddings], [768, 512, 192, 64, 256, 1e-5, 202752]);
  assert.equal(c.attentionScale, 256 ** -0.5);
  assert.equal(c.interleavedRope, true);
  assert.equal(c.sparseAttention, null);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 47 }, (_, i) => i >= 1));
  assert.deepEqual(c.moe, {
    numExperts: 64,
    numExpertsPerToken: 4,
    expertIntermediateSize: 1536,
    sharedIntermediateSize: 1536,
    fusedExperts: false,
    routing: { topK: 4, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1.8 },
  });
});

test('glm4_moe_lite reads mlp_layer_types, and not first_k_dense_replace (transformers\' Glm4MoeLiteConfig has no such key)', () => {
  assert.deepEqual(parse({ ...GLM47_FLASH, num_hidden_layers: 3, mlp_layer_types: ['sparse', 'dense', 'sparse'] }).sparseLayers, [true, false, true]);
  assert.deepEqual(parse({ ...GLM47_FLASH, num_hidden_layers: 3, first_k_dense_replace: 2 }).sparseLayers, [false, true, true]);
  // Its MTP layer after the decoder's is a MoE layer, as DeepSeek-V3's.
  assert.deepEqual(parse({ ...GLM47_FLASH, num_hidden_layers: 2, num_nextn_predict_layers: 1 }).sparseLayers, [false, true, true]);
  assert.equal(parse({ ...GLM47_FLASH, rope_interleave: false }).interleavedRope, false);
});

test('glm4_moe_lite as GLM-4.7-Flash\'s config.json spells it: whole rope dims, noaux_tc, one MTP layer left after the 47', () => {
  const c = parse(GLM47_FLASH_KEYS);
  assert.deepEqual([c.ropeTheta, c.ropeDim, c.numNextnPredictLayers], [1e6, 64, 1]);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 48 }, (_, i) => i >= 1));
  const names = createModel(parseModelArchitecture(GLM47_FLASH_KEYS, 'test/config.json'), 64).parameters().map((p) => p.name);
  assert.ok(!names.some((name) => name.startsWith('model.layers.47.')), 'the decoder reads no tensor of the MTP layer');
});

/** The tensors the MTP head of `json`'s model reads under its MTP layer (model.layers.<num_hidden_layers>), without the experts'. */
function mtpTensors(json: Record<string, unknown>): string[] {
  const architecture = parseModelArchitecture(json, 'test/config.json');
  const head = MtpHead.forTarget(architecture.config, mtpLayersOf(architecture.config), createModel(architecture, 64), null, 64);
  return head.parameters().map((p) => p.name).filter((name) => !/\.experts\.\d+\./.test(name));
}

test("GLM-4.7-Flash's and GLM-5's MTP heads read layers 47 and 78 as their checkpoints name them: latent attention (GLM-5's with its indexer) and the MoE block", () => {
  const mla = (p: string) => [
    ...['q_a_proj', 'q_a_layernorm', 'q_b_proj', 'kv_a_proj_with_mqa', 'kv_a_layernorm', 'kv_b_proj', 'o_proj'].map((n) => `${p}.self_attn.${n}.weight`),
    ...['enorm', 'hnorm', 'eh_proj', 'shared_head.norm', 'shared_head.head', 'input_layernorm', 'post_attention_layernorm', 'mlp.gate'].map((n) => `${p}.${n}.weight`),
    `${p}.mlp.gate.e_score_correction_bias`,
    ...['gate', 'up', 'down'].map((x) => `${p}.mlp.shared_experts.${x}_proj.weight`),
  ];
  assert.deepEqual(new Set(mtpTensors(GLM47_FLASH_KEYS)), new Set(mla('model.layers.47')));
  const indexer = ['wq_b.weight', 'wk.weight', 'k_norm.weight', 'k_norm.bias', 'weights_proj.weight'].map((n) => `model.layers.78.self_attn.indexer.${n}`);
  assert.deepEqual(new Set(mtpTensors(GLM5)), new Set([...mla('model.layers.78'), ...indexer]));
});

test('glm4_moe_lite configs Keel cannot run are rejected, naming the key', () => {
  rejects({ ...GLM47_FLASH, partial_rotary_factor: 0.5 }, 'partial_rotary_factor 0.5');
  rejects({ ...GLM47_FLASH, topk_method: 'greedy' }, 'topk_method "greedy"', 'glm4_moe_lite');
  rejects({ ...GLM47_FLASH, mlp_layer_types: ['dense'] }, 'mlp_layer_types', '47 layers');
});

test('GLM-5: V3.2\'s sparse MLA with a 32 × 128 indexer rotating interleaved pairs, every layer full by default', () => {
  const c = parse(GLM5);
  assert.deepEqual([c.numHeads, c.queryRank, c.latentDim, c.nopeDim, c.ropeDim, c.valueDim], [64, 2048, 512, 192, 64, 256]);
  assert.deepEqual(c.sparseAttention, { numHeads: 32, headDim: 128, topK: 2048, interleavedRope: true, sharedLayers: new Array<boolean>(79).fill(false) });
  assert.equal(c.interleavedRope, true);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 79 }, (_, i) => i >= 3));
  assert.deepEqual(c.moe?.routing, { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 2.5 });
  // transformers 5.18 writes every layer's type as indexed_attention.
  assert.ok(parse({ ...GLM5, layer_types: new Array(78).fill('indexed_attention') }).sparseAttention);
});

test('GLM-5\'s indexer_types: given, or derived as transformers does from index_topk_pattern or index_topk_freq / index_skip_topk_offset', () => {
  const shared = (json: Record<string, unknown>) => parse({ ...GLM5, num_hidden_layers: 6, num_nextn_predict_layers: 0, ...json }).sparseAttention!.sharedLayers;
  const S = true;
  const F = false;
  assert.deepEqual(shared({ indexer_types: ['full', 'shared', 'shared', 'full', 'shared', 'full'] }), [F, S, S, F, S, F]);
  assert.deepEqual(shared({ index_topk_pattern: 'FFSSFS' }), [F, F, S, S, F, S]);
  // Layer i is full when max(i - offset + 1, 0) is a multiple of freq: offset 2 (default), freq 3.
  assert.deepEqual(shared({ index_topk_freq: 3 }), [F, F, S, S, F, S]);
  assert.deepEqual(shared({ index_topk_freq: 2, index_skip_topk_offset: 1 }), [F, S, F, S, F, S]);
  assert.deepEqual(shared({ index_topk_freq: 0 }), [F, F, F, F, F, F]);
  // indexer_types wins over the keys it was derived from.
  assert.deepEqual(shared({ indexer_types: new Array(6).fill('full'), index_topk_freq: 2 }), [F, F, F, F, F, F]);
});

test('a shared layer reads no indexer and caches no indexer key; the layers it follows do', () => {
  const json = { ...GLM5, num_hidden_layers: 4, num_nextn_predict_layers: 0, first_k_dense_replace: 1, indexer_types: ['full', 'shared', 'full', 'shared'] };
  const model = createModel(parseModelArchitecture(json, 'test/config.json'), 64);
  const names = new Set(model.parameters().map((p) => p.name));
  assert.deepEqual([0, 1, 2, 3].map((i) => names.has(`model.layers.${i}.self_attn.indexer.wk.weight`)), [true, false, true, false]);
  assert.deepEqual(model.kvLayers.map((spec) => spec.kind === 'mla' && spec.indexKeys !== undefined), [true, false, true, false]);
  assert.equal(kvBytesPerToken(model.kvLayers, 2), (4 * 576 + 2 * 128) * 2);
});

test('GLM-5 configs the indexer cannot run are rejected, naming the key', () => {
  rejects({ ...GLM5, indexer_types: ['shared', ...new Array(77).fill('full')] }, 'indexer_types', 'layer 0 "shared"');
  rejects({ ...GLM5, indexer_types: ['full'] }, 'indexer_types', '78 layers');
  rejects({ ...GLM5, index_topk_pattern: 'FX' }, 'index_topk_pattern', '78 layers');
  rejects({ ...GLM5, indexer_rope_interleave: false }, 'indexer_rope_interleave');
  rejects({ ...GLM5, q_lora_rank: null }, 'glm_moe_dsa needs q_lora_rank');
  rejects({ ...GLM5, layer_types: ['full_attention'] }, 'layer_types');
});
