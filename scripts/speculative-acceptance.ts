// How often a draft model's proposals are accepted per position, under Keel's verification (the
// draft and the target draw with the same seed: a Gumbel-max coupling) and under Leviathan et al.'s
// rejection sampling (1 - TV), on the CPU backend: both figures are exact expectations over the
// target's and the draft's processed distributions at every position of a few sampled
// continuations of code prompts (docs/speculative-decoding.md). Run it with
// `node --import tsx scripts/speculative-acceptance.ts [--target DIR] [--draft DIR]`.
import { parseArgs } from 'node:util';
import { LLM } from '../src/engine/llm.ts';
import { DEFAULT_MODEL_DIR, loadModel } from '../src/engine/load-engine.ts';
import { drawDistribution } from '../src/sampling/draw-sampler.ts';
import { drawFor } from '../src/sampling/draw.ts';
import { forkStream } from '../src/sampling/rng.ts';
import type { SamplingParams } from '../src/sampling/sampling-params.ts';
import { resolveSamplingParams } from '../src/sampling/validate.ts';
import { describeBatch } from '../src/step/batch.ts';

const PROMPTS = ['def fibonacci(n):', 'import numpy as np\n', 'class Stack:\n', '# Compute the mean of a list\ndef mean(xs):', 'for i in range(10):', 'import os\nimport sys\n'];
const SETTINGS: Partial<SamplingParams>[] = [{ temperature: 0.3 }, { temperature: 0.7 }, { temperature: 1 }, { temperature: 1, topP: 0.9 }, { temperature: 0.7, topK: 20 }];
const BLOCK_SIZE = 16;

const { values } = parseArgs({ options: { target: { type: 'string' }, draft: { type: 'string' } } });
const targetDir = values.target ?? DEFAULT_MODEL_DIR;
const draftDir = values.draft ?? `${DEFAULT_MODEL_DIR}-draft`;

/** The prompts and 64 tokens the target samples after each, and where each continuation starts. */
async function continuations(): Promise<{ tokens: number[]; start: number }[]> {
  const llm = await LLM.load({ model: targetDir, backend: 'cpu', showProgress: false, numKvBlocks: 256 });
  try {
    const outputs = await llm.generate(PROMPTS, { temperature: 0.8, seed: 1, maxTokens: 64, ignoreEos: true });
    return outputs.map((o) => ({ tokens: [...o.promptTokenIds, ...o.outputs[0].tokenIds], start: o.promptTokenIds.length }));
  } finally {
    await llm.close();
  }
}

/** A model's logits at every position that predicts a continuation token, one prompt per forward. */
async function logitRows(dir: string, sequences: { tokens: number[]; start: number }[]): Promise<Float32Array[]> {
  const { backend, model, modelConfig } = await loadModel({ model: dir, backend: 'cpu', showProgress: false });
  const vocab = modelConfig.vocabSize;
  return sequences.flatMap(({ tokens, start }) => {
    const numBlocks = Math.ceil(tokens.length / BLOCK_SIZE);
    const cache = backend.createKvCache({ numBlocks, blockSize: BLOCK_SIZE, layers: model.kvLayers });
    const rows = Array.from({ length: tokens.length - start }, (_, i) => start - 1 + i);
    const batch = describeBatch([{ tokens, startPos: 0, blockTables: [Array.from({ length: numBlocks }, (_, b) => b)] }], BLOCK_SIZE, rows);
    const logits = backend.toHost(model.forward(backend, backend.beginStep(batch), cache));
    return rows.map((_, r) => logits.slice(r * vocab, (r + 1) * vocab));
  });
}

/** The chance that Gumbel-max draws from p and q with the same noise agree: Σ_t 1 / Σ_u max(p_u / p_t, q_u / q_t), summed in order of p/q. */
function couplingAgreement(p: Float64Array, q: Float64Array): number {
  const both: number[] = [];
  let pOnly = 0;
  let qOnly = 0;
  for (let t = 0; t < p.length; t++) {
    if (p[t] > 0 && q[t] > 0) both.push(t);
    else if (p[t] > 0) pOnly += p[t];
    else qOnly += q[t];
  }
  both.sort((a, b) => p[b] / q[b] - p[a] / q[a]);
  const qBoth = both.reduce((sum, t) => sum + q[t], 0);
  let pAtOrAbove = pOnly;
  let qAtOrAbove = 0;
  let agreement = 0;
  for (const t of both) {
    pAtOrAbove += p[t];
    qAtOrAbove += q[t];
    agreement += 1 / (pAtOrAbove / p[t] + (qBoth - qAtOrAbove + qOnly) / q[t]);
  }
  return agreement;
}

const sequences = await continuations();
const targetRows = await logitRows(targetDir, sequences);
const draftRows = await logitRows(draftDir, sequences);
console.log(`${targetRows.length} positions of ${PROMPTS.length} sampled continuations; target ${targetDir}, draft ${draftDir}`);
for (const fields of SETTINGS) {
  const draw = drawFor(resolveSamplingParams({ ...fields, maxTokens: 1 }, {}), { row: 0, rng: forkStream(0, 0), penaltyTokens: null, numOutputTokens: 1, pendingDraw: -1, draftHistory: null, eosTokenIds: [], allowedTokens: null, logitBias: null, bannedTokenIds: [] });
  let rejection = 0;
  let coupling = 0;
  targetRows.forEach((row, i) => {
    const p = drawDistribution(row, draw, []);
    const q = drawDistribution(draftRows[i], draw, []);
    for (let t = 0; t < p.length; t++) rejection += Math.min(p[t], q[t]);
    coupling += couplingAgreement(p, q);
  });
  const n = targetRows.length;
  console.log(`${JSON.stringify(fields)}: acceptance per position ${(coupling / n).toFixed(3)} (Keel's coupled draws), ${(rejection / n).toFixed(3)} (rejection sampling, 1 - TV)`);
}
