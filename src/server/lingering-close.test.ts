import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { closeLingering } from './lingering-close.ts';

const RESPONSE = 'HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}';

/**
 * A server that answers every connection at once with `closeLingering(limits)`, as an HTTP server
 * refusing a request whose body is still coming; resolves with the client's socket and when the
 * server's side of it closed. A client that allows half-open connections keeps its side open
 * after the server's end, as one that ignores it would.
 */
async function refusedConnection(limits: { ms: number; bytes: number }, clientHalfOpen = false): Promise<{ client: Socket; serverClosed: Promise<number>; close: () => void }> {
  let resolveClosed: (ms: number) => void = () => undefined;
  const serverClosed = new Promise<number>((resolve) => (resolveClosed = resolve));
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const start = performance.now();
    socket.once('close', () => resolveClosed(performance.now() - start));
    closeLingering(socket, RESPONSE, limits);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: clientHalfOpen });
  await once(client, 'connect');
  return { client, serverClosed, close: () => server.close() };
}

/** Writes `piece` every `everyMs` until the socket can take no more. */
function keepWriting(socket: Socket, piece: Buffer, everyMs: number): NodeJS.Timeout {
  const timer = setInterval(() => {
    if (socket.writable) socket.write(piece);
    else clearInterval(timer);
  }, everyMs);
  socket.once('close', () => clearInterval(timer));
  return timer;
}

test('a client still writing reads the whole response, then both sides close without a reset', { timeout: 20_000 }, async () => {
  const { client, serverClosed, close } = await refusedConnection({ ms: 30_000, bytes: 64 * 1024 * 1024 });
  const errors: string[] = [];
  client.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
  // Reads nothing until its 1 MiB is written, as a client sending a body before reading the answer.
  client.pause();
  for (let i = 0; i < 16; i++) client.write(Buffer.alloc(64 * 1024, 0x20));
  await new Promise<void>((resolve) => client.write(Buffer.alloc(0), () => resolve()));
  let text = '';
  client.setEncoding('utf8');
  client.on('data', (chunk: string) => (text += chunk));
  client.resume();
  await once(client, 'close');
  assert.deepEqual(errors, []);
  assert.equal(text, RESPONSE);
  // The server's side closed with the client's (its 30 s bound was not what closed it).
  assert.ok((await serverClosed) < 30_000);
  close();
});

test('a client that never stops writing is cut after the time bound', { timeout: 20_000 }, async () => {
  const { client, serverClosed, close } = await refusedConnection({ ms: 300, bytes: 64 * 1024 * 1024 }, true);
  client.on('error', () => undefined);
  let text = '';
  client.setEncoding('utf8');
  client.on('data', (chunk: string) => (text += chunk));
  keepWriting(client, Buffer.alloc(1024, 0x20), 20);
  const closedAfterMs = await serverClosed;
  // Timers run on the loop's clock, a little behind performance.now(): within a few ms is the bound.
  assert.ok(closedAfterMs >= 290, `closed after ${closedAfterMs} ms, before the bound`);
  assert.equal(text, RESPONSE);
  client.destroy();
  close();
});

test('a client that sends more than the byte bound is cut, whatever the time bound', { timeout: 20_000 }, async () => {
  const { client, serverClosed, close } = await refusedConnection({ ms: 600_000, bytes: 1024 * 1024 }, true);
  client.on('error', () => undefined);
  let written = 0;
  const piece = Buffer.alloc(256 * 1024, 0x20);
  const write = (): void => {
    // Far past the bound, but finite: the test must end if the bound does not hold.
    while (client.writable && written < 256 * 1024 * 1024) {
      written += piece.length;
      if (!client.write(piece)) return void client.once('drain', write);
    }
  };
  write();
  await serverClosed;
  assert.ok(written < 256 * 1024 * 1024, 'the server read everything the client sent');
  client.destroy();
  close();
});
