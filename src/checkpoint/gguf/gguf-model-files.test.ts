import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { f32, f32s, i32s, str, strings, u32, writeGguf, type GgufTensorSpec, type KvValue } from '../../../test/helpers/gguf-writer.ts';
import { tempDir } from '../../../test/helpers/model-temp-dir.ts';
import { KeelError } from '../../errors.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { Tokenizer } from '../../tokenizer/tokenizer.ts';
import { openModelFiles } from '../model-files.ts';
import { ropeParameters } from './gguf-rope.ts';
import { GgufMetadata, type GgufValue, type GgufValueType } from './metadata.ts';

function rejects(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `expected an invalid_model error, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

const f32Tensor = (name: string, dims: number[]): GgufTensorSpec => ({ name, dims, typeId: 0, data: new Uint8Array(4 * dims.reduce((a, b) => a * b, 1)) });

/** A one-layer llama file's hyperparameters and tensors (hidden 8, 2 heads of 4, vocabulary 16). */
const LLAMA: Record<string, KvValue> = {
  'general.architecture': str('llama'),
  'llama.context_length': u32(64),
  'llama.embedding_length': u32(8),
  'llama.feed_forward_length': u32(16),
  'llama.block_count': u32(1),
  'llama.attention.head_count': u32(2),
  'llama.attention.head_count_kv': u32(1),
  'llama.attention.layer_norm_rms_epsilon': f32(1e-5),
  'tokenizer.ggml.bos_token_id': u32(1),
  'tokenizer.ggml.eos_token_id': u32(2),
  'tokenizer.ggml.eot_token_id': u32(3),
};
const LLAMA_TENSORS: GgufTensorSpec[] = [
  f32Tensor('token_embd.weight', [8, 16]),
  f32Tensor('output_norm.weight', [8]),
  f32Tensor('blk.0.attn_norm.weight', [8]),
  f32Tensor('blk.0.attn_q.weight', [8, 8]),
  f32Tensor('blk.0.attn_k.weight', [8, 4]),
  f32Tensor('blk.0.attn_v.weight', [8, 4]),
  f32Tensor('blk.0.attn_output.weight', [8, 8]),
  f32Tensor('blk.0.ffn_norm.weight', [8]),
  f32Tensor('blk.0.ffn_gate.weight', [8, 16]),
  f32Tensor('blk.0.ffn_up.weight', [8, 16]),
  f32Tensor('blk.0.ffn_down.weight', [16, 8]),
];

function write(dir: string, kvs: Record<string, KvValue>, tensors = LLAMA_TENSORS): string {
  const path = join(dir, 'model.gguf');
  writeGguf(path, kvs, tensors);
  return path;
}

test('a llama GGUF file reads as config.json: shapes, defaults, tied embeddings and every end-of-turn id', (t) => {
  const files = openModelFiles(write(tempDir(t), LLAMA));
  assert.equal(files.format, 'gguf');
  const config = files.config().json as Record<string, unknown>;
  assert.deepEqual(
    { ...config, rope_parameters: undefined },
    {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 16, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1,
      num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, hidden_act: 'silu', rms_norm_eps: f32Value(1e-5), max_position_embeddings: 64,
      rope_parameters: undefined, tie_word_embeddings: true, dtype: 'float32', bos_token_id: 1, eos_token_id: [2, 3], pad_token_id: null, attention_bias: false,
    },
  );
  assert.deepEqual(config.rope_parameters, { rope_type: 'default', rope_theta: 10000 });
  assert.equal(files.tokenizer(), null, 'no vocabulary, no tokenizer');
  assert.deepEqual(files.openCheckpoint().info('model.layers.0.mlp.down_proj.weight').shape, [8, 16]);
});

const f32Value = (v: number) => Math.fround(v);

test('architectures, tensors, vocabularies and RoPE Keel cannot run are errors that name them', (t) => {
  const dir = tempDir(t);
  rejects(() => openModelFiles(write(dir, { ...LLAMA, 'general.architecture': str('gemma3n') })), 'GGUF architecture "gemma3n" is not supported', 'llama, qwen2, qwen3', 'gemma, gemma2, gemma3, phi3, deepseek2');
  rejects(() => openModelFiles(write(dir, LLAMA, [...LLAMA_TENSORS, f32Tensor('blk.0.attn_qkv.weight', [8, 16])])), 'tensor blk.0.attn_qkv.weight is not one Keel knows in a GGUF llama model');
  rejects(() => openModelFiles(write(dir, LLAMA, LLAMA_TENSORS.slice(1))), 'has no token_embd.weight');
  rejects(() => openModelFiles(write(dir, { ...LLAMA, 'llama.rope.dimension_count': u32(2) })), 'llama.rope.dimension_count 2 rotates part of a 4-wide head');
  rejects(() => openModelFiles(write(dir, { ...LLAMA, 'llama.rope.scaling.type': str('longrope') })), 'rope.scaling.type "longrope" is not supported');
  const vocabulary = { 'tokenizer.ggml.tokens': strings(['a', 'b', 'c', 'd']), 'tokenizer.ggml.merges': strings([]) };
  rejects(() => openModelFiles(write(dir, { ...LLAMA, ...vocabulary, 'tokenizer.ggml.model': str('bert') })), 'tokenizer.ggml.model "bert" is not supported');
  rejects(() => openModelFiles(write(dir, { ...LLAMA, ...vocabulary, 'tokenizer.ggml.model': str('gpt2'), 'tokenizer.ggml.pre': str('mystery') })), 'tokenizer.ggml.pre "mystery"', 'llama-bpe');
  rejects(() => openModelFiles(write(dir, { ...LLAMA, 'tokenizer.ggml.model': str('gpt2'), 'tokenizer.ggml.pre': str('gpt-2'), 'tokenizer.ggml.tokens': strings(['a']), 'tokenizer.ggml.merges': strings([]) })), 'special token id 1 is outside the vocabulary of 1 tokens');
});

function metadata(entries: Record<string, [GgufValueType, GgufValue]>): GgufMetadata {
  return new GgufMetadata(new Map(Object.entries(entries).map(([k, [type, value]]) => [k, { type, value }])), 'test.gguf');
}

/** rope_freqs.weight as llama.cpp's converter computes it from a Llama 3 config. */
function llama3Factors(theta: number, headDim: number, factor: number, low: number, high: number, original: number): Float32Array {
  return Float32Array.from({ length: headDim / 2 }, (_, i) => {
    const w = 2 * Math.PI * theta ** ((2 * i) / headDim);
    if (w < original / high) return 1;
    if (w > original / low) return factor;
    const s = (original / w - low) / (high - low);
    return 1 / ((1 - s) / factor + s);
  });
}

test('Llama 3 RoPE scaling is recovered from rope_freqs.weight (Llama 3.1 8B, Llama 3.2 1B, and a head too small to tell)', () => {
  const m = metadata({ 'llama.rope.freq_base': ['float32', 500000] });
  for (const [headDim, original] of [[128, 8192], [64, 8192], [16, 32]]) {
    assert.deepEqual(ropeParameters(m, 'llama', headDim, llama3Factors(500000, headDim, 8, 1, 4, original)), {
      rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: original,
    });
  }
  const odd = llama3Factors(500000, 128, 8, 1, 4, 8192);
  odd[40] = 2;
  rejects(() => ropeParameters(m, 'llama', 128, odd), 'rope_freqs.weight is not Llama 3 RoPE scaling that Keel can recover');
  rejects(() => ropeParameters(metadata({ 'llama.rope.scaling.type': ['string', 'linear'] }), 'llama', 128, odd), 'both scale RoPE');
});

test('a SentencePiece (llama) vocabulary tokenizes by its scores, falls back to bytes and adds BOS', (t) => {
  const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
  const types = [2, 3, 3, ...new Array(256).fill(6)];
  const scores = new Array(tokens.length).fill(0);
  // Pieces and their scores: SentencePiece merges the adjacent pair whose union scores best.
  const pieces: [string, number][] = [['▁h', -1], ['ll', -2], ['▁he', -3], ['llo', -4], ['▁hello', -5], ['▁', -10], ['h', -11], ['e', -12], ['l', -13], ['o', -14], ['el', -20]];
  for (const [piece, score] of pieces) {
    tokens.push(piece);
    types.push(1);
    scores.push(score);
  }
  const id = (piece: string) => tokens.indexOf(piece);
  const path = write(tempDir(t), {
    ...LLAMA,
    'tokenizer.ggml.model': str('llama'),
    'tokenizer.ggml.tokens': strings(tokens),
    'tokenizer.ggml.scores': f32s(scores),
    'tokenizer.ggml.token_type': i32s(types),
    'tokenizer.ggml.unknown_token_id': u32(0),
    'tokenizer.chat_template': str('{% for m in messages %}{{ bos_token }}{{ m.content }}{{ eos_token }}{% endfor %}'),
  });
  const tokenizer = Tokenizer.load(path);
  assert.deepEqual(tokenizer.encode('hello', { addSpecialTokens: true }), [1, id('▁hello')]);
  // "▁h e l l o": ▁h (-1), then ll (-2) before ▁he (-3), then ▁he, llo, ▁hello; "el" (-20) never wins.
  const withAccent = [1, id('▁hello'), id('▁'), id('<0xC3>'), id('<0xA9>')];
  assert.deepEqual(tokenizer.encode('hello é', { addSpecialTokens: true }), withAccent);
  assert.equal(tokenizer.decode(withAccent, { skipSpecialTokens: true }), 'hello é');
  assert.equal(tokenizer.eosTokenId, 2);
  assert.ok(tokenizer.isSpecial(1) && tokenizer.isSpecial(2));
  assert.equal(tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '<s>hi</s>');
});

const f32Values = (name: string, dims: number[], values: number[]): GgufTensorSpec => ({ name, dims, typeId: 0, data: new Uint8Array(Float32Array.from(values).buffer) });

/** A two-layer gemma3 file (hidden 8, 2 heads of 4, one KV head), every norm stored as 1.5. */
function gemma3File(extra: Record<string, KvValue>): { kvs: Record<string, KvValue>; tensors: GgufTensorSpec[] } {
  const norm = (name: string, n: number) => f32Values(name, [n], new Array(n).fill(1.5));
  const layer = (i: number) => [
    norm(`blk.${i}.attn_norm.weight`, 8), f32Tensor(`blk.${i}.attn_q.weight`, [8, 8]), f32Tensor(`blk.${i}.attn_k.weight`, [8, 4]), f32Tensor(`blk.${i}.attn_v.weight`, [8, 4]),
    f32Tensor(`blk.${i}.attn_output.weight`, [8, 8]), norm(`blk.${i}.attn_q_norm.weight`, 4), norm(`blk.${i}.attn_k_norm.weight`, 4), norm(`blk.${i}.post_attention_norm.weight`, 8),
    norm(`blk.${i}.ffn_norm.weight`, 8), f32Tensor(`blk.${i}.ffn_gate.weight`, [8, 16]), f32Tensor(`blk.${i}.ffn_up.weight`, [8, 16]), f32Tensor(`blk.${i}.ffn_down.weight`, [16, 8]), norm(`blk.${i}.post_ffw_norm.weight`, 8),
  ];
  const kvs: Record<string, KvValue> = {
    'general.architecture': str('gemma3'),
    'gemma3.context_length': u32(64),
    'gemma3.embedding_length': u32(8),
    'gemma3.feed_forward_length': u32(16),
    'gemma3.block_count': u32(2),
    'gemma3.attention.head_count': u32(2),
    'gemma3.attention.head_count_kv': u32(1),
    'gemma3.attention.key_length': u32(4),
    'gemma3.attention.value_length': u32(4),
    'gemma3.attention.layer_norm_rms_epsilon': f32(1e-6),
    'gemma3.rope.freq_base': f32(1e6),
    ...extra,
  };
  return { kvs, tensors: [f32Tensor('token_embd.weight', [8, 16]), norm('output_norm.weight', 8), ...layer(0), ...layer(1)] };
}

test('a gemma3 file reads as Gemma 3: norms without the 1 the converter adds, llama.cpp\'s query scale, its sliding layers and two RoPEs', (t) => {
  const dir = tempDir(t);
  const plain = gemma3File({ 'gemma3.attention.sliding_window': u32(16) });
  const files = openModelFiles(write(dir, plain.kvs, plain.tensors));
  const config = files.config().json as Record<string, unknown>;
  assert.equal(config.model_type, 'gemma3_text');
  assert.equal(config.query_pre_attn_scalar, 4, 'head_dim, as llama.cpp scales a model it does not know as 27B');
  assert.equal(config.sliding_window, 16);
  assert.deepEqual(config.layer_types, ['sliding_attention', 'sliding_attention'], 'llama.cpp\'s period 6: layers 0-4 of each 6 slide');
  assert.deepEqual(config.rope_parameters, { full_attention: { rope_type: 'default', rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 10000 } });
  const ckpt = files.openCheckpoint();
  for (const name of ['model.norm.weight', 'model.layers.1.self_attn.q_norm.weight', 'model.layers.0.post_feedforward_layernorm.weight']) {
    assert.ok(hostTensorToFloat32(ckpt.read(name)).every((v) => v === 0.5), name);
  }
  const flagged = gemma3File({ 'gemma3.attention.sliding_window': u32(16), 'gemma3.attention.sliding_window_pattern': { type: 'array', elementType: 'bool', items: [false, true] }, 'gemma3.attention.scale': f32(0.25) });
  const flaggedConfig = openModelFiles(write(dir, flagged.kvs, flagged.tensors)).config().json as Record<string, unknown>;
  assert.deepEqual(flaggedConfig.layer_types, ['full_attention', 'sliding_attention']);
  assert.equal(flaggedConfig.query_pre_attn_scalar, 16);
  const global = gemma3File({});
  assert.deepEqual((openModelFiles(write(dir, global.kvs, global.tensors)).config().json as Record<string, unknown>).layer_types, ['full_attention', 'full_attention'], 'no window: every layer global');
});

test('Gemma, Phi-3 and DeepSeek files Keel cannot read as their Hugging Face models are errors that name the problem', (t) => {
  const dir = tempDir(t);
  const gemma = gemma3File({});
  rejects(() => openModelFiles(write(dir, gemma.kvs, [...gemma.tensors, f32Values('rope_factors_long.weight', [2], [1, 2]), f32Values('rope_factors_short.weight', [2], [1, 1])])), 'rope_factors_long/short are Phi-3\'s LongRoPE');
  const phi3: Record<string, KvValue> = Object.fromEntries(Object.entries(LLAMA).map(([k, v]) => [k.replace(/^llama\./, 'phi3.'), v]));
  phi3['general.architecture'] = str('phi3');
  const phi3Tensors = [
    ...LLAMA_TENSORS.filter((x) => !/attn_[qkv]\.|ffn_(gate|up)/.test(x.name)),
    f32Tensor('blk.0.attn_qkv.weight', [8, 16]),
    f32Tensor('blk.0.ffn_up.weight', [8, 32]),
  ];
  rejects(() => openModelFiles(write(dir, phi3, [...phi3Tensors, f32Values('rope_factors_long.weight', [2], [1, 2])])), 'has only one of rope_factors_long.weight and rope_factors_short.weight');
  rejects(() => openModelFiles(write(dir, phi3, [...phi3Tensors, f32Values('rope_factors_long.weight', [1], [1]), f32Values('rope_factors_short.weight', [1], [1])])), 'rope_factors_long/short have 1/1 values; a rotary width of 4 needs 2');
  const phi3Config = openModelFiles(write(dir, { ...phi3, 'phi3.rope.dimension_count': u32(2) }, phi3Tensors)).config().json as Record<string, any>;
  assert.deepEqual(phi3Config.rope_parameters, { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 });

  const deepseek: Record<string, KvValue> = {
    ...Object.fromEntries(Object.entries(LLAMA).map(([k, v]) => [k.replace(/^llama\./, 'deepseek2.'), v])),
    'general.architecture': str('deepseek2'),
    'deepseek2.attention.head_count_kv': u32(1),
    'deepseek2.attention.kv_lora_rank': u32(4),
    'deepseek2.attention.key_length': u32(6),
    'deepseek2.attention.value_length': u32(4),
    'deepseek2.attention.key_length_mla': u32(6),
    'deepseek2.attention.value_length_mla': u32(4),
    'deepseek2.rope.dimension_count': u32(2),
  };
  const mla = [
    ...LLAMA_TENSORS.filter((x) => !/attn_[qkv]\./.test(x.name)),
    f32Tensor('blk.0.attn_q.weight', [8, 12]),
    f32Tensor('blk.0.attn_kv_a_mqa.weight', [8, 6]),
    f32Tensor('blk.0.attn_kv_a_norm.weight', [4]),
  ];
  const halves = [f32Tensor('blk.0.attn_k_b.weight', [4, 4, 2]), f32Tensor('blk.0.attn_v_b.weight', [4, 4, 2])];
  const config = openModelFiles(write(dir, deepseek, [...mla, ...halves])).config().json as Record<string, unknown>;
  assert.deepEqual([config.model_type, config.num_key_value_heads, config.qk_nope_head_dim, config.v_head_dim, config.q_lora_rank, config.first_k_dense_replace], ['deepseek_v2', 2, 4, 4, null, 1]);
  assert.deepEqual(openModelFiles(write(dir, deepseek, [...mla, ...halves])).openCheckpoint().info('model.layers.0.self_attn.kv_b_proj.weight').shape, [16, 4]);
  rejects(() => openModelFiles(write(dir, deepseek, [...mla, halves[1]])), 'blk.0.attn_v_b.weight has no blk.0.attn_k_b.weight beside it');
  rejects(() => openModelFiles(write(dir, deepseek, [...mla, halves[0], f32Tensor('blk.0.attn_v_b.weight', [3, 4, 2])])), 'are not the halves of one kv_b_proj');
  rejects(() => openModelFiles(write(dir, { ...deepseek, 'deepseek2.expert_gating_func': u32(2) }, [...mla, ...halves])), 'sigmoid routing without exp_probs_b biases');
  const moe = { ...deepseek, 'deepseek2.expert_count': u32(4), 'deepseek2.expert_used_count': u32(2), 'deepseek2.expert_feed_forward_length': u32(4), 'deepseek2.expert_weights_norm': { type: 'bool', value: true } } as Record<string, KvValue>;
  rejects(() => openModelFiles(write(dir, moe, [...mla, ...halves])), 'renormalizes DeepSeek-V2\'s expert weights');
  rejects(() => openModelFiles(write(dir, { ...deepseek, 'deepseek2.attention.head_count_kv': u32(2) }, [...mla, ...halves])), 'MLA is stored as 1 head');
});
