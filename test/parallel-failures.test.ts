import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { EngineClient } from '../src/server/engine-host/engine-client.ts';
import { startServer } from '../src/server/server.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';

// A parallel run fails loudly, never hangs: a rank that dies makes the engine's next step fail
// with an error naming it (the server answers 503), and what cannot be split is refused at load.

const fixture = listOracleFixtures().find((f) => f.name === 'llama-gqa')!;
const load = (options: Parameters<typeof LLM.load>[0]) => LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, numKvBlocks: 64, ...options });
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 4 };

test('a killed rank makes every request fail at once with an error naming it, and the server answer 503', async () => {
  const llm = await load({ tensorParallelSize: 2 });
  const engine = await EngineClient.inThisThread(llm);
  const server = await startServer({ engine, host: '127.0.0.1', port: 0, logLevel: 'error' });
  try {
    const complete = () => fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 4 }), signal: AbortSignal.timeout(20_000) });
    assert.equal((await complete()).status, 200, 'both ranks serve');
    llm.parallelRanks!.kill(1);
    // The supervisor reports the exit; until then a step could still be waiting on the rank, which must not hang either.
    await assert.rejects(llm.generate([fixture.oracle.prompts[0]], GREEDY), (error: Error & { kind?: string }) => {
      assert.match(error.message, /parallel rank 1 failed: its worker exited/);
      assert.equal(error.kind, 'unavailable');
      return true;
    });
    const response = await complete();
    assert.equal(response.status, 503, await response.text());
  } finally {
    await server.close();
    await engine.close();
    await llm.close();
  }
});

test('a tensor-parallel size that does not divide what it splits is refused at load, naming both', async () => {
  await assert.rejects(load({ tensorParallelSize: 3 }), /tensor-parallel size 3 does not divide the vocabulary of model\.embed_tokens\.weight \(256\)/);
});

test('combinations a parallel run does not support yet are refused by name', async () => {
  await assert.rejects(load({ tensorParallelSize: 2, enableLora: true }), /LoRA adapters are not supported in parallel runs yet/);
  await assert.rejects(load({ tensorParallelSize: 2, preemptionMode: 'swap' }), /preemption by swap is not supported in parallel runs yet/);
  await assert.rejects(load({ tensorParallelSize: 2, kvOffloadGb: 1 }), /host tier \(kvOffloadGb\) is not supported in parallel runs yet/);
  await assert.rejects(load({ tensorParallelSize: 2, cpuOffloadGb: 1 }), /weight offload \(cpuOffloadGb\) is not supported in parallel runs yet/);
  await assert.rejects(load({ enableExpertParallel: true }), /give tensorParallelSize > 1 too/);
  await assert.rejects(load({ tensorParallelSize: 2, backend: 'cuda' }), /CPU backend only so far/);
});
