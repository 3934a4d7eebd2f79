import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CRASH_TOKEN, STEP_FAILURE_TOKEN } from './faulty-engine-thread.ts';
import { startTinyServer, waitForIdleEngine } from './tiny-server.ts';

// When the engine fails, every client waiting on it gets a clean 5xx in OpenAI's shape (a stream,
// an error event before [DONE]) at once, and the server says so in its log: a failing step is a
// 500 and the engine goes on; a dead engine thread is a 503 for everyone from then on, /health
// included.

const FAULTY_ENGINE = new URL('./faulty-engine-thread.ts', import.meta.url);

interface Outcome {
  status: number;
  text: string;
}

const send = (url: string, body: unknown): Promise<Outcome> =>
  fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(20_000) }).then(async (r) => ({ status: r.status, text: await r.text() }));

/** Long requests, streamed and not, all running by the time this returns. */
async function startLongRequests(url: string): Promise<Promise<Outcome>[]> {
  const requests = [false, true, false, true].map((stream, i) => send(url, { prompt: [i + 1, 2, 3], max_tokens: 2000, ignore_eos: true, stream }));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const stats = (await (await fetch(`${url}/v1/engine/stats`)).json()) as { running: number };
    if (stats.running === 4) return requests;
    assert.ok(Date.now() < deadline, 'the long requests did not all start');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function assertFailedWith(outcome: Outcome, status: number, code: string | null): void {
  if (outcome.status === 200) {
    // A stream already under way: the error comes as its last event.
    assert.match(outcome.text, /data: \{"error":\{/);
    assert.ok(outcome.text.endsWith('data: [DONE]\n\n'));
    const event = outcome.text.split('\n\n').find((e) => e.startsWith('data: {"error"')) ?? '';
    assert.equal((JSON.parse(event.slice('data: '.length)) as { error: { code: string | null } }).error.code, code);
    return;
  }
  assert.equal(outcome.status, status, outcome.text);
  const body = JSON.parse(outcome.text) as { error: { message: string; code: string | null } };
  assert.equal(body.error.code, code);
  assert.doesNotMatch(body.error.message, /injected|\n\s+at /, 'no internal detail reaches the client');
}

test('a failing engine step fails every request in flight with a 500, is logged, and the server goes on serving', { timeout: 60_000 }, async () => {
  const server = await startTinyServer({ engineEntry: FAULTY_ENGINE, model: { max_position_embeddings: 4096 }, server: { logLevel: 'info' } });
  try {
    const running = await startLongRequests(server.url);
    const trigger = await send(server.url, { prompt: [STEP_FAILURE_TOKEN], max_tokens: 1 });
    assertFailedWith(trigger, 500, null);
    for (const outcome of await Promise.all(running)) assertFailedWith(outcome, 500, null);
    assert.ok(server.logs.some((l) => l.msg === 'internal error' && String(l.error).includes('injected step failure')), 'the failure is in the log with its cause');
    assert.equal((await send(server.url, { prompt: [1, 2], max_tokens: 2 })).status, 200);
    const idle = await waitForIdleEngine(server.url);
    assert.equal(idle.kv_cache.free_blocks, idle.kv_cache.total_blocks);
  } finally {
    await server.close();
  }
});

test('a crash of the engine thread fails every request in flight with a 503, /health turns 503, and it is logged', { timeout: 60_000 }, async () => {
  const server = await startTinyServer({ engineEntry: FAULTY_ENGINE, model: { max_position_embeddings: 4096 }, server: { logLevel: 'info' } });
  try {
    const running = await startLongRequests(server.url);
    const trigger = await send(server.url, { prompt: [CRASH_TOKEN], max_tokens: 1 });
    assertFailedWith(trigger, 503, 'engine_dead');
    for (const outcome of await Promise.all(running)) assertFailedWith(outcome, 503, 'engine_dead');
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 503);
    assert.equal(((await health.json()) as { error: { code: string } }).error.code, 'engine_dead');
    assertFailedWith(await send(server.url, { prompt: [1, 2], max_tokens: 2 }), 503, 'engine_dead');
    assert.ok(server.logs.some((l) => l.msg === 'the engine stopped' && String(l.error).includes('injected crash')));
  } finally {
    await server.close();
  }
});
