import { test } from 'node:test';
import { assertOffloadKeepsTokens } from './helpers/weight-offload-runs.ts';

// Weight offload on CUDA over keel-tiny (test/weight-offload.test.ts is the CPU side): pinned host
// copies, the copy stream and its events. The same kernels read the same bf16 values, so the
// tokens are those of the model kept whole, run eagerly as offload runs (no CUDA graphs).

const BASE = { backend: 'cuda', showProgress: false, numKvBlocks: 256, maxNumBatchedTokens: 64, enforceEager: true } as const;
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 48 } as const;
const PROMPTS = [[5, 9, 2, 77, 31], Array.from({ length: 150 }, (_, i) => 100 + 3 * i), [8, 8, 100, 3, 41, 2, 9, 19, 4]];

test('CUDA: streaming one to all of keel-tiny\'s layers from pinned host memory gives the tokens of the model kept whole', async () => {
  await assertOffloadKeepsTokens(BASE, PROMPTS, GREEDY);
});
