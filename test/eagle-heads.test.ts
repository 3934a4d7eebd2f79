import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import type { EngineOptions } from '../src/config.ts';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { parseEagleConfig, type EagleVersion } from '../src/models/eagle-config.ts';
import { EagleHead } from '../src/models/eagle-head.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { describeBatch } from '../src/step/batch.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { hostWaitsPerStep } from './helpers/host-waits.ts';
import { checkUnchanged, completions, mixedRequests, PARITY_PROMPTS } from './helpers/speculative-parity.ts';

// EAGLE-1/2 and EAGLE-3 heads (tools/oracle/make_spec_heads.py: fitted to llama-gqa's greedy
// continuations, in the EAGLE authors' format and vLLM's speculators format): the head's own
// outputs match a PyTorch reference written from its definition (tools/oracle/eagle_reference.py),
// and drafting with it, as a chain or a tree, changes no output.

const TARGET = join(FIXTURES_DIR, 'llama-gqa');
const HEADS = join(FIXTURES_DIR, 'spec-heads');
const EAGLE_DIR = join(HEADS, 'eagle-llama-gqa');
const EAGLE3_DIR = join(HEADS, 'eagle3-llama-gqa');
const SPECULATORS_DIR = join(HEADS, 'eagle3-speculators-llama-gqa');
const BASE = { model: TARGET, backend: 'cpu', showProgress: false, numKvBlocks: 128, asyncScheduling: false } as const;
const EAGLE = { method: 'eagle', model: EAGLE_DIR, numSpeculativeTokens: 3 } as const;
const EAGLE3 = { method: 'eagle3', model: EAGLE3_DIR, numSpeculativeTokens: 3 } as const;

let plain: LLM;
before(async () => {
  plain = await LLM.load(BASE);
});
after(() => plain.close());

const check = (options: EngineOptions) => checkUnchanged(plain, BASE, options);

interface HeadOracle {
  tokens: number[];
  /** The target's states the head reads, each [positions, hidden]. */
  states: number[][][];
  hidden: number[][];
  logits: number[][];
}

for (const [dir, version, format] of [
  [EAGLE_DIR, 1, "the EAGLE authors'"],
  [EAGLE3_DIR, 3, "the EAGLE authors'"],
  [SPECULATORS_DIR, 3, 'the speculators'],
] as const) {
  test(`an EAGLE-${version} head in ${format} format gives the PyTorch reference's outputs and logits`, () => {
    const backend = new CpuBackend();
    const target = createModel(readModelArchitecture(TARGET), 64);
    const targetCkpt = openCheckpoint(TARGET);
    loadWeights(target, targetCkpt, backend);
    targetCkpt.close();
    const config = parseEagleConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), 'config.json', version as EagleVersion);
    const ckpt = openCheckpoint(dir);
    const head = EagleHead.forCheckpoint(config, ckpt, { hiddenSize: 64, vocabSize: 256, numLayers: 2, embedding: target.embedding, lmHead: target.lmHead }, 64);
    loadWeights(head, ckpt, backend);
    head.readVocabularyMap(ckpt);
    ckpt.close();
    const oracle = JSON.parse(readFileSync(join(dir, 'head_oracle.json'), 'utf8')) as HeadOracle;
    const n = oracle.tokens.length;
    const states = oracle.states.map((rows) => backend.loadWeight({ dtype: 'f32', shape: [n, 64], data: new Uint8Array(Float32Array.from(rows.flat()).buffer) }));
    const cache = backend.createKvCache({ numBlocks: 2, blockSize: 4, layers: [head.kvLayer] });
    const step = backend.beginStep(describeBatch([{ tokens: oracle.tokens, startPos: 0, blockTables: [[1, 0]] }], 4, Array.from({ length: n }, (_, i) => i)));
    const { hidden, logits } = head.forward(backend, step, cache, head.features(backend, states));
    const close = (got: Float32Array, expected: number[][], what: string) => {
      const flat = expected.flat();
      const worst = Math.max(...flat.map((v, i) => Math.abs(got[i] - v) / (1 + Math.abs(v))));
      assert.ok(got.length === flat.length && worst < 1e-4, `${what}: worst relative difference ${worst}`);
    };
    close(backend.toHost(hidden), oracle.hidden, 'outputs');
    close(backend.toHost(logits), oracle.logits, 'logits');
    if (version === 3) assert.equal(head.draftToTarget?.length, 128, 'the draft vocabulary maps to target ids');
  });
}

test('EAGLE chains and trees change no greedy, seeded, penalized, forked or logprob request, and accept drafts', async () => {
  (await check({ speculative: EAGLE })).close();
  (await check({ speculative: { ...EAGLE, treeWidth: 3 } })).close();
});

test('EAGLE-3 chains and trees, authors\' and speculators format, change nothing and accept drafts', async () => {
  (await check({ speculative: EAGLE3 })).close();
  (await check({ speculative: { ...EAGLE3, treeWidth: 2, numSpeculativeTokens: 4 } })).close();
  (await check({ speculative: { ...EAGLE3, model: SPECULATORS_DIR, treeWidth: 2 } })).close();
});

