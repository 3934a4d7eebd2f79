import assert from 'node:assert/strict';
import { test } from 'node:test';
import { latencyRow, type LatencyOptions } from '../../src/bench/latency-suite.ts';
import { createModel, readModelArchitecture } from '../../src/models/registry.ts';

test('a latency row: TPOT is (e2e - TTFT) / (output - 1), throughputs follow from the means', () => {
  const options: LatencyOptions = { batchSizes: [4], inputLen: 64, outputLen: 11, numIters: 2, numItersWarmup: 0, seed: 0, bandwidthBytesPerSecond: 1e9, structuredOutput: null };
  const model = createModel(readModelArchitecture('models/keel-tiny'), 2048);
  const row = latencyRow(4, options, [{ ttftMs: 100, e2eMs: 200 }, { ttftMs: 120, e2eMs: 240 }], { model, weightElementBytes: 4, kvElementBytes: 4, blockSize: 16 }, { preemptions: 0, swaps: 0 });
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

test('with weight offload, a latency row compares the step with copying the offloaded bytes at the host-to-device rate', () => {
  const model = createModel(readModelArchitecture('models/keel-tiny'), 2048);
  const base = { batchSizes: [1], inputLen: 8, outputLen: 11, numIters: 1, numItersWarmup: 0, seed: 0, bandwidthBytesPerSecond: null, structuredOutput: null };
  const timings = [{ ttftMs: 100, e2eMs: 300 }];
  const inputs = { model, weightElementBytes: 4, kvElementBytes: 4, blockSize: 16 };
  // 20 ms a step; 1 GB copied at 100 GB/s takes 10 ms: half the step.
  const row = latencyRow(1, { ...base, offload: { hostBytesPerStep: 1e9, hostToDeviceBytesPerSecond: 1e11 } }, timings, inputs, { preemptions: 0, swaps: 0 });
  assert.deepEqual(row.offload, { host_bytes_per_step: 1e9, host_to_device_bytes_per_s: 1e11, bound_step_s: 0.01, fraction: 0.5 });
  const unknownRate = latencyRow(1, { ...base, offload: { hostBytesPerStep: 1e9, hostToDeviceBytesPerSecond: null } }, timings, inputs, { preemptions: 0, swaps: 0 });
  assert.deepEqual(unknownRate.offload, { host_bytes_per_step: 1e9, host_to_device_bytes_per_s: null, bound_step_s: null, fraction: null });
  assert.equal(latencyRow(1, base, timings, inputs, { preemptions: 0, swaps: 0 }).offload, null, 'no offload, no figure');
});
