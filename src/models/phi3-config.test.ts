import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { loadDummyWeights } from './dummy-weights.ts';
import type { Phi3Config } from './phi3.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Phi3Config;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parse(json), ...fragments);
}

const factors = (n: number, from: number) => Array.from({ length: n }, (_, i) => from + i / 10);

/** microsoft/Phi-3-mini-128k-instruct's config.json (transformers 4.x), its factor lists abridged to made-up values. */
const PHI3_MINI_128K = {
  architectures: ['Phi3ForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 32000,
  hidden_act: 'silu',
  hidden_size: 3072,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  model_type: 'phi3',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  original_max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  rope_scaling: { long_factor: factors(48, 1), short_factor: factors(48, 1.01), type: 'longrope' },
  rope_theta: 10000.0,
  sliding_window: 262144,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32064,
};

test('a Phi-3-mini-128k config: LongRoPE with the original context, factor lists and the attention factor', () => {
  const c = parse(PHI3_MINI_128K);
  assert.equal(c.headDim, 96);
  assert.equal(c.rotaryDim, 96);
  assert.equal(c.contextLength, 131072);
  assert.deepEqual(new Set(c.slidingWindows), new Set([262144]));
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, {
    type: 'longrope',
    shortFactor: factors(48, 1.01),
    longFactor: factors(48, 1),
    originalMaxPositionEmbeddings: 4096,
    attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)),
  });
  assert.ok(Math.abs((c.ropeScaling as { attentionFactor: number }).attentionFactor - 1.190238) < 1e-6);
});

test('the dict\'s factor and attention_factor override the derived ones; "su" and early Phi-3\'s "yarn" mean LongRoPE', () => {
  const withFactor = parse({ ...PHI3_MINI_128K, rope_scaling: { ...PHI3_MINI_128K.rope_scaling, factor: 4 } });
  assert.equal((withFactor.ropeScaling as { attentionFactor: number }).attentionFactor, Math.sqrt(1 + Math.log(4) / Math.log(4096)));
  const explicit = parse({ ...PHI3_MINI_128K, rope_scaling: { ...PHI3_MINI_128K.rope_scaling, attention_factor: 1.5 } });
  assert.equal((explicit.ropeScaling as { attentionFactor: number }).attentionFactor, 1.5);
  for (const type of ['su', 'yarn']) {
    assert.deepEqual(parse({ ...PHI3_MINI_128K, rope_scaling: { ...PHI3_MINI_128K.rope_scaling, type } }).ropeScaling, parse(PHI3_MINI_128K).ropeScaling, type);
  }
  // No factor is derived from a context that was not extended.
  const unextended = parse({ ...PHI3_MINI_128K, max_position_embeddings: 4096 });
  assert.equal((unextended.ropeScaling as { attentionFactor: number }).attentionFactor, 1);
});

test('Phi-4-mini\'s partial_rotary_factor rotates 3/4 of each head, with a factor per rotated pair', () => {
  const phi4 = {
    ...PHI3_MINI_128K,
    hidden_size: 3072,
    num_attention_heads: 24,
    num_key_value_heads: 8,
    partial_rotary_factor: 0.75,
    rope_scaling: { long_factor: factors(48, 1), short_factor: factors(48, 1), type: 'longrope' },
    tie_word_embeddings: true,
  };
  const c = parse(phi4);
  assert.equal(c.headDim, 128);
  assert.equal(c.rotaryDim, 96);
  assert.equal(c.tieWordEmbeddings, true);
  rejects({ ...phi4, rope_scaling: { ...phi4.rope_scaling, short_factor: factors(64, 1) } }, 'short_factor', '64 entries', 'rotary dim 96 needs 48');
});

test('transformers 5\'s rope_parameters read as the 4.x spelling does', () => {
  const { rope_scaling: scaling, rope_theta: _theta, ...rest } = PHI3_MINI_128K;
  const v5 = { ...rest, rope_parameters: { long_factor: scaling.long_factor, short_factor: scaling.short_factor, rope_type: 'longrope', rope_theta: 10000, original_max_position_embeddings: 4096, partial_rotary_factor: 1 } };
  assert.deepEqual(parse(v5), parse(PHI3_MINI_128K));
});

test('Phi-3-mini-4k: plain RoPE and every layer sliding a 2047-token window', () => {
  const c = parse({ ...PHI3_MINI_128K, max_position_embeddings: 4096, rope_scaling: null, sliding_window: 2047 });
  assert.deepEqual(c.ropeScaling, { type: 'default' });
  const model = createModel(parseModelArchitecture({ ...PHI3_MINI_128K, rope_scaling: null, sliding_window: 2047, num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 4, intermediate_size: 32, vocab_size: 16 }, 'c'), 64);
  assert.deepEqual(model.kvLayers.map((l) => l.kind === 'attention' && l.slidingWindow), [2047, 2047]);
});

test('a Phi-3 model loads fused qkv and gate_up tensors as they are, and a LongRoPE table of short then long rows', () => {
  const hf = { ...PHI3_MINI_128K, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 32, vocab_size: 16, num_hidden_layers: 1, max_position_embeddings: 128, original_max_position_embeddings: 32, rope_scaling: { long_factor: factors(8, 1), short_factor: factors(8, 1), type: 'longrope' } };
  const model = createModel(parseModelArchitecture(hf, 'c'), 100);
  assert.deepEqual(
    model.parameters().map((p) => [p.name, p.shape]).filter(([name]) => (name as string).includes('proj')),
    [
      ['model.layers.0.self_attn.qkv_proj.weight', [128, 64]],
      ['model.layers.0.self_attn.o_proj.weight', [64, 64]],
      ['model.layers.0.mlp.gate_up_proj.weight', [64, 64]],
      ['model.layers.0.mlp.down_proj.weight', [64, 32]],
    ],
  );
  const uploader = new RecordingUploader();
  loadDummyWeights(model, 'f32', uploader, 1);
  assert.deepEqual(uploader.ropeTables.map((t) => [t.maxPositions, t.rotaryDim]), [[32 + 100, 16]]);
  assert.deepEqual([model.rotaryRow?.(5, 10), model.rotaryRow?.(40, 10), model.rotaryRow?.(5, 33)], [5, 72, 37]);
  assert.deepEqual([model.prefixCacheSalt?.(32), model.prefixCacheSalt?.(33)], [null, 'longrope:long-factors']);
});

test('unsupported Phi-3 options are named', () => {
  rejects({ ...PHI3_MINI_128K, rope_scaling: { type: 'linear', factor: 2 } }, 'rope type "linear"', 'phi3');
  rejects({ ...PHI3_MINI_128K, partial_rotary_factor: 0.7 }, 'partial_rotary_factor 0.7', '67 rotary dims');
  rejects({ ...PHI3_MINI_128K, hidden_act: 'gelu_10' }, 'hidden_act', '"gelu_10"');
  rejects({ ...PHI3_MINI_128K, rope_scaling: { type: 'longrope', short_factor: factors(48, 1) } }, 'long_factor');
});
