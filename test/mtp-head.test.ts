import assert from 'node:assert/strict';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import { writeSafetensors } from '../src/checkpoint/safetensors-writer.ts';
import type { HostTensor } from '../src/tensor/host-tensor.ts';
import type { EngineOptions } from '../src/config.ts';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { MtpHead } from '../src/models/mtp-head.ts';
import { readResult } from '../src/bench/result-file.ts';
import { createModel, mtpLayersOf, readModelArchitecture } from '../src/models/registry.ts';
import { describeBatch } from '../src/step/batch.ts';
import { layerGroup } from '../src/step/kv-cache-layout.ts';
import { HeadProposer } from '../src/engine/head-proposer.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { hostWaitsPerStep } from './helpers/host-waits.ts';
import { keelOk } from './helpers/keel-cli.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { checkUnchanged, completions, mixedRequests, PARITY_PROMPTS } from './helpers/speculative-parity.ts';

// The multi-token prediction layer stored in a target's checkpoint beside its decoder layers, one
// decoder layer of the target's family: DeepSeek-V3's (MLA + MoE, test/fixtures/deepseek-v3),
// GLM-4.5's (GQA with biases and q/k norms + MoE, glm4-moe) and GLM-5's (MLA with its own lightning
// indexer + MoE, glm-moe-dsa), stored as layer num_hidden_layers; Qwen3.5's (gated attention + dense
// MLP, qwen3.5-hybrid) and Qwen3-Next's (gated attention + MoE, qwen3-next-moe), stored as mtp.*,
// whose targets keep a Gated DeltaNet state that every rejected draft rewinds; random weights,
// stored by tools/oracle/make_fixtures.py. Each head reads exactly the checkpoint's tensors of that
// layer, its outputs match a PyTorch reference built on transformers' own decoder layer of the
// family (tools/oracle/make_spec_heads.py), and drafting with it changes no output. GLM-4.7-Flash's
// layer (DeepSeek-V3's block under glm4_moe_lite) runs on random weights (--load-format dummy).
// Random weights accept few drafts: the tests check outputs, not acceptance.

const MTP = { method: 'mtp', numSpeculativeTokens: 3 } as const;
const base = (model: string) => ({ model, backend: 'cpu', showProgress: false, numKvBlocks: 128, asyncScheduling: false }) as const;
/** PARITY_PROMPTS within a vocabulary of `size` ids. */
const promptsFor = (size: number) => PARITY_PROMPTS.map((prompt) => prompt.map((id) => id % size));

const TARGETS = ['deepseek-v3', 'glm4-moe', 'glm-moe-dsa', 'qwen3.5-hybrid', 'qwen3-next-moe'].map((name) => {
  const dir = join(FIXTURES_DIR, name);
  const { config } = readModelArchitecture(dir);
  // Where the checkpoint keeps the MTP layer's tensors: after the decoder's layers, or under mtp.
  const tensorPrefix = mtpLayersOf(config).layout.kind === 'shared-head' ? `model.layers.${config.numLayers}.` : 'mtp.';
  return { name, dir, tensorPrefix, prompts: promptsFor(config.vocabSize), oracle: join(FIXTURES_DIR, 'spec-heads', `mtp-${name}`, 'head_oracle.json') };
});

const plain = new Map<string, LLM>();
before(async () => {
  for (const { name, dir } of TARGETS) plain.set(name, await LLM.load(base(dir)));
});
after(async () => {
  for (const llm of plain.values()) await llm.close();
});

