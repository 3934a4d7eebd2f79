import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ggufFromCheckpoint } from './helpers/gguf-from-checkpoint.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { assertCudaLogitsNearCpu } from './helpers/prompt-logits.ts';
import { checkGreedy, checkLogits } from './helpers/transformers-parity.ts';

// GGUF files on the CUDA backend: the shipped model in Q8_0 and fixtures of each architecture family as stored, against
// transformers' float32 reference with the CUDA parity suite's bf16 allowances.
const work = mkdtempSync(join(tmpdir(), 'keel-gguf-gpu-'));
after(() => rmSync(work, { recursive: true, force: true }));
const CUDA = { backend: 'cuda', logitTolerance: 0.125, acceptBf16ReferenceError: true, greedy: 'top-candidates' } as const;

for (const [name, matrixType] of [['llama-gqa', 'source'], ['mixtral-moe', 'source'], ['qwen3-qknorm', 'source'], ['gemma-mqa', 'source'], ['gemma3-text', 'source'], ['phi3-longrope', 'source'], ['deepseek-v2-lite', 'source']] as const) {
  test(`${name} from a GGUF file on CUDA gives transformers' logits and greedy tokens (bf16 allowances)`, async () => {
    const fixture = listOracleFixtures().find((f) => f.name === name)!;
    const path = join(work, `${name}.gguf`);
    ggufFromCheckpoint(fixture.dir, path, { matrixType });
    await checkLogits({ ...fixture, dir: path }, CUDA);
    await checkGreedy({ ...fixture, dir: path }, CUDA, {}, false);
  });
}

test('keel-tiny in Q8_0 from a GGUF file on CUDA keeps transformers\' greedy tokens up to bf16 near-ties', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'keel-tiny')!;
  const path = join(work, 'keel-tiny-q8_0.gguf');
  ggufFromCheckpoint(fixture.dir, path, { matrixType: 'Q8_0' });
  // Q8_0's rounding (test/gguf-models.test.ts: up to 0.1 of the logits' deviation) beside bf16 activations'.
  await checkLogits({ ...fixture, dir: path }, { ...CUDA, logitTolerance: 0.25 });
  await checkGreedy({ ...fixture, dir: path }, CUDA, {}, false);
});

test('keel-tiny in Q4_0, Q4_K and Q6_K (repacked int4, Q4_K with mins; int8 in groups of 16) from a GGUF file gives the CPU backend\'s logits on CUDA within bf16 allowances', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'keel-tiny')!;
  for (const matrixType of ['Q4_0', 'Q4_K', 'Q6_K'] as const) {
    const path = join(work, `keel-tiny-${matrixType}.gguf`);
    ggufFromCheckpoint(fixture.dir, path, { matrixType });
    await assertCudaLogitsNearCpu({ model: path }, fixture.oracle.prompts, matrixType);
  }
});
