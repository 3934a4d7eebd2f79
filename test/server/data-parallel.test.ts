import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { LLM } from '../../src/engine/llm.ts';
import { EngineReplicas } from '../../src/server/engine-host/engine-replicas.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { tinyChatModelDir } from './tiny-chat-model.ts';
import { metricValue, startTinyServer, type TinyServer } from './tiny-server.ts';

// keel serve --data-parallel-size 2 on the CPU backend: two engine replicas, each a process of its
// own, behind one endpoint. The router sends a prompt to the replica that ran its leading blocks
// before, else to the less loaded one; a replica that dies fails its own requests with a 503
// while the other serves on, and is started again (--max-replica-restarts) to serve once more.

const BLOCK = 16;
// On CUDA each replica needs a GPU of its own.
const gpus = TEST_BACKEND === 'cuda' ? (await import('../../src/backend/cuda/availability.ts')).cudaAvailability() : null;
const skip = gpus !== null && (!gpus.ok || gpus.deviceCount < 2) ? 'two replicas on CUDA need two GPUs' : false;
const model = tinyChatModelDir({ max_position_embeddings: 4096 });
let single: TinyServer;
let replicas: TinyServer;

before(async () => {
  if (skip) return;
  const engine = { numKvBlocks: 256, blockSize: BLOCK };
  [single, replicas] = await Promise.all([
    startTinyServer({ modelDir: model.dir, engine }),
    startTinyServer({ modelDir: model.dir, engine: { ...engine, dataParallelSize: 2 } }),
  ]);
});

after(async () => {
  await Promise.all([single?.close(), replicas?.close()]);
  model.remove();
});

interface Completion {
  choices: { text: string; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens: number } | null };
}

async function complete(url: string, body: Record<string, unknown>): Promise<Completion> {
  const response = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(60_000) });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text) as Completion;
}

async function metrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

const tokens = (first: number, length: number) => Array.from({ length }, (_, i) => ((first + i * 7) % 250) + 3);

/** The per-replica counter `name` of both replicas. */
function perReplica(text: string, name: string, labels: Record<string, string> = {}): number[] {
  return ['0', '1'].map((replica) => metricValue(text, name, { replica, ...labels }) ?? 0);
}

test('two replicas give every request the same output as one engine: greedy, seeded sampling, n > 1, batched and streamed', { skip }, async () => {
  const bodies = [
    { prompt: tokens(1, 20), max_tokens: 12, temperature: 0, ignore_eos: true },
    { prompt: tokens(2, 37), max_tokens: 9, temperature: 0.8, seed: 11, ignore_eos: true },
    { prompt: tokens(3, 5), max_tokens: 7, temperature: 1, seed: 5, n: 3, ignore_eos: true },
    { prompt: [tokens(4, 18), tokens(5, 40), tokens(6, 3)], max_tokens: 6, temperature: 0, ignore_eos: true },
    { prompt: tokens(7, 33), max_tokens: 10, temperature: 0, logprobs: 2, ignore_eos: true },
  ];
  // All at once on the replicas, so that they share them; one by one on the single engine.
  const fromReplicas = await Promise.all(bodies.map((body) => complete(replicas.url, body)));
  for (const [i, body] of bodies.entries()) {
    const expected = await complete(single.url, body);
    assert.deepEqual(fromReplicas[i].choices, expected.choices, `request ${i}`);
    assert.equal(fromReplicas[i].usage.completion_tokens, expected.usage.completion_tokens);
  }
  const streamed = await fetch(`${replicas.url}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify({ messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8, temperature: 0, stream: true }),
  });
  const text = (await streamed.text())
    .split('\n\n')
    .filter((e) => e.startsWith('data: {'))
    .map((e) => (JSON.parse(e.slice('data: '.length)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
    .join('');
  const whole = (await (
    await fetch(`${single.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8, temperature: 0 }) })
  ).json()) as { choices: { message: { content: string } }[] };
  assert.equal(text, whole.choices[0].message.content);
  const routed = perReplica(await metrics(replicas.url), 'keel_replica_routed_requests_total', { reason: 'load' });
  assert.ok(routed.every((n) => n > 0), `both replicas ran some of the unrelated requests (${routed})`);
});