for (const { name, dir, tensorPrefix, oracle: oraclePath } of TARGETS) {
  test(`${name}: the MTP layer reads exactly the checkpoint's tensors under ${tensorPrefix} and gives the PyTorch reference's outputs and logits`, () => {
    const backend = new CpuBackend();
    const architecture = readModelArchitecture(dir);
    const { config } = architecture;
    const target = createModel(architecture, 64);
    const ckpt = openCheckpoint(dir);
    loadWeights(target, ckpt, backend);
    const head = MtpHead.forTarget(config, mtpLayersOf(config), target, ckpt, 64);
    assert.deepEqual(new Set(head.parameters().map((p) => p.name)), new Set(ckpt.tensorNames.filter((n) => n.startsWith(tensorPrefix))));
    loadWeights(head, ckpt, backend);
    ckpt.close();
    const oracle = JSON.parse(readFileSync(oraclePath, 'utf8')) as { tokens: number[]; states: number[][][]; hidden: number[][]; logits: number[][] };
    const n = oracle.tokens.length;
    const blocks = Math.ceil(n / 4);
    const features = backend.loadWeight({ dtype: 'f32', shape: [n, config.hiddenSize], data: new Uint8Array(Float32Array.from(oracle.states[0].flat()).buffer) });
    const cache = backend.createKvCache({ numBlocks: blocks, blockSize: 4, layers: [head.kvLayer] });
    const blockTable = Array.from({ length: blocks }, (_, i) => blocks - 1 - i);
    const step = backend.beginStep(describeBatch([{ tokens: oracle.tokens, startPos: 0, blockTables: [blockTable] }], 4, Array.from({ length: n }, (_, i) => i)));
    const { hidden, logits } = head.forward(backend, step, cache, head.features(backend, [features]));
    for (const [got, expected, what] of [[backend.toHost(hidden), oracle.hidden, 'outputs'], [backend.toHost(logits), oracle.logits, 'logits']] as const) {
      const flat = expected.flat();
      const worst = Math.max(...flat.map((v, i) => Math.abs(got[i] - v) / (1 + Math.abs(v))));
      assert.ok(got.length === flat.length && worst < 1e-4, `${what}: worst relative difference ${worst}`);
    }
  });
}

for (const { name, dir, prompts } of TARGETS) {
  test(`${name}: MTP drafts change no greedy, seeded, penalized, forked or logprob request, with small steps and blocks, and with preemption`, async () => {
    const check = (options: EngineOptions) => checkUnchanged(plain.get(name)!, base(dir), options, false, prompts);
    (await check({ speculative: MTP })).close();
    (await check({ speculative: MTP, maxNumBatchedTokens: 5, blockSize: 4 })).close();
    (await check({ speculative: MTP, numKvBlocks: 14, blockSize: 4 })).close();
  });

  test(`${name}: MTP chains draft on the device and the verification reads them there: a step waits for the host once, for its verification`, async () => {
    const requests = prompts.slice(0, 3).map((prompt) => ({ prompt, params: { temperature: 0, maxTokens: 12, ignoreEos: true } }));
    const drafting = (await hostWaitsPerStep({ ...base(dir), speculative: MTP }, requests)).filter((s) => s.passes > 1);
    assert.ok(drafting.length > 0, 'steps drafted');
    for (const { passes, waits, deviceTokens } of drafting) {
      assert.equal(waits, 1, `${passes} passes, ${waits} waits`);
      // Every draft is read on the device: by the drafting pass after it, and by the verification.
      assert.ok(deviceTokens >= 2 * (passes - 1) - 1, `${passes} passes, ${deviceTokens} tokens read on the device`);
    }
  });
}

for (const [{ name, dir, prompts }, rows] of [[TARGETS[0], 'latent rows'], [TARGETS[1], 'keys and values']] as const) {
  test(`MTP drafts change nothing over an int8 KV cache (${name}: the MTP layer's ${rows} in int8 with their scales, its feature rows float32)`, async () => {
    const int8 = { ...base(dir), kvCacheDtype: 'int8' } as const;
    const plain8 = await LLM.load(int8);
    try {
      (await checkUnchanged(plain8, int8, { speculative: MTP, numKvBlocks: 14, blockSize: 4 }, false, prompts)).close();
    } finally {
      await plain8.close();
    }
  });
}

test("GLM-4.5's MTP layer attends with grouped-query attention, so it drafts trees too: they change no output", async () => {
  const { name, dir, prompts } = TARGETS[1];
  (await checkUnchanged(plain.get(name)!, base(dir), { speculative: { ...MTP, treeWidth: 2 } }, false, prompts)).close();
});

/** A copy of a fixture's model directory whose config.json has `changes`, its weights linked. */
function withConfig(t: TestContext, fixture: string, changes: Record<string, unknown>): string {
  const from = join(FIXTURES_DIR, fixture);
  const dir = tempDir(t, 'keel-mtp-');
  const config = JSON.parse(readFileSync(join(from, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, ...changes }));
  for (const file of ['generation_config.json', 'model.safetensors']) symlinkSync(join(from, file), join(dir, file));
  return dir;
}

test("GLM-4.7-Flash's MTP layer (glm4_moe_lite: DeepSeek-V3's block) drafts without changing any output, on random weights", async (t) => {
  const dir = withConfig(t, 'glm4-moe-lite', { num_nextn_predict_layers: 1 });
  const dummy = { ...base(dir), loadFormat: 'dummy', seed: 7 } as const;
  const plainDummy = await LLM.load(dummy);
  try {
    (await checkUnchanged(plainDummy, dummy, { speculative: MTP, numKvBlocks: 14, blockSize: 4 }, false)).close();
  } finally {
    await plainDummy.close();
  }
});

