import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRoofline, parameterCount, weightBytesReadPerStep } from '../../src/bench/roofline.ts';
import { loadModel } from '../../src/engine/load-engine.ts';

// keel-tiny: 4 layers of q, k, v, o [384|128|128|384, 384], gate and up [1024, 384], down [384, 1024];
// its embedding is tied, read whole as the LM head, and --quantization leaves it (and the norms) 16-bit.
const MODEL = 'models/keel-tiny';
const LAYERS = 4;
/** Rows of the layers' matrices over 384 input columns, and over 1024 (down). */
const ROWS = { 384: 384 + 128 + 128 + 384 + 1024 + 1024, 1024: 384 };
const DENSE = 8192 * 384 + (2 * LAYERS + 1) * 384;
const LINEAR = LAYERS * (ROWS[384] * 384 + ROWS[1024] * 1024);
/** The CPU backend holds 16-bit weights as float32. */
const CPU_ELEMENT_BYTES = 4;

/** Bytes per step of keel-tiny loaded on the CPU backend with `quantization`. */
async function bytesPerStep(quantization: 'int4' | 'fp8' | null): Promise<number> {
  const { model } = await loadModel({ model: MODEL, backend: 'cpu', quantization, showProgress: false });
  assert.equal(parameterCount(model), DENSE + LINEAR);
  return weightBytesReadPerStep(model, 1, CPU_ELEMENT_BYTES);
}

/** The linear layers' bytes when each row of `cols` columns costs `rowBytes(cols)`. */
const linearBytes = (rowBytes: (cols: number) => number) => LAYERS * (ROWS[384] * rowBytes(384) + ROWS[1024] * rowBytes(1024));

test('16-bit weights count the backend\'s element size, float32 on the CPU', async () => {
  assert.equal(await bytesPerStep(null), (DENSE + LINEAR) * CPU_ELEMENT_BYTES);
});

test('--quantization int4 counts its codes, scales and zero codes: half a byte a weight and 5 bytes per group of 128', async () => {
  const expected = DENSE * CPU_ELEMENT_BYTES + linearBytes((cols) => cols / 2 + (cols / 128) * (4 + 1));
  const actual = await bytesPerStep('int4');
  assert.equal(actual, expected);
  assert.ok(actual < 0.45 * (DENSE + LINEAR) * CPU_ELEMENT_BYTES, 'well below the float32 count');
});

test('--quantization fp8 counts a byte a weight and a float32 scale per row', async () => {
  assert.equal(await bytesPerStep('fp8'), DENSE * CPU_ELEMENT_BYTES + linearBytes((cols) => cols + 4));
});

test('the decode roofline reads the quantized weights as loaded', async () => {
  const { model } = await loadModel({ model: MODEL, backend: 'cpu', quantization: 'int4', showProgress: false });
  const r = decodeRoofline({ model, weightElementBytes: CPU_ELEMENT_BYTES, kvElementBytes: 4, blockSize: 16 }, { batchSize: 2, inputLen: 8, outputLen: 4, stepSeconds: 1 }, null);
  assert.equal(r.weight_bytes_per_step, weightBytesReadPerStep(model, 2, CPU_ELEMENT_BYTES));
  assert.ok(r.weight_bytes_per_step < (DENSE + LINEAR) * CPU_ELEMENT_BYTES / 2);
});

test('quantized MoE experts each count their share of the stacked experts: int4 codes, scales and zero codes', async () => {
  const { model } = await loadModel({ model: 'test/fixtures/qwen3-moe', backend: 'cpu', quantization: 'int4', showProgress: false });
  const experts = model.parameters().filter((p) => p.access?.kind === 'expert');
  // 2 sparse layers of 8 experts: gate and up [16, 64], down [64, 16]; int4 groups of min(128, columns).
  assert.equal(experts.length, 2 * 8 * 3);
  for (const { name, shape: [rows, cols], stored } of experts) {
    assert.deepEqual(stored, { elements: 0, bytes: rows * (cols / 2 + 5) }, name);
  }
});