test('requests sharing a prefix go to the replica that holds it, and are served from its prefix cache', { skip }, async () => {
  const before = await metrics(replicas.url);
  const shared = tokens(100, 4 * BLOCK);
  for (let i = 0; i < 6; i++) await complete(replicas.url, { prompt: [...shared, 200 + i, 201 + i], max_tokens: 3, temperature: 0, ignore_eos: true });
  const after = await metrics(replicas.url);
  const delta = (name: string, labels: Record<string, string> = {}) => perReplica(after, name, labels).map((v, r) => v - perReplica(before, name, labels)[r]);
  const promptTokens = delta('keel_replica_prompt_tokens_total');
  const holder = promptTokens[0] > 0 ? 0 : 1;
  assert.deepEqual(promptTokens, holder === 0 ? [6 * 66, 0] : [0, 6 * 66], 'every one ran on one replica');
  assert.equal(delta('keel_replica_routed_requests_total', { reason: 'prefix' })[holder], 5, 'the first by load, the rest by their prefix');
  assert.equal(delta('keel_replica_prefix_cache_hit_tokens_total')[holder], 5 * 4 * BLOCK, 'each later one found the 4 shared blocks cached');
});

test('unrelated requests in flight together are spread over the replicas', { skip }, async () => {
  const before = perReplica(await metrics(replicas.url), 'keel_replica_prompt_tokens_total');
  await Promise.all(Array.from({ length: 8 }, (_, i) => complete(replicas.url, { prompt: tokens(300 + 13 * i, 24), max_tokens: 24, temperature: 0, ignore_eos: true })));
  const after = perReplica(await metrics(replicas.url), 'keel_replica_prompt_tokens_total');
  const added = after.map((v, r) => (v - before[r]) / 24);
  assert.equal(added[0] + added[1], 8);
  assert.ok(Math.abs(added[0] - added[1]) <= 2, `an even share each (${added})`);
});

test('a Responses API follow-up runs on the replica of the response it continues', { skip }, async () => {
  const create = async (body: Record<string, unknown>) => {
    const response = await fetch(`${replicas.url}/v1/responses`, { method: 'POST', body: JSON.stringify({ max_output_tokens: 6, temperature: 0, ...body }) });
    assert.equal(response.status, 200);
    return (await response.json()) as { id: string; usage: { input_tokens: number; input_tokens_details: { cached_tokens: number } } };
  };
  const first = await create({ input: 'My name is Ada and I like long walks by the sea.' });
  const before = perReplica(await metrics(replicas.url), 'keel_replica_routed_requests_total', { reason: 'sticky' });
  const follow = await create({ input: 'What is my name?', previous_response_id: first.id });
  const after = perReplica(await metrics(replicas.url), 'keel_replica_routed_requests_total', { reason: 'sticky' });
  assert.equal(after[0] + after[1] - before[0] - before[1], 1, 'routed as a follow-up');
  assert.ok(follow.usage.input_tokens_details.cached_tokens >= BLOCK, 'its conversation so far came from that replica\'s prefix cache');
});

test('/metrics carries the Gateway API Inference Extension\'s names for the whole server, and each replica\'s own', { skip }, async () => {
  const text = await metrics(replicas.url);
  for (const name of ['vllm:num_requests_waiting', 'vllm:num_requests_running']) assert.equal(metricValue(text, name), 0, name);
  for (const name of ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc']) {
    const usage = metricValue(text, name)!;
    assert.ok(usage >= 0 && usage <= 1, `${name} is a fraction (${usage})`);
    assert.equal(usage, metricValue(text, 'keel_kv_cache_usage_ratio'));
  }
  assert.equal(metricValue(text, 'vllm:cache_config_info', { block_size: String(BLOCK), num_gpu_blocks: '512' }), 1, 'two pools of 256 blocks');
  assert.deepEqual(perReplica(text, 'keel_replica_up'), [1, 1]);
  assert.equal(metricValue(text, 'vllm:lora_requests_info'), null, 'no LoRA, no adapter series');
  const stats = (await (await fetch(`${replicas.url}/v1/engine/stats`)).json()) as { kv_cache: { total_blocks: number }; replicas: { alive: boolean }[] };
  assert.equal(stats.kv_cache.total_blocks, 512);
  assert.deepEqual(stats.replicas.map((r) => r.alive), [true, true]);
});

