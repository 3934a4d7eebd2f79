import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { metricValue, startTinyServer, waitForIdleEngine } from './tiny-server.ts';

// Stored responses do not pin their KV blocks (docs/responses-api.md says why): under a full
// pool other traffic evicts them, and the prefix cache's host tier is what keeps a conversation's
// follow-up from recomputing its first turn. Both sides on the default model, with a pool of 12
// blocks of 8 tokens that one long unrelated prompt fills.
const BLOCK_SIZE = 8;

async function followUpAfterPressure(kvOffloadGb: number): Promise<{ cached: number; firstTurn: number; hostHits: number }> {
  const server = await startTinyServer({ defaultModel: true, engine: { numKvBlocks: 12, blockSize: BLOCK_SIZE, kvOffloadGb } });
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
    const model = (await client.models.list()).data[0].id;
    const first = await client.responses.create({ model, input: 'def fibonacci(n):', max_output_tokens: 24, temperature: 0 });
    // 90 tokens of another request take every block the first turn left cached.
    const other = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: Array.from({ length: 90 }, (_, i) => 3000 + i), max_tokens: 4, temperature: 0, ignore_eos: true }),
    });
    assert.equal(other.status, 200);
    await other.text();
    const follow = await client.responses.create({ model, previous_response_id: first.id, input: 'and in C?', max_output_tokens: 4, temperature: 0 });
    await waitForIdleEngine(server.url);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const { input_tokens: inputTokens, output_tokens: outputTokens } = first.usage!;
    return {
      cached: follow.usage!.input_tokens_details.cached_tokens,
      firstTurn: inputTokens + outputTokens,
      hostHits: metricValue(metrics, 'keel_prefix_cache_hit_tokens_total', { tier: 'host' }) ?? 0,
    };
  } finally {
    await server.close();
  }
}

test('a stored response\'s follow-up after other traffic filled the pool: recomputed without a host tier, its first turn loaded from the host tier with one', async () => {
  const without = await followUpAfterPressure(0);
  assert.equal(without.cached, 0, JSON.stringify(without));
  const withTier = await followUpAfterPressure(0.01);
  // Every full block of the first turn (its prompt and output but the last, never run, output token).
  const firstTurnBlocks = Math.floor((withTier.firstTurn - 1) / BLOCK_SIZE) * BLOCK_SIZE;
  assert.equal(withTier.cached, firstTurnBlocks, JSON.stringify(withTier));
  assert.equal(withTier.hostHits, firstTurnBlocks, JSON.stringify(withTier));
});
