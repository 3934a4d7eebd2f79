import { createHash, timingSafeEqual } from 'node:crypto';
import { ApiError } from './openai-errors.ts';

/** The API lives under /v1 and beside it; the playground page, health and metrics stay open. */
export function needsApiKey(path: string): boolean {
  return path.startsWith('/v1/') || path === '/tokenize' || path === '/detokenize';
}

/**
 * Checks `Authorization: Bearer <key>` as OpenAI clients send it. Digests are compared so that
 * neither the key's length nor its prefix leaks through timing.
 */
export function checkApiKey(authorization: string | undefined, apiKey: string): void {
  const match = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
  if (!match) {
    throw new ApiError(401, 'missing API key: send it as "Authorization: Bearer <key>"', { code: 'invalid_api_key' });
  }
  if (!timingSafeEqual(digest(match[1].trim()), digest(apiKey))) {
    throw new ApiError(401, 'incorrect API key provided', { code: 'invalid_api_key' });
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
