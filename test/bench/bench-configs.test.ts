import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parameterCount, parametersReadPerStep } from '../../src/bench/roofline.ts';
import type { LlamaConfig } from '../../src/models/llama.ts';
import type { DeepseekConfig } from '../../src/models/deepseek.ts';
import type { QwenMoeConfig } from '../../src/models/qwen-moe.ts';
import type { GptOssConfig } from '../../src/models/gpt-oss.ts';
import { createModel, readModelArchitecture } from '../../src/models/registry.ts';
import { parseEagleConfig } from '../../src/models/eagle-config.ts';
import { EagleHead } from '../../src/models/eagle-head.ts';
import { kvBytesPerToken } from '../../src/step/kv-cache-layout.ts';

const dir = (arch: string) => `bench/configs/${arch}`;
const readModelConfig = (path: string) => readModelArchitecture(path).config as LlamaConfig;
const modelOf = (path: string) => {
  const architecture = readModelArchitecture(path);
  return createModel(architecture, architecture.config.contextLength);
};

test('every shipped architecture parses, with the published parameter count', () => {
  // The counts the Hugging Face hub shows for these checkpoints.
  const published: Record<string, number> = {
    'llama-3.1-8b': 8_030_261_248,
    'llama-3.1-70b': 70_553_706_496,
    'llama-3.2-1b': 1_235_814_400,
    'qwen3-0.6b': 596_049_920,
    'qwen2.5-7b': 7_615_616_512,
    'mistral-7b': 7_248_023_552,
    'qwen3-30b-a3b': 30_532_122_624,
    // deepseek-ai/DeepSeek-V2-Lite's safetensors hold 15,706,484,224 values: the "15.7B" of its model card.
    'deepseek-v2-lite': 15_706_484_224,
  };
  for (const [arch, count] of Object.entries(published)) assert.equal(parameterCount(modelOf(dir(arch))), count, arch);
});

test('Llama-3.1-8B: GQA 32/8, llama3 RoPE scaling to 128k, untied', () => {
  const c = readModelConfig(dir('llama-3.1-8b'));
  assert.equal(c.modelType, 'llama');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [4096, 14336, 32, 32, 8, 128, 128256]);
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.equal(c.maxPositionEmbeddings, 131072);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.dtype, 'bf16');
});

test('Qwen3-0.6B: head_dim 128 wider than hidden/heads, q/k norm, tied, no sliding window', () => {
  const c = readModelConfig(dir('qwen3-0.6b'));
  assert.equal(c.modelType, 'qwen3');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [1024, 3072, 28, 16, 8, 128, 151936]);
  assert.equal(c.qkNorm, true);
  assert.equal(c.tieWordEmbeddings, true);
  assert.ok(c.slidingWindows.every((w) => w === null));
  assert.equal(c.ropeTheta, 1_000_000);
  assert.equal(c.maxPositionEmbeddings, 40960);
});

test('Qwen2.5-7B: q/k/v biases, GQA 28/4, sliding window unused', () => {
  const c = readModelConfig(dir('qwen2.5-7b'));
  assert.equal(c.modelType, 'qwen2');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [3584, 18944, 28, 28, 4, 128, 152064]);
  assert.equal(c.attentionBias, true);
  assert.equal(c.outputBias, false);
  assert.ok(c.slidingWindows.every((w) => w === null));
  assert.equal(c.tieWordEmbeddings, false);
});

test('Mistral-7B (v0.3): 32k vocabulary, RoPE theta 1e6, sliding window null', () => {
  const c = readModelConfig(dir('mistral-7b'));
  assert.equal(c.modelType, 'mistral');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [4096, 14336, 32, 32, 8, 128, 32768]);
  assert.ok(c.slidingWindows.every((w) => w === null));
  assert.equal(c.ropeTheta, 1_000_000);
  assert.equal(c.contextLength, 32768);
});

test('Qwen3-30B-A3B: 128 experts of 768, top-8 renormalized, head_dim 128 over hidden 2048, every layer sparse', () => {
  const c = readModelArchitecture(dir('qwen3-30b-a3b')).config as QwenMoeConfig;
  assert.equal(c.modelType, 'qwen3_moe');
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [2048, 48, 32, 4, 128, 151936]);
  assert.deepEqual([c.moeIntermediateSize, c.numExperts, c.numExpertsPerToken, c.normTopkProb], [768, 128, 8, true]);
  assert.ok(c.sparseLayers.every((s) => s));
  assert.equal(c.qkNorm, true);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.contextLength, 40960);
});

test('Qwen3-30B-A3B reads 3.04B parameters per decoded token: everything but the input embedding and the unchosen experts', () => {
  const model = modelOf(dir('qwen3-30b-a3b'));
  const embedding = 151936 * 2048;
  const expertsPerLayer = 128 * 3 * 768 * 2048;
  const dense = parameterCount(model) - 48 * expertsPerLayer;
  // 8 of 128 experts per layer, the LM head, attention, routers and norms.
  assert.equal(parametersReadPerStep(model, 1), dense - embedding + 48 * expertsPerLayer * (8 / 128));
  assert.equal(parametersReadPerStep(model, 1), 3_041_867_776);
});

