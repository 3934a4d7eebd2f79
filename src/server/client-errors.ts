import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { closeLingering, isLingering } from './lingering-close.ts';
import { ApiError } from './openai-errors.ts';

/** Node's HTTP parser and its timeouts: what each error code means to a client. */
function describe(code: string | undefined): ApiError {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError(408, 'the request did not arrive in time (see --header-timeout and --body-timeout)', { code: 'request_timeout' });
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError(431, 'the request headers are larger than the server accepts', { code: 'request_header_fields_too_large' });
    default:
      return new ApiError(400, `the server could not read the request as HTTP (${code ?? 'malformed'})`);
  }
}

/**
 * Answers `apiError` on the socket itself, outside any response object, and closes the connection
 * lingering: the client may still be sending the request it refuses, and must get to read why.
 */
export function refuseOnSocket(socket: Socket, apiError: ApiError, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(apiError.body());
  const fields = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), ...apiError.headers, ...headers, connection: 'close' };
  const head = Object.entries(fields).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  closeLingering(socket, `HTTP/1.1 ${apiError.status} ${STATUS_CODES[apiError.status]}\r\n${head}\r\n${body}`);
}

/**
 * Answers an error of the HTTP parser (malformed request, oversized headers, a header or body
 * timeout) in OpenAI's error shape, then closes the connection, as Node's own handler would with
 * its bare bodies. Nothing is written over a response already under way, and nothing more once
 * the connection is closing: the parser's further errors there (the body it no longer reads) are
 * the refused request's.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed || isLingering(socket)) return;
  const current = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && !current?.headersSent) refuseOnSocket(socket, describe(error.code));
  else socket.destroy();
}
