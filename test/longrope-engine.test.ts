import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';

// LongRoPE's rotation depends on the prompt's length (docs/oracle-fixtures.md): a prompt longer
// than the original context (32 in the fixture) is rotated with the long factors from position 0,
// a shorter one with the short factors until position 32. The engine must keep the two apart in
// the prefix cache and must remember a preempted sequence's original prompt length.

const FIXTURE = join(FIXTURES_DIR, 'phi3-longrope');
const oracle = listOracleFixtures().find((f) => f.name === 'phi3-longrope')!.oracle;
const GREEDY = { temperature: 0, ignoreEos: true } as const;

test('a short prompt never reuses the KV blocks of a long prompt it is a prefix of', async () => {
  const long = oracle.prompts[3];
  assert.ok(long.length > 32);
  const short = long.slice(0, 20);
  const params = { ...GREEDY, maxTokens: 24 };
  const fresh = await LLM.load({ model: FIXTURE, backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks: 128 });
  const shared = await LLM.load({ model: FIXTURE, backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks: 128 });
  try {
    const [alone] = await fresh.generate([short], params);
    await shared.generate([long], params);
    const [afterLong] = await shared.generate([short], params);
    assert.equal(afterLong.metrics.numCachedTokens, 0, 'the long prompt\'s blocks were rotated with the long factors');
    assert.deepEqual(afterLong.outputs[0].tokenIds, alone.outputs[0].tokenIds);
    // Short prompts still share with one another.
    const [again] = await shared.generate([short], params);
    assert.equal(again.metrics.numCachedTokens, 16);
    assert.deepEqual(again.outputs[0].tokenIds, alone.outputs[0].tokenIds);
  } finally {
    await fresh.close();
    await shared.close();
  }
});

test('a short prompt preempted after passing the original context is recomputed with its own prompt length', async () => {
  // The 70-token prompt is older; the 17-token one, younger, is preempted once the 30-block pool
  // fills, about 17 tokens into its continuation (past position 32), and recomputed after.
  const llm = await LLM.load({ model: FIXTURE, backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks: 30 });
  try {
    const outputs = await llm.generate([oracle.prompts[3], oracle.prompts[1]], { ...GREEDY, maxTokens: oracle.max_new_tokens });
    assert.ok(outputs[1].metrics.numPreemptions > 0, 'the short prompt was meant to be preempted');
    assert.deepEqual(outputs[1].outputs[0].tokenIds, oracle.greedy[1]);
    assert.deepEqual(outputs[0].outputs[0].tokenIds, oracle.greedy[3]);
  } finally {
    await llm.close();
  }
});
