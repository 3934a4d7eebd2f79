import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHealthProbe } from '../../scripts/chaos-soak/health-probe.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';
import { writeDummyConfig } from './tiny-chat-model.ts';

// Nothing one request does may freeze the others: while a huge prompt is tokenized, a prompt batch
// templated or a long engine step runs, /health still answers. Liveness, not speed: a frozen event
// loop leaves /health unanswered for the whole of the work (seconds here), so the slowest answer
// must stay under 1 s, or under a quarter of the work's time where a loaded machine stretches both
// (the suite beside other processes on two cores saw 1.5 s in a 20 s tokenization).

const HEALTH_BOUND_MS = 1000;

/** How many /health answers came while `work` ran, the slowest, and how long the work took, from a probe on a thread of its own. */
async function slowestHealthWhile(url: string, work: Promise<unknown>): Promise<{ answers: number; slowestMs: number; workMs: number }> {
  const started = performance.now();
  const probe = startHealthProbe(url, 50);
  await work.catch(() => undefined);
  const workMs = performance.now() - started;
  const samples = await probe.stop();
  return { answers: samples.filter((s) => s.status === 200).length, slowestMs: Math.max(...samples.map((s) => s.ms)), workMs };
}

function assertResponsive(seen: { answers: number; slowestMs: number; workMs: number }, what: string): void {
  assert.ok(seen.answers > 0, `no /health answer at all: ${what}`);
  const bound = Math.max(HEALTH_BOUND_MS, seen.workMs / 4);
  assert.ok(seen.slowestMs < bound, `the slowest /health took ${Math.round(seen.slowestMs)} ms (bound ${Math.round(bound)} ms, the work ${Math.round(seen.workMs)} ms): ${what}`);
}

const post = (url: string, path: string, body: unknown) => fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, text: await r.text() }));

/** A few megabytes of Python, which the default model's tokenizer takes seconds to read. */
const codeText = (bytes: number) => 'def fibonacci(n):\n    return n if n < 2 else fibonacci(n-1) + fibonacci(n-2)\n'.repeat(Math.ceil(bytes / 80));

describe('over the default model, with limits raised so that huge prompts are read', () => {
  let server: TinyServer;
  before(async () => {
    server = await startTinyServer({
      defaultModel: true,
      server: { maxBodyBytes: 64 * 2 ** 20, maxPromptBytes: 16 * 2 ** 20, maxPromptsPerRequest: 1024, logLevel: 'silent' },
    });
  });
  after(() => server.close());

  test('/health answers while /tokenize reads a 4 MB prompt', { timeout: 60_000 }, async () => {
    const tokenized = post(server.url, '/tokenize', { prompt: codeText(4 * 2 ** 20) });
    assertResponsive(await slowestHealthWhile(server.url, tokenized), 'while /tokenize ran');
    assert.equal((await tokenized).status, 200);
  });

  test('/health answers while a 4 MB chat message is templated and tokenized', { timeout: 60_000 }, async () => {
    const chat = post(server.url, '/v1/chat/completions', { messages: [{ role: 'user', content: codeText(4 * 2 ** 20) }], max_tokens: 1 });
    assertResponsive(await slowestHealthWhile(server.url, chat), 'while the chat prompt was built');
    assert.match((await chat).text, /context_length_exceeded/);
  });

  test('/health answers while a batch of 1,024 prompts is tokenized', { timeout: 60_000 }, async () => {
    // 8 KB each: over the context once tokenized, so nothing is generated.
    const batch = post(server.url, '/v1/completions', { prompt: Array.from({ length: 1024 }, () => codeText(8192)), max_tokens: 1 });
    assertResponsive(await slowestHealthWhile(server.url, batch), 'while the batch was tokenized');
    assert.match((await batch).text, /context_length_exceeded/);
  });
});

test('/health answers while an engine step runs for seconds', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-slow-step-'));
  // Prefilling 512 tokens of this model is one step of about 2 s on a laptop core.
  writeDummyConfig(dir, { vocab_size: 288, hidden_size: 512, intermediate_size: 1024, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 8, max_position_embeddings: 1024 });
  const server = await startTinyServer({ modelDir: dir, engine: { loadFormat: 'dummy', numKvBlocks: 64 }, server: { logLevel: 'silent' } });
  try {
    const generation = post(server.url, '/v1/completions', { prompt: Array.from({ length: 512 }, (_, i) => i % 288), max_tokens: 2, ignore_eos: true });
    assertResponsive(await slowestHealthWhile(server.url, generation), '/health waited for an engine step');
    assert.equal((await generation).status, 200);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
