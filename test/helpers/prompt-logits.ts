import assert from 'node:assert/strict';
import type { Backend } from '../../src/backend/backend.ts';
import type { EngineOptions } from '../../src/config.ts';
import { loadModel } from '../../src/engine/load-engine.ts';
import type { CausalLM } from '../../src/models/causal-lm.ts';
import { describeBatch } from '../../src/step/batch.ts';
import { traceBackend } from '../../scripts/backend-comparison.ts';
import { maxAbsDiff, type OracleFixture } from './oracle-fixtures.ts';
import { unexcusedBySelectionNearTies } from './selection-near-tie.ts';

/** Last-token logits of a fixture's oracle prompts, prefilled together in one step. */
export function promptLogits(backend: Backend, model: CausalLM, fixture: OracleFixture): Float32Array[] {
  return lastTokenLogits(backend, model, fixture.oracle.prompts);
}

/** Last-token logits of token-id prompts, prefilled together in one step. */
export function lastTokenLogits(backend: Backend, model: CausalLM, prompts: readonly number[][]): Float32Array[] {
  const blockSize = 16;
  let next = 0;
  const chunks = prompts.map((tokens) => {
    const blocks = Math.ceil(tokens.length / blockSize);
    const blockTable = Array.from({ length: blocks }, (_, i) => next + i);
    next += blocks;
    return { tokens, startPos: 0, blockTables: [blockTable] };
  });
  const cache = backend.createKvCache({ numBlocks: next, blockSize, layers: model.kvLayers });
  const logits = backend.toHost(model.forward(backend, backend.beginStep(describeBatch(chunks, blockSize)), cache));
  const vocab = logits.length / chunks.length;
  return chunks.map((_, i) => logits.slice(i * vocab, (i + 1) * vocab));
}

/**
 * Last-token logits of `prompts` on the CPU and the CUDA backend, each loaded from `options`: every
 * CUDA row within an eighth of the CPU row's spread (standard deviation) of it, the bf16 allowance
 * of the CUDA tests that check a weight format against its CPU twin end to end. A row past that is
 * accepted when the CPU backend rounding weights and activations to bf16 as CUDA stores them (the
 * bf16 twin) lies as far from the float32 row, less the allowance: bf16 itself then flipped a
 * near-tie (an MoE expert choice), and the kernels add nothing beyond the allowance. Past both, a
 * prompt whose float32 run made a choice within SELECTION_NEAR_TIE is excused (at most half of them:
 * selection-near-tie.ts): CUDA's rounding, not the twin's, flipped it.
 */
export async function assertCudaLogitsNearCpu(options: Omit<EngineOptions, 'backend'>, prompts: readonly number[][], what: string): Promise<void> {
  const logits = async (backend: 'cpu' | 'cuda') => {
    const loaded = await loadModel({ ...options, backend, showProgress: false });
    try {
      return lastTokenLogits(loaded.backend, loaded.model, prompts);
    } finally {
      loaded.backend.dispose();
    }
  };
  const [cpu, cuda] = [await logits('cpu'), await logits('cuda')];
  let twin: Float32Array[] | null = null;
  const failures = new Map<number, string>();
  for (const [i, row] of cpu.entries()) {
    const mean = row.reduce((a, b) => a + b, 0) / row.length;
    const allowance = 0.125 * Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length);
    const diff = maxAbsDiff(cuda[i], row);
    if (diff <= allowance) continue;
    assert.ok(options.model !== undefined, 'a model directory');
    twin ??= (await traceBackend(options.model, 'cpu-bf16', prompts, { ops: false, quantization: options.quantization })).logits;
    const twinDiff = maxAbsDiff(twin[i], row);
    if (diff > twinDiff + allowance) failures.set(i, `${what}, prompt ${i}: max |Δlogit| ${diff} vs allowance ${allowance}, and the bf16 twin's ${twinDiff}`);
  }
  const unexcused = await unexcusedBySelectionNearTies(options.model!, prompts, failures, { quantization: options.quantization });
  assert.ok(unexcused.length === 0, unexcused.join('; '));
}
