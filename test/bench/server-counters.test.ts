import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { parseServerCounters, scrapeServerCounters, serverMetricsOverRun, type ServerCounters } from '../../src/bench/server-counters.ts';
import type { EngineStats } from '../../src/engine/llm-engine.ts';
import { SpeculationTally } from '../../src/engine/speculation-tally.ts';
import { ServerMetrics } from '../../src/server/metrics.ts';
import type { MeteredEngine } from '../../src/server/router-metrics.ts';
import { idleEngineStats } from '../server/idle-engine-stats.ts';

/** The server's own renderer over an engine whose stats are read from `stats` at each scrape. */
function metricsOf(stats: () => EngineStats): ServerMetrics {
  const engine: MeteredEngine = {
    info: { blockSize: 16, maxLoras: 1 },
    loraAdapters: null,
    stats,
    replicaStates: () => [{ alive: true, restarting: false, restarts: 0, stats: stats(), outstanding: 0, routed: { sticky: 0, prefix: 0, load: 0 } }],
  };
  return new ServerMetrics('tiny', engine);
}

test('the bench reads a speculating server\'s counters from the text its metrics renderer writes, and differences two readings', async () => {
  const tally = new SpeculationTally();
  tally.record(3, 1);
  tally.record(3, 3);
  let stats = idleEngineStats(8, { promptTokensTotal: 100, deviceCachedPromptTokensTotal: 20, hostCachedPromptTokensTotal: 5, numPreemptionsTotal: 2, numSwapsTotal: 1, speculation: tally.summary() });
  const metrics = metricsOf(() => stats);
  const before = parseServerCounters((await metrics.render()).body);
  assert.deepEqual(before, {
    busySequences: 0,
    promptTokens: 100,
    deviceHitTokens: 20,
    hostHitTokens: 5,
    preemptions: 2,
    swaps: 1,
    speculation: { numSteps: 2, numDraftTokens: 6, numAcceptedTokens: 4, draftTokensByPosition: [2, 2, 2], acceptedTokensByPosition: [2, 1, 1] },
  });
  // The run: 4 verifications of up to 4 drafts, one draft beyond the earlier positions.
  for (const [drafts, accepted] of [[4, 4], [4, 1], [2, 0], [1, 1]]) tally.record(drafts, accepted);
  stats = { ...stats, numRunning: 1, numWaiting: 2, promptTokensTotal: 300, deviceCachedPromptTokensTotal: 120, hostCachedPromptTokensTotal: 55, numPreemptionsTotal: 5, numSwapsTotal: 1, speculation: tally.summary() };
  const after = parseServerCounters((await metrics.render()).body);
  assert.equal(after?.busySequences, 3);
  const run = serverMetricsOverRun(before, after);
  assert.deepEqual(run, {
    prompt_tokens: 200,
    prefix_cache_hit_rate: { device: 100 / 200, host: 50 / 200 },
    preemptions: 3,
    swaps: 0,
    speculation: {
      drafts: 4,
      draft_tokens: 11,
      accepted_tokens: 6,
      acceptance_rate: 6 / 11,
      // 1 + accepted / verifications: the tokens a verification gave on average.
      mean_accepted_length: 1 + 6 / 4,
      // In the run, position 0 was drafted 4 times and accepted 3 times; positions 1..3: 1 of 3, 1 of 2, 1 of 2.
      acceptance_rate_by_position: [3 / 4, 1 / 3, 1 / 2, 1 / 2],
    },
  });
});

test('a server that does not speculate has null speculation; one without Keel\'s counters, or a restart between readings, has no figures', async () => {
  const plain = parseServerCounters((await metricsOf(() => idleEngineStats(8, { promptTokensTotal: 40 })).render()).body);
  assert.equal(plain?.speculation, null);
  assert.equal(serverMetricsOverRun(plain, plain)?.speculation, null);
  assert.deepEqual(serverMetricsOverRun(plain, plain)?.prefix_cache_hit_rate, { device: 0, host: 0 });
  const vllm = '# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name="m"} 12.0\nvllm:num_requests_running{model_name="m"} 0.0\n';
  assert.equal(parseServerCounters(vllm), null);
  assert.equal(serverMetricsOverRun(null, plain), null);
  const restarted: ServerCounters = { ...plain!, promptTokens: 3 };
  assert.equal(serverMetricsOverRun(plain, restarted), null);
});

test('scrapeServerCounters waits for the server to report nothing running (its last step\'s totals), and is null without /metrics', async () => {
  // The first reading still shows the last step running, with its drafts not yet counted.
  let stats = idleEngineStats(8, { numRunning: 1, promptTokensTotal: 10 });
  const metrics = metricsOf(() => stats);
  let scrapes = 0;
  const server = createServer((request, response) => {
    if (request.url !== '/metrics') return response.writeHead(404).end();
    if (++scrapes === 2) stats = { ...stats, numRunning: 0, promptTokensTotal: 12 };
    void metrics.render().then(({ body }) => response.end(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const counters = await scrapeServerCounters(url, null);
    assert.equal(scrapes, 2);
    assert.deepEqual([counters?.busySequences, counters?.promptTokens], [0, 12]);
    assert.equal(await scrapeServerCounters(`${url}/elsewhere`, null), null);
  } finally {
    server.close();
  }
});
