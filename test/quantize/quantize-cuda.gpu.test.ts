import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CudaDevice } from '../../src/backend/cuda/cuda-device.ts';
import { DEFAULT_MODEL_DIR } from '../../src/engine/load-engine.ts';
import { calibrate, recordedHessian } from '../../src/quantize/calibration.ts';
import { CudaQuantizeDevice } from '../../src/quantize/cuda-quantize-device.ts';
import { gptqQuantize, hessianOf } from '../../src/quantize/gptq.ts';
import { gptqOnCuda } from '../../src/quantize/gptq-cuda.ts';
import { dequantizeGroups, outputError, quantizeRoundToNearestGroups } from '../../src/quantize/group-quantizer.ts';
import { HostQuantizeDevice } from '../../src/quantize/host-quantize-device.ts';
import { quantizeCheckpoint } from '../../src/quantize/quantize-checkpoint.ts';
import { createModel, readModelArchitecture } from '../../src/models/registry.ts';
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { TestRandom, testSeed } from '../helpers/cpu-random.ts';
import { tempDir } from '../helpers/model-temp-dir.ts';

// keel quantize on the GPU against its CPU twin: gptqOnCuda (float32, blocked Cholesky, lazy
// batch updates) against gptq.ts (float64, column by column) on random layers over group sizes
// that take every block rule, act-order, 4 and 8 bits, both grids and a column no input reaches;
// then keel-tiny's calibration Hessians and whole GPTQ and AWQ checkpoints (AWQ's search measuring
// its output errors on the device) on the CUDA device against the CPU's. Float32 against float64 rounding moves a few codes, and GPTQ's error feedback carries
// each move along its row, so codes are compared by the share that agree and the layers by their
// output error on the calibration inputs.

const random = new TestRandom(testSeed('gptq cuda'));
const device = new CudaDevice(0);
after(() => device.dispose());

function correlatedInputs(n: number, cols: number, deadColumn: number): Float32Array {
  const x = new Float32Array(n * cols);
  const gain = Float32Array.from({ length: cols }, () => Math.exp(random.uniform(-2, 2)));
  for (let t = 0; t < n; t++) {
    const shared = random.uniform(-1, 1);
    for (let c = 0; c < cols; c++) x[t * cols + c] = c === deadColumn ? 0 : gain[c] * (0.7 * shared + 0.3 * random.uniform(-1, 1));
  }
  return x;
}

const CASES = [
  { bits: 4 as const, symmetric: true, groupSize: 128, actOrder: false },
  { bits: 4 as const, symmetric: true, groupSize: 32, actOrder: true },
  { bits: 4 as const, symmetric: false, groupSize: 96, actOrder: true },
  { bits: 8 as const, symmetric: true, groupSize: null, actOrder: false },
  { bits: 4 as const, symmetric: true, groupSize: 256, actOrder: true },
];

for (const o of CASES) {
  test(`gptqOnCuda matches gptq.ts: ${o.bits}-bit, ${o.symmetric ? 'symmetric' : 'asymmetric'}, group ${o.groupSize ?? 'per row'}${o.actOrder ? ', act-order' : ''}`, () => {
    const [rows, cols, n] = [84, 320, 512];
    const dead = random.int(0, cols - 1);
    const w = Float64Array.from({ length: rows * cols }, () => random.uniform(-1, 1));
    const x = correlatedInputs(n, cols, dead);
    // Both sides get the float32 Hessian the device holds, so act-order sorts the same values.
    const h32 = Float32Array.from(hessianOf(x, n, cols));
    const hPtr = device.alloc(h32.byteLength);
    try {
      device.uploadSync(hPtr, h32);
      const options = { ...o, damp: 0.01 };
      const gpu = gptqOnCuda(device, w, rows, cols, hPtr, options);
      const cpu = gptqQuantize(w.slice(), rows, cols, Float64Array.from(h32), options);
      assert.deepEqual(gpu.groupOf, cpu.groupOf, 'the columns’ groups');
      const agree = gpu.codes.reduce((k, c, i) => k + (c === cpu.codes[i] ? 1 : 0), 0) / gpu.codes.length;
      assert.ok(agree > 0.97, `${(agree * 100).toFixed(2)} % of the codes agree`);
      for (let r = 0; r < rows; r++) assert.equal(gpu.codes[r * cols + dead], cpu.codes[r * cols + dead], 'the column no input reaches');
      const error = (q: typeof gpu) => outputError(x, n, w, dequantizeGroups(q), rows, cols);
      const [gpuError, cpuError] = [error(gpu), error(cpu)];
      assert.ok(Math.abs(gpuError - cpuError) <= 0.03 * cpuError, `output error ${gpuError} against the CPU's ${cpuError}`);
      const rtn = error(quantizeRoundToNearestGroups(w, rows, cols, o.groupSize, o));
      assert.ok(gpuError < 0.9 * rtn, `GPTQ's error ${gpuError} against round to nearest's ${rtn}`);
    } finally {
      device.free(hPtr);
    }
  });
}

