import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { KeelError } from '../src/errors.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import { GREEDY, listLoraFixtures, loadWithAdapters } from './helpers/lora-parity.ts';
import { writeSafetensors } from './helpers/model-safetensors-writer.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

const fixtures = listLoraFixtures();
const [first, second] = fixtures;
const base = first.base;
// Prompts 2 and 3 (40 and 70 tokens) share their first 33 tokens: two full blocks of 16.
const SHARED_BLOCKS_TOKENS = 32;

test('a prompt cached under one adapter is not served to another adapter, nor to the base model; under the same adapter it is', async () => {
  const llm = await loadWithAdapters(fixtures, { backend: 'cpu', maxLoras: 2 });
  try {
    const params = { ...GREEDY, maxTokens: base.oracle.max_new_tokens };
    const [prompt2, prompt3] = [first.merged.oracle.prompts[2], first.merged.oracle.prompts[3]];
    await llm.generate(prompt2, params, { lora: first.name });
    const [other] = await llm.generate(prompt3, params, { lora: second.name });
    assert.equal(other.metrics.numCachedTokens, 0, 'another adapter hit the first one\'s blocks');
    assert.deepEqual(other.outputs[0].tokenIds, second.merged.oracle.greedy[3]);
    const [plain] = await llm.generate(prompt3, params);
    assert.equal(plain.metrics.numCachedTokens, 0, 'the base model hit an adapter\'s blocks');
    assert.deepEqual(plain.outputs[0].tokenIds, base.oracle.greedy[3]);
    const [same] = await llm.generate(prompt3, params, { lora: first.name });
    assert.equal(same.metrics.numCachedTokens, SHARED_BLOCKS_TOKENS, 'the same adapter reuses its own cached prefix');
    assert.deepEqual(same.outputs[0].tokenIds, first.merged.oracle.greedy[3]);
    // Loaded again under the same name, it is another adapter: its old blocks are not hit.
    llm.unloadLoraAdapter(first.name);
    llm.loadLoraAdapter(first.name, first.dir);
    const [reloaded] = await llm.generate(prompt3, params, { lora: first.name });
    assert.equal(reloaded.metrics.numCachedTokens, 0, 'a reloaded adapter hit the blocks of the adapter it replaced');
    assert.deepEqual(reloaded.outputs[0].tokenIds, first.merged.oracle.greedy[3]);
  } finally {
    await llm.close();
  }
});

test('adapters load and unload at run time; unknown names, taken names and engines without LoRA are refused by name', async (t) => {
  const llm = await LLM.load({ model: base.dir, backend: 'cpu', showProgress: false, numKvBlocks: 64, enableLora: true, maxLoraRank: 8 });
  try {
    assert.equal(llm.loraAdapters.length, 0);
    const info = llm.loadLoraAdapter('mine', first.dir);
    assert.deepEqual(info, { name: 'mine', path: first.dir, rank: 8 });
    assert.deepEqual(llm.loraAdapters.map((a) => a.name), ['mine']);
    const [out] = await llm.generate(first.merged.oracle.prompts[0], { ...GREEDY, maxTokens: first.merged.oracle.max_new_tokens }, { lora: 'mine' });
    assert.deepEqual(out.outputs[0].tokenIds, first.merged.oracle.greedy[0]);
    assert.throws(() => llm.loadLoraAdapter('mine', second.dir), /named mine is already loaded/);
    llm.unloadLoraAdapter('mine');
    await assert.rejects(llm.generate([5, 6], { maxTokens: 1 }, { lora: 'mine' }), (e: unknown) => e instanceof KeelError && e.kind === 'not_found' && /no LoRA adapter named mine/.test(e.message));
    assert.throws(() => llm.unloadLoraAdapter('mine'), (e: unknown) => e instanceof KeelError && e.kind === 'not_found');
    assert.throws(() => llm.loadLoraAdapter('x', tempDir(t)), /is not a PEFT adapter: it has no adapter_config.json/);
  } finally {
    await llm.close();
  }
  const plain = await LLM.load({ model: base.dir, backend: 'cpu', showProgress: false, numKvBlocks: 16 });
  try {
    assert.throws(() => plain.loadLoraAdapter('a', first.dir), /LoRA is not enabled/);
    await assert.rejects(plain.generate([5], { maxTokens: 1 }, { lora: 'a' }), /LoRA is not enabled/);
  } finally {
    await plain.close();
  }
});

