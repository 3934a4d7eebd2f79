import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, StepInputs, Tensor } from '../backend/backend.ts';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { loadModel, DEFAULT_MODEL_DIR } from './load-engine.ts';
import { GRAPH_BATCH_SIZES, ModelRunner } from './model-runner.ts';
import { Scheduler } from './scheduler.ts';
import { Sequence } from './sequence.ts';

const BLOCK_SIZE = 4;
const NUM_BLOCKS = 64;

/** The CPU backend posing as one that records graphs, logging each step it is asked to replay. */
function recordingBackend(backend: Backend, replayed: { numSeqs: number; width: number; logitsRows: number }[]): Backend {
  const posing = Object.create(backend) as Backend & { recordsGraphs: boolean };
  Object.defineProperty(posing, 'recordsGraphs', { value: true });
  posing.replayForward = (step: StepInputs, _owner: object, forward: () => Tensor) => {
    const b = step.batch;
    replayed.push({ numSeqs: b.numSeqs, width: b.maxBlocksPerSeq, logitsRows: b.logitsIndices.length });
    return forward();
  };
  return posing;
}

/** Greedy tokens of each prompt, `steps` engine-like steps at a time through one runner. */
function greedyRun(backend: Backend, model: Awaited<ReturnType<typeof loadModel>>, prompts: number[][], steps: number, graphs: boolean): number[][] {
  const cache = backend.createKvCache({ numLayers: model.modelConfig.numLayers, numBlocks: NUM_BLOCKS + 1, blockSize: BLOCK_SIZE, numKvHeads: model.modelConfig.numKvHeads, headDim: model.modelConfig.headDim });
  const kv = new KvCacheManager(new BlockPool(NUM_BLOCKS, true), BLOCK_SIZE, true);
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: BLOCK_SIZE, maxModelLen: 256 }, kv);
  const runner = new ModelRunner(backend, model.model, cache, BLOCK_SIZE, graphs ? { maxBatchSize: 8, scratchBlock: NUM_BLOCKS } : null);
  const seqs = prompts.map((p, i) => new Sequence(`r${i}`, p));
  for (const seq of seqs) scheduler.add(seq);
  for (let i = 0; i < steps; i++) {
    const output = scheduler.schedule();
    const result = runner.execute(output, () => ({ temperature: 0, seed: 0 }));
    scheduler.onStepComplete(output);
    assert.equal(result.logitsOf, null, 'no row asked for logits');
    result.samplingRows.forEach((s, row) => output.scheduled[s].seq.appendToken(result.deviceTokens()[row]));
  }
  return seqs.map((s) => s.tokenIds.slice(s.numPromptTokens));
}

test('padded graph decode steps produce the tokens of eager steps, and pad to recorded shapes', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const prompts = [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [300]];
  const eager = greedyRun(model.backend, model, prompts, 12, false);
  const replayed: { numSeqs: number; width: number; logitsRows: number }[] = [];
  const graphed = greedyRun(recordingBackend(model.backend, replayed), model, prompts, 12, true);
  assert.deepEqual(graphed, eager);
  // The first step prefills; the other 11 decode three sequences, padded to 4 rows.
  assert.equal(replayed.length, 11);
  for (const r of replayed) {
    assert.equal(r.numSeqs, 4);
    assert.ok(GRAPH_BATCH_SIZES.includes(r.numSeqs));
    assert.equal(r.logitsRows, 4, 'padding rows get logits too, so the shape stays put');
    assert.equal(r.width & (r.width - 1), 0, `block-table width ${r.width} is a power of two`);
  }
});

test('logits reach the host only when a row\'s sampler needs them', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const cache = model.backend.createKvCache({ numLayers: model.modelConfig.numLayers, numBlocks: 8, blockSize: BLOCK_SIZE, numKvHeads: model.modelConfig.numKvHeads, headDim: model.modelConfig.headDim });
  const kv = new KvCacheManager(new BlockPool(8, false), BLOCK_SIZE, false);
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, blockSize: BLOCK_SIZE, maxModelLen: 32 }, kv);
  const runner = new ModelRunner(model.backend, model.model, cache, BLOCK_SIZE);
  scheduler.add(new Sequence('a', [1, 2, 3]));
  scheduler.add(new Sequence('b', [4, 5]));
  const output = scheduler.schedule();
  const result = runner.execute(output, (s) => (s === 1 ? null : { temperature: 0, seed: 0 }));
  assert.ok(result.logitsOf !== null);
  const row = result.logitsOf(1);
  assert.equal(row.length, model.modelConfig.vocabSize);
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  assert.equal(result.deviceTokens()[1], best, 'the greedy token is the argmax of the same row');
});
