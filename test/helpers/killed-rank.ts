import assert from 'node:assert/strict';
import type { LLM } from '../../src/engine/llm.ts';
import { EngineClient } from '../../src/server/engine-host/engine-client.ts';
import { EngineReplicas } from '../../src/server/engine-host/engine-replicas.ts';
import { startServer } from '../../src/server/server.ts';

/**
 * Serves `llm` (a parallel run), kills rank `rank`'s worker, and checks that a request then fails
 * at once with an error of kind `unavailable` whose message matches `failure`, and that the
 * server answers 503. Closes `llm`.
 */
export async function assertKilledRankFailsLoudly(llm: LLM, rank: number, prompt: number[], failure: RegExp): Promise<void> {
  const engine = new EngineReplicas([await EngineClient.inThisThread(llm)]);
  const server = await startServer({ engine, host: '127.0.0.1', port: 0, logLevel: 'error' });
  try {
    const complete = () => fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 4 }), signal: AbortSignal.timeout(60_000) });
    assert.equal((await complete()).status, 200, 'every rank serves');
    llm.parallelRanks!.kill(rank);
    // The watcher reports the exit; until then a step could still be waiting on the rank, which must not hang either.
    await assert.rejects(llm.generate([prompt], { temperature: 0, ignoreEos: true, maxTokens: 32 }), (error: Error & { kind?: string }) => {
      assert.match(error.message, failure);
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
}
