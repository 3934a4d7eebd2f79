import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel } from '../src/engine/load-engine.ts';
import type { LoadTimeQuantization } from '../src/tensor/quantize-rtn.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';
import { lastTokenLogits } from './helpers/prompt-logits.ts';

// Quantized Llama 4 on CUDA (q/k rows moved as codes, fused experts quantized at load or a
// checkpoint's per-expert experts stacked, the experts' inputs weighted by their routes) and
// gpt-oss's fused experts quantized likewise, against the CPU backend on the same weights (which
// equals the dequantized model: test/llama4-quantization.test.ts), within the bf16 allowance of
// test/mixed-format-linears.gpu.test.ts. One token each runs the decode GEMVs, the prompts the
// grouped GEMMs.
const CASES: [fixture: string, quantization: LoadTimeQuantization | null][] = [
  ...['llama4-text', 'llama4-vl', 'gpt-oss'].flatMap((name) => (['fp8', 'int8', 'int4'] as const).map((method): [string, LoadTimeQuantization] => [name, method])),
  ['quant-llama4-text-ct-w4a16', null],
];

for (const [name, quantization] of CASES) {
  test(`${name}${quantization === null ? '' : ` with --quantization ${quantization}`} gives the CPU backend's logits on CUDA within bf16 allowances`, async () => {
    const fixture = listOracleFixtures().find((f) => f.name === name);
    assert.ok(fixture, `fixture ${name} is present`);
    const batches = { 'one token each': [[5], [9], [40]], prompts: fixture.oracle.prompts };
    for (const [what, prompts] of Object.entries(batches)) {
      const logits = async (backend: 'cpu' | 'cuda') => {
        const loaded = await loadModel({ model: fixture.dir, backend, quantization, showProgress: false });
        try {
          return lastTokenLogits(loaded.backend, loaded.model, prompts);
        } finally {
          loaded.backend.dispose();
        }
      };
      const [cpu, cuda] = [await logits('cpu'), await logits('cuda')];
      cpu.forEach((row, i) => {
        const mean = row.reduce((a, b) => a + b, 0) / row.length;
        const deviation = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length);
        const diff = maxAbsDiff(cuda[i], row);
        assert.ok(diff <= 0.125 * deviation, `${what}, prompt ${i}: max |Δlogit| ${diff} vs deviation ${deviation}`);
      });
    }
  });
}
