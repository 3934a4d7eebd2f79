import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';

/** What came back for one request, however it ended. */
export interface RawResult {
  status: number | null;
  text: string;
  /** Why the exchange ended before a complete response, if it did. */
  error: string | null;
}

/**
 * One request on a connection of its own (no keep-alive), with hooks on the response: the soak's
 * clients that disconnect, pause or trickle need the socket, which fetch hides.
 */
export function rawRequest(
  url: string,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: Buffer | string; deadlineMs: number },
  onResponse?: (response: import('node:http').IncomingMessage, destroy: () => void) => void,
): Promise<RawResult> {
  return new Promise((resolve) => {
    let status: number | null = null;
    let text = '';
    let settled = false;
    const done = (error: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, text, error });
    };
    const req = httpRequest(`${url}${options.path}`, { method: options.method ?? 'POST', headers: { 'content-type': 'application/json', ...options.headers }, agent: false }, (res) => {
      status = res.statusCode ?? null;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => done(null));
      res.on('error', (error) => done(error.message));
      res.on('close', () => done(res.complete ? null : 'closed before the end'));
      onResponse?.(res, () => {
        req.destroy();
        done('destroyed by the client');
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      done('deadline');
    }, options.deadlineMs);
    req.on('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
    req.end(options.body);
  });
}

/** Raw bytes on a fresh TCP connection, written in `chunks` every `everyMs`; returns what came back before the server closed it. */
export function rawBytes(port: number, chunks: (string | Buffer)[], everyMs: number, deadlineMs: number): Promise<RawResult> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    let settled = false;
    let next = 0;
    const writer = setInterval(() => {
      if (next < chunks.length && !socket.destroyed) socket.write(chunks[next++]);
      else clearInterval(writer);
    }, everyMs);
    const done = (error: string | null) => {
      if (settled) return;
      settled = true;
      clearInterval(writer);
      clearTimeout(timer);
      socket.destroy();
      const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
      const body = text.includes('\r\n\r\n') ? text.slice(text.indexOf('\r\n\r\n') + 4) : '';
      resolve({ status: match ? Number(match[1]) : null, text: body, error: match ? null : error });
    };
    const timer = setTimeout(() => done('deadline'), deadlineMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
    socket.on('close', () => done('closed'));
    if (chunks.length > 0) socket.write(chunks[next++]);
  });
}