/**
 * A copy of the qwen3.5-hybrid fixture whose MTP layer drafts the token it reads again: mtp.fc
 * passes the normed embedding alone ([I | 0]), the block adds nothing (o_proj and down_proj zero),
 * and the tied LM head scores that token's own row highest. The target repeats tokens (its greedy
 * runs of 57s and 92s), so such drafts are accepted there and rejected elsewhere: verifications
 * keep some drafts and rewind the state past the others.
 */
function repeatingMtpCheckpoint(t: TestContext): string {
  const from = join(FIXTURES_DIR, 'qwen3.5-hybrid');
  const dir = tempDir(t, 'keel-mtp-repeat-');
  const ckpt = openCheckpoint(from);
  const h = readModelArchitecture(from).config.hiddenSize;
  const zeros = (shape: number[]): HostTensor => ({ dtype: 'f32', shape, data: new Uint8Array(4 * shape[0] * (shape[1] ?? 1)) });
  const passEmbedding = new Float32Array(h * 2 * h);
  for (let i = 0; i < h; i++) passEmbedding[i * 2 * h + i] = 1;
  const changed: Record<string, HostTensor> = {
    'mtp.fc.weight': { dtype: 'f32', shape: [h, 2 * h], data: new Uint8Array(passEmbedding.buffer) },
    'mtp.pre_fc_norm_embedding.weight': zeros([h]),
    'mtp.norm.weight': zeros([h]),
    'mtp.layers.0.self_attn.o_proj.weight': zeros(ckpt.info('mtp.layers.0.self_attn.o_proj.weight').shape),
    'mtp.layers.0.mlp.down_proj.weight': zeros(ckpt.info('mtp.layers.0.mlp.down_proj.weight').shape),
  };
  writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(ckpt.tensorNames.map((name) => [name, changed[name] ?? ckpt.read(name)])));
  ckpt.close();
  for (const file of ['config.json', 'generation_config.json']) symlinkSync(join(from, file), join(dir, file));
  return dir;
}

test("qwen3.5-hybrid: MTP drafts that are partly accepted rewind the Gated DeltaNet state to the kept tokens, and change no output (small steps, preemption, n = 2 forks)", async (t) => {
  const dir = repeatingMtpCheckpoint(t);
  const { prompts } = TARGETS[3];
  const target = base(dir);
  const plainRepeat = await LLM.load(target);
  try {
    (await checkUnchanged(plainRepeat, target, { speculative: MTP }, true, prompts)).close();
    (await checkUnchanged(plainRepeat, target, { speculative: MTP, maxNumBatchedTokens: 5, blockSize: 4 }, true, prompts)).close();
    (await checkUnchanged(plainRepeat, target, { speculative: MTP, numKvBlocks: 14, blockSize: 4, maxNumSeqs: 3 }, true, prompts)).close();
  } finally {
    await plainRepeat.close();
  }
});

/** The target's final-norm rows of `tokens`, from a prefill on a model of its own: what the head's feature rows of those positions must hold. */
function targetFeatures(dir: string): (tokens: readonly number[]) => Float32Array {
  const backend = new CpuBackend();
  const architecture = readModelArchitecture(dir);
  const model = createModel(architecture, 256);
  const ckpt = openCheckpoint(dir);
  loadWeights(model, ckpt, backend);
  ckpt.close();
  return (tokens) => {
    const blockSize = 16;
    const blocks = Math.ceil(tokens.length / blockSize);
    const cache = backend.createKvCache({ numBlocks: blocks, blockSize, layers: model.kvLayers, stateSlots: 1 });
    const step = backend.beginStep(describeBatch([{ tokens: [...tokens], startPos: 0, blockTables: [Array.from({ length: blocks }, (_, i) => i)], stateSlot: 0 }], blockSize));
    let rows: Float32Array | null = null;
    model.forward(backend, step, cache, { tokenFinalRows: (hidden) => (rows = backend.toHost(hidden)) });
    return rows!;
  };
}

