import type { FastifyInstance } from 'fastify';
import { badRequest } from './openai-errors.ts';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A request body read as JSON whatever its content type (`curl -d` sends form encoding), and must
 * be valid UTF-8: a lenient decoder would turn bad bytes into U+FFFD and run a prompt the client
 * never sent.
 */
export function readJsonBody(raw: Uint8Array): unknown {
  if (raw.length === 0) return undefined;
  let text: string;
  try {
    text = strictUtf8.decode(raw);
  } catch {
    throw badRequest('the request body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest(`the request body is not valid JSON: ${(error as Error).message}`);
  }
}

/**
 * Request bodies reach the handlers as the bytes they arrived as: the preprocessing threads read
 * them (readJsonBody), so that parsing a large body never holds up the server's event loop.
 */
export function keepRawBodies(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
}
