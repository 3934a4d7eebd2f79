import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpointNamed } from '../src/checkpoint/checkpoint.ts';
import type { EngineOptions } from '../src/config.ts';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { MedusaHeads, parseMedusaConfig } from '../src/models/medusa-heads.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { hostWaitsPerStep } from './helpers/host-waits.ts';
import { checkUnchanged, PARITY_PROMPTS } from './helpers/speculative-parity.ts';

// Medusa heads (tools/oracle/make_spec_heads.py: fitted to llama-gqa's greedy continuations, in
// the authors' format) drafting a static tree verified in one pass: every output equals plain
// decoding's, token for token, greedy or seeded; the heads' own outputs match PyTorch's.

const TARGET = join(FIXTURES_DIR, 'llama-gqa');
const MEDUSA_DIR = join(FIXTURES_DIR, 'spec-heads', 'medusa-llama-gqa');
const BASE = { model: TARGET, backend: 'cpu', showProgress: false, numKvBlocks: 128, asyncScheduling: false } as const;
const MEDUSA = { method: 'medusa', model: MEDUSA_DIR, numSpeculativeTokens: 3 } as const;

let plain: LLM;
before(async () => {
  plain = await LLM.load(BASE);
});
after(() => plain.close());

const checkMedusa = (options: EngineOptions) => checkUnchanged(plain, BASE, options);

test("Medusa heads give PyTorch's candidates: residual blocks and LM heads read from the authors' format", () => {
  const backend = new CpuBackend();
  const config = parseMedusaConfig(JSON.parse(readFileSync(join(MEDUSA_DIR, 'config.json'), 'utf8')), 'config.json');
  const ckpt = openCheckpointNamed(MEDUSA_DIR, ['medusa_lm_head.safetensors']);
  const heads = MedusaHeads.forCheckpoint(config, ckpt, { hiddenSize: 64, vocabSize: 256 });
  loadWeights(heads, ckpt, backend);
  ckpt.close();
  const oracle = JSON.parse(readFileSync(join(MEDUSA_DIR, 'heads_oracle.json'), 'utf8')) as { hidden: number[][]; top5: number[][][] };
  const hidden = backend.loadWeight({ dtype: 'f32', shape: [2, 64], data: new Uint8Array(Float32Array.from(oracle.hidden.flat()).buffer) });
  heads.forward(backend, hidden).forEach((logits, k) => {
    const values = backend.toHost(logits);
    oracle.top5[k].forEach((top, row) => {
      const scores = values.subarray(row * 256, (row + 1) * 256);
      const ours = [...scores.keys()].sort((a, b) => scores[b] - scores[a]).slice(0, 5);
      assert.deepEqual(ours, top, `head ${k} row ${row}`);
    });
  });
});

test('Medusa trees change no greedy, seeded, penalized, forked or logprob request, and report acceptance', async () => {
  const llm = await checkMedusa({ speculative: MEDUSA });
  await llm.close();
});

test('Medusa trees change nothing with 5-token steps and 4-token blocks (trees cut to the budget), or a chain tree of 3', async () => {
  (await checkMedusa({ speculative: MEDUSA, maxNumBatchedTokens: 5, blockSize: 4 })).close();
  (await checkMedusa({ speculative: { ...MEDUSA, tree: [[0], [0, 0], [0, 0, 0]] } })).close();
});

test("Medusa heads' sampling passes are all launched before the host reads them: a step waits once for its drafts", async () => {
  const requests = PARITY_PROMPTS.slice(0, 3).map((prompt) => ({ prompt, params: { temperature: 0, maxTokens: 12, ignoreEos: true } }));
  const drafting = (await hostWaitsPerStep({ ...BASE, speculative: MEDUSA }, requests)).filter((s) => s.passes > 1);
  assert.ok(drafting.length > 0, 'steps drafted');
  for (const { passes, waits } of drafting) assert.equal(waits, 2, `${passes} passes (a head each, then the target's), ${waits} waits`);
});

test('Medusa trees change nothing when the pool forces preemption', async () => {
  const llm = await checkMedusa({ speculative: MEDUSA, numKvBlocks: 12, blockSize: 4 });
  await llm.close();
});

test('heads for another model, a missing config, pickled heads and a tree with a gap are refused, naming the problem', async (t) => {
  await assert.rejects(
    LLM.load({ ...BASE, model: DEFAULT_MODEL_DIR, speculative: MEDUSA }),
    (e: unknown) => e instanceof KeelError && /Medusa head 0's LM head is \[256, 64\] but the target's is \[8192, 384\]: the heads were trained for another model/.test(e.message),
  );
  const empty = tempDir(t);
  await assert.rejects(LLM.load({ ...BASE, speculative: { ...MEDUSA, model: empty } }), (e: unknown) => e instanceof KeelError && /has no config\.json/.test(e.message));
  const pickled = tempDir(t);
  copyFileSync(join(MEDUSA_DIR, 'config.json'), join(pickled, 'config.json'));
  writeFileSync(join(pickled, 'medusa_lm_head.pt'), '');
  await assert.rejects(LLM.load({ ...BASE, speculative: { ...MEDUSA, model: pickled } }), (e: unknown) => e instanceof KeelError && /medusa_lm_head\.pt \(a pickle, which Keel does not read\)/.test(e.message));
  await assert.rejects(LLM.load({ ...BASE, speculative: { ...MEDUSA, tree: [[0], [1, 0, 0]] } }), (e: unknown) => e instanceof KeelError && /path \[1, 0, 0\] has no path \[1, 0\] above it/.test(e.message));
  await assert.rejects(LLM.load({ ...BASE, speculative: { method: 'medusa' } }), (e: unknown) => e instanceof KeelError && /medusa needs the heads' directory/.test(e.message));
});
