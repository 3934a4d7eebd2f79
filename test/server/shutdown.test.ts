import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { writeTinyTokenizer } from '../helpers/model-tiny-tokenizer.ts';
import { writeDummyConfig } from './tiny-chat-model.ts';
import { TEST_BACKEND } from './test-backend.ts';

// `keel serve` as a child process: SIGTERM stops new connections at once, lets the request in
// flight finish (or aborts it when --shutdown-timeout is up), then the process exits 0.

const KEEL = fileURLToPath(new URL('../../bin/keel', import.meta.url));
let modelDir: string;

before(() => {
  modelDir = mkdtempSync(join(tmpdir(), 'keel-serve-shutdown-'));
  // Big enough that a long completion takes a few seconds on the CPU backend.
  writeDummyConfig(modelDir, { vocab_size: 288, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 4, max_position_embeddings: 2048 });
  // With a tokenizer, text streams token by token.
  writeTinyTokenizer(modelDir);
});
after(() => rmSync(modelDir, { recursive: true, force: true }));

async function spawnServer(extraArgs: string[]): Promise<{ child: ChildProcess; url: string; exited: Promise<number | null> }> {
  const child = spawn(
    process.execPath,
    [KEEL, 'serve', '--model', modelDir, '--load-format', 'dummy', '--backend', TEST_BACKEND, '--port', '0', '--num-kv-blocks', '128', '--no-progress', '--log-level', 'warn', ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (chunk) => {
      stdout += chunk;
      const match = /http:\/\/[\d.]+:\d+/.exec(stdout);
      if (match) resolve(match[0]);
    });
    exited.then((code) => reject(new Error(`keel serve exited (${code}) before listening: ${stderr}`)));
  });
  return { child, url, exited };
}

/** Starts a long streamed completion and returns once its first event has arrived. */
async function startLongStream(url: string, maxTokens: number): Promise<{ rest: Promise<string>; finished: () => boolean }> {
  const response = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: maxTokens, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(response.status, 200);
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });
  let done = false;
  const rest = (async () => {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
    }
    done = true;
    return text + decoder.decode();
  })();
  return { rest, finished: () => done };
}

/**
 * Polls until a fresh connection is refused. A connect that races the listener's close may be
 * accepted by the kernel's backlog and then reset, or closed by the server unanswered: each of
 * these means the request was not served.
 */
async function waitUntilRefused(url: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      await fetch(`${url}/health`);
    } catch (error) {
      const code = ((error as Error).cause as { code?: string } | undefined)?.code;
      assert.ok(code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'UND_ERR_SOCKET', `connection failed with ${code}`);
      return;
    }
    assert.ok(Date.now() < deadline, 'the server still accepts connections after SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function usageOf(sse: string): { completion_tokens: number } | null {
  const events = sse.split('\n\n').filter((e) => e.startsWith('data: {'));
  const last = JSON.parse(events[events.length - 1].slice('data: '.length)) as { usage?: { completion_tokens: number } };
  return last.usage ?? null;
}

test('SIGTERM: new connections are refused, the request in flight completes, exit code 0', async () => {
  const { child, url, exited } = await spawnServer([]);
  const stream = await startLongStream(url, 600);
  child.kill('SIGTERM');
  await waitUntilRefused(url);
  assert.equal(stream.finished(), false, 'the stream was still running when connections were refused');
  const sse = await stream.rest;
  assert.ok(sse.endsWith('data: [DONE]\n\n'));
  assert.equal(usageOf(sse)?.completion_tokens, 600);
  assert.equal(await exited, 0);
});

test('SIGTERM with a short --shutdown-timeout aborts what is left with an error event, then exits 0', async () => {
  const { child, url, exited } = await spawnServer(['--shutdown-timeout', '0.2']);
  const stream = await startLongStream(url, 2000);
  const signalled = performance.now();
  child.kill('SIGTERM');
  const sse = await stream.rest;
  assert.match(sse, /"code":"shutting_down"/);
  assert.ok(sse.endsWith('data: [DONE]\n\n'));
  assert.equal(await exited, 0);
  assert.ok(performance.now() - signalled < 5000, 'the drain gave up at the timeout');
});
