import assert from 'node:assert/strict';
import { test } from 'node:test';
import { latencyRow, type LatencyOptions } from '../../src/bench/latency-suite.ts';
import { createModel, readModelArchitecture } from '../../src/models/registry.ts';

test('a latency row: TPOT is (e2e - TTFT) / (output - 1), throughputs follow from the means', () => {
  const options: LatencyOptions = { batchSizes: [4], inputLen: 64, outputLen: 11, numIters: 2, numItersWarmup: 0, seed: 0, bandwidthBytesPerSecond: 1e9, structuredOutput: null };
  const model = createModel(readModelArchitecture('models/keel-tiny'), 2048);
  const row = latencyRow(4, options, [{ ttftMs: 100, e2eMs: 200 }, { ttftMs: 120, e2eMs: 240 }], { model, weightElementBytes: 4, kvElementBytes: 4 }, 0);
  assert.equal(row.mean_ttft_ms, 110);
  assert.equal(row.mean_tpot_ms, 11);
  assert.equal(row.mean_e2el_ms, 220);
  assert.equal(row.output_tokens_per_s, (4 * 11) / 0.22);
  assert.ok(Math.abs((row.decode_tokens_per_s as number) - 4 / 0.011) < 1e-9);
  assert.equal(row.num_iters, 2);
  const roofline = row.roofline;
  assert.ok(roofline);
  assert.ok(Math.abs(roofline.achieved_bytes_per_s - roofline.bytes_per_step / 0.011) < 1e-3);
  assert.ok(Math.abs((roofline.fraction as number) - roofline.achieved_bytes_per_s / 1e9) < 1e-12);
});
