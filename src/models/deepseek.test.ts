import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openCheckpoint } from '../checkpoint/checkpoint.ts';
import { DEEPSEEK_V3 } from '../../test/helpers/deepseek-configs.ts';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { FIXTURES_DIR } from '../../test/helpers/oracle-fixtures.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { loadDummyWeights } from './dummy-weights.ts';
import { loadWeights } from './load-weights.ts';
import { createModel, parseModelArchitecture, readModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;
const fixture = (name: string) => readModelArchitecture(`${FIXTURES_DIR}/${name}`).config as DeepseekConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** YaRN's mscale(factor, m) = 0.1 · m · ln(factor) + 1. */
const mscale = (factor: number, m: number) => 0.1 * m * Math.log(factor) + 1;

/** A small DeepSeek-V2 config for the error cases. */
const TINY_V2 = {
  model_type: 'deepseek_v2',
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  q_lora_rank: null,
  kv_lora_rank: 32,
  qk_nope_head_dim: 16,
  qk_rope_head_dim: 8,
  v_head_dim: 16,
  moe_intermediate_size: 8,
  n_routed_experts: 8,
  num_experts_per_tok: 2,
  first_k_dense_replace: 1,
};

test('the oracle fixtures parse: MLA shapes, softmax scale with mscale², interleaved RoPE, dense layer 0 and three routers', () => {
  const lite = fixture('deepseek-v2-lite');
  assert.deepEqual([lite.numHeads, lite.queryRank, lite.latentDim, lite.nopeDim, lite.ropeDim, lite.valueDim], [4, null, 32, 16, 8, 16]);
  assert.ok(Math.abs(lite.attentionScale - 24 ** -0.5 * mscale(4, 0.707) ** 2) < 1e-12);
  assert.equal(lite.interleavedRope, true);
  assert.deepEqual(lite.sparseLayers, [false, true, true]);
  assert.deepEqual(lite.moe, {
    numExperts: 8,
    numExpertsPerToken: 2,
    expertIntermediateSize: 16,
    sharedIntermediateSize: 16,
    fusedExperts: false,
    routing: { topK: 2, scoring: 'softmax', selectionBias: false, groups: null, normalize: false, scale: 1.5 },
  });

  const group = fixture('deepseek-v2-group');
  assert.equal(group.queryRank, 24);
  assert.deepEqual(group.moe?.routing, { topK: 2, scoring: 'softmax', selectionBias: false, groups: { numGroups: 2, topkGroups: 1, score: 'max' }, normalize: false, scale: 16 });
  // The cos/sin factor mscale(4, 1) / mscale(4, 0.707) lives in the rotary table; the softmax scale takes mscale(4, 0.707)².
  assert.equal(group.ropeScaling.type === 'yarn' && group.ropeScaling.attentionFactor, mscale(4, 1) / mscale(4, 0.707));
  assert.ok(Math.abs(group.attentionScale - 24 ** -0.5 * mscale(4, 0.707) ** 2) < 1e-12);

  const v3 = fixture('deepseek-v3');
  assert.equal(v3.interleavedRope, true);
  assert.ok(Math.abs(v3.attentionScale - 24 ** -0.5 * mscale(4, 1) ** 2) < 1e-12);
  assert.deepEqual(v3.moe?.routing, { topK: 2, scoring: 'sigmoid', selectionBias: true, groups: { numGroups: 4, topkGroups: 2, score: 'top2-sum' }, normalize: true, scale: 2.5 });
});

test('DeepSeek-V3 as published: Hub spellings, noaux_tc over 8 groups, three dense layers, the MTP layer left out', () => {
  const c = parse(DEEPSEEK_V3);
  assert.equal(c.contextLength, 163840);
  assert.deepEqual([c.numHeads, c.queryRank, c.latentDim, c.nopeDim, c.ropeDim, c.valueDim], [128, 1536, 512, 128, 64, 128]);
  assert.ok(Math.abs(c.attentionScale - 192 ** -0.5 * mscale(40, 1) ** 2) < 1e-12);
  // The MTP layer (61) is sparse too.
  assert.equal(c.numNextnPredictLayers, 1);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 62 }, (_, i) => i >= 3));
  assert.deepEqual(c.moe?.routing, { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: { numGroups: 8, topkGroups: 4, score: 'top2-sum' }, normalize: true, scale: 2.5 });
  assert.equal(c.moe?.sharedIntermediateSize, 2048);
  const names = createModel(parseModelArchitecture(DEEPSEEK_V3, 'test/config.json'), 64).parameters().map((p) => p.name);
  assert.ok(names.includes('model.layers.60.mlp.gate.e_score_correction_bias'));
  assert.ok(!names.some((n) => n.startsWith('model.layers.61.')), 'the multi-token-prediction layer is not part of the model');
});