test("after every rewind of the Gated DeltaNet state, the MTP head's catch-up reads the target's own features of the kept tokens and of the new one, not the rejected drafts'", async (t) => {
  const dir = repeatingMtpCheckpoint(t);
  const reference = targetFeatures(dir);
  const h = readModelArchitecture(dir).config.hiddenSize;
  const propose = HeadProposer.prototype.propose;
  let checked = 0;
  let worst = 0;
  // Before each drafting pass, every position up to the one before the last sampled token (all the
  // catch-up may read) holds in the head's cache the feature a fresh prefill of those tokens gives.
  HeadProposer.prototype.propose = function (this: HeadProposer, b, seqs, graphs, leaveOnDevice) {
    const { layout } = this.cache;
    // The head's cache holds its layer's K/V, then the feature rows (HeadProposer.cacheLayers).
    const group = layerGroup(layout, 1);
    for (const seq of seqs) {
      const root = seq.numTokens - seq.numDraftTokens - 1;
      const slots = Int32Array.from({ length: root }, (_, p) => seq.blockTables[group][Math.floor(p / layout.blockSize)] * layout.blockSize + (p % layout.blockSize));
      const stored = b.toHost(b.readCacheRows(this.cache, 1, slots));
      const expected = reference(seq.tokenIds.slice(0, root));
      for (let i = 0; i < root * h; i++) worst = Math.max(worst, Math.abs(stored[i] - expected[i]) / (1 + Math.abs(expected[i])));
      checked++;
    }
    return propose.call(this, b, seqs, graphs, leaveOnDevice);
  };
  t.after(() => {
    HeadProposer.prototype.propose = propose;
  });
  for (const options of [{}, { maxNumBatchedTokens: 5, blockSize: 4 }, { numKvBlocks: 14, blockSize: 4 }] as const) {
    const llm = await LLM.load({ ...base(dir), speculative: MTP, ...options });
    try {
      await llm.generate(promptsFor(256), { temperature: 0, ignoreEos: true, maxTokens: 30 });
      const { numAcceptedTokens, numDraftTokens } = llm.stats().speculation!;
      assert.ok(numAcceptedTokens > 0 && numAcceptedTokens < numDraftTokens, `drafts were accepted and rejected (${JSON.stringify(options)}): ${numAcceptedTokens} of ${numDraftTokens}`);
    } finally {
      await llm.close();
    }
  }
  assert.ok(checked > 0, 'drafting passes were checked');
  assert.ok(worst < 1e-5, `worst relative difference of a feature row: ${worst}`);
});

test("the hybrids' MTP chains give transformers' greedy tokens for the oracle prompts, batched, in 7-token steps over 4-token blocks, and with drafts partly accepted", async (t) => {
  const oracleOf = (name: string) => listOracleFixtures().find((f) => f.name === name)!.oracle;
  const runs = [
    ...['qwen3.5-hybrid', 'qwen3-next-moe', 'qwen3.5-moe-vl'].map((name) => ({ dir: join(FIXTURES_DIR, name), oracle: oracleOf(name), accepts: false })),
    { dir: repeatingMtpCheckpoint(t), oracle: oracleOf('qwen3.5-hybrid'), accepts: true },
  ];
  for (const { dir, oracle, accepts } of runs) {
    const llm = await LLM.load({ ...base(dir), speculative: MTP, maxNumBatchedTokens: 7, blockSize: 4 });
    try {
      const outputs = await llm.generate(oracle.prompts, { temperature: 0, ignoreEos: true, maxTokens: oracle.max_new_tokens });
      outputs.forEach((o, i) => assert.deepEqual(o.outputs[0].tokenIds, oracle.greedy[i], `${dir}: prompt ${i}`));
      const { numDraftTokens, numAcceptedTokens } = llm.stats().speculation!;
      assert.ok(numDraftTokens > 0, 'drafts were proposed');
      if (accepts) assert.ok(numAcceptedTokens > 0 && numAcceptedTokens < numDraftTokens, `drafts were accepted and rejected: ${numAcceptedTokens} of ${numDraftTokens}`);
    } finally {
      await llm.close();
    }
  }
});

test("qwen3.5-moe-vl: the wrapper's MTP layer, stored at its top level (mtp.*) beside model.language_model.*, drafts without changing any output", async () => {
  const dir = join(FIXTURES_DIR, 'qwen3.5-moe-vl');
  const plainVl = await LLM.load(base(dir));
  try {
    (await checkUnchanged(plainVl, base(dir), { speculative: MTP, numKvBlocks: 14, blockSize: 4 }, false, promptsFor(readModelArchitecture(dir).config.vocabSize))).close();
  } finally {
    await plainVl.close();
  }
});

