import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRoofline, kvBytesOverDecode, parameterCount, parametersReadPerStep, throughputRoofline, workloadFlops } from '../../src/bench/roofline.ts';
import { measureHostCopyBandwidth } from '../../src/bench/memory-bandwidth.ts';
import type { LlamaConfig } from '../../src/models/llama.ts';
import { createModel, parseModelArchitecture, readModelArchitecture } from '../../src/models/registry.ts';
import { kvBytesPerToken } from '../../src/step/kv-cache-layout.ts';
import { GLM5 } from '../helpers/deepseek-configs.ts';

const modelOf = (dir: string, edit: (c: LlamaConfig) => LlamaConfig = (c) => c) => {
  const architecture = readModelArchitecture(dir);
  return createModel({ ...architecture, config: edit(architecture.config as LlamaConfig) }, 4096);
};
const llama8b = modelOf('bench/configs/llama-3.1-8b');
const windowed = (window: number) => modelOf('bench/configs/llama-3.1-8b', (c) => ({ ...c, slidingWindows: c.slidingWindows.map(() => window) }));

test('a decode step reads every weight except an untied input embedding; a tied one is read as the LM head', () => {
  assert.equal(parametersReadPerStep(llama8b, 1), 8_030_261_248 - 128256 * 4096);
  const qwen3 = modelOf('bench/configs/qwen3-0.6b');
  assert.equal(parametersReadPerStep(qwen3, 1), parameterCount(qwen3));
});

test('KV bytes per token: K and V of every layer and KV head', () => {
  // Llama-3.1-8B in bf16: 2 × 32 layers × 8 heads × 128 dims × 2 bytes = 128 KiB.
  assert.equal(kvBytesPerToken(llama8b.kvLayers, 2), 131072);
});

test('roofline: (weights + KV at the mean context) / step time / bandwidth', () => {
  const inputs = { model: llama8b, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 };
  const r = decodeRoofline(inputs, { batchSize: 4, inputLen: 128, outputLen: 256, stepSeconds: 0.01 }, 3.35e12);
  const weights = (8_030_261_248 - 128256 * 4096) * 2;
  // Decode steps attend over 129..383 tokens: 256 on average.
  const kv = 4 * 256 * 131072;
  assert.equal(r.weight_bytes_per_step, weights);
  assert.equal(r.kv_bytes_per_step, kv);
  assert.equal(r.bytes_per_step, weights + kv);
  assert.ok(Math.abs(r.achieved_bytes_per_s - (weights + kv) / 0.01) < 1);
  assert.ok(Math.abs((r.fraction as number) - (weights + kv) / 0.01 / 3.35e12) < 1e-12);
});

test('the llama.cpp bar: 166.7 tok/s on Llama-3.1-8B F16 is ~2.5 TB/s of weights read', () => {
  const r = decodeRoofline({ model: llama8b, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 }, { batchSize: 1, inputLen: 0, outputLen: 2, stepSeconds: 1 / 166.7 }, null);
  assert.ok(Math.abs(r.achieved_bytes_per_s / 1e12 - 2.5) < 0.05, String(r.achieved_bytes_per_s));
  assert.equal(r.fraction, null);
  assert.equal(r.bandwidth_bytes_per_s, null);
});

test('a sliding window caps the context a step reads', () => {
  const r = decodeRoofline({ model: windowed(100), weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 }, { batchSize: 1, inputLen: 1000, outputLen: 10, stepSeconds: 1 }, null);
  assert.equal(r.kv_bytes_per_step, 100 * 131072);
});

test('Quest: a sparse layer reads its budget\'s blocks and every block\'s key summaries; dense layers and short contexts read every position', () => {
  const quest = (tokenBudget: number) => {
    const model = modelOf('bench/configs/llama-3.1-8b');
    model.useSparseAttention!({ tokenBudget, sinkTokens: 4, windowTokens: 64 }, [0, 1]);
    return model;
  };
  const step = { batchSize: 16, inputLen: 32767, outputLen: 2, stepSeconds: 1 };
  const r = decodeRoofline({ model: quest(2048), weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 }, step, null);
  // 8 kv heads × 128 dims × 2 bytes, for keys and for values: 4 KiB a position and layer; summaries, a min and a max a channel, 4 KiB a block.
  const perPosition = 4096;
  const perBlockSummaries = 4096;
  // Decodes attend over 32768 positions on average: 2048 blocks of 16, more than the budget's 128.
  const sparseLayer = 2048 * perPosition + 2048 * perBlockSummaries;
  const denseLayer = 32768 * perPosition;
  assert.equal(r.kv_bytes_per_step, 16 * (2 * denseLayer + 30 * sparseLayer));
  const dense = decodeRoofline({ model: llama8b, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 }, step, null);
  assert.equal(dense.kv_bytes_per_step, 16 * 32 * denseLayer);
  assert.equal(r.weight_bytes_per_step, dense.weight_bytes_per_step);
  const wideBudget = decodeRoofline({ model: quest(32768), weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 }, step, null);
  assert.equal(wideBudget.kv_bytes_per_step, dense.kv_bytes_per_step, 'a budget holding the whole context attends densely');
});

