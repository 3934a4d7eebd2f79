import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { BatchDescription } from '../../src/step/batch.ts';
import { readResult } from '../../src/bench/result-file.ts';
import { runVerifyBenchmark } from '../../src/bench/verify-benchmark.ts';
import { GRAPH_BATCH_SIZES } from '../../src/engine/graph-batch.ts';
import { loadModel } from '../../src/engine/load-engine.ts';
import { recordingBackend, type Replayed } from '../helpers/graph-recording-backend.ts';
import { keel, keelOk } from '../helpers/keel-cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'keel-bench-verify-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const positive = (v: number, what: string) => assert.ok(Number.isFinite(v) && v > 0, `${what} is ${v}`);

test('bench verify on keel-tiny: a decode row per batch size and a verification row per batch size and query length, every figure measured', async () => {
  const output = join(dir, 'verify.json');
  // 20 cached tokens: the chunks cross a block boundary (16-token blocks).
  const run = await keelOk(['bench', 'verify', '--model', 'models/keel-tiny', '--backend', 'cpu', '--no-progress', '--batch-size', '1,3', '--query-tokens', '1,2,5', '--context-len', '20', '--num-iters', '2', '--num-iters-warmup', '1', '--output', output]);
  assert.match(run.stdout, /batch +step +mean ms/);
  assert.match(run.stdout, /q=5/);
  const result = readResult(output);
  if (result.suite !== 'verify' || !result.results) throw new Error('expected a verify result');
  assert.equal(result.engine, 'keel');
  assert.equal(result.device.backend, 'cpu');
  assert.equal(result.model?.name, 'keel-tiny');
  assert.equal(result.config.context_len, 20);
  const { decode, verify } = result.results;
  assert.deepEqual(decode.map((d) => d.batch_size), [1, 3]);
  assert.deepEqual(verify.map((v) => [v.batch_size, v.query_tokens]), [[1, 1], [1, 2], [1, 5], [3, 1], [3, 2], [3, 5]]);
  for (const d of decode) {
    positive(d.mean_step_ms, 'decode mean');
    positive(d.median_step_ms, 'decode median');
    assert.equal(d.ms_per_token, d.mean_step_ms / d.batch_size);
    assert.equal(d.cuda_graph, false, 'the CPU backend records no graphs');
  }
  for (const v of verify) {
    const label = `batch ${v.batch_size}, q ${v.query_tokens}`;
    positive(v.mean_step_ms, `${label} mean`);
    positive(v.median_step_ms, `${label} median`);
    assert.equal(v.ms_per_query_token, v.mean_step_ms / (v.batch_size * v.query_tokens), label);
    const plain = decode.find((d) => d.batch_size === v.batch_size)!;
    assert.equal(v.ratio_to_decode, v.mean_step_ms / plain.mean_step_ms, label);
    assert.equal(v.cuda_graph, false);
  }
});

test('bench verify: decode and verification steps replay padded graphs where the backend records them, with logits at every query position', async () => {
  const loaded = await loadModel({ model: 'models/keel-tiny', backend: 'cpu', showProgress: false });
  try {
    const replayed: Replayed[] = [];
    const begun: BatchDescription[] = [];
    const backend = recordingBackend(loaded.backend, replayed);
    const beginStep = backend.beginStep.bind(backend);
    backend.beginStep = (batch) => {
      begun.push(batch);
      return beginStep(batch);
    };
    const options = { batchSizes: [3], queryTokens: [4], contextLen: 7, numIters: 2, numItersWarmup: 1 };
    const results = runVerifyBenchmark({ ...loaded, backend }, options);
    assert.equal(results.decode[0].cuda_graph, true);
    assert.equal(results.verify[0].cuda_graph, true);
    const steps = options.numIters + options.numItersWarmup;
    // Batch 3 pads to the next recorded size; every token has logits, so the shape stays put.
    const padded = GRAPH_BATCH_SIZES.find((size) => size >= 3)!;
    assert.deepEqual(replayed.map((r) => [r.numSeqs, r.logitsRows]), [...new Array(steps).fill([padded, padded]), ...new Array(steps).fill([padded, 4 * padded])]);
    const verification = begun.filter((b) => b.verificationChunks !== null);
    assert.equal(verification.length, steps);
    for (const b of verification) {
      assert.deepEqual([...b.verificationChunks!], new Array(padded).fill(1), 'the padding rows verify too');
      assert.deepEqual([...b.seqLens.subarray(0, 3)], [11, 11, 11], 'four query tokens after seven cached ones');
      assert.deepEqual([...b.logitsIndices], Array.from({ length: 4 * padded }, (_, t) => t), 'logits at every query position');
    }
  } finally {
    loaded.backend.dispose();
  }
});

test('bench verify: a grid the model cannot hold is an error that says why', async () => {
  const tooLong = await keel(['bench', 'verify', '--model', 'models/keel-tiny', '--backend', 'cpu', '--no-progress', '--context-len', '2040', '--query-tokens', '16']);
  assert.notEqual(tooLong.code, 0);
  assert.match(tooLong.stderr, /--context-len 2040 and 16 query tokens run past the model's length 2048/);
  const badList = await keel(['bench', 'verify', '--model', 'models/keel-tiny', '--backend', 'cpu', '--query-tokens', '1,0']);
  assert.notEqual(badList.code, 0);
  assert.match(badList.stderr, /--query-tokens must be a positive integer/);
});
