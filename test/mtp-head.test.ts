import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import type { EngineOptions } from '../src/config.ts';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import type { DeepseekConfig } from '../src/models/deepseek.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { MtpHead } from '../src/models/mtp-head.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { describeBatch } from '../src/step/batch.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { hostWaitsPerStep } from './helpers/host-waits.ts';
import { checkUnchanged, PARITY_PROMPTS } from './helpers/speculative-parity.ts';

// DeepSeek-V3's multi-token prediction layer, stored in the target's checkpoint after its decoder
// layers (test/fixtures/deepseek-v3: random weights, made by tools/oracle/make_fixtures.py): its
// outputs match a PyTorch reference built on transformers' own decoder layer
// (tools/oracle/make_spec_heads.py), and drafting with it changes no output. Random weights accept
// few drafts: the tests check outputs, not acceptance.

const TARGET = join(FIXTURES_DIR, 'deepseek-v3');
const ORACLE = join(FIXTURES_DIR, 'spec-heads', 'mtp-deepseek-v3', 'head_oracle.json');
const BASE = { model: TARGET, backend: 'cpu', showProgress: false, numKvBlocks: 128, asyncScheduling: false } as const;
const MTP = { method: 'mtp', numSpeculativeTokens: 3 } as const;

let plain: LLM;
before(async () => {
  plain = await LLM.load(BASE);
});
after(() => plain.close());

test("the MTP layer gives the PyTorch reference's outputs and logits", () => {
  const backend = new CpuBackend();
  const architecture = readModelArchitecture(TARGET);
  const target = createModel(architecture, 64);
  const ckpt = openCheckpoint(TARGET);
  loadWeights(target, ckpt, backend);
  const head = MtpHead.forTarget(architecture.config as DeepseekConfig, target.embedding, ckpt, 64);
  loadWeights(head, ckpt, backend);
  ckpt.close();
  const oracle = JSON.parse(readFileSync(ORACLE, 'utf8')) as { tokens: number[]; states: number[][][]; hidden: number[][]; logits: number[][] };
  const n = oracle.tokens.length;
  const features = backend.loadWeight({ dtype: 'f32', shape: [n, 64], data: new Uint8Array(Float32Array.from(oracle.states[0].flat()).buffer) });
  const cache = backend.createKvCache({ numBlocks: 2, blockSize: 4, layers: [head.kvLayer] });
  const step = backend.beginStep(describeBatch([{ tokens: oracle.tokens, startPos: 0, blockTables: [[1, 0]] }], 4, Array.from({ length: n }, (_, i) => i)));
  const { hidden, logits } = head.forward(backend, step, cache, head.features(backend, [features]));
  for (const [got, expected, what] of [[backend.toHost(hidden), oracle.hidden, 'outputs'], [backend.toHost(logits), oracle.logits, 'logits']] as const) {
    const flat = expected.flat();
    const worst = Math.max(...flat.map((v, i) => Math.abs(got[i] - v) / (1 + Math.abs(v))));
    assert.ok(got.length === flat.length && worst < 1e-4, `${what}: worst relative difference ${worst}`);
  }
});

test('MTP drafts change no greedy, seeded, penalized, forked or logprob request, with small steps and blocks, and with preemption', async () => {
  const check = (options: EngineOptions) => checkUnchanged(plain, BASE, options, false);
  (await check({ speculative: MTP })).close();
  (await check({ speculative: MTP, maxNumBatchedTokens: 5, blockSize: 4 })).close();
  (await check({ speculative: MTP, numKvBlocks: 14, blockSize: 4 })).close();
});

test('MTP chains draft on the device: a step waits for the host once for its drafts', async () => {
  const requests = PARITY_PROMPTS.slice(0, 3).map((prompt) => ({ prompt, params: { temperature: 0, maxTokens: 12, ignoreEos: true } }));
  const drafting = (await hostWaitsPerStep({ ...BASE, speculative: MTP }, requests)).filter((s) => s.passes > 1);
  assert.ok(drafting.length > 0, 'steps drafted');
  for (const { passes, waits, deviceTokens } of drafting) {
    assert.equal(waits, 2, `${passes} passes, ${waits} waits`);
    if (passes > 2) assert.ok(deviceTokens > 0, 'drafts read on the device');
  }
});

test("MTP drafts change nothing over an int8 KV cache (the MTP layer's latent rows in int8 with their scales, its feature rows float32)", async () => {
  const base = { ...BASE, kvCacheDtype: 'int8' } as const;
  const plain8 = await LLM.load(base);
  try {
    (await checkUnchanged(plain8, base, { speculative: MTP, numKvBlocks: 14, blockSize: 4 }, false)).close();
  } finally {
    await plain8.close();
  }
});

test('MTP on a target without MTP layers, and MTP trees over latent attention, are refused', async () => {
  const refused = (options: EngineOptions, pattern: RegExp) => assert.rejects(LLM.load({ ...BASE, ...options }), (e: unknown) => e instanceof KeelError && pattern.test(e.message));
  await refused({ model: join(FIXTURES_DIR, 'llama-gqa'), speculative: MTP }, /mtp reads DeepSeek-V3's multi-token prediction layers; the target is model_type llama/);
  await refused({ model: join(FIXTURES_DIR, 'deepseek-v2-lite'), speculative: MTP }, /the target is model_type deepseek_v2/);
  await refused({ speculative: { ...MTP, treeWidth: 2 } }, /multi-head latent attention has no tree attention/);
  await refused({ speculative: { ...MTP, model: TARGET } }, /method mtp needs no model/);
});
