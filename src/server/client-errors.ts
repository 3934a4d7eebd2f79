import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
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
 * Answers an error of the HTTP parser (malformed request, oversized headers, a header or body
 * timeout) in OpenAI's error shape, then closes the connection, as Node's own handler would with
 * its bare bodies. Nothing is written over a response already under way.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const current = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && !current?.headersSent) {
    const apiError = describe(error.code);
    const body = JSON.stringify(apiError.body());
    socket.write(
      `HTTP/1.1 ${apiError.status} ${STATUS_CODES[apiError.status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
