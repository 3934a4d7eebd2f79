import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { createModel, mtpLayersOf, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;

/** YoutuConfig's defaults (Youtu-LLM-2B's shape) with the keys Keel requires written out. */
const YOUTU = { model_type: 'youtu', vocab_size: 128256, hidden_size: 2048, num_hidden_layers: 32, num_attention_heads: 16 };

test("Youtu takes YoutuConfig's defaults: DeepSeek-V3's MLA over a dense MLP 6144 wide in every layer, tied, no experts", () => {
  const c = parse(YOUTU);
  assert.deepEqual([c.queryRank, c.latentDim, c.nopeDim, c.ropeDim, c.valueDim, c.interleavedRope], [1536, 512, 128, 64, 128, true]);
  assert.deepEqual([c.intermediateSize, c.tieWordEmbeddings, c.rmsNormEps, c.ropeTheta, c.maxPositionEmbeddings], [6144, true, 1e-6, 1e4, 131072]);
  assert.deepEqual([c.sparseLayers, c.moe, c.numNextnPredictLayers, c.sparseAttention], [new Array(32).fill(false), null, 0, null]);
  assert.equal(c.attentionScale, 192 ** -0.5);
});

test("Youtu reads transformers' parameter count (its LM head the embedding)", () => {
  const model = createModel(parseModelArchitecture(YOUTU, 'test/config.json'), 64);
  // YoutuForCausalLM.from_config(YoutuConfig()) on the meta device holds 1,961,560,064 parameters (tied).
  assert.equal(parameterCount(model), 1_961_560_064);
  const names = model.parameters().map((p) => p.name);
  assert.ok(names.includes('model.layers.0.mlp.gate_proj.weight'));
  assert.ok(!names.some((n) => n.includes('experts') || n === 'lm_head.weight'));
});

test("Youtu reads none of DeepSeek's MoE keys or MTP layers, and keeps V3's YaRN softmax scale and rope_interleave", () => {
  const c = parse({ ...YOUTU, n_routed_experts: 8, num_experts_per_tok: 2, first_k_dense_replace: 1, num_nextn_predict_layers: 1, tie_word_embeddings: false, rope_interleave: false });
  assert.deepEqual([c.sparseLayers.some((s) => s), c.moe, c.numNextnPredictLayers, c.tieWordEmbeddings, c.interleavedRope], [false, null, 0, false, false]);
  assertInvalidModel(() => mtpLayersOf(c), 'mtp');
  const yarn = parse({ ...YOUTU, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4, original_max_position_embeddings: 4096, mscale_all_dim: 1 } });
  assert.ok(Math.abs(yarn.attentionScale - 192 ** -0.5 * (0.1 * Math.log(4) + 1) ** 2) < 1e-12);
  assertInvalidModel(() => parse({ ...YOUTU, num_key_value_heads: 8 }), 'num_key_value_heads');
});
