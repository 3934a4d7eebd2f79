import type { Socket } from 'node:net';

/**
 * How long, and how many bytes, a refused request's connection is read after its answer. A client
 * still sending a body (an oversize one, a slow one) reads the answer once its writes are done;
 * closing on it while it writes would make its kernel's next write fail (EPIPE) or reset the
 * connection before it reads the answer. Bounded so that a client cannot hold the socket: the
 * connection cap counts it meanwhile.
 */
export const LINGER_LIMITS = { ms: 2000, bytes: 4 * 1024 * 1024 };

const lingering = new WeakSet<Socket>();

/** Whether the socket is in its lingering close: the HTTP server no longer reads it. */
export function isLingering(socket: Socket): boolean {
  return lingering.has(socket);
}

/**
 * Sends `response` (a whole HTTP response, which says `connection: close`) and closes the socket
 * as nginx's lingering close does: the write side ends after the response, what the client still
 * sends is read and thrown away, and the socket is destroyed once the client has closed its side
 * too, or after `limits.ms`, or `limits.bytes` read, whichever comes first.
 */
export function closeLingering(socket: Socket, response: string, limits = LINGER_LIMITS): void {
  lingering.add(socket);
  // The HTTP server's parser stops seeing the bytes: they belong to a request already answered.
  // (Adding a 'data' listener also takes the parser off the socket's handle, when it reads there.)
  for (const listener of socket.listeners('data')) socket.removeListener('data', listener as (chunk: Buffer) => void);
  let discarded = 0;
  socket.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > limits.bytes) socket.destroy();
  });
  const timer = setTimeout(() => socket.destroy(), limits.ms);
  socket.once('close', () => clearTimeout(timer));
  // Ended on both sides (the client's end read, ours sent), the socket destroys itself.
  socket.end(response);
  socket.resume();
}