test('DeepSeek Sparse Attention: the top-k positions\' latent rows, and every position\'s index key in a layer with an indexer of its own', () => {
  const json = { ...GLM5, num_hidden_layers: 4, num_nextn_predict_layers: 0, first_k_dense_replace: 1, indexer_types: ['full', 'shared', 'full', 'shared'] };
  const model = createModel(parseModelArchitecture(json, 'test/config.json'), 65536);
  const inputs = { model, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 };
  // A latent row of 512 + 64 values, an index key of 128, 2 bytes each; index_topk 2048.
  const long = decodeRoofline(inputs, { batchSize: 1, inputLen: 9999, outputLen: 2, stepSeconds: 1 }, null);
  assert.equal(long.kv_bytes_per_step, 4 * 2048 * 576 * 2 + 2 * 10000 * 128 * 2);
  const short = decodeRoofline(inputs, { batchSize: 1, inputLen: 999, outputLen: 2, stepSeconds: 1 }, null);
  assert.equal(short.kv_bytes_per_step, 1000 * kvBytesPerToken(model.kvLayers, 2), 'fewer positions than top-k: all of them');
});

test('the host copy bandwidth is a positive, finite rate', () => {
  const bytesPerSecond = measureHostCopyBandwidth({ bytes: 8 * 1024 * 1024, repeats: 2 });
  assert.ok(Number.isFinite(bytesPerSecond) && bytesPerSecond > 1e8, String(bytesPerSecond));
});

test('workload FLOPs: 2 per weight multiply-add for every token that runs, the LM head per output token, attention per key', () => {
  const head = 128256 * 4096;
  const body = parametersReadPerStep(llama8b, 1) - head;
  const perKey = 4 * 32 * 32 * 128;
  // Brute force over the positions that run: 3 prompt tokens and the first of 2 output tokens.
  let expected = 2 * head * 2;
  for (let position = 0; position < 4; position++) expected += 2 * body + perKey * (position + 1);
  assert.equal(workloadFlops(llama8b, [{ inputLen: 3, outputLen: 2 }]), expected);
  // A window of 2 keys: positions 0..3 attend to 1, 2, 2, 2 keys.
  assert.equal(workloadFlops(windowed(2), [{ inputLen: 3, outputLen: 2 }]), expected - perKey * (3 + 4 - 2 - 2));
  assert.equal(workloadFlops(llama8b, [{ inputLen: 3, outputLen: 2 }, { inputLen: 3, outputLen: 2 }]), 2 * expected);
});

test('throughput roofline: the longer of compute at the matmul rate and the weight reads of the longest output with every request\'s cache reads', () => {
  const inputs = { model: llama8b, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 };
  const requests = Array.from({ length: 256 }, () => ({ inputLen: 512, outputLen: 256 }));
  const flops = workloadFlops(llama8b, requests);
  const computeBound = throughputRoofline(inputs, requests, 10, { flopsPerSecond: 800e12, bandwidthBytesPerSecond: 3e12 });
  assert.equal(computeBound.flops, flops);
  assert.equal(computeBound.weight_bytes_lower_bound, 256 * parametersReadPerStep(llama8b, 1) * 2);
  assert.ok(Math.abs((computeBound.bound_s as number) - flops / 800e12) < 1e-9, 'at 800 TFLOP/s the FLOPs take longer');
  assert.ok(Math.abs((computeBound.fraction as number) - flops / 800e12 / 10) < 1e-12);
  // Each request's 255 decode steps attend over 513 ... 767 positions of 128 KiB.
  assert.equal(computeBound.kv_bytes_lower_bound, 256 * ((513 + 767) / 2) * 255 * 131072);
  const memoryBound = throughputRoofline(inputs, requests, 10, { flopsPerSecond: 800e15, bandwidthBytesPerSecond: 3e12 });
  assert.ok(Math.abs((memoryBound.bound_s as number) - (memoryBound.weight_bytes_lower_bound + memoryBound.kv_bytes_lower_bound) / 3e12) < 1e-9);
  const unknown = throughputRoofline(inputs, requests, 10, { flopsPerSecond: null, bandwidthBytesPerSecond: null });
  assert.equal(unknown.bound_s, null);
  assert.equal(unknown.fraction, null);
});

test('an MoE step reads each expert with the chance that some token routes to it: 1 - (1 - topK / numExperts) ^ tokens', () => {
  const model = modelOf('test/fixtures/qwen3-moe');
  // 2 sparse layers (0 and 2) of 8 experts [16, 64] x 3, top-2; the rest is read whole but the untied input embedding.
  const expertParams = 2 * 8 * 3 * 16 * 64;
  const rest = parameterCount(model) - expertParams - 256 * 64;
  for (const tokens of [1, 2, 5, 64]) {
    const share = 1 - (1 - 2 / 8) ** tokens;
    assert.ok(Math.abs(parametersReadPerStep(model, tokens) - (rest + expertParams * share)) < 1e-6, `${tokens} tokens`);
  }
  assert.ok(Math.abs(parametersReadPerStep(model, 1000) - (parameterCount(model) - 256 * 64)) < 1e-6, 'a large step reads every expert');
});

test('a request\'s decode reads, summed in closed form, equal its steps\' cache reads one by one (windows, Quest)', () => {
  const quest = modelOf('bench/configs/llama-3.1-8b');
  quest.useSparseAttention!({ tokenBudget: 256, sinkTokens: 4, windowTokens: 64 }, [0, 1]);
  for (const model of [llama8b, windowed(300), quest]) {
    const inputs = { model, weightElementBytes: 2, kvElementBytes: 2, blockSize: 16 };
    for (const request of [{ inputLen: 200, outputLen: 250 }, { inputLen: 7, outputLen: 1 }, { inputLen: 1000, outputLen: 40 }]) {
      let expected = 0;
      for (let j = 1; j < request.outputLen; j++) expected += decodeRoofline(inputs, { batchSize: 1, inputLen: request.inputLen + j, outputLen: 0, stepSeconds: 1 }, null).kv_bytes_per_step;
      assert.equal(kvBytesOverDecode(inputs, request), expected, `${JSON.stringify(request)}`);
    }
  }
});
