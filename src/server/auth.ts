import { createHash, timingSafeEqual } from 'node:crypto';
import { hostName, type AllowedHosts } from './allowed-hosts.ts';
import { ApiError } from './openai-errors.ts';

/** The API lives under /v1 and beside it (the step timeline's switches too); the playground page, health and metrics stay open. */
export function needsApiKey(path: string): boolean {
  return path.startsWith('/v1/') || path === '/tokenize' || path === '/detokenize' || path === '/start_profile' || path === '/stop_profile';
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

/**
 * The server sends no CORS headers, so no other site may read its answers; refusing browser
 * requests from other origins also stops a web page from spending this server's compute through
 * its visitors' browsers ("simple" POSTs need no preflight). An Origin must be http(s), name the
 * host the request was sent to, and be an allowed host itself (a rebound name matches its own
 * Host header). Non-browser clients send no Origin.
 */
export function checkOrigin(origin: string | undefined, host: string | undefined, allowed: AllowedHosts): void {
  if (origin === undefined) return;
  if (!isAllowedOrigin(origin, host, allowed)) {
    throw new ApiError(403, `cross-origin requests are not accepted (Origin ${JSON.stringify(origin.slice(0, 100))})`, { code: 'cross_origin' });
  }
}

function isAllowedOrigin(origin: string, host: string | undefined, allowed: AllowedHosts): boolean {
  if (host === undefined) return false;
  let url: URL;
  let sent: URL;
  try {
    url = new URL(origin);
    // The Host header read the way the Origin is, so that case and default ports compare equal.
    sent = new URL(`${url.protocol}//${host}`);
  } catch {
    return false;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  const name = hostName(url.host);
  return url.host === sent.host && name !== null && (allowed === null || allowed.has(name));
}
