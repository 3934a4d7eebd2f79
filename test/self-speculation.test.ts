import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { checkUnchanged } from './helpers/speculative-parity.ts';

// Self-speculation (early exit): the target's first L layers with its final norm and LM head draft
// on the target's own weights and KV cache. Outputs equal plain decoding's, token for token, for a
// Llama and a DeepSeek (MLA + MoE) target, with small steps, small blocks and preemption.

for (const [name, layers] of [['llama-sharded', [1, 2]], ['deepseek-v3', [2]]] as const) {
  test(`self-speculation with the first ${layers.join(' or ')} layers of ${name} changes no request`, async () => {
    const base = { model: join(FIXTURES_DIR, name), backend: 'cpu', showProgress: false, numKvBlocks: 128, asyncScheduling: false } as const;
    const plain = await LLM.load(base);
    try {
      for (const selfSpecLayers of layers) {
        const speculative = { method: 'self', selfSpecLayers, numSpeculativeTokens: 3 } as const;
        // Random weights: the early exit rarely agrees with the whole model, so acceptance is not asserted.
        (await checkUnchanged(plain, base, { speculative }, false)).close();
        (await checkUnchanged(plain, base, { speculative, maxNumBatchedTokens: 5, blockSize: 4, numKvBlocks: 14 }, false)).close();
      }
    } finally {
      await plain.close();
    }
  });
}

test('self-speculation on the default model accepts drafts: its first layers already agree with it often', async () => {
  const base = { backend: 'cpu', showProgress: false, asyncScheduling: false } as const;
  const plain = await LLM.load(base);
  try {
    const prompt = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]];
    const expected = await plain.generate(prompt, { temperature: 0, maxTokens: 32, ignoreEos: true });
    const llm = await LLM.load({ ...base, speculative: { method: 'self', selfSpecLayers: 3, numSpeculativeTokens: 3 } });
    try {
      const outputs = await llm.generate(prompt, { temperature: 0, maxTokens: 32, ignoreEos: true });
      assert.deepEqual(outputs[0].outputs[0].tokenIds, expected[0].outputs[0].tokenIds);
      const speculation = llm.stats().speculation!;
      assert.ok(speculation.numAcceptedTokens > 0, `drafts were accepted: ${JSON.stringify(speculation)}`);
      console.log(`keel-tiny, first 3 of 4 layers: mean accepted length ${speculation.meanAcceptedLength?.toFixed(2)}`);
    } finally {
      await llm.close();
    }
  } finally {
    await plain.close();
  }
});

test('self-speculation needs a layer count within the target, and only self takes one', async () => {
  const base = { model: join(FIXTURES_DIR, 'llama-gqa'), backend: 'cpu', showProgress: false } as const;
  const refused = (options: EngineOptions, pattern: RegExp) => assert.rejects(LLM.load({ ...base, ...options }), (e: unknown) => e instanceof KeelError && pattern.test(e.message));
  await refused({ speculative: { method: 'self', selfSpecLayers: 2 } }, /first N of the target's 2 layers: N must be 1 to 1 \(got 2\)/);
  await refused({ speculative: { method: 'self' } }, /method self needs the draft's layer count/);
  await refused({ speculative: { method: 'ngram', selfSpecLayers: 1 } }, /selfSpecLayers \(--self-spec-layers\) is only for method self/);
  await refused({ model: join(FIXTURES_DIR, 'gemma2-softcap'), speculative: { method: 'self', selfSpecLayers: 2 } }, /self-speculation \(--speculative-method self\) is not supported for gemma2 models/);
});
