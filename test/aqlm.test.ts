import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint, type Checkpoint } from '../src/checkpoint/checkpoint.ts';
import { aqlmReader } from '../src/checkpoint/quantization/aqlm.ts';
import { quantizedCheckpoint } from '../src/checkpoint/quantization/quantized-checkpoint.ts';
import type { RawTensor } from '../src/checkpoint/safetensors.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { dequantizeGroups, quantizeRoundToNearestGroups } from '../src/quantize/group-quantizer.ts';
import { quantizeCheckpoint } from '../src/quantize/quantize-checkpoint.ts';
import { VQ_DEFAULTS, vqQuantize } from '../src/quantize/vq.ts';
import { hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import { dequantizeWeight, isQuantized, type AqlmFormat } from '../src/tensor/quantized-weight.ts';
import { FIXTURES_DIR, listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';
import { promptLogits } from './helpers/prompt-logits.ts';
import { assertOffloadKeepsTokens } from './helpers/weight-offload-runs.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

const FIXTURE = listOracleFixtures().find((f) => f.name === 'llama-gqa')!;
const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
const LAYER = 'model.layers.0.self_attn.q_proj';

function writeVq(t: Parameters<typeof tempDir>[0], format: AqlmFormat): string {
  const output = tempDir(t, 'keel-aqlm-');
  quantizeCheckpoint({ model: FIXTURE.dir, method: 'vq', bits: 4, groupSize: null, actOrder: false, samples: [], output, codebooks: format });
  return output;
}

for (const format of ['aqlm-2x8', 'aqlm-1x16'] as const) {
  test(`keel quantize --method vq (${format}): Keel reads back exactly the codes, codebooks and scales vq made, and runs them as their dequantized values`, async (t) => {
    const output = writeVq(t, format);
    const architecture = readModelArchitecture(output);
    assert.deepEqual(architecture.quantization, { method: 'aqlm', format });
    const config = JSON.parse(readFileSync(join(output, 'config.json'), 'utf8')).quantization_config;
    assert.deepEqual([config.in_group_size, config.out_group_size, config.num_codebooks, config.nbits_per_codebook], [8, 1, ...(format === 'aqlm-2x8' ? [2, 8] : [1, 16])]);
    assert.ok(config.linear_weights_not_to_quantize.includes('lm_head.weight') && config.linear_weights_not_to_quantize.includes('lm_head'));
    const original = openCheckpoint(FIXTURE.dir);
    const written = quantizedCheckpoint(openCheckpoint(output), architecture.quantization!);
    for (const name of ['model.layers.0.self_attn.k_proj.weight', 'model.layers.1.mlp.down_proj.weight']) {
      const [rows, cols] = original.info(name).shape;
      const expected = vqQuantize(Float64Array.from(hostTensorToFloat32(original.read(name))), rows, cols, { format, ...VQ_DEFAULTS });
      const read = written.readLinear!(name);
      assert.ok(isQuantized(read) && read.format === format, name);
      assert.deepEqual(read.codes, expected.codes, `${name}: codes`);
      assert.deepEqual(read.codebooks, expected.codebooks, `${name}: codebooks`);
      assert.deepEqual(read.scales, expected.scales, `${name}: scales`);
    }
    // The engine on the AQLM checkpoint equals a float32 model loaded with the dequantized weights.
    const quantized = await loadModel({ model: output, backend: 'cpu', showProgress: false });
    const actual = promptLogits(quantized.backend, quantized.model, FIXTURE);
    const dense = createModel(architecture, architecture.config.contextLength);
    const backend = new CpuBackend();
    const readLinear = (name: string) => {
      const w = written.readLinear!(name);
      return isQuantized(w) ? float32Tensor(dequantizeWeight(w), [w.rows, w.cols]) : w;
    };
    loadWeights(dense, { dir: written.dir, tensorNames: written.tensorNames, has: (n) => written.has(n), info: (n) => written.info(n), read: (n) => written.read(n), readRaw: (n) => written.readRaw(n), close: () => written.close(), readLinear }, backend);
    const expected = promptLogits(backend, dense, FIXTURE);
    actual.forEach((row, i) => assert.deepEqual(row, expected[i], `prompt ${i}`));
    const drift = Math.max(...actual.map((row, i) => maxAbsDiff(row, FIXTURE.oracle.last_logits[i])));
    // Logits span about ±2. 1x16 has more centres than these tiny layers have vectors, so it keeps
    // each one (in float16); 2x8 is 2 bits a weight on random Gaussian weights: loose, as int4's bound.
    assert.ok(drift > 0 && drift < (format === 'aqlm-2x8' ? 2.5 : 0.05), `max |Δlogit| from the 16-bit model ${drift}`);
  });
}

test('vq 2x8 codes a layer with fewer errors than 2-bit round to nearest in groups of 128, and 1x16 fewer than 2x8 once vectors outnumber 256', () => {
  const [rows, cols] = [96, 256];
  let seed = 7;
  const gauss = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const u = (seed + 1) / 2147483649;
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * seed) / 2147483648);
  };
  const w = Float64Array.from({ length: rows * cols }, gauss);
  const error = (approx: ArrayLike<number>) => w.reduce((s, v, i) => s + (v - approx[i]) ** 2, 0) / w.reduce((s, v) => s + v * v, 0);
  const twoByEight = error(dequantizeWeight(vqQuantize(w, rows, cols, { format: 'aqlm-2x8', ...VQ_DEFAULTS })));
  const rtn = error(dequantizeGroups(quantizeRoundToNearestGroups(w, rows, cols, 128, { bits: 2, symmetric: false })));
  const oneBySixteen = error(dequantizeWeight(vqQuantize(w, rows, cols, { format: 'aqlm-1x16', ...VQ_DEFAULTS })));
  assert.ok(twoByEight < rtn, `2x8 relative error ${twoByEight} vs 2-bit RTN ${rtn}`);
  assert.ok(oneBySixteen < twoByEight, `1x16 ${oneBySixteen} (every vector its own centre here) vs 2x8 ${twoByEight}`);
});