/** A copy of `from` with its config edited and, optionally, other tensors. */
function editedAdapter(dir: string, from: string, config: Record<string, unknown>, tensors?: Record<string, number[]>): string {
  cpSync(from, dir, { recursive: true });
  const path = join(dir, 'adapter_config.json');
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), ...config }));
  if (tensors) {
    const entries = Object.entries(tensors).map(([name, shape]) => [name, float32Tensor(new Float32Array(shape[0] * shape[1]), shape)]);
    writeSafetensors(join(dir, 'adapter_model.safetensors'), Object.fromEntries(entries));
  }
  return dir;
}

test('adapters that do not fit the model are refused, naming the problem', async (t) => {
  const llm = await LLM.load({ model: base.dir, backend: 'cpu', showProgress: false, numKvBlocks: 16, enableLora: true, maxLoraRank: 4 });
  try {
    assert.throws(() => llm.loadLoraAdapter('big', first.dir), /rank 8 exceeds the max LoRA rank 4 \(--max-lora-rank\)/);
    const A = 'base_model.model.model.layers.0';
    const foreign = editedAdapter(tempDir(t), second.dir, {}, { [`${A}.mlp.fc1.lora_A.weight`]: [4, 64], [`${A}.mlp.fc1.lora_B.weight`]: [128, 4] });
    assert.throws(() => llm.loadLoraAdapter('foreign', foreign), /adapts model\.layers\.0\.mlp\.fc1, which is not a layer Keel serves LoRA on/);
    const misshapen = editedAdapter(tempDir(t), second.dir, {}, { [`${A}.self_attn.k_proj.lora_A.weight`]: [4, 64], [`${A}.self_attn.k_proj.lora_B.weight`]: [64, 4] });
    assert.throws(() => llm.loadLoraAdapter('misshapen', misshapen), /model\.layers\.0\.self_attn\.k_proj is \[32, 64\] in the model, but the adapter's A is \[4, 64\] and B \[64, 4\]/);
    assert.throws(() => llm.loadLoraAdapter('dora', editedAdapter(tempDir(t), second.dir, { use_dora: true })), /DoRA adapters \(use_dora\) are not supported/);
    assert.throws(() => llm.loadLoraAdapter('ia3', editedAdapter(tempDir(t), second.dir, { peft_type: 'IA3' })), /peft_type is "IA3"; Keel serves LORA adapters only/);
    assert.throws(() => llm.loadLoraAdapter('saved', editedAdapter(tempDir(t), second.dir, { modules_to_save: ['lm_head'] })), /modules_to_save \(lm_head\)/);
    assert.throws(() => llm.loadLoraAdapter('pattern', editedAdapter(tempDir(t), second.dir, { rank_pattern: { q_proj: 2 } })), /rank_pattern gives some modules their own rank/);
    assert.deepEqual(llm.loraAdapters, [], 'nothing refused was loaded');
  } finally {
    await llm.close();
  }
});

test('engine options: duplicate adapter names and ranks past 256 are refused', async () => {
  await assert.rejects(LLM.load({ model: base.dir, backend: 'cpu', showProgress: false, loraModules: [{ name: 'a', path: first.dir }, { name: 'a', path: second.dir }] }), /LoRA adapter name a is given twice/);
  await assert.rejects(LLM.load({ model: base.dir, backend: 'cpu', showProgress: false, enableLora: true, maxLoraRank: 512 }), /maxLoraRank must be at most 256/);
});
