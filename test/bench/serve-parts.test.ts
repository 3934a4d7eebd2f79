import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CompletionTiming } from '../../src/bench/completion-client.ts';
import { serveMetrics } from '../../src/bench/serve-metrics.ts';
import { ConcurrencyLimit } from '../../src/bench/serve-suite.ts';
import { loopbackBaseUrl } from '../../src/bench/serve-target.ts';
import { sseData } from '../../src/bench/sse-events.ts';
import { KeelError } from '../../src/errors.ts';

function timing(overrides: Partial<CompletionTiming>): CompletionTiming {
  return { ok: true, error: null, promptTokens: 10, outputTokens: 5, ttftMs: 100, itlMs: [10, 20, 30, 40], e2eMs: 200, choiceChunks: 5, ...overrides };
}

test('serveMetrics computes vLLM\'s figures over completed requests only', () => {
  const r = serveMetrics(
    [
      timing({}),
      timing({ promptTokens: 20, outputTokens: 3, ttftMs: 300, itlMs: [50, 50], e2eMs: 400 }),
      timing({ ok: false, error: 'HTTP 429: queue full', outputTokens: 0, ttftMs: null, itlMs: [] }),
      timing({ ok: false, error: 'HTTP 429: queue full', outputTokens: 0, ttftMs: null, itlMs: [] }),
    ],
    2,
    'text-chunks',
  );
  assert.equal(r.completed, 2);
  assert.equal(r.failed, 2);
  assert.deepEqual(r.errors, ['HTTP 429: queue full']);
  assert.equal(r.total_input_tokens, 30);
  assert.equal(r.total_output_tokens, 8);
  assert.equal(r.request_throughput, 1);
  assert.equal(r.output_throughput, 4);
  assert.equal(r.total_token_throughput, 19);
  assert.equal(r.mean_ttft_ms, 200);
  // TPOT: (200 - 100) / 4 = 25 and (400 - 300) / 2 = 50.
  assert.equal(r.mean_tpot_ms, 37.5);
  assert.equal(r.median_tpot_ms, 37.5);
  // ITL pools every gap: 10, 20, 30, 40, 50, 50.
  assert.equal(r.mean_itl_ms, 200 / 6);
  assert.equal(r.median_itl_ms, 35);
  assert.equal(r.mean_e2el_ms, 300);
  assert.equal(r.token_timing, 'text-chunks');
});

test('serveMetrics with nothing completed reports nulls, not zeros', () => {
  const r = serveMetrics([timing({ ok: false, error: 'connection refused' })], 1, 'logprobs');
  assert.equal(r.completed, 0);
  assert.equal(r.mean_ttft_ms, null);
  assert.equal(r.p99_e2el_ms, null);
});

test('ConcurrencyLimit never runs more than its limit, and runs everything', async () => {
  const limit = new ConcurrencyLimit(3);
  let active = 0;
  let peak = 0;
  const done = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      limit.run(async () => {
        active++;
        peak = Math.max(peak, active);
        await new Promise((resolve) => setTimeout(resolve, (i * 7) % 5));
        active--;
        return i;
      }),
    ),
  );
  assert.equal(peak, 3);
  assert.deepEqual(done, Array.from({ length: 20 }, (_, i) => i));
});

test('sseData reassembles events split anywhere across chunks, CRLF included', async () => {
  const text = 'data: {"a":1}\n\n: a comment\n\ndata: {"b":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n';
  const bytes = new TextEncoder().encode(text);
  async function* chunks(size: number) {
    for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
  }
  for (const size of [1, 3, 7, bytes.length]) {
    const events: string[] = [];
    for await (const data of sseData(chunks(size))) events.push(data);
    assert.deepEqual(events, ['{"a":1}', '{"b":\n2}', '[DONE]'], `chunks of ${size}`);
  }
});

test('the benchmark client talks to this machine only', () => {
  assert.equal(loopbackBaseUrl('http://127.0.0.1:8000'), 'http://127.0.0.1:8000');
  assert.equal(loopbackBaseUrl('http://localhost:8000/v1/'), 'http://localhost:8000');
  assert.equal(loopbackBaseUrl('http://[::1]:9000'), 'http://[::1]:9000');
  assert.throws(() => loopbackBaseUrl('http://10.0.0.2:8000'), KeelError);
  assert.throws(() => loopbackBaseUrl('http://example.com'), /loopback/);
  assert.throws(() => loopbackBaseUrl('ftp://127.0.0.1'), /http or https/);
  assert.throws(() => loopbackBaseUrl('not a url'), /not a URL/);
});
