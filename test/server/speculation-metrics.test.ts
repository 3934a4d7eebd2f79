import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EngineStats } from '../../src/engine/llm-engine.ts';
import { SpeculationTally } from '../../src/engine/speculation-tally.ts';
import { ServerMetrics } from '../../src/server/metrics.ts';
import type { MeteredEngine } from '../../src/server/router-metrics.ts';
import { idleEngineStats } from './idle-engine-stats.ts';
import { metricValue, startTinyServer } from './tiny-server.ts';

const engineStats = (speculation: SpeculationTally | null): EngineStats => idleEngineStats(8, { speculation: speculation?.summary() ?? null });

/** One engine whose stats are read from `stats` at each scrape, as the metrics see it. */
function metered(stats: () => EngineStats): MeteredEngine {
  return { info: { blockSize: 16, maxLoras: 1 }, loraAdapters: null, stats, replicaStates: () => [{ alive: true, restarting: false, restarts: 0, stats: stats(), outstanding: 0, routed: { sticky: 0, prefix: 0, load: 0 } }] };
}

test('/metrics reports speculative decoding: totals, acceptance rate, mean accepted length and per-position acceptance', async () => {
  const tally = new SpeculationTally();
  tally.record(3, 1);
  tally.record(3, 3);
  const metrics = new ServerMetrics('spec', metered(() => engineStats(tally)));
  let text = (await metrics.render()).body;
  assert.equal(metricValue(text, 'keel_spec_decode_num_drafts_total'), 2);
  assert.equal(metricValue(text, 'keel_spec_decode_num_draft_tokens_total'), 6);
  assert.equal(metricValue(text, 'keel_spec_decode_num_accepted_tokens_total'), 4);
  assert.equal(metricValue(text, 'keel_spec_decode_acceptance_ratio'), 4 / 6);
  assert.equal(metricValue(text, 'keel_spec_decode_mean_accepted_length'), 3);
  assert.equal(metricValue(text, 'keel_spec_decode_num_accepted_tokens_per_pos_total', { position: '0' }), 2);
  assert.equal(metricValue(text, 'keel_spec_decode_num_accepted_tokens_per_pos_total', { position: '2' }), 1);
  assert.equal(metricValue(text, 'keel_spec_decode_num_draft_tokens_per_pos_total', { position: '2' }), 2);
  assert.equal(metricValue(text, 'keel_spec_decode_acceptance_ratio_per_pos', { position: '1' }), 0.5);
  // Counters advance by what the engine added between scrapes.
  tally.record(1, 0);
  text = (await metrics.render()).body;
  assert.equal(metricValue(text, 'keel_spec_decode_num_drafts_total'), 3);
  assert.equal(metricValue(text, 'keel_spec_decode_num_accepted_tokens_per_pos_total', { position: '0' }), 2);
  assert.equal(metricValue(text, 'keel_spec_decode_acceptance_ratio_per_pos', { position: '0' }), 2 / 3);
});

test('/metrics has no speculative decoding metrics when the engine does not speculate', async () => {
  const text = (await new ServerMetrics('plain', metered(() => engineStats(null))).render()).body;
  assert.doesNotMatch(text, /keel_spec_decode/);
});

test('keel serve with n-gram drafts reports their figures in /metrics and /v1/engine/stats', async () => {
  const server = await startTinyServer({ defaultModel: true, engine: { speculative: { method: 'ngram', ngramMin: 1 } } });
  try {
    const body = { prompt: 'x = [1, 2, 3]\nx = [1, 2, 3]\n', max_tokens: 24, temperature: 0 };
    const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(response.status, 200);
    await response.text();
    // The engine thread sends its figures after each step, the last step's after its tokens went
    // out: read them once it reports nothing running, so that both endpoints see the same step.
    await engineIdle(server.url);
    const text = (await (await fetch(`${server.url}/metrics`)).text());
    const drafted = metricValue(text, 'keel_spec_decode_num_draft_tokens_total') ?? 0;
    assert.ok(drafted > 0, 'drafts were verified');
    assert.ok((metricValue(text, 'keel_spec_decode_mean_accepted_length') ?? 0) >= 1);
    const stats = (await (await fetch(`${server.url}/v1/engine/stats`)).json()) as { speculative_decoding: { draft_tokens: number } };
    assert.equal(stats.speculative_decoding.draft_tokens, drafted);
  } finally {
    await server.close();
  }
});

async function engineIdle(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const stats = (await (await fetch(`${url}/v1/engine/stats`)).json()) as { running: number; waiting: number };
    if (stats.running === 0 && stats.waiting === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('the engine still reports requests running 2 s after the last response');
}
