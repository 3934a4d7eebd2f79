import { isIP } from 'node:net';
import { KeelError, invalidArgument } from '../errors.ts';
import type { CompletionTarget } from './completion-client.ts';

/**
 * The benchmark client talks only to this machine: it sends a server up to thousands of requests
 * at once, which is not something to point at another host by a typo.
 */
export function loopbackBaseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalidArgument(`--base-url "${raw}" is not a URL (expected e.g. http://127.0.0.1:8000)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalidArgument(`--base-url must be http or https (got ${url.protocol})`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
  if (!loopback) throw invalidArgument(`--base-url must be a loopback address (localhost, 127.x.x.x or [::1]); got ${url.hostname}`);
  return `${url.origin}${url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '')}`;
}

export interface DiscoveredServer {
  target: CompletionTarget;
  /** The first model's `owned_by` (keel, vllm...): which engine serves it, when the server says. */
  ownedBy: string | null;
}

/** The served model's name, from GET /v1/models: the first model listed. */
export async function discoverServer(baseUrl: string, apiKey: string | null): Promise<DiscoveredServer> {
  let response: Response;
  try {
    response = await fetch(`${baseUrl}/v1/models`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  } catch (error) {
    const cause = (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
    throw new KeelError('unavailable', `no server answers at ${baseUrl} (${cause}): start one with \`keel serve\`, or pass --launch`);
  }
  if (!response.ok) throw new KeelError('unavailable', `GET ${baseUrl}/v1/models answered HTTP ${response.status}${response.status === 401 ? ': pass --api-key' : ''}`);
  const body = (await response.json()) as { data?: { id?: unknown; owned_by?: unknown }[] };
  const model = body.data?.[0]?.id;
  if (typeof model !== 'string') throw new KeelError('unavailable', `GET ${baseUrl}/v1/models listed no model`);
  const ownedBy = body.data?.[0]?.owned_by;
  return { target: { baseUrl, model, apiKey }, ownedBy: typeof ownedBy === 'string' ? ownedBy : null };
}