test('rope_interleave false (V3 only) keeps rotate_half pairing; V2 always pairs adjacent dims', () => {
  assert.equal(parse({ ...DEEPSEEK_V3, rope_interleave: false }).interleavedRope, false);
  assert.equal(parse({ ...TINY_V2, rope_interleave: false }).interleavedRope, true);
});

test('the softmax scale takes mscale_all_dim only under scaled RoPE, and head_dim is not read', () => {
  assert.equal(parse(TINY_V2).attentionScale, 24 ** -0.5);
  assert.equal(parse({ ...TINY_V2, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64 } }).attentionScale, 24 ** -0.5);
  // DeepSeek writes head_dim = qk_rope_head_dim, which is not a head size.
  assert.equal(parse({ ...TINY_V2, head_dim: 8 }).ropeDim, 8);
  assert.equal(parse({ ...TINY_V2, head_dim: 8 }).nopeDim, 16);
});

test('first_k_dense_replace picks the sparse layers; moe_layer_freq is not read, as transformers does not', () => {
  assert.deepEqual(parse({ ...TINY_V2, num_hidden_layers: 6, first_k_dense_replace: 1, moe_layer_freq: 2 }).sparseLayers, [false, true, true, true, true, true]);
  assert.deepEqual(parse({ ...TINY_V2, first_k_dense_replace: 0 }).sparseLayers, [true, true, true]);
});

test('V2 never renormalizes, whatever norm_topk_prob says (transformers 5.17 does not read it)', () => {
  assert.equal(parse({ ...TINY_V2, norm_topk_prob: true }).moe?.routing.normalize, false);
  assert.equal(parse({ ...DEEPSEEK_V3, norm_topk_prob: false }).moe?.routing.normalize, false);
});

test('a shared-expert count of zero means no shared experts', () => {
  const architecture = parseModelArchitecture({ ...TINY_V2, n_shared_experts: 0 }, 'test/config.json');
  assert.equal((architecture.config as DeepseekConfig).moe?.sharedIntermediateSize, 0);
  assert.ok(!createModel(architecture, 64).parameters().some((p) => p.name.includes('shared_experts')));
});

test('unsupported or inconsistent DeepSeek configs are rejected, naming the key', () => {
  rejects({ ...TINY_V2, num_key_value_heads: 2 }, 'num_key_value_heads (2)', 'num_attention_heads (4)');
  rejects({ ...TINY_V2, topk_method: 'noaux_tc' }, 'topk_method "noaux_tc"', 'deepseek_v2');
  rejects({ ...DEEPSEEK_V3, topk_method: 'greedy' }, 'topk_method "greedy"', 'deepseek_v3');
  rejects({ ...TINY_V2, scoring_func: 'sigmoid' }, 'scoring_func "sigmoid"');
  rejects({ ...TINY_V2, topk_method: 'group_limited_greedy' }, '"n_group"');
  rejects({ ...TINY_V2, topk_method: 'group_limited_greedy', n_group: 3, topk_group: 1 }, 'n_group 3');
  rejects({ ...TINY_V2, topk_method: 'group_limited_greedy', n_group: 4, topk_group: 1, num_experts_per_tok: 3 }, 'num_experts_per_tok (3)');
  rejects({ ...TINY_V2, hidden_act: 'gelu_10' }, 'hidden_act "gelu_10"');
  rejects({ ...TINY_V2, mlp_bias: true }, 'mlp_bias');
  rejects({ ...TINY_V2, qk_rope_head_dim: 7 }, 'qk_rope_head_dim');
  rejects({ ...TINY_V2, num_experts_per_tok: undefined }, '"num_experts_per_tok"');
});

test('a model reads every tensor of its fixture checkpoint but the MTP layer\'s (test/mtp-head.test.ts reads those); dummy weights upload the same shapes and dtypes', (t) => {
  for (const name of ['deepseek-v2-lite', 'deepseek-v2-group', 'deepseek-v3']) {
    const architecture = readModelArchitecture(`${FIXTURES_DIR}/${name}`);
    const ckpt = openCheckpoint(`${FIXTURES_DIR}/${name}`);
    t.after(() => ckpt.close());
    const model = createModel(architecture, 64);
    const config = architecture.config as DeepseekConfig;
    const mtp = `model.layers.${config.numLayers}.`;
    assert.deepEqual(new Set(model.parameters().map((p) => p.name)), new Set(ckpt.tensorNames.filter((n) => !n.startsWith(mtp))), name);
    const real = new RecordingUploader();
    loadWeights(model, ckpt, real);
    const dummy = new RecordingUploader();
    loadDummyWeights(createModel(architecture, 64), architecture.config.dtype, dummy, 1);
    const describe = (u: RecordingUploader) => u.uploaded.map((x) => [x.shape, x.dtype]);
    assert.deepEqual(describe(dummy), describe(real), name);
  }
});
