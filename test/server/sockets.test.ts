import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { LINGER_LIMITS } from '../../src/server/lingering-close.ts';
import { TOKENS_PER_S_ENV } from '../../scripts/chaos-soak/synthetic-engine-thread.ts';
import { metricValue, startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// Socket hygiene: requests whose headers or body arrive too slowly get a 408, a keep-alive
// connection left idle is closed, so is a response whose client stopped reading, connections over
// the cap are refused, every error the HTTP parser raises is answered in OpenAI's error shape, and
// a client refused while it still sends its body gets to read the answer (a lingering close).

let server: TinyServer;
let port: number;
const MAX_CONNECTIONS = 8;
const MAX_BODY_BYTES = 64 * 1024;

before(async () => {
  server = await startTinyServer({
    server: { headerTimeoutMs: 1000, bodyTimeoutMs: 1500, idleTimeoutMs: 1000, maxConnections: MAX_CONNECTIONS, maxBodyBytes: MAX_BODY_BYTES, logLevel: 'silent' },
  });
  port = Number(new URL(server.url).port);
});
after(() => server.close());

/**
 * A raw connection to the server and everything it sends until it closes. `allowHalfOpen` keeps
 * the client's side open after the server's end, as a client that ignores it would.
 */
function rawConnection(allowHalfOpen = false): { socket: Socket; received: Promise<string>; closed: Promise<void> } {
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen });
  let text = '';
  socket.on('data', (chunk) => (text += chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, received: closed.then(() => text), closed };
}

/** Resolves with what arrived if the socket closed within `ms`, else null. */
async function closedWithin(connection: ReturnType<typeof rawConnection>, ms: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
  const result = await Promise.race([connection.received, timeout]);
  clearTimeout(timer);
  return result;
}

/** The status line and OpenAI error object of a raw HTTP response. */
function parseErrorResponse(raw: string): { status: number; error: { message: string; type: string; param: unknown; code: unknown } } {
  const [head, body] = raw.split('\r\n\r\n', 2);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  const parsed = JSON.parse(body) as { error: { message: string; type: string; param: unknown; code: unknown } };
  assert.deepEqual(Object.keys(parsed.error).sort(), ['code', 'message', 'param', 'type'], raw);
  return { status, error: parsed.error };
}

const trickle = (socket: Socket, text: string, everyMs: number) => {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || i >= text.length) return clearInterval(timer);
    socket.write(text[i++]);
  }, everyMs);
  return timer;
};

