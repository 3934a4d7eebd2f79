import type { PrefixCacheCounters } from './serve-suite.ts';

/**
 * A Keel server's prefix-cache counters, from its Prometheus /metrics (keel_prompt_tokens_total,
 * keel_prefix_cache_hit_tokens_total by tier); null when the server has no such metrics (another
 * engine, or none at that address).
 */
export async function scrapePrefixCacheCounters(baseUrl: string, apiKey: string | null): Promise<PrefixCacheCounters | null> {
  let text: string;
  try {
    const response = await fetch(`${baseUrl}/metrics`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
    if (!response.ok) return null;
    text = await response.text();
  } catch {
    return null;
  }
  const promptTokens = metricSample(text, 'keel_prompt_tokens_total');
  const deviceHitTokens = metricSample(text, 'keel_prefix_cache_hit_tokens_total', { tier: 'device' });
  const hostHitTokens = metricSample(text, 'keel_prefix_cache_hit_tokens_total', { tier: 'host' });
  if (promptTokens === null || deviceHitTokens === null || hostHitTokens === null) return null;
  return { promptTokens, deviceHitTokens, hostHitTokens };
}

/** The value of the first sample of `name` that carries `labels` in Prometheus text; null when there is none. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return null;
}