test('EAGLE and EAGLE-3 chains and trees draft on the device: a chain\'s step waits for the host once (its drafts read with the verification), a tree\'s twice; a penalized chain reads its drafts first', async () => {
  const greedy = { temperature: 0, maxTokens: 12, ignoreEos: true };
  const requests = PARITY_PROMPTS.slice(0, 3).map((prompt) => ({ prompt, params: greedy }));
  for (const speculative of [EAGLE, EAGLE3, { ...EAGLE3, model: SPECULATORS_DIR }, { ...EAGLE3, treeWidth: 2 }, { ...EAGLE, treeWidth: 3 }]) {
    const chain = !('treeWidth' in speculative);
    const drafting = (await hostWaitsPerStep({ ...BASE, speculative }, requests)).filter((s) => s.passes > 1);
    assert.ok(drafting.length > 0, `${JSON.stringify(speculative)}: steps drafted`);
    for (const { passes, waits, deviceTokens } of drafting) {
      // The catch-up and drafting passes, then the target's: a chain's verification reads its drafts
      // on the device, and the host reads them with its draws; a tree is read before it is verified.
      assert.equal(waits, chain ? 1 : 2, `${JSON.stringify(speculative)}: ${passes} passes, ${waits} waits`);
      if (chain) assert.ok(deviceTokens >= 2 * (passes - 1) - 1, `${JSON.stringify(speculative)}: ${passes} passes, ${deviceTokens} tokens read on the device`);
      else if (passes > 2) assert.ok(deviceTokens > 0, `${JSON.stringify(speculative)}: ${deviceTokens} drafts read on the device`);
    }
  }
  // Penalties count a verification's drafts on the host: the chain is read before the verification.
  const penalized = PARITY_PROMPTS.slice(0, 3).map((prompt) => ({ prompt, params: { ...greedy, repetitionPenalty: 1.2 } }));
  const steps = (await hostWaitsPerStep({ ...BASE, speculative: EAGLE3 }, penalized)).filter((s) => s.passes > 1);
  assert.ok(steps.length > 0 && steps.every(({ waits }) => waits === 2), `penalized chains wait twice a step: ${JSON.stringify(steps)}`);
});

test('EAGLE heads change nothing with 5-token steps and 4-token blocks, with preemption by recompute and by swap, and from the prefix cache', async () => {
  (await check({ speculative: { ...EAGLE3, treeWidth: 2 }, maxNumBatchedTokens: 5, blockSize: 4 })).close();
  (await check({ speculative: EAGLE, numKvBlocks: 12, blockSize: 4 })).close();
  (await check({ speculative: { ...EAGLE3, treeWidth: 2 }, numKvBlocks: 14, blockSize: 4, preemptionMode: 'swap', swapSpace: 0.01 })).close();
  // A second pass over the same prompts starts from cached blocks, head entries and features included.
  const llm = await check({ speculative: EAGLE, blockSize: 4 });
  try {
    assert.deepEqual(completions(await mixedRequests(llm)), completions(await mixedRequests(plain)));
    assert.ok(llm.stats().prefixCacheHitRate > 0, 'the second pass hit the prefix cache');
  } finally {
    await llm.close();
  }
});

test("EAGLE heads change nothing over an 8-bit KV cache (the head's attention K/V in its dtype, its rows float32), int8 scales moved by swaps and block copies", async () => {
  for (const kvCacheDtype of ['int8', 'fp8'] as const) {
    const base = { ...BASE, kvCacheDtype };
    const plain8 = await LLM.load(base);
    try {
      (await checkUnchanged(plain8, base, { speculative: { ...EAGLE3, treeWidth: 2 } })).close();
      if (kvCacheDtype === 'int8') (await checkUnchanged(plain8, base, { speculative: EAGLE, numKvBlocks: 14, blockSize: 4, preemptionMode: 'swap', swapSpace: 0.01 })).close();
    } finally {
      await plain8.close();
    }
  }
});

test('EAGLE heads for another model, of the other version, pickled or missing a tensor are refused, naming the problem', async (t) => {
  const refused = (options: EngineOptions, pattern: RegExp) => assert.rejects(LLM.load({ ...BASE, ...options }), (e: unknown) => e instanceof KeelError && pattern.test(e.message));
  await refused({ model: DEFAULT_MODEL_DIR, speculative: EAGLE }, /was made for a vocabulary of 256 tokens, the target has 8192/);
  await refused({ speculative: { ...EAGLE, model: EAGLE3_DIR } }, /is an EAGLE-3 head \(draft_vocab_size, LlamaForCausalLMEagle3\): use --speculative-method eagle3/);
  await refused({ speculative: { ...EAGLE3, model: EAGLE_DIR } }, /has no draft_vocab_size: it is not an EAGLE-3 head/);
  await refused({ speculative: { ...EAGLE, model: SPECULATORS_DIR } }, /is a speculators "eagle3" head, not eagle: use --speculative-method eagle3/);
  const pickled = tempDir(t);
  copyFileSync(join(EAGLE_DIR, 'config.json'), join(pickled, 'config.json'));
  writeFileSync(join(pickled, 'pytorch_model.bin'), '');
  await refused({ speculative: { ...EAGLE, model: pickled } }, /pytorch_model\.bin \(a pickle, which Keel does not read\)/);
  const wrongLayers = tempDir(t);
  copyFileSync(join(EAGLE3_DIR, 'model.safetensors'), join(wrongLayers, 'model.safetensors'));
  const config = JSON.parse(readFileSync(join(EAGLE3_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(wrongLayers, 'config.json'), JSON.stringify({ ...config, eagle_aux_hidden_state_layer_ids: undefined }));
  await refused({ speculative: { ...EAGLE3, model: wrongLayers } }, /reads the input of target layer 2, but the target has 2 layers/);
  const noFc = tempDir(t);
  copyFileSync(join(EAGLE_DIR, 'config.json'), join(noFc, 'config.json'));
  copyFileSync(join(EAGLE3_DIR, 'model.safetensors'), join(noFc, 'model.safetensors'));
  await refused({ speculative: { ...EAGLE, model: noFc } }, /fc\.weight is \[64, 192\], expected \[64, 128\]/);
  await refused({ speculative: { ...EAGLE, treeWidth: 40 } }, /treeWidth must be at most 32/);
  await refused({ speculative: { method: 'eagle' } }, /eagle needs the heads' directory/);
});
