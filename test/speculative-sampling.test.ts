import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { drawDistribution } from '../src/sampling/draw-sampler.ts';
import { drawFor } from '../src/sampling/draw.ts';
import { forkStream } from '../src/sampling/rng.ts';
import type { SamplingParams } from '../src/sampling/sampling-params.ts';
import { resolveSamplingParams } from '../src/sampling/validate.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from './helpers/model-tiny-checkpoint.ts';

// Speculative sampling keeps the target's distribution: thousands of seeded requests to a tiny
// model (6 tokens), each generating 4 tokens with drafts (n-gram, or another random model's)
// verified along the way, are tallied per 4-token continuation and compared by a chi-square test
// with the probabilities the target's processed distributions give (temperature, top-k, top-p
// applied as the sampler applies them). Every method gives the same continuations, and so the
// same statistic: a seeded request draws each token with the seed plain decoding gives it.

const VOCAB = 6;
const NUM_TOKENS = 4;
const NUM_SAMPLES = 4000;
/** Every token occurs in it, so n-gram lookup (n = 1) proposes after any token. */
const PROMPT = [0, 1, 2, 3, 4, 5, 3, 1];

let dir: string;
/** Another random model of the same shape: a draft that often disagrees with the target. */
let draftDir: string;
let plain: LLM;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keel-spec-sampling-'));
  draftDir = join(dir, 'draft');
  mkdirSync(draftDir);
  const config = { ...TINY_LLAMA_CONFIG, vocab_size: VOCAB, hidden_size: 32 };
  writeTinyCheckpoint(dir, config, { seed: 3 });
  writeTinyCheckpoint(draftDir, { ...config, num_hidden_layers: 1 }, { seed: 4 });
  plain = await LLM.load({ model: dir, backend: 'cpu', showProgress: false, numKvBlocks: 256 });
});
after(async () => {
  await plain.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The target's probability of each continuation of up to NUM_TOKENS tokens, from its logits after every prefix. */
async function targetProbabilities(params: SamplingParams): Promise<Map<string, number>> {
  const probabilities = new Map<string, number>([['', 1]]);
  for (let length = 0; length < NUM_TOKENS; length++) {
    const prefixes = [...probabilities.keys()].filter((key) => key.split(',').filter(Boolean).length === length);
    const contexts = prefixes.map((key) => [...PROMPT, ...key.split(',').filter(Boolean).map(Number)]);
    // Every token's raw logprob: the row up to a constant, which no processing step depends on.
    const rows = await plain.generate(contexts, { temperature: 0, maxTokens: 1, logprobs: VOCAB });
    rows.forEach((output, i) => {
      const raw = new Float32Array(VOCAB);
      for (const { tokenId, logprob } of output.outputs[0].logprobs![0].top) raw[tokenId] = logprob;
      const draw = drawFor(params, { row: 0, rng: forkStream(0, 0), penaltyTokens: null, numOutputTokens: length, pendingDraw: -1, draftHistory: null, eosTokenIds: [], allowedTokens: null, logitBias: null, bannedTokenIds: [] });
      const base = probabilities.get(prefixes[i])!;
      drawDistribution(raw, draw, []).forEach((p, token) => {
        if (p > 0) probabilities.set(prefixes[i] ? `${prefixes[i]},${token}` : `${token}`, base * p);
      });
    });
  }
  return new Map([...probabilities].filter(([key]) => key.split(',').filter(Boolean).length === NUM_TOKENS));
}

/** The chi-square statistic of `observed` counts against `expected` probabilities, cells expecting fewer than 5 pooled. */
function chiSquare(observed: Map<string, number>, expected: Map<string, number>, n: number): { statistic: number; degrees: number } {
  for (const key of observed.keys()) assert.ok(expected.has(key), `continuation ${key} has probability 0 under the target`);
  let statistic = 0;
  let cells = 0;
  let pooledExpected = 0;
  let pooledObserved = 0;
  for (const [key, p] of expected) {
    const e = n * p;
    const o = observed.get(key) ?? 0;
    if (e < 5) {
      pooledExpected += e;
      pooledObserved += o;
      continue;
    }
    statistic += (o - e) ** 2 / e;
    cells++;
  }
  if (pooledExpected > 0) {
    statistic += (pooledObserved - pooledExpected) ** 2 / pooledExpected;
    cells++;
  }
  return { statistic, degrees: cells - 1 };
}

/** The chi-square quantile at 1 - 1e-4 (Wilson–Hilferty): a false alarm once in 10,000 seeds. */
function criticalValue(degrees: number): number {
  const z = 3.719;
  const a = 2 / (9 * degrees);
  return degrees * (1 - a + z * Math.sqrt(a)) ** 3;
}

async function checkDistribution(speculative: EngineOptions['speculative'], fields: Partial<SamplingParams>): Promise<void> {
  const params = resolveSamplingParams({ ...fields, maxTokens: NUM_TOKENS, ignoreEos: true }, {});
  const expected = await targetProbabilities(params);
  const llm = await LLM.load({ model: dir, backend: 'cpu', showProgress: false, numKvBlocks: 2048, speculative, seed: 17 });
  try {
    // No seed: each request takes its own from the engine's seed, in order.
    const outputs = await llm.generate(Array.from({ length: NUM_SAMPLES }, () => PROMPT), params);
    const observed = new Map<string, number>();
    for (const output of outputs) {
      const key = output.outputs[0].tokenIds.join(',');
      observed.set(key, (observed.get(key) ?? 0) + 1);
    }
    const { statistic, degrees } = chiSquare(observed, expected, NUM_SAMPLES);
    const speculation = llm.stats().speculation!;
    console.log(`${JSON.stringify(fields)}: chi-square ${statistic.toFixed(1)} on ${degrees} degrees of freedom (critical ${criticalValue(degrees).toFixed(1)}); acceptance ${speculation.acceptanceRate?.toFixed(3)} of ${speculation.numDraftTokens} drafts`);
    assert.ok(degrees >= 10, `only ${degrees} degrees of freedom: the test would say little`);
    assert.ok(statistic < criticalValue(degrees), `chi-square ${statistic} over ${degrees} degrees of freedom`);
    assert.ok(speculation.numAcceptedTokens > 100 && speculation.numAcceptedTokens < speculation.numDraftTokens - 100, 'drafts were both accepted and rejected, many times');
  } finally {
    await llm.close();
  }
}

const NGRAM = { method: 'ngram', numSpeculativeTokens: 3, ngramMin: 1, ngramMax: 2 } as const;

test('n-gram drafts keep the target distribution at temperature 1', async () => {
  await checkDistribution(NGRAM, { temperature: 1 });
});

test('n-gram drafts keep the target distribution with top-k', async () => {
  await checkDistribution(NGRAM, { temperature: 0.8, topK: 3 });
});

test('n-gram drafts keep the target distribution with top-p', async () => {
  await checkDistribution(NGRAM, { temperature: 1.3, topP: 0.8 });
});

const draftModel = () => ({ model: draftDir, numSpeculativeTokens: 3 });

test('draft-model drafts keep the target distribution at temperature 1', async () => {
  await checkDistribution(draftModel(), { temperature: 1 });
});

test('draft-model drafts keep the target distribution with top-k', async () => {
  await checkDistribution(draftModel(), { temperature: 0.8, topK: 3 });
});

test('draft-model drafts keep the target distribution with top-p', async () => {
  await checkDistribution(draftModel(), { temperature: 1.3, topP: 0.8 });
});
