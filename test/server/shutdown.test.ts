import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeTinyTokenizer } from '../helpers/model-tiny-tokenizer.ts';
import { exitWithin, spawnServe, type ServeProcess } from './keel-serve-process.ts';
import { writeDummyConfig } from './tiny-chat-model.ts';

// `keel serve` as a child process: SIGTERM (or SIGHUP) stops new connections at once, lets the
// requests in flight finish, or cuts them when --shutdown-timeout is up and exits non-zero; a
// client that stops reading cannot hold the shutdown open, and a second signal exits at once.

let slowModelDir: string;
let fastModelDir: string;
const running: ServeProcess[] = [];

before(() => {
  slowModelDir = mkdtempSync(join(tmpdir(), 'keel-serve-shutdown-'));
  // Big enough that a long completion takes a few seconds on the CPU backend.
  writeDummyConfig(slowModelDir, { vocab_size: 288, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 4, max_position_embeddings: 2048 });
  // With a tokenizer, text streams token by token.
  writeTinyTokenizer(slowModelDir);
  // Small and fast, with a long context: a stream with logprobs outruns any socket buffer.
  fastModelDir = mkdtempSync(join(tmpdir(), 'keel-serve-shutdown-fast-'));
  writeDummyConfig(fastModelDir, { vocab_size: 288, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, max_position_embeddings: 16384 });
  writeTinyTokenizer(fastModelDir);
});
after(() => {
  for (const server of running) server.child.kill('SIGKILL');
  rmSync(slowModelDir, { recursive: true, force: true });
  rmSync(fastModelDir, { recursive: true, force: true });
});

async function serve(modelDir: string, extraArgs: string[]): Promise<ServeProcess> {
  const server = await spawnServe(modelDir, ['--load-format', 'dummy', ...extraArgs]);
  running.push(server);
  return server;
}

const slowServer = (extraArgs: string[] = []) => serve(slowModelDir, ['--num-kv-blocks', '128', ...extraArgs]);
const fastServer = (extraArgs: string[] = []) => serve(fastModelDir, ['--num-kv-blocks', '4200', ...extraArgs]);

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
 * A stream of large chunks (four completions with 20 logprobs each) whose client reads the first
 * bytes and then stops reading: the server's writes back up once the socket buffers are full.
 */
async function startPausedStream(url: string): Promise<IncomingMessage> {
  const body = JSON.stringify({ prompt: [1, 2, 3], n: 4, logprobs: 20, max_tokens: 16000, ignore_eos: true, stream: true });
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, resolve);
    req.on('error', reject);
    req.end(body);
  });
  assert.equal(response.statusCode, 200);
  await new Promise((resolve) => response.once('data', resolve));
  response.pause();
  response.on('error', () => undefined);
  // Long enough for a few megabytes of chunks to fill the socket buffers on either side.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  return response;
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
    assert.ok(Date.now() < deadline, 'the server still accepts connections after the signal');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function usageOf(sse: string): { completion_tokens: number } | null {
  const events = sse.split('\n\n').filter((e) => e.startsWith('data: {'));
  const last = JSON.parse(events[events.length - 1].slice('data: '.length)) as { usage?: { completion_tokens: number } };
  return last.usage ?? null;
}

for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
  test(`${signal}: new connections are refused, the request in flight completes, exit code 0`, { timeout: 60_000 }, async () => {
    const server = await slowServer();
    const stream = await startLongStream(server.url, 600);
    server.child.kill(signal);
    await waitUntilRefused(server.url);
    assert.equal(stream.finished(), false, 'the stream was still running when connections were refused');
    const sse = await stream.rest;
    assert.ok(sse.endsWith('data: [DONE]\n\n'));
    assert.equal(usageOf(sse)?.completion_tokens, 600);
    assert.deepEqual(await server.exited, { code: 0, signal: null });
  });
}

test('SIGTERM with a short --shutdown-timeout cuts what is left with an error event, then exits 1', { timeout: 60_000 }, async () => {
  const server = await slowServer(['--shutdown-timeout', '0.2']);
  const stream = await startLongStream(server.url, 2000);
  const signalled = performance.now();
  server.child.kill('SIGTERM');
  const sse = await stream.rest;
  assert.match(sse, /"code":"shutting_down"/);
  assert.ok(sse.endsWith('data: [DONE]\n\n'));
  assert.deepEqual(await server.exited, { code: 1, signal: null });
  assert.ok(performance.now() - signalled < 5000, 'the drain gave up at the timeout');
});

test('a client that stops reading its stream cannot hold the shutdown open: it ends at the timeout, exit code 1', { timeout: 60_000 }, async () => {
  const server = await fastServer(['--shutdown-timeout', '1']);
  const paused = await startPausedStream(server.url);
  server.child.kill('SIGTERM');
  const exit = await exitWithin(server, 10_000);
  paused.destroy();
  assert.deepEqual(exit, { code: 1, signal: null }, 'the shutdown ended within 10 s of SIGTERM, reporting the cut stream');
});

test('a second SIGTERM during the drain exits at once with a non-zero code', { timeout: 60_000 }, async () => {
  const server = await fastServer(['--shutdown-timeout', '60']);
  const paused = await startPausedStream(server.url);
  server.child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 300));
  server.child.kill('SIGTERM');
  const exit = await exitWithin(server, 5000);
  paused.destroy();
  assert.notEqual(exit, null, 'the process exited within 5 s of the second SIGTERM');
  assert.notEqual(exit?.code, 0);
});
