import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LoadTimeQuantization } from '../src/tensor/quantize-rtn.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { assertCudaLogitsNearCpu } from './helpers/prompt-logits.ts';

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
    for (const [what, prompts] of Object.entries(batches)) await assertCudaLogitsNearCpu({ model: fixture.dir, quantization }, prompts, what);
  });
}
