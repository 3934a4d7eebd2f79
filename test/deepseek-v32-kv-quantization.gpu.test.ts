import assert from 'node:assert/strict';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { describeBatch } from '../src/step/batch.ts';
import { resolveKvCacheDtype, type KvCacheDtypeName } from '../src/step/kv-cache-layout.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';

// DeepSeek-V3.2 (the deepseek-v32 fixture: sparse MLA through the lightning indexer in every layer)
// with fp8 and int8 KV caches on CUDA, against the CPU backend with the same cache
// (test/deepseek-v32-engine.test.ts is the CPU side; test/backend/cuda/lightning-indexer.gpu.test.ts
// checks the kernels one by one). The fixture keeps 8 positions a token, so a bf16 rounding or an
// 8-bit code one apart can change which positions a token attends to, and its logits by far more
// than the rounding itself (transformers in bf16 moves them by up to 1.14: oracle.json): its logits
// are held to that, and greedy runs use a copy that keeps every position.

const fixture = listOracleFixtures().find((f) => f.name === 'deepseek-v32')!;
const DTYPES = ['fp8', 'int8'] as const;

/** Last-token logits of the fixture's prompts, prefilled together in one step into a cache of `dtype`. */
async function promptLogits(backend: 'cpu' | 'cuda', dtype: KvCacheDtypeName): Promise<Float32Array[]> {
  const blockSize = 16;
  const loaded = await loadModel({ model: fixture.dir, backend, showProgress: false, blockSize });
  try {
    let next = 0;
    const chunks = fixture.oracle.prompts.map((tokens) => {
      const blocks = Math.ceil(tokens.length / blockSize);
      const blockTable = Array.from({ length: blocks }, (_, i) => next + i);
      next += blocks;
      return { tokens, startPos: 0, blockTables: [blockTable] };
    });
    const cache = loaded.backend.createKvCache({ numBlocks: next, blockSize, layers: loaded.model.kvLayers, dtype: resolveKvCacheDtype(dtype) });
    const logits = loaded.backend.toHost(loaded.model.forward(loaded.backend, loaded.backend.beginStep(describeBatch(chunks, blockSize)), cache));
    const vocab = loaded.modelConfig.vocabSize;
    return chunks.map((_, i) => logits.slice(i * vocab, (i + 1) * vocab));
  } finally {
    loaded.backend.dispose();
  }
}

function standardDeviation(values: ArrayLike<number>): number {
  const mean = Array.from(values).reduce((a, v) => a + v, 0) / values.length;
  return Math.sqrt(Array.from(values).reduce((a, v) => a + (v - mean) ** 2, 0) / values.length);
}

test('deepseek-v32 prompt logits with fp8 and int8 KV on CUDA: within the bf16 parity tolerance plus twice the CPU\'s own 8-bit drift of the CPU\'s with the same cache', async () => {
  const exact = await promptLogits('cpu', 'auto');
  for (const dtype of DTYPES) {
    const [cpu, cuda] = [await promptLogits('cpu', dtype), await promptLogits('cuda', dtype)];
    cpu.forEach((row, i) => {
      // What bf16 alone may cost (the CUDA parity suite's bound), plus the cache's drift once on each backend.
      const bf16 = Math.max(0.125 * standardDeviation(fixture.oracle.last_logits[i]), fixture.oracle.bf16_max_abs_dlogit![i]);
      const drift = maxAbsDiff(row, exact[i]);
      const diff = maxAbsDiff(cuda[i], row);
      console.log(`# ${dtype} prompt ${i}: CUDA vs CPU max |Δlogit| ${diff.toFixed(4)} (bf16 bound ${bf16.toFixed(4)}, CPU ${dtype} drift ${drift.toFixed(4)})`);
      assert.ok(diff <= bf16 + 2 * drift, `${dtype} prompt ${i}: max |Δlogit| ${diff} > ${bf16} + 2 × ${drift}`);
    });
  }
});

const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: fixture.oracle.max_new_tokens, logprobs: 2 } as const;
const NGRAM: EngineOptions['speculative'] = { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 };

/**
 * The fixture with index_topk 128, its whole context: every token keeps every position, so the
 * sparse path (indexer, 8-bit key and row writes, sparse MLA) runs without a selection that bf16
 * differences between batch shapes could flip, and greedy tokens can be held to near-ties.
 */
function coveringFixture(t: TestContext): string {
  const dir = tempDir(t, 'keel-v32-covering-');
  const config = JSON.parse(readFileSync(join(fixture.dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, index_topk: config.max_position_embeddings }));
  for (const file of ['generation_config.json', 'model.safetensors']) symlinkSync(join(fixture.dir, file), join(dir, file));
  return dir;
}

async function generate(model: string, options: EngineOptions) {
  const llm = await LLM.load({ model, backend: 'cuda', showProgress: false, numKvBlocks: 256, ...options });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, GREEDY);
    return { outputs, speculation: llm.stats().speculation };
  } finally {
    await llm.close();
  }
}

test('deepseek-v32 (index_topk covering the context) with fp8 and int8 KV on CUDA: eager steps, 7-token prefill chunks and n-gram verification give the graph-replayed run\'s tokens up to bf16 near-ties', async (t) => {
  const model = coveringFixture(t);
  for (const kvCacheDtype of DTYPES) {
    const plain = await generate(model, { kvCacheDtype });
    const expected = plain.outputs.map((o) => o.outputs[0]);
    for (const options of [{ enforceEager: true }, { maxNumBatchedTokens: 7, blockSize: 4 }, { speculative: NGRAM }] as EngineOptions[]) {
      const run = await generate(model, { kvCacheDtype, ...options });
      if (options.speculative !== undefined) assert.ok(run.speculation!.numDraftTokens > 0, `${kvCacheDtype}: drafts were verified: ${JSON.stringify(run.speculation)}`);
      assertGreedyUpToNearTie(run.outputs, expected, `${kvCacheDtype} ${JSON.stringify(options)}: `);
    }
  }
});
