import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EngineStats } from '../../src/engine/llm-engine.ts';
import { combinedStats } from '../../src/server/engine-host/combined-stats.ts';
import type { ReplicaState } from '../../src/server/engine-host/engine-replicas.ts';
import { ServerMetrics } from '../../src/server/metrics.ts';
import { idleEngineStats } from './idle-engine-stats.ts';
import { metricValue } from './tiny-server.ts';

// The metrics routers read, from replicas' stats given by hand: every replica together under
// vLLM's names (the Gateway API Inference Extension's endpoint picker reads one series per pod),
// each replica alone under keel_replica_*.

const stats = (overrides: Partial<EngineStats>): EngineStats => idleEngineStats(100, overrides);

const replica = (alive: boolean, s: EngineStats): ReplicaState => ({ alive, restarting: false, restarts: 0, stats: s, outstanding: s.numRunning + s.numWaiting, routed: { sticky: 0, prefix: 1, load: 2 } });

function metricsOf(replicas: () => ReplicaState[]): ServerMetrics {
  return new ServerMetrics('dp', { info: { blockSize: 16, maxLoras: 4 }, loraAdapters: [], stats: () => combinedStats(replicas()), replicaStates: replicas });
}

test('the picker\'s metrics sum the live replicas: queue, running, KV use over both pools, cache geometry', async () => {
  const replicas = [
    replica(true, stats({ numRunning: 3, numWaiting: 2, numFreeKvBlocks: 40, promptTokensTotal: 50, deviceCachedPromptTokensTotal: 16, runningLoraAdapters: ['b'] })),
    replica(true, stats({ numRunning: 1, numWaiting: 4, numFreeKvBlocks: 80, promptTokensTotal: 30, waitingLoraAdapters: ['a', 'b'] })),
  ];
  const text = (await metricsOf(() => replicas).render()).body;
  assert.equal(metricValue(text, 'vllm:num_requests_waiting'), 6);
  assert.equal(metricValue(text, 'vllm:num_requests_running'), 4);
  assert.equal(metricValue(text, 'vllm:kv_cache_usage_perc'), 80 / 200);
  assert.equal(metricValue(text, 'vllm:gpu_cache_usage_perc'), 80 / 200);
  assert.equal(metricValue(text, 'vllm:cache_config_info', { block_size: '16', num_gpu_blocks: '200' }), 1);
  assert.ok(text.includes('vllm:lora_requests_info{running_lora_adapters="b",waiting_lora_adapters="a,b",max_lora="4"'), text);
  assert.equal(metricValue(text, 'keel_prefix_cache_hit_ratio'), 16 / 80);
  assert.deepEqual(['0', '1'].map((r) => metricValue(text, 'keel_replica_kv_cache_usage_ratio', { replica: r })), [0.6, 0.2]);
  assert.deepEqual(['0', '1'].map((r) => metricValue(text, 'keel_replica_routed_requests_total', { replica: r, reason: 'load' })), [2, 2]);
});

test('a dead replica leaves the gauges and the pool but its totals stay counted, and the LoRA series is re-dated only when it changes', async () => {
  let replicas = [replica(true, stats({ numRunning: 2, numFreeKvBlocks: 50, generationTokensTotal: 70, runningLoraAdapters: ['a'] })), replica(true, stats({ generationTokensTotal: 30 }))];
  const metrics = metricsOf(() => replicas);
  const loraSince = (text: string) => metricValue(text, 'vllm:lora_requests_info');
  const first = (await metrics.render()).body;
  assert.equal(metricValue(first, 'keel_generation_tokens_total'), 100);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(loraSince((await metrics.render()).body), loraSince(first), 'unchanged labels keep their date');
  replicas = [replica(false, replicas[0].stats), replicas[1]];
  const text = (await metrics.render()).body;
  assert.equal(metricValue(text, 'vllm:num_requests_running'), 0);
  assert.equal(metricValue(text, 'vllm:kv_cache_usage_perc'), 0);
  assert.equal(metricValue(text, 'vllm:cache_config_info', { num_gpu_blocks: '100' }), 1);
  assert.equal(metricValue(text, 'vllm:cache_config_info', { num_gpu_blocks: '200' }), null, 'the old geometry is gone');
  assert.equal(metricValue(text, 'keel_generation_tokens_total'), 100, 'a counter never goes back');
  assert.equal(metricValue(text, 'keel_replica_up', { replica: '0' }), 0);
  assert.ok(loraSince(text)! > loraSince(first)!, 'the adapter list changed: a newer date');
  assert.ok(text.includes('running_lora_adapters=""'));
});