interface Health {
  status: string;
  dead_replicas?: number[];
  restarting_replicas?: number[];
}

/** /health, which answers 503 only while no replica serves (`down`: that may be so now). */
async function health(url: string, down: boolean): Promise<Health> {
  const response = await fetch(`${url}/health`);
  if (down && response.status === 503) return { status: 'down' };
  assert.equal(response.status, 200, 'one replica serves: the server is up');
  return (await response.json()) as Health;
}

/** Polls /health until `done` holds of it (at most 60 s: a restart waits 1 s, then loads the model). */
async function healthUntil(url: string, done: (h: Health) => boolean, what: string, down = false): Promise<Health> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const h = await health(url, down);
    if (done(h)) return h;
    assert.ok(Date.now() < deadline, `${what} (last: ${JSON.stringify(h)})`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('a killed replica fails its own requests with a 503 while the other serves on; it is restarted, and serves again', { skip, timeout: 180_000 }, async () => {
  const send = (i: number, stream: boolean) =>
    fetch(`${replicas.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: tokens(500 + 31 * i, 20), max_tokens: 600, temperature: 0, ignore_eos: true, stream }) }).then(
      async (r) => ({ status: r.status, text: await r.text() }),
    );
  const running = [0, 1, 2, 3].map((i) => send(i, i % 2 === 1));
  let onReplica1 = 0;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const stats = (await (await fetch(`${replicas.url}/v1/engine/stats`)).json()) as { replicas: { running: number }[] };
    if (stats.replicas[0].running + stats.replicas[1].running === 4) {
      onReplica1 = stats.replicas[1].running;
      break;
    }
    assert.ok(Date.now() < deadline, 'the long requests did not all start');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(onReplica1 > 0 && onReplica1 < 4, 'both replicas run some');
  const promptTokensBefore = perReplica(await metrics(replicas.url), 'keel_replica_prompt_tokens_total');
  replicas.engine.kill(1);
  // Down, and waiting 1 s before its restart loads: routed around meanwhile.
  assert.deepEqual(await healthUntil(replicas.url, (h) => h.status === 'degraded', 'the replica was seen dead'), { status: 'degraded', dead_replicas: [1], restarting_replicas: [1] });
  const down = await metrics(replicas.url);
  assert.deepEqual(perReplica(down, 'keel_replica_up'), [1, 0]);
  assert.equal(metricValue(down, 'vllm:cache_config_info', { block_size: String(BLOCK), num_gpu_blocks: '256' }), 1, 'only the live pool counts');
  for (let i = 0; i < 3; i++) await complete(replicas.url, { prompt: tokens(900 + i, 8), max_tokens: 2 });
  const outcomes = await Promise.all(running);
  const failed = outcomes.filter((o) => o.status === 503 || o.text.includes('"code":"engine_dead"'));
  assert.equal(failed.length, onReplica1, 'the dead replica\'s requests, and only those, failed');
  for (const o of failed.filter((o) => o.status === 503)) assert.match(o.text, /"code":"engine_dead"/);
  for (const o of outcomes.filter((o) => !failed.includes(o))) {
    assert.equal(o.status, 200);
    assert.ok(!o.text.includes('"error"'), o.text.slice(0, 200));
  }
  assert.ok(replicas.logs.some((l) => l.msg === 'a replica stopped; the others serve on' && l.replica === 1 && l.restart_in_ms === 1000));

  await healthUntil(replicas.url, (h) => h.status === 'ok', 'the replica came back');
  const back = await metrics(replicas.url);
  assert.deepEqual(perReplica(back, 'keel_replica_up'), [1, 1]);
  assert.deepEqual(perReplica(back, 'keel_replica_restarts_total'), [0, 1]);
  assert.equal(metricValue(back, 'vllm:cache_config_info', { block_size: String(BLOCK), num_gpu_blocks: '512' }), 1, 'both pools again');
  assert.ok(replicas.logs.some((l) => l.msg === 'a replica restarted and serves again' && l.replica === 1 && l.restarts === 1));
  // Its counters carry on from before its death: they never go back.
  const promptTokensBack = perReplica(back, 'keel_replica_prompt_tokens_total');
  assert.ok(promptTokensBack[1] >= promptTokensBefore[1], `replica 1's prompt tokens ${promptTokensBefore[1]} before, ${promptTokensBack[1]} after its restart`);
  // New requests in flight together are spread over both again, and succeed on the restarted one.
  await Promise.all(Array.from({ length: 6 }, (_, i) => complete(replicas.url, { prompt: tokens(1000 + 17 * i, 24), max_tokens: 16, temperature: 0, ignore_eos: true })));
  const after = perReplica(await metrics(replicas.url), 'keel_replica_prompt_tokens_total');
  assert.ok(after[1] > promptTokensBack[1], 'the restarted replica ran some of them');
});

test('with --max-replica-restarts 1, a replica that dies again before it recovered stays down while the other serves on', { skip, timeout: 180_000 }, async () => {
  const server = await startTinyServer({ modelDir: model.dir, engine: { numKvBlocks: 64, blockSize: BLOCK, dataParallelSize: 2, maxReplicaRestarts: 1 } });
  try {
    server.engine.kill(0);
    await healthUntil(server.url, (h) => h.status === 'degraded', 'the replica was seen dead');
    await healthUntil(server.url, (h) => h.status === 'ok', 'the replica came back');
    server.engine.kill(0);
    const down = await healthUntil(server.url, (h) => h.status === 'degraded', 'the replica was seen dead again');
    assert.deepEqual(down, { status: 'degraded', dead_replicas: [0], restarting_replicas: [] }, 'no restart is left');
    assert.ok(server.logs.some((l) => l.msg === 'a replica stopped; the others serve on' && l.replica === 0 && l.restart_in_ms === null));
    for (let i = 0; i < 3; i++) await complete(server.url, { prompt: tokens(1200 + i, 8), max_tokens: 2 });
    const text = await metrics(server.url);
    assert.deepEqual(perReplica(text, 'keel_replica_up'), [0, 1]);
    assert.deepEqual(perReplica(text, 'keel_replica_restarts_total'), [1, 0]);
  } finally {
    await server.close();
  }
});

test('with every replica down, requests fail at once with a 503 until one is back; closing while a replica waits for its restart does not wait for it', { skip, timeout: 180_000 }, async () => {
  const server = await startTinyServer({ modelDir: model.dir, engine: { numKvBlocks: 64, blockSize: BLOCK, dataParallelSize: 2 } });
  let closed = false;
  try {
    server.engine.kill(0);
    server.engine.kill(1);
    const deadline = Date.now() + 30_000;
    while ((await fetch(`${server.url}/health`)).status !== 503) {
      assert.ok(Date.now() < deadline, 'the server was seen down');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const refused = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: tokens(1300, 8), max_tokens: 2 }), signal: AbortSignal.timeout(10_000) });
    assert.equal(refused.status, 503);
    assert.match(await refused.text(), /"code":"engine_dead"/);
    assert.deepEqual(server.engine.restartingReplicas, [0, 1]);
    await healthUntil(server.url, (h) => h.status === 'ok', 'both replicas came back', true);
    await complete(server.url, { prompt: tokens(1301, 8), max_tokens: 2 });
    server.engine.kill(1);
    await healthUntil(server.url, (h) => h.status === 'degraded', 'the replica was seen dead');
    assert.deepEqual(server.engine.restartingReplicas, [1]);
    closed = true;
    await server.close();
  } finally {
    if (!closed) await server.close();
  }
});

test('a data-parallel size that is not positive or past 32 and a negative restart budget are refused, and one LLM refuses to be several replicas', async () => {
  const options = { model: model.dir, backend: 'cpu', showProgress: false } as const;
  await assert.rejects(EngineReplicas.start({ ...options, dataParallelSize: 0 }), /dataParallelSize must be a positive integer \(got 0\)/);
  await assert.rejects(EngineReplicas.start({ ...options, dataParallelSize: 33 }), /dataParallelSize must be at most 32 \(got 33\)/);
  await assert.rejects(EngineReplicas.start({ ...options, dataParallelSize: 2, maxReplicaRestarts: -1 }), /maxReplicaRestarts must be a non-negative integer \(got -1\)/);
  await assert.rejects(LLM.load({ ...options, dataParallelSize: 2 }), /dataParallelSize 2: one engine loads here; replicas run behind `keel serve`/);
});