test('gptqOnCuda refuses a Hessian that is not positive definite, as gptq.ts does', () => {
  const cols = 80;
  const h = new Float32Array(cols * cols);
  for (let c = 0; c < cols; c++) h[c * cols + c] = c === 37 ? -5 : 1;
  const w = Float64Array.from({ length: 8 * cols }, () => random.uniform(-1, 1));
  const hPtr = device.alloc(h.byteLength);
  try {
    device.uploadSync(hPtr, h);
    const options = { bits: 4 as const, symmetric: true, groupSize: 16, actOrder: false, damp: 0.01 };
    assert.throws(() => gptqQuantize(w.slice(), 8, cols, Float64Array.from(h), options), /not positive definite/);
    assert.throws(() => gptqOnCuda(device, w, 8, cols, hPtr, options), /not positive definite/);
  } finally {
    device.free(hPtr);
  }
});

const CALIBRATION = fileURLToPath(new URL('../../tools/oracle/make_fixtures.py', import.meta.url));
function calibrationSamples(): number[][] {
  const tokens = Tokenizer.load(DEFAULT_MODEL_DIR).encode(readFileSync(CALIBRATION, 'utf8'), { addSpecialTokens: false });
  return Array.from({ length: 4 }, (_, i) => tokens.slice(i * 64, (i + 1) * 64));
}

test('keel-tiny on the CUDA device: calibration Hessians near the CPU’s, GPTQ and AWQ checkpoints with the CPU’s output errors', (t) => {
  const cuda = new CudaQuantizeDevice();
  const host = new HostQuantizeDevice();
  t.after(() => cuda.dispose());
  const architecture = readModelArchitecture(DEFAULT_MODEL_DIR);
  const samples = calibrationSamples();
  const ckpt = openCheckpoint(DEFAULT_MODEL_DIR);
  try {
    const records = new Set(['model.layers.1.self_attn.q_proj.weight', 'model.layers.1.self_attn.o_proj.weight', 'model.layers.1.mlp.gate_proj.weight', 'model.layers.1.mlp.down_proj.weight']);
    const [onGpu, onCpu] = [cuda, host].map((d) => calibrate(createModel(architecture, 64), ckpt, samples, { device: d, records }));
    const recorded = onCpu.filter((l) => l.hessian !== null);
    assert.deepEqual(new Set(recorded.map((l) => l.names[0])), records, 'layer 1 alone is recorded');
    for (const linear of recorded) {
      const gpu = recordedHessian(onGpu.find((l) => l.names[0] === linear.names[0])!).toHost();
      const cpu = recordedHessian(linear).toHost();
      let [diff, norm] = [0, 0];
      for (let i = 0; i < cpu.length; i++) {
        diff += (gpu[i] - cpu[i]) ** 2;
        norm += cpu[i] ** 2;
      }
      // The GPU's activations are bf16, the CPU's float32.
      assert.ok(Math.sqrt(diff / norm) < 0.02, `${linear.names[0]}: relative difference ${Math.sqrt(diff / norm)}`);
    }
    for (const l of onGpu) l.hessian?.dispose();
  } finally {
    ckpt.close();
  }
  for (const method of ['gptq', 'awq'] as const) {
    const run = (d: CudaQuantizeDevice | HostQuantizeDevice) => quantizeCheckpoint({ model: DEFAULT_MODEL_DIR, method, bits: 4, groupSize: 128, actOrder: method === 'gptq', samples, output: tempDir(t) }, d);
    const [gpu, cpu] = [run(cuda), run(host)];
    assert.deepEqual(gpu.map((r) => r.names), cpu.map((r) => r.names));
    const sum = (reports: typeof gpu, key: 'error' | 'rtnError') => reports.reduce((s, r) => s + r[key], 0);
    assert.ok(Math.abs(sum(gpu, 'error') - sum(cpu, 'error')) < 0.05 * sum(cpu, 'error'), `${method}: summed error ${sum(gpu, 'error')} on the GPU, ${sum(cpu, 'error')} on the CPU`);
    assert.ok(sum(gpu, 'error') < sum(gpu, 'rtnError'), `${method} below round to nearest on the GPU`);
  }
});