test('keel quantize --method vq with calibration: every layer reconstructs its calibration outputs better than 2-bit round to nearest', (t) => {
  const output = tempDir(t, 'keel-aqlm-');
  const vocab = readModelArchitecture(FIXTURE.dir).config.vocabSize;
  let seed = 11;
  const token = () => (seed = (seed * 48271) % 2147483647) % vocab;
  const samples = Array.from({ length: 4 }, () => Array.from({ length: 32 }, token));
  const reports = quantizeCheckpoint({ model: FIXTURE.dir, method: 'vq', bits: 4, groupSize: null, actOrder: false, samples, output, codebooks: 'aqlm-2x8' });
  assert.equal(reports.length, 8, 'q/k/v, o, gate/up and down of 2 layers');
  for (const r of reports) assert.ok(r.error < r.rtnError, `${r.names[0]}: vq ${r.error} vs 2-bit RTN ${r.rtnError}`);
});

test('an AQLM model streamed from host memory (weight offload: codes, scales and codebooks) gives the tokens of the model kept whole', async () => {
  const base = { model: join(FIXTURES_DIR, 'quant-aqlm-2x8'), backend: 'cpu', showProgress: false, numKvBlocks: 32, blockSize: 8 } as const;
  await assertOffloadKeepsTokens(base, [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4]], { temperature: 0, ignoreEos: true, maxTokens: 12 });
});

/** A written 2x8 checkpoint with some tensors replaced. */
function patched(dir: string, raw: Record<string, RawTensor>): Checkpoint {
  const inner = openCheckpoint(dir);
  return {
    ...inner,
    dir: inner.dir,
    tensorNames: inner.tensorNames,
    has: (name) => name in raw || inner.has(name),
    info: (name) => (name in raw ? { dtype: raw[name].dtype, shape: raw[name].shape } : inner.info(name)),
    read: (name) => inner.read(name),
    readRaw: (name) => raw[name] ?? inner.readRaw(name),
    close: () => inner.close(),
  };
}

test('AQLM layouts Keel cannot map get one error each, naming the tensor and the variant', (t) => {
  const dir = writeVq(t, 'aqlm-2x8');
  const config = { method: 'aqlm', format: 'aqlm-2x8' } as const;
  const read = (raw: Record<string, RawTensor>) => aqlmReader(patched(dir, raw), config).read(LAYER);
  const codes = openCheckpoint(dir).readRaw(`${LAYER}.codes`);
  const [rows, groups] = codes.shape;
  assert.throws(() => read({ [`${LAYER}.codes`]: { ...codes, dtype: 'I16' } }), /codes are I16, expected I8 for aqlm-2x8/);
  // Codes stored [in groups, out, codebooks] (transposed, as some CPU kernels keep them in memory).
  assert.throws(() => read({ [`${LAYER}.codes`]: { ...codes, shape: [groups, rows, 2] } }), /codes \[8, 64, 2\] have 8 output rows and scales 64; Keel reads codes as \[out, in \/ 8, codebooks\]/);
  assert.throws(() => read({ [`${LAYER}.codebooks`]: { dtype: 'F16', shape: [2, 256, 2, 8], data: new Uint8Array(2 * 256 * 2 * 8 * 2) } }), /codebook vectors span 2 output rows \(out_group_size 2\); Keel reads out_group_size 1/);
  assert.throws(() => read({ [`${LAYER}.codebooks`]: { dtype: 'BF16', shape: [2, 256, 1, 8], data: new Uint8Array(2 * 256 * 8 * 2) } }), /codebooks are BF16; Keel reads float16 codebooks/);
  assert.throws(() => read({ [`${LAYER}.codebooks`]: { dtype: 'F16', shape: [2, 256, 1, 16], data: new Uint8Array(2 * 256 * 16 * 2) } }), /tensor "model\.layers\.0\.self_attn\.q_proj\.codebooks" has shape \[2, 256, 1, 16\], expected \[2, 256, 1, 8\]/);
});

test('keel quantize --method vq names what is wrong: --bits, --group-size, an unknown codebook layout', (t) => {
  const run = (args: string[]) => spawnSync(BIN, ['quantize', '--model', FIXTURE.dir, '--method', 'vq', '--output', join(tempDir(t), 'out'), ...args], { encoding: 'utf8' });
  assert.match(run(['--bits', '4']).stderr, /vq codes 2 bits a weight in either layout: choose it with --codebooks 2x8\|1x16, not --bits/);
  assert.match(run(['--group-size', '16']).stderr, /--group-size is not a vq option/);
  assert.match(run(['--codebooks', '4x8']).stderr, /--codebooks must be 2x8 or 1x16 \(got 4x8\)/);
});
