import { isIP } from 'node:net';
import { ApiError } from './openai-errors.ts';

/** Host names (lower case, no port, no IPv6 brackets) the server answers to; null answers any. */
export type AllowedHosts = ReadonlySet<string> | null;

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

function isLoopback(name: string): boolean {
  return name === 'localhost' || name === '::1' || (isIP(name) === 4 && name.startsWith('127.'));
}

/**
 * The host names to answer: those given (`*` for any), else, bound to a loopback address, the
 * loopback names and that address: a web page whose DNS name an attacker points at 127.0.0.1
 * ("DNS rebinding") sends its own name as Host and is refused. Bound to other addresses, the
 * server cannot know the names it is reached by: any host is answered unless listed.
 */
export function resolveAllowedHosts(given: string[] | null, bindHost: string): AllowedHosts {
  if (given !== null) return given.includes('*') ? null : new Set(given.map((h) => hostName(h) ?? h.toLowerCase()));
  const bound = hostName(bindHost);
  if (bound === null || !isLoopback(bound)) return null;
  return new Set([...LOOPBACK_NAMES, bound]);
}

/** The name part of a Host header or URL host ("LOCALHOST:8000" -> "localhost", "[::1]:80" -> "::1"). */
export function hostName(host: string): string | null {
  try {
    return new URL(`http://${host}`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return null;
  }
}

export function checkHost(host: string | undefined, allowed: AllowedHosts): void {
  if (allowed === null) return;
  const name = host === undefined ? null : hostName(host);
  if (name === null || !allowed.has(name)) {
    const shown = host === undefined ? 'no Host header' : `Host ${JSON.stringify(host.slice(0, 100))}`;
    throw new ApiError(403, `this server does not answer to ${shown} (allowed: ${[...allowed].join(', ')}; see --allowed-hosts)`, { code: 'host_not_allowed' });
  }
}