test('gpt-oss-20b: 32 experts of 2880 (top 4) in every layer, MXFP4-ready widths; 20.9B parameters, 3.6B read per token as its model card says', () => {
  const c = readModelArchitecture(dir('gpt-oss-20b')).config as GptOssConfig;
  assert.equal(c.modelType, 'gpt_oss');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.numLayers], [2880, 2880, 32, 4, 24]);
  // --quantization mxfp4 needs both widths in whole blocks of 32.
  assert.deepEqual([c.hiddenSize % 32, c.intermediateSize % 32], [0, 0]);
  const model = modelOf(dir('gpt-oss-20b'));
  assert.equal(parameterCount(model), 20_914_757_184);
  assert.equal(parametersReadPerStep(model, 1), 3_608_307_264);
});

test('DeepSeek-V2-Lite: MLA without q LoRA, 64 experts of 1408 (top 6) and 2 shared after one dense layer, YaRN to 160k', () => {
  const c = readModelArchitecture(dir('deepseek-v2-lite')).config as DeepseekConfig;
  assert.equal(c.modelType, 'deepseek_v2');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.vocabSize], [2048, 10944, 27, 16, 102400]);
  assert.deepEqual([c.queryRank, c.latentDim, c.nopeDim, c.ropeDim, c.valueDim], [null, 512, 128, 64, 128]);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 27 }, (_, i) => i >= 1));
  assert.deepEqual([c.moe?.numExperts, c.moe?.numExpertsPerToken, c.moe?.expertIntermediateSize, c.moe?.sharedIntermediateSize], [64, 6, 1408, 2816]);
  assert.deepEqual(c.moe?.routing, { topK: 6, scoring: 'softmax', selectionBias: false, groups: null, normalize: false, scale: 1 });
  assert.equal(c.contextLength, 163840);
  assert.ok(Math.abs(c.attentionScale - 192 ** -0.5 * (0.1 * 0.707 * Math.log(40) + 1) ** 2) < 1e-12);
});

test('DeepSeek-V2-Lite activates 2.45B parameters per token (the "2.4B" of its model card): all but the input embedding and 58 of 64 experts', () => {
  const model = modelOf(dir('deepseek-v2-lite'));
  const embedding = 102400 * 2048;
  const expertsPerLayer = 64 * 3 * 1408 * 2048;
  assert.equal(parametersReadPerStep(model, 1), parameterCount(model) - embedding - 26 * expertsPerLayer * (58 / 64));
  assert.equal(parametersReadPerStep(model, 1), 2_451_435_008);
});

test('GLM-4.5-Air: 106.9B parameters as transformers counts them (plus the routers\' selection biases), 12.8B read per decoded token', () => {
  const model = modelOf(dir('glm-4.5-air'));
  const embedding = 151552 * 4096;
  const expertsPerLayer = 128 * 3 * 1408 * 4096;
  // Glm4MoeForCausalLM holds 106,852,245,504 parameters, and 45 × 128 e_score_correction_bias values in buffers.
  assert.equal(parameterCount(model), 106_852_245_504 + 45 * 128);
  // 8 of 128 experts in each of the 45 MoE layers; everything else but the input embedding.
  assert.equal(parametersReadPerStep(model, 1), parameterCount(model) - embedding - 45 * expertsPerLayer * (120 / 128));
  assert.equal(parametersReadPerStep(model, 1), 12_803_372_672);
});

test('DeepSeek-V2-Lite caches 31,104 bytes per token in MLA form, 8.9x less than its 276,480 as per-head keys and values', () => {
  const model = modelOf(dir('deepseek-v2-lite'));
  // bf16: 27 layers of one row of latent 512 + rope 64.
  assert.equal(kvBytesPerToken(model.kvLayers, 2), 27 * (512 + 64) * 2);
  assert.equal(kvBytesPerToken(model.kvLayers, 2), 31_104);
  // The same attention with keys of 16 heads x (128 nope + 64 rope) and values of 16 x 128.
  const perHead = 27 * 16 * (192 + 128) * 2;
  assert.equal(perHead, 276_480);
  assert.ok(Math.abs(perHead / kvBytesPerToken(model.kvLayers, 2) - 8.89) < 0.01);
});

test('the EAGLE head configs for Llama-3.1-8B parse against it and name the tensors the published heads hold', () => {
  const target = modelOf(dir('llama-3.1-8b'));
  const layers = { hiddenSize: 4096, vocabSize: 128256, numLayers: 32, embedding: target.embedding, lmHead: target.lmHead };
  const shapes = (version: 1 | 3, arch: string) => {
    const path = `${dir(arch)}/config.json`;
    const config = parseEagleConfig(JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>, path, version);
    return new Map(EagleHead.forCheckpoint(config, null, layers, 4096).parameters().map((p) => [p.name, p.shape]));
  };
  const eagle3 = shapes(3, 'eagle3-llama-3.1-8b');
  assert.deepEqual(eagle3.get('fc.weight'), [4096, 3 * 4096]);
  assert.deepEqual(eagle3.get('midlayer.self_attn.q_proj.weight'), [4096, 2 * 4096]);
  assert.deepEqual(eagle3.get('midlayer.hidden_norm.weight'), [4096]);
  assert.deepEqual(eagle3.get('lm_head.weight'), [32000, 4096]);
  const eagle = shapes(1, 'eagle-llama-3.1-8b');
  assert.deepEqual(eagle.get('fc.weight'), [4096, 2 * 4096]);
  assert.deepEqual(eagle.get('fc.bias'), [4096]);
  assert.ok(!eagle.has('layers.0.input_layernorm.weight') && !eagle.has('lm_head.weight'), 'EAGLE-1 has no input norm and shares the LM head');
});