test('a request body that arrives too slowly is cut with a 408 in OpenAI shape', { timeout: 20_000 }, async () => {
  const connection = rawConnection();
  const body = JSON.stringify({ prompt: 'hello', max_tokens: 1 });
  connection.socket.write(`POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
  const timer = trickle(connection.socket, body.slice(5), 400);
  const raw = await closedWithin(connection, 8000);
  clearInterval(timer);
  assert.notEqual(raw, null, 'the server was still reading the slow body 8 s later');
  const { status, error } = parseErrorResponse(raw ?? '');
  assert.equal(status, 408);
  assert.equal(error.code, 'request_timeout');
});

test('request headers that arrive too slowly are cut with a 408 in OpenAI shape', { timeout: 20_000 }, async () => {
  const connection = rawConnection();
  connection.socket.write('GET /health HTTP/1.1\r\n');
  const timer = trickle(connection.socket, `Host: 127.0.0.1:${port}\r\nX-Slow: ${'a'.repeat(100)}\r\n\r\n`, 200);
  const raw = await closedWithin(connection, 8000);
  clearInterval(timer);
  assert.notEqual(raw, null, 'the server was still reading the slow headers 8 s later');
  assert.equal(parseErrorResponse(raw ?? '').status, 408);
});

test('a keep-alive connection left idle is closed after --idle-timeout', { timeout: 20_000 }, async () => {
  const connection = rawConnection();
  connection.socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const raw = await closedWithin(connection, 8000);
  assert.notEqual(raw, null, 'the idle connection was still open 8 s later');
  assert.match(raw ?? '', /^HTTP\/1\.1 200/);
});

// The synthetic engine (the chaos soak's) makes the tokens at a set rate, so neither side hangs on
// how fast this machine runs a model: at 2,000 tokens a second the 16 × 1,900 tokens take about
// 15 s, while the stream (about a kilobyte per token with 20 logprobs) outgrows the socket buffers
// within a few seconds and the cut comes 1 s later. At 200,000 a second the engine could finish
// first on a loaded machine, the request ending as `length` before the cut.
test('a response whose client stops reading is cut after --idle-timeout, and its request aborted', { timeout: 60_000 }, async () => {
  process.env[TOKENS_PER_S_ENV] = '2000';
  // The default model for its vocabulary (the synthetic engine streams its word tokens).
  const fast = await startTinyServer({
    defaultModel: true,
    engine: { numKvBlocks: 4200 },
    engineEntry: new URL('../../scripts/chaos-soak/synthetic-engine-thread.ts', import.meta.url),
    server: { idleTimeoutMs: 1000, logLevel: 'silent' },
  });
  try {
    await stalledResponseIsCut(fast);
  } finally {
    await fast.close();
  }
});

async function stalledResponseIsCut(server: TinyServer): Promise<void> {
  const abortsBefore = metricValue(await (await fetch(`${server.url}/metrics`)).text(), 'keel_request_success_total', { finished_reason: 'abort' }) ?? 0;
  // 16 choices × 1,900 tokens with 20 logprobs each: tens of MB, more than any socket buffers hold.
  const body = JSON.stringify({ prompt: [1, 2, 3], n: 16, logprobs: 20, max_tokens: 1900, ignore_eos: true, stream: true });
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, resolve);
    req.on('error', reject);
    req.end(body);
  });
  assert.equal(response.statusCode, 200);
  let text = '';
  response.setEncoding('utf8');
  response.on('data', (chunk: string) => (text += chunk));
  response.on('error', () => undefined);
  await new Promise((resolve) => response.once('data', resolve));
  // A paused client does not even read the server's close: the server's side tells what happened.
  response.pause();
  const idle = await waitForIdleEngine(server.url, 30_000);
  assert.equal(idle.in_flight_requests, 0, 'the stalled response was still open 30 s later');
  assert.equal(idle.kv_cache.free_blocks, idle.kv_cache.total_blocks);
  const abortsAfter = metricValue(await (await fetch(`${server.url}/metrics`)).text(), 'keel_request_success_total', { finished_reason: 'abort' });
  assert.equal(abortsAfter, abortsBefore + 1, 'the request was aborted before its end');
  response.resume();
  await new Promise((resolve) => response.once('close', resolve));
  assert.ok(!text.endsWith('data: [DONE]\n\n'), 'the stream was cut, not ended');
}

test('connections over --max-connections are refused; the ones within still work', { timeout: 20_000 }, async () => {
  const held = Array.from({ length: MAX_CONNECTIONS }, () => rawConnection());
  await Promise.all(held.map((c) => new Promise((resolve) => c.socket.once('connect', resolve))));
  // Each held connection has sent a partial request, so the server counts it as open.
  for (const c of held) c.socket.write('GET /health HTTP/1.1\r\n');
  await new Promise((resolve) => setTimeout(resolve, 100));
  const extra = rawConnection();
  extra.socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const refused = await closedWithin(extra, 3000);
  assert.notEqual(refused, null, 'a connection over the cap was kept open');
  assert.doesNotMatch(refused ?? '', /^HTTP\/1\.1 200/);
  held[0].socket.write(`Host: 127.0.0.1:${port}\r\n\r\n`);
  const answered = await closedWithin(held[0], 8000);
  assert.match(answered ?? '', /^HTTP\/1\.1 200/);
  for (const c of held) c.socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('headers larger than the parser takes are a 431 in OpenAI shape', { timeout: 20_000 }, async () => {
  const connection = rawConnection();
  connection.socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
  const raw = await closedWithin(connection, 5000);
  const { status, error } = parseErrorResponse(raw ?? '');
  assert.equal(status, 431);
  assert.equal(error.type, 'invalid_request_error');
});

test('a request the parser cannot read is a 400 in OpenAI shape', { timeout: 20_000 }, async () => {
  for (const garbage of ['GARBAGE\r\n\r\n', 'GET / HTTP/9.9\r\n\r\n', `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n`]) {
    const connection = rawConnection();
    connection.socket.write(garbage);
    const raw = await closedWithin(connection, 5000);
    const { status, error } = parseErrorResponse(raw ?? '');
    assert.equal(status, 400, JSON.stringify(garbage));
    assert.equal(error.type, 'invalid_request_error');
  }
});

/**
 * A client that sends `head`, then `pieces` one every `everyMs` without reading anything, as a
 * client writing its whole body before it reads the answer; then reads until the server closes.
 * Resolves with what it read, the socket errors it saw (EPIPE, ECONNRESET: the server closed
 * under its writes) and how long the server took to close after the last piece.
 */
async function writeThenRead(head: string, pieces: Buffer[], everyMs: number): Promise<{ raw: string; errors: string[]; closedAfterMs: number }> {
  const socket = connect(port, '127.0.0.1');
  const errors: string[] = [];
  socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
  socket.pause();
  socket.write(head);
  for (const piece of pieces) {
    await new Promise((resolve) => setTimeout(resolve, everyMs));
    if (socket.destroyed) break;
    socket.write(piece);
  }
  await new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.write(Buffer.alloc(0), () => resolve())));
  const start = performance.now();
  let raw = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (raw += chunk));
  socket.resume();
  await new Promise((resolve) => (socket.closed ? resolve(undefined) : socket.once('close', resolve)));
  return { raw, errors, closedAfterMs: performance.now() - start };
}

const completionHead = (contentLength: number) =>
  `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n`;

test('a client still sending an oversize body when refused reads its 413: no EPIPE or reset', { timeout: 30_000 }, async () => {
  // Refused as its headers arrive (Content-Length over the limit), while 512 KiB follow over 0.3 s.
  const pieces = Array.from({ length: 16 }, () => Buffer.alloc(32 * 1024, 0x20));
  const { raw, errors, closedAfterMs } = await writeThenRead(completionHead(16 * 32 * 1024), pieces, 20);
  assert.deepEqual(errors, [], 'the server closed the connection under the client\'s writes');
  const { status, error } = parseErrorResponse(raw);
  assert.equal(status, 413);
  assert.equal(error.code, 'request_too_large');
  assert.match(raw, /\r\nconnection: close\r\n/i);
  assert.match(raw, /\r\nx-request-id: /i);
  assert.ok(closedAfterMs < LINGER_LIMITS.ms + 3000, `the connection closed ${closedAfterMs} ms after the client read its answer`);
});

test('a chunked body refused once it outgrows the limit: the client reads its 413', { timeout: 30_000 }, async () => {
  const chunk = (bytes: number) => Buffer.concat([Buffer.from(`${bytes.toString(16)}\r\n`), Buffer.alloc(bytes, 0x20), Buffer.from('\r\n')]);
  const head = `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
  const pieces = [...Array.from({ length: 16 }, () => chunk(32 * 1024)), Buffer.from('0\r\n\r\n')];
  const { raw, errors } = await writeThenRead(head, pieces, 20);
  assert.deepEqual(errors, [], 'the server closed the connection under the client\'s writes');
  assert.equal(parseErrorResponse(raw).status, 413);
});

test('a slow body cut with a 408 while the client still writes: the client reads its 408', { timeout: 30_000 }, async () => {
  // 25 bytes, one every 100 ms: past the 1.5 s body timeout, and within the lingering that follows it.
  const pieces = Array.from({ length: 25 }, () => Buffer.from(' '));
  const { raw, errors } = await writeThenRead(completionHead(1000), pieces, 100);
  assert.deepEqual(errors, [], 'the server closed the connection under the client\'s writes');
  const { status, error } = parseErrorResponse(raw);
  assert.equal(status, 408);
  assert.equal(error.code, 'request_timeout');
});

test('a refused client that keeps sending cannot hold its connection past the lingering bound', { timeout: 30_000 }, async () => {
  const connection = rawConnection(true);
  connection.socket.write(completionHead(512 * 1024 * 1024));
  const answered = new Promise<number>((resolve) => connection.socket.once('data', () => resolve(performance.now())));
  const writer = setInterval(() => connection.socket.writable && connection.socket.write(Buffer.alloc(4096, 0x20)), 20);
  const raw = await closedWithin(connection, LINGER_LIMITS.ms + 8000);
  clearInterval(writer);
  assert.notEqual(raw, null, 'the server still read the refused body long after its bound');
  assert.equal(parseErrorResponse(raw ?? '').status, 413);
  const lingeredMs = performance.now() - (await answered);
  assert.ok(lingeredMs < LINGER_LIMITS.ms + 3000, `the connection lingered ${lingeredMs} ms`);
  // Its slot is free again: the server answers.
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});