test('MTP on a target without MTP layers, on one whose checkpoint lacks them, and MTP trees over latent attention, are refused', async (t) => {
  const refused = (options: EngineOptions, pattern: RegExp) => assert.rejects(LLM.load({ ...base(TARGETS[0].dir), ...options }), (e: unknown) => e instanceof KeelError && pattern.test(e.message));
  const supported = 'model_type deepseek_v3, glm4_moe_lite, glm_moe_dsa, glm4_moe, qwen3_next, qwen3_5_text, qwen3_5_moe_text';
  await refused({ model: join(FIXTURES_DIR, 'llama-gqa'), speculative: MTP }, new RegExp(`mtp reads the multi-token prediction layers of ${supported}; the target is model_type llama`));
  await refused({ model: join(FIXTURES_DIR, 'deepseek-v2-lite'), speculative: MTP }, /the target is model_type deepseek_v2$/);
  await refused({ model: join(FIXTURES_DIR, 'deepseek-v32'), speculative: MTP }, /the target is model_type deepseek_v32$/);
  await refused({ model: join(FIXTURES_DIR, 'glm4-moe-lite'), speculative: MTP }, /model_type glm4_moe_lite\) carries no multi-token prediction layers \(num_nextn_predict_layers is 0\)/);
  await refused({ model: withConfig(t, 'glm4-moe', { num_nextn_predict_layers: 0 }), speculative: MTP }, /model_type glm4_moe\) carries no multi-token prediction layers \(num_nextn_predict_layers is 0\)/);
  await refused({ model: withConfig(t, 'glm4-moe-lite', { num_nextn_predict_layers: 1 }), speculative: MTP }, /declares 1 MTP layers \(num_nextn_predict_layers\), but the checkpoint has no model\.layers\.3\./);
  const hybrid = TARGETS[3];
  await refused({ model: withConfig(t, hybrid.name, { mtp_num_hidden_layers: 0 }), speculative: MTP }, /model_type qwen3_5_text\) carries no multi-token prediction layers \(mtp_num_hidden_layers is 0\)/);
  await refused({ model: withConfig(t, hybrid.name, { mtp_use_dedicated_embeddings: true }), speculative: MTP }, /mtp_use_dedicated_embeddings is true for qwen3_5_text/);
  await refused({ speculative: { ...MTP, treeWidth: 2 } }, /multi-head latent attention has no tree attention/);
  await refused({ model: TARGETS[2].dir, speculative: { ...MTP, treeWidth: 2 } }, /multi-head latent attention has no tree attention/);
  await refused({ speculative: { ...MTP, model: TARGETS[0].dir } }, /method mtp needs no model/);
});

test("keel bench latency --speculative-method mtp runs bench/configs/glm-4.5-air's config, shrunk, on random weights (the GPU host times the real size)", async (t) => {
  const dir = tempDir(t, 'keel-mtp-bench-');
  const air = JSON.parse(readFileSync('bench/configs/glm-4.5-air/config.json', 'utf8')) as Record<string, unknown>;
  const tiny = { hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 64, moe_intermediate_size: 16, n_routed_experts: 8, num_experts_per_tok: 2, vocab_size: 512 };
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...air, ...tiny }));
  const output = join(dir, 'latency.json');
  const shape = ['--batch-size', '1,2', '--input-len', '8', '--output-len', '6', '--num-iters', '1', '--num-iters-warmup', '0'];
  await keelOk(['bench', 'latency', '--model', dir, '--load-format', 'dummy', '--backend', 'cpu', '--no-progress', '--speculative-method', 'mtp', '--num-speculative-tokens', '2', ...shape, '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  assert.equal((result.config.engine as { speculative: { method: string } }).speculative.method, 'mtp');
  for (const { speculation } of result.results.batches) assert.ok(speculation != null && speculation.draft_tokens > 0, `drafted: ${JSON.stringify(speculation)}`);
});

test("GLM-4.5's MTP chains and trees verified under Quest's sparse attention change no output of sparse decoding, whose budget leaves blocks out", async () => {
  const { dir, prompts } = TARGETS[1];
  const quest: EngineOptions = { ...base(dir), blockSize: 4, sparseAttention: 'quest', sparseTokenBudget: 16, sparseSinkTokens: 4, sparseWindowTokens: 8, sparseDenseLayers: [0] };
  const sparse = await LLM.load(quest);
  try {
    assert.notDeepEqual(completions(await mixedRequests(sparse, prompts)), completions(await mixedRequests(plain.get(TARGETS[1].name)!, prompts)), 'the budget changes some output');
    for (const treeWidth of [1, 2]) (await checkUnchanged(sparse, quest, { speculative: { ...MTP, treeWidth } }, false, prompts)).close();
  } finally {
    await sparse.close();
  }
});
