import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerToken } from '../step/kv-cache-layout.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { DEEPSEEK_V32 } from '../../test/helpers/deepseek-configs.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

test('DeepSeek-V3.2-Exp as published: V3\'s MLA and routing, a 64 × 128 indexer keeping 2,048 positions in every layer', () => {
  const c = parse(DEEPSEEK_V32);
  assert.deepEqual(c.sparseAttention, { numHeads: 64, headDim: 128, topK: 2048, interleavedRope: false, sharedLayers: new Array<boolean>(62).fill(false) });
  assert.deepEqual([c.numHeads, c.queryRank, c.latentDim, c.ropeDim], [128, 1536, 512, 64]);
  assert.equal(c.interleavedRope, true);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 62 }, (_, i) => i >= 3));
  assert.deepEqual(c.moe?.routing, { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: { numGroups: 8, topkGroups: 4, score: 'top2-sum' }, normalize: true, scale: 2.5 });
  const model = createModel(parseModelArchitecture(DEEPSEEK_V32, 'test/config.json'), 64);
  const names = new Set(model.parameters().map((p) => p.name));
  for (const tensor of ['wq_b.weight', 'wk.weight', 'k_norm.weight', 'k_norm.bias', 'weights_proj.weight']) {
    assert.ok(names.has(`model.layers.60.self_attn.indexer.${tensor}`), `reads the indexer's ${tensor}`);
  }
  // Each token caches its latent row and, beside it, the indexer's 128-value key, both in the cache's dtype.
  assert.deepEqual(model.kvLayers[0], { kind: 'mla', latentDim: 512, ropeDim: 64, indexKeys: { keyDim: 128 } });
  assert.equal(kvBytesPerToken(model.kvLayers, 2), 61 * (576 + 128) * 2);
  assert.equal(kvBytesPerToken(model.kvLayers, 2, 'fp8_e4m3'), 61 * (576 + 128 + 4));
  assert.equal(kvBytesPerToken(model.kvLayers, 2, 'int8'), 61 * (576 + 4 + 128 + 4));
});

test('V3.2 rotates MLA\'s rope dims in interleaved pairs whatever rope_interleave says, as transformers does', () => {
  assert.equal(parse({ ...DEEPSEEK_V32, rope_interleave: false }).interleavedRope, true);
});

test('V3.2 takes mlp_layer_types when given, as transformers\' DeepseekV32Config does', () => {
  const c = parse({ ...DEEPSEEK_V32, num_hidden_layers: 3, num_nextn_predict_layers: 0, mlp_layer_types: ['sparse', 'dense', 'sparse'] });
  assert.deepEqual(c.sparseLayers, [true, false, true]);
});

test('V3.2 reads layer_types as transformers 5.17 and 5.18 write them (every layer indexed)', () => {
  const layers = (type: string) => Array.from({ length: 61 }, () => type);
  for (const type of ['indexed_attention', 'deepseek_sparse_attention']) {
    assert.equal(parse({ ...DEEPSEEK_V32, layer_types: layers(type) }).sparseAttention?.topK, 2048, type);
  }
});

test('V3.2 configs the indexer cannot run are rejected, naming the key', () => {
  rejects({ ...DEEPSEEK_V32, q_lora_rank: null }, 'q_lora_rank', 'indexer');
  rejects({ ...DEEPSEEK_V32, index_head_dim: 32 }, 'index_head_dim (32)', 'qk_rope_head_dim (64)');
  rejects({ ...DEEPSEEK_V32, index_topk: 0 }, 'index_topk');
  rejects({ ...DEEPSEEK_V32, layer_types: ['full_attention'] }, 'layer_types');
  rejects({ ...DEEPSEEK_V32, mlp_layer_types: ['dense'] }, 'mlp_layer_types', '61 layers');
});
