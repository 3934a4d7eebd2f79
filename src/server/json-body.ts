import type { FastifyInstance } from 'fastify';
import { badRequest } from './openai-errors.ts';
import { fieldPath } from './openai-schemas.ts';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A UTF-16 code unit of a surrogate pair standing alone: the `u` flag reads pairs as one code point. */
const LONE_SURROGATE = /\p{Cs}/u;
/** Valid UTF-8 carries no surrogates: they can only come as JSON escapes, which most bodies lack. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/**
 * A request body read as JSON whatever its content type (`curl -d` sends form encoding). Its text
 * must be valid: bytes that are not UTF-8, and `\ud800`-style escapes of half a surrogate pair
 * (which no UTF-8 can carry and tokenizers would turn into U+FFFD), are a 400 rather than a prompt
 * the client never sent.
 */
export function readJsonBody(raw: Uint8Array): unknown {
  if (raw.length === 0) return undefined;
  let text: string;
  try {
    text = strictUtf8.decode(raw);
  } catch {
    throw badRequest('the request body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw badRequest(`the request body is not valid JSON: ${(error as Error).message}`);
  }
  if (SURROGATE_ESCAPE.test(text)) refuseLoneSurrogates(value);
  return value;
}

/** Names the first string (or key) that holds a lone surrogate. Iterative: a body may nest deeply. */
function refuseLoneSurrogates(value: unknown): void {
  const stack: { value: unknown; path: PropertyKey[] }[] = [{ value, path: [] }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { value: v, path } = item;
    if (typeof v === 'string') {
      if (LONE_SURROGATE.test(v)) {
        const param = path.length > 0 ? fieldPath(path) : null;
        throw badRequest(`${param ?? 'the request body'} holds a lone surrogate (half of a UTF-16 pair), which is not text`, param);
      }
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], path: [...path, i] });
    } else if (typeof v === 'object' && v !== null) {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i];
        if (LONE_SURROGATE.test(key)) throw badRequest(`a key of ${path.length > 0 ? fieldPath(path) : 'the request body'} holds a lone surrogate, which is not text`, path.length > 0 ? fieldPath(path) : null);
        stack.push({ value: child, path: [...path, key] });
      }
    }
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
