import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { FIXTURES_DIR } from '../helpers/oracle-fixtures.ts';
import { metricValue, startTinyServer, waitForIdleEngine } from './tiny-server.ts';

test('keel serve with a host tier reports prefix-cache hits by tier in /metrics and /v1/engine/stats', async () => {
  // 12 blocks of 8 tokens: a 40-token prompt after the history takes every block, evicting it to the host.
  const server = await startTinyServer({ defaultModel: true, engine: { numKvBlocks: 12, blockSize: 8, kvOffloadGb: 0.01 } });
  try {
    const complete = async (prompt: number[]) => {
      const body = { prompt, max_tokens: 4, temperature: 0, ignore_eos: true };
      const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(response.status, 200);
      await response.text();
    };
    const history = Array.from({ length: 48 }, (_, i) => 100 + i);
    await complete(history);
    // Served from the device pool.
    await complete([...history, 7]);
    await complete(Array.from({ length: 90 }, (_, i) => 3000 + i));
    // Evicted by the long prompt: loaded from the host.
    await complete([...history, 8]);
    await waitForIdleEngine(server.url);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const device = metricValue(text, 'keel_prefix_cache_hit_tokens_total', { tier: 'device' });
    const host = metricValue(text, 'keel_prefix_cache_hit_tokens_total', { tier: 'host' });
    assert.equal(device, 48);
    assert.equal(host, 48);
    const prompts = metricValue(text, 'keel_prompt_tokens_total')!;
    assert.equal(metricValue(text, 'keel_prefix_cache_hit_ratio_by_tier', { tier: 'host' }), 48 / prompts);
    assert.equal(metricValue(text, 'keel_prefix_cache_hit_ratio'), 96 / prompts);
    assert.ok(metricValue(text, 'keel_host_kv_cache_cached_blocks')! >= 6);
    const stats = (await (await fetch(`${server.url}/v1/engine/stats`)).json()) as { prefix_cache_hit_tokens: { device: number; host: number }; host_kv_cache: { total_blocks: number } };
    assert.deepEqual(stats.prefix_cache_hit_tokens, { device: 48, host: 48 });
    assert.equal(stats.host_kv_cache.total_blocks, metricValue(text, 'keel_host_kv_cache_total_blocks'));
  } finally {
    await server.close();
  }
});

test('keel serve with a hybrid (Gated DeltaNet) model serves a repeated prompt from the prefix cache and reports its state checkpoints', async () => {
  const server = await startTinyServer({ modelDir: join(FIXTURES_DIR, 'qwen3.5-hybrid'), engine: { blockSize: 4, numStateCheckpoints: 8 } });
  try {
    const prompt = Array.from({ length: 22 }, (_, i) => 10 + i);
    for (let run = 0; run < 2; run++) {
      const body = { prompt, max_tokens: 4, temperature: 0, ignore_eos: true };
      const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(response.status, 200);
      await response.text();
    }
    await waitForIdleEngine(server.url);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    // The first run's prefill stopped at 20, the last block boundary before its last token, and kept the state there.
    assert.equal(metricValue(text, 'keel_prefix_cache_hit_tokens_total', { tier: 'device' }), 20);
    const checkpoints = metricValue(text, 'keel_state_checkpoints')!;
    assert.ok(checkpoints >= 1 && checkpoints <= 8, `${checkpoints} state checkpoints`);
  } finally {
    await server.close();
  }
});
